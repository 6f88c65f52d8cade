"""Run every benchmark and write one table: ``results/RESULTS.md`` and ``results/results.json``.

Every ``bench_*.py`` here runs as its own process (``--out DIR``, plus ``--quick`` for a smoke
run) and writes ``DIR/<name>.json`` with a ``rows`` list; this script gathers the rows, adds
the machine (CPU model, cores, Python) and its load before and after, and writes the table.

Run: ``tox -e bench`` or ``python benchmarks/run_all.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import ROOT, machine

HERE = Path(__file__).resolve().parent
#: These first, in this order; then any other ``bench_*.py`` here, by name.
BENCHMARKS = ("core", "verify", "concurrency", "delivery", "shaping", "api")


def discover() -> list[str]:
    found = {p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py")}
    return [n for n in BENCHMARKS if n in found] + sorted(found - set(BENCHMARKS))


TIMEOUT = 3600


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--quick", action="store_true", help="smoke run: few rounds each")
    parser.add_argument("--only", help="comma-separated benchmark names, e.g. core,verify")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.only.split(",") if args.only else discover()

    before = machine()
    started = time.monotonic()
    collected: dict[str, Any] = {}
    failures: list[str] = []
    env = {**os.environ, "DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS": "1", "PYTHONUNBUFFERED": "1"}
    for name in names:
        script = HERE / f"bench_{name}.py"
        if not script.exists():
            print(f"== {name}: {script.name} not present, skipped", flush=True)
            continue
        (out / f"{name}.json").unlink(missing_ok=True)
        command = [sys.executable, str(script), "--out", str(out)]
        if args.quick:
            command.append("--quick")
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        t0 = time.monotonic()
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, timeout=TIMEOUT, check=False)
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = -1
        seconds = time.monotonic() - t0
        result_file = out / f"{name}.json"
        if code != 0 or not result_file.exists():
            failures.append(f"{name} (exit {code})")
            print(f"== {name}: FAILED (exit {code}) after {seconds:.0f} s", flush=True)
            continue
        data = json.loads(result_file.read_text())
        data["seconds"] = round(seconds, 1)
        collected[name] = data
    after = machine()

    rows = [row for name in collected for row in collected[name].get("rows", [])]
    lines = [
        "# Benchmark results",
        "",
        f"`python benchmarks/run_all.py{' --quick' if args.quick else ''}` "
        f"({'smoke run' if args.quick else 'full run'}), "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, "
        f"{(time.monotonic() - started) / 60:.1f} min.",
        "",
        f"Machine: {before['cpu']}, {before['cores']} cores, {before['python']}, "
        f"{before['platform']}. Load average (1/5/15 min) "
        f"{'/'.join(map(str, before['loadavg']))} before, "
        f"{'/'.join(map(str, after['loadavg']))} after: other work shared the machine, so "
        "sides were interleaved and medians or best-of rounds compared.",
        "",
        "| benchmark | destinations | alternative | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = "—" if r.get("met") is None else ("yes" if r["met"] else "**no**")
        note = f" ({r['note']})" if r.get("note") else ""
        lines.append(
            f"| {_cell(r['benchmark'])}{_cell(note)} | {_cell(r['framework'])} | "
            f"{_cell(r['alternative'])} | {_cell(r['ratio'])} | {_cell(r['target'])} | {met} |"
        )
    if failures:
        lines += ["", f"Failed: {', '.join(failures)}."]
    markdown = "\n".join(lines) + "\n"
    (out / "RESULTS.md").write_text(markdown)
    (out / "results.json").write_text(
        json.dumps(
            {
                "quick": args.quick,
                "machine": before,
                "loadavg_after": after["loadavg"],
                "rows": rows,
                "benchmarks": collected,
                "failed": failures,
            },
            indent=2,
        )
        + "\n"
    )
    print()
    print(markdown)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
