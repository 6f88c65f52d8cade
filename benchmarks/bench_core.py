"""Core benchmarks, each side by side with the obvious alternative in the same run.

1. Template expansion: a compiled PathTemplate vs naive chained ``str.replace`` that formats
   the date on every call (what hand-written code does). Target: >= 2.0x faster.
2. Cold start: ``import destinations; available_types()`` vs ``import boto3``, as whole
   processes. Target: <= 0.5x the time of boto3. Also ``destinations types`` as a whole
   process (median of the same number of runs), reported against ``import boto3``.

Run: ``tox -e bench`` (or ``python benchmarks/bench_core.py --out benchmarks/results``).
Prints a Markdown table and writes ``core.json`` beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
import timeit
from datetime import UTC, datetime
from pathlib import Path

from destinations import PathTemplate

TEMPLATE = "exports/%COLLECTION_ID%/%COLLECTION_NAME%/%DATE%/%RESULT_SET_ID%"


def naive_expand(text: str, collection_id: str, collection_name: str, result_set_id: str) -> str:
    return (
        text.replace("%COLLECTION_ID%", collection_id)
        .replace("%COLLECTION_NAME%", collection_name)
        .replace("%RESULT_SET_ID%", result_set_id)
        .replace("%DATE%", datetime.now(UTC).strftime("%Y_%m_%d"))
    )


def bench_templates(number: int = 200_000, repeat: int = 7) -> dict[str, float]:
    compiled = PathTemplate(TEMPLATE)
    # Every call gets a result set id never seen before (no caching helps with it), while
    # the collection repeats, as it does in a real service.
    ids = [f"RS{i:08d}" for i in range(number * repeat * 2)]
    it = iter(ids)

    def ours() -> None:
        for _ in range(number):
            compiled.expand(
                collection_id="C1", collection_name="Daily Products", result_set_id=next(it)
            )

    def naive() -> None:
        for _ in range(number):
            naive_expand(TEMPLATE, "C1", "Daily Products", next(it))

    # Same inputs give the same output (the naive one just cannot sanitise).
    assert compiled.expand(
        collection_id="C1", collection_name="Daily Products", result_set_id="RS1"
    ) == naive_expand(TEMPLATE, "C1", "Daily Products", "RS1")
    # Interleaved, best of each: other load on the machine hits both sides alike.
    t_ours = t_naive = float("inf")
    for _ in range(repeat):
        t_ours = min(t_ours, timeit.timeit(ours, number=1) / number)
        t_naive = min(t_naive, timeit.timeit(naive, number=1) / number)
    return {"ours_ns": t_ours * 1e9, "naive_ns": t_naive * 1e9, "speedup": t_naive / t_ours}


def _median_process_seconds(code: str, runs: int, *, quiet: bool = False) -> float:
    times = []
    out = subprocess.DEVNULL if quiet else None
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, stdout=out)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_cold_start(runs: int = 15) -> dict[str, float]:
    ours = _median_process_seconds("import destinations; destinations.available_types()", runs)
    boto = _median_process_seconds("import boto3", runs)
    bare = _median_process_seconds("pass", runs)
    # The whole `destinations types` command: imports every installed plugin to show its
    # fields, so each plugin's SDK (boto3, azure, oss2...) if the plugin imports it eagerly.
    types = _median_process_seconds(
        "import sys; from destinations.cli import main; sys.argv = ['destinations', 'types']; "
        "main()",
        runs,
        quiet=True,
    )
    return {
        "destinations_ms": ours * 1e3,
        "boto3_ms": boto * 1e3,
        "bare_python_ms": bare * 1e3,
        "ratio": ours / boto,
        "types_command_ms": types * 1e3,
        "types_ratio": types / boto,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    args = parser.parse_args()
    tmpl = bench_templates(number=20_000 if args.quick else 200_000, repeat=3 if args.quick else 7)
    cold = bench_cold_start(runs=3 if args.quick else 15)
    machine = (
        f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    )
    rows = [
        (
            "template expansion vs chained str.replace",
            f"{tmpl['ours_ns']:.0f} ns",
            f"{tmpl['naive_ns']:.0f} ns",
            f"{tmpl['speedup']:.2f}x faster",
            ">= 2.0x",
        ),
        (
            "import destinations + available_types() vs import boto3",
            f"{cold['destinations_ms']:.0f} ms",
            f"{cold['boto3_ms']:.0f} ms",
            f"{cold['ratio']:.2f}x the time",
            "<= 0.5x",
        ),
        (
            "`destinations types` as a whole process vs import boto3",
            f"{cold['types_command_ms']:.0f} ms",
            f"{cold['boto3_ms']:.0f} ms",
            f"{cold['types_ratio']:.2f}x the time",
            "none (reported)",
        ),
    ]
    lines = [
        f"Machine: {machine}, {__import__('os').cpu_count()} cores",
        "",
        "| benchmark | destinations | alternative | ratio | target |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(r)} |" for r in rows]
    lines.append(f"\n(bare `python -c pass`: {cold['bare_python_ms']:.0f} ms)")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    met = [tmpl["speedup"] >= 2.0, cold["ratio"] <= 0.5, None]
    (out / "core.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "templates": tmpl,
                "cold_start": cold,
                # The shape run_all.py gathers from every benchmark.
                "rows": [
                    dict(
                        zip(
                            ("benchmark", "framework", "alternative", "ratio", "target"),
                            r,
                            strict=True,
                        )
                    )
                    | {"met": m, "note": ""}
                    for r, m in zip(rows, met, strict=True)
                ],
            },
            indent=2,
        )
    )
    (out / "core.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
