"""Runs the README's examples as pasted, inside an empty network namespace (``unshare -n``,
loopback only: the seed's s3 call goes to a public AWS host). Prints one JSON line of what
each example did; tests/docs/test_readme_examples.py judges it.

The one step not run as written is command 1's ``python3 -m venv .venv && pip install ...``
(it would download every SDK): ``.venv`` is this environment, and the test checks that the
install step names core with the api extra and every plugin in ``plugins/``. Command 2 (the
whole suite under tox) is not run from inside the suite.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str]]:
    return [(m[1], m[2]) for m in FENCE.finditer((REPO / "README.md").read_text())]


def run(cmd: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> dict[str, object]:
    done = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    return {"rc": done.returncode, "out": done.stdout[-4000:], "err": done.stderr[-4000:]}


def _wait_port(port: int, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


def walkthrough(
    sh: list[str], py: list[str], work: Path, env: dict[str, str], key: str
) -> dict[str, object]:
    """The delivery walkthrough as a user runs it: terminal 1 (serve with a file root),
    terminal 2 (destination, files, webhook: copy the secret), terminal 3 (receiver.py, saved
    from the README's two Python blocks, with that secret), terminal 2 again (submit; the
    delivery id copied into the GET)."""
    terminals = [b for b in sh if b.lstrip().startswith("# terminal")]
    first = next(b for b in terminals if b.lstrip().startswith("# terminal 1"))
    setup, submit = (b for b in terminals if b.lstrip().startswith("# terminal 2"))
    receiver_cmd = next(b for b in terminals if b.lstrip().startswith("# terminal 3"))
    verify_fn = next(b for b in py if "def verify_destinations_signature" in b)
    program = next(b for b in py if "serve_forever()" in b)
    (work / "receiver.py").write_text(verify_fn + "\n\n" + program)
    out: dict[str, object] = {}
    server = subprocess.Popen(["bash", "-c", first], cwd=work, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    receiver = None
    try:
        out["served"] = _wait_port(8000)
        done = run(setup.replace("KEY=dst_...", f"KEY={key}"), work, env)
        out["setup"] = done
        secret = re.search(r'"secret":"(whsec_[^"]+)"', str(done["out"]))
        out["secret_shown"] = bool(secret)
        receiver = subprocess.Popen(
            ["bash", "-c", receiver_cmd.replace("whsec_...", secret[1] if secret else "none")],
            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        out["receiving"] = _wait_port(9000)
        post, _, rest = submit.partition("curl -s \"http://127.0.0.1:8000/deliveries/dlv_...")
        done = run(post.replace("KEY=dst_...", f"KEY={key}"), work, {**env, "KEY": key})
        out["submitted"] = done
        delivery = re.search(r'"id":"(dlv_[^"]+)"', str(done["out"]))
        final: dict[str, object] = {}
        if delivery:
            deadline = time.monotonic() + 60
            get = 'curl -s "http://127.0.0.1:8000/deliveries/' + delivery[1] + rest.split("\n")[0]
            while time.monotonic() < deadline:
                final = run(get, work, {**env, "KEY": key})
                if '"status":"success"' in str(final["out"]):
                    break
                time.sleep(0.5)
        out["final"] = final
        out["listed"] = run(rest.split("\n", 1)[1], work, env) if "\n" in rest else {}
        time.sleep(1.0)  # the completion event is sent right after the final status
    finally:
        for process in (receiver, server):
            if process is not None:
                # Ctrl-C for serve; the receiver (a plain HTTPServer) is simply ended
                os.killpg(process.pid, signal.SIGTERM if process is receiver else signal.SIGINT)
                try:
                    printed, _ = process.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    printed, _ = process.communicate()
                if process is receiver:
                    out["receiver_printed"] = printed[-8000:]
    return out


def main() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    work = Path(tempfile.mkdtemp(prefix="readme-"))
    (work / ".venv").symlink_to(Path(sys.executable).parents[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESTINATIONS_")}
    env["PATH"] = f"{work / '.venv' / 'bin'}:{env['PATH']}"
    results: dict[str, object] = {}
    sh = [b for lang, b in blocks() if lang == "sh"]
    py = [b for lang, b in blocks() if lang == "python"]

    command1 = next(b for b in sh if "python3 -m venv .venv" in b).strip()
    install, _, rest = command1.partition("&& .venv/bin/destinations")
    results["install"] = install
    rest = ".venv/bin/destinations" + rest
    server = subprocess.Popen(["bash", "-c", rest], cwd=work, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", 8000), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        os.set_blocking(server.stdout.fileno(), False)  # type: ignore[union-attr]
        time.sleep(0.5)
        started = server.stdout.read() or ""  # type: ignore[union-attr]
        keys = [line for line in started.splitlines() if line.startswith("dst_")]
        results["startup"] = started
        results["key_lines"] = len(keys)
        key = keys[0] if keys else "missing"
        for name, marker in (("local", "type=local"), ("s3", "type=s3")):
            block = next(b for b in sh if marker in b and "curl" in b)
            # The key the user copies; the s3 call is pasted into the same terminal.
            pasted = block.replace("KEY=dst_...", f"KEY={key}")
            results[f"curl_{name}"] = run(f"KEY={key}\n{pasted}", work, env)
        listed = run(f"curl -s 'http://127.0.0.1:8000/destinations?api_key={key}'", work, env)
        results["listed"] = listed
        rerun = subprocess.run(["bash", "-c", rest.partition(" && ")[0]], cwd=work, env=env,
                               capture_output=True, text=True, timeout=60, check=False)
        results["rerun_keys"] = {"rc": rerun.returncode, "out": rerun.stdout,
                                 "err": rerun.stderr}
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=30)

    results["walkthrough"] = walkthrough(sh, py, work, env, key)

    for i, block in enumerate(py):
        if "verify_then_commit(old, new" in block or "create_celery(" in block or \
                "destinations_mystore" in block:
            continue  # fragments of an embedding service's code (listed by the test)
        if "serve_forever()" in block:
            # the webhook receiver program: run by the walkthrough (a server until stopped)
            continue
        results[f"python_{i}"] = run(f"{sys.executable} - <<'PY'\n{block}PY", work, env)
    for i, block in enumerate(sh):
        if any(m in block for m in ("python3 -m venv", "curl", "tox")):
            continue
        if re.search(r"destinations (serve|worker)\b", block):
            continue  # a server's own terminal: it runs until Ctrl-C (command 1 runs one)
        if block.lstrip().startswith("# terminal"):
            continue  # the delivery walkthrough: run above, terminal by terminal
        results[f"sh_{i}"] = run(block, work, env)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
