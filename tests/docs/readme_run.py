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

    for i, block in enumerate(py):
        if "verify_then_commit(old, new" in block or "create_celery(" in block or \
                "destinations_mystore" in block:
            continue  # fragments of an embedding service's code (listed by the test)
        if "serve_forever()" in block:
            # the webhook receiver program: a server that runs until stopped (its verification
            # function, the block before, runs here and in tests/api/test_webhooks.py)
            continue
        results[f"python_{i}"] = run(f"{sys.executable} - <<'PY'\n{block}PY", work, env)
    for i, block in enumerate(sh):
        if any(m in block for m in ("python3 -m venv", "curl", "tox")):
            continue
        if re.search(r"destinations (serve|worker)\b", block):
            continue  # a server's own terminal: it runs until Ctrl-C (command 1 runs one)
        if block.lstrip().startswith("# terminal"):
            # the delivery walkthrough's terminals depend on each other (a restarted serve, a
            # receiver); they are not run here (tests/api/test_deliveries_served.py runs the
            # same flow through a real serve)
            continue
        results[f"sh_{i}"] = run(block, work, env)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
