"""Delivery to a real OpenSSH sshd through ``destinations.deliver`` (type ``sftp``) vs
OpenSSH's own client, ``sftp -b`` (batch mode), in one run.

1. One file of 256 MiB: ``deliver`` vs ``sftp -b`` with one ``put``.
2. 1,000 files of 10 KiB: ``deliver`` (concurrency 8) vs ``sftp -b`` with 1,000 ``put``
   lines (the client has no parallel mode: one connection, one file after the other).

Both sides talk to the same sshd (tests/emulators/sshd.py, sftp-server logging off) over
loopback with their default ciphers, from a fresh process each time; ``deliver`` writes a
temporary name and renames it (two requests more per file than ``sftp``'s plain ``put``).
CPU is the measuring process's own (user + system; for ``sftp``, the client process's), not
the server's. Runs are interleaved (deliver, sftp, sftp, deliver…) and medians compared.

The same run measures the store's SFTP channels per SSH connection for the small files:
1, 4 (the default, ``CHANNELS_PER_CONNECTION``) and 8 channels.

Run: ``python benchmarks/bench_sftp.py`` (``--quick``: 32 MiB and 200 files, one round).
Prints a Markdown table, writes ``benchmarks/results/sftp.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import _common
from _common import Row

MiB = 1024 * 1024
CONCURRENCY = 8
SMALL = 10 * 1024
_PASSWORD_ENV = "BENCH_SFTP_PASSWORD"


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- child: one deliver measurement ------------------------------------------------------------


def _child(args: argparse.Namespace) -> None:
    import destinations_sftp._store as sftp_store
    from destinations import ResultFile, ResultSet, deliver, parse_destination

    sftp_store.CHANNELS_PER_CONNECTION = args.channels  # type: ignore[misc]
    data = Path(args.data)
    files = [ResultFile(p.name, p) for p in sorted(data.iterdir())]
    destination = parse_destination(
        {
            "name": "bench",
            "type": "sftp",
            "enabled": True,
            "sftp_host": "127.0.0.1",
            "sftp_port": args.port,
            "sftp_username": args.user,
            "sftp_password": os.environ[_PASSWORD_ENV],
            "sftp_host_key": args.host_key,
            "sftp_root": args.root,
            "sftp_path_prefix": args.prefix,
        }
    )
    result = ResultSet("bench", "bench", uuid.uuid4().hex[:8], files)
    cpu0, t0 = _cpu_self(), time.perf_counter()
    report = deliver(result, [destination], concurrency=CONCURRENCY)
    seconds, cpu = time.perf_counter() - t0, _cpu_self() - cpu0
    status = report.statuses[0]
    if status.status != "success":
        raise SystemExit(f"delivery failed: {status.error}")
    print(json.dumps({"seconds": seconds, "cpu": cpu}))


def _deliver(sshd: Any, root: Path, data: Path, channels: int) -> dict[str, float]:
    prefix = f"deliver-{uuid.uuid4().hex[:8]}"
    command = [
        sys.executable, __file__, "--child", "deliver", "--data", str(data),
        "--port", str(sshd.port), "--user", sshd.user, "--host-key", sshd.host_key_line,
        "--root", str(root), "--prefix", prefix, "--channels", str(channels),
    ]  # fmt: skip
    env = {**os.environ, _PASSWORD_ENV: sshd.password}
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"deliver child failed: {done.stderr[-2000:]}")
    measured: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    _check(root / prefix, data)
    return measured


# -- the alternative: sftp -b ------------------------------------------------------------------


def _sftp_batch(sshd: Any, root: Path, data: Path, work: Path) -> dict[str, float]:
    target = root / f"sftp-{uuid.uuid4().hex[:8]}"
    lines = [f'mkdir "{target}"'] + [
        f'put "{p}" "{target}/{p.name}"' for p in sorted(data.iterdir())
    ]
    batch = work / "batch.txt"
    batch.write_text("\n".join(lines) + "\n")
    known_hosts = work / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_key_line}\n")
    key = work / "id_bench"
    key.write_text(sshd.client_key.private_text)
    key.chmod(0o600)
    command = [
        "sftp", "-q", "-b", str(batch), "-P", str(sshd.port), "-i", str(key),
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-F", "/dev/null", f"{sshd.user}@127.0.0.1",
    ]  # fmt: skip
    cpu0, t0 = _cpu_children(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    seconds, cpu = time.perf_counter() - t0, _cpu_children() - cpu0
    if done.returncode != 0:
        raise SystemExit(f"sftp -b failed: {done.stderr[-2000:]}")
    _check(target, data)
    return {"seconds": seconds, "cpu": cpu}


def _check(target: Path, data: Path) -> None:
    """Both sides must have written every file, whole (sizes; the tests check bytes)."""
    for source in data.iterdir():
        written = next(target.rglob(source.name), None)
        if written is None or written.stat().st_size != source.stat().st_size:
            raise SystemExit(f"{source.name} missing or short under {target}")


def _make_data(tmp: Path, large_mib: int, small_count: int) -> tuple[Path, Path]:
    large, small = tmp / "large", tmp / "small"
    large.mkdir()
    small.mkdir()
    with (large / "big.bin").open("wb") as f:
        for _ in range(large_mib):
            f.write(os.urandom(MiB))
    for i in range(small_count):
        (small / f"part-{i:05}.json").write_bytes(os.urandom(SMALL))
    return large, small


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=_common.ROOT / "benchmarks" / "results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    for name in ("--data", "--port", "--user", "--host-key", "--root", "--prefix"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--channels", type=int, default=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    import pwd

    from tests.emulators.sshd import Sshd

    large_mib, small_count = (32, 200) if args.quick else (256, 1000)
    rounds = 1 if args.quick else args.rounds
    results: dict[str, list[dict[str, float]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-sftp-") as tmp,
        Sshd(sftp_log_level="QUIET") as sshd,
    ):
        work = Path(tmp)
        large, small = _make_data(work, large_mib, small_count)
        root = sshd.home / "bench"
        root.mkdir()
        entry = pwd.getpwnam(sshd.user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
        plan = [("large", large), ("small", small)]
        for r in range(rounds):
            for kind, data in plan:
                order = ["deliver", "sftp"] if r % 2 == 0 else ["sftp", "deliver"]
                for side in order:
                    mode = f"{side}-{kind}"
                    if side == "deliver":
                        m = _deliver(sshd, root, data, channels=4)
                    else:
                        m = _sftp_batch(sshd, root, data, work)
                    results.setdefault(mode, []).append(m)
                    print(f"  {mode:<14} {m['seconds']:.2f} s, cpu {m['cpu']:.2f} s",
                          file=sys.stderr)  # fmt: skip
            for channels in (1, 8):
                mode = f"deliver-small-{channels}ch"
                m = _deliver(sshd, root, small, channels=channels)
                results.setdefault(mode, []).append(m)
                print(f"  {mode:<14} {m['seconds']:.2f} s, cpu {m['cpu']:.2f} s",
                      file=sys.stderr)  # fmt: skip

    def med(mode: str, key: str = "seconds") -> float:
        return _common.median(m[key] for m in results[mode])

    ratio_large = med("sftp-large") / med("deliver-large")
    ratio_small = med("sftp-small") / med("deliver-small")
    large_bytes = large_mib * MiB

    def mibs(mode: str) -> str:
        return f"{large_bytes / MiB / med(mode):.0f} MiB/s, CPU {med(mode, 'cpu'):.2f} s"

    def files(mode: str) -> str:
        return f"{small_count / med(mode):.0f} files/s, CPU {med(mode, 'cpu'):.2f} s"

    rows = [
        Row(
            f"deliver 1 x {large_mib} MiB to sshd (throughput)",
            mibs("deliver-large"),
            f"sftp -b put {mibs('sftp-large')}",
            f"{ratio_large:.2f}x",
            ">= 0.5x",
            ratio_large >= 0.5,
            note="OpenSSH's C client is the ceiling",
        ),
        Row(
            f"deliver {small_count} x 10 KiB to sshd (throughput)",
            files("deliver-small") + f", x{CONCURRENCY}, 4 channels",
            f"sftp -b put (sequential) {files('sftp-small')}",
            f"{ratio_small:.2f}x",
            ">= 1.0x",
            ratio_small >= 1.0,
        ),
        Row(
            f"deliver {small_count} x 10 KiB: SFTP channels per connection",
            "4 channels " + files("deliver-small"),
            f"1 channel {files('deliver-small-1ch')}; 8 channels {files('deliver-small-8ch')}",
            f"{med('deliver-small-1ch') / med('deliver-small'):.2f}x vs 1",
            "reported",
            None,
        ),
    ]
    _common.write(
        args.out,
        "sftp",
        rows,
        quick=args.quick,
        rounds=rounds,
        command="python benchmarks/bench_sftp.py" + (" --quick" if args.quick else ""),
        measurements=results,
    )


if __name__ == "__main__":
    main()
