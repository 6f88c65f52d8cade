"""``destinations bench verify``: N verification cycles against one destination, summarised.

Each cycle is one :func:`~destinations.verify` call, exactly what saving a destination does:
open a store, put the probe, delete it. The summary gives p50/p95/p99/max per step and the
storage requests the framework made per cycle (``VerificationReport.requests``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import click

from ._cli_common import (
    database_url_option,
    deprecated_alias,
    destination_option,
    fail_verification,
    load_stored,
    output_option,
    param_option,
    parse_or_exit,
    spec_option,
    write_output,
)
from ._errors import VerificationFailed
from ._records import Destination
from ._verify import VerificationReport, verify

__all__ = ["STEPS", "BenchResult", "StepStats", "bench", "bench_verify", "percentile"]

#: Step name shown to the user -> the report attribute it is read from.
STEPS: tuple[tuple[str, str], ...] = (
    ("connect", "open_seconds"),
    ("put", "put_seconds"),
    ("delete", "delete_seconds"),
    ("total", "total_seconds"),
)


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of an ascending sequence.

    Nearest rank returns a measured value (never an interpolation), so p50 <= p95 <= p99 <=
    max holds by construction.
    """
    if not ordered:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class StepStats:
    """Seconds at each percentile of one step over all cycles."""

    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> StepStats:
        ordered = sorted(values)
        return cls(
            percentile(ordered, 50), percentile(ordered, 95), percentile(ordered, 99), ordered[-1]
        )


@dataclass(frozen=True, slots=True)
class BenchResult:
    """What ``bench verify`` measured: per-step statistics and request counts."""

    destination_type: str
    cycles: int
    concurrency: int
    wall_seconds: float
    requests_per_cycle: float
    requests_total: int
    steps: tuple[tuple[str, StepStats], ...]

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-ready data; times in milliseconds."""
        return {
            "destination_type": self.destination_type,
            "cycles": self.cycles,
            "concurrency": self.concurrency,
            "wall_ms": round(self.wall_seconds * 1e3, 3),
            "requests_per_cycle": self.requests_per_cycle,
            "requests_total": self.requests_total,
            "steps": {
                name: {
                    f"{label}_ms": round(getattr(stats, label) * 1e3, 3)
                    for label in ("p50", "p95", "p99", "max")
                }
                for name, stats in self.steps
            },
        }

    def table(self) -> str:
        """A plain-text table, one row per step, times in milliseconds."""
        lines = [
            f"{self.cycles} verification cycles of a {self.destination_type} destination, "
            f"{self.concurrency} at a time, in {self.wall_seconds:.2f} s",
            f"{'step':<8} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'max ms':>9}",
        ]
        for name, s in self.steps:
            lines.append(
                f"{name:<8} {s.p50 * 1e3:>9.2f} {s.p95 * 1e3:>9.2f} "
                f"{s.p99 * 1e3:>9.2f} {s.max * 1e3:>9.2f}"
            )
        per_cycle = f"{self.requests_per_cycle:g}"
        lines.append(f"storage requests per cycle: {per_cycle} ({self.requests_total} in all)")
        return "\n".join(lines)


def summarise(
    reports: Sequence[VerificationReport], concurrency: int, wall_seconds: float
) -> BenchResult:
    if not reports:
        raise ValueError("no verification cycles to summarise")
    total_requests = sum(r.requests for r in reports)
    return BenchResult(
        destination_type=reports[0].destination_type,
        cycles=len(reports),
        concurrency=concurrency,
        wall_seconds=wall_seconds,
        requests_per_cycle=total_requests / len(reports),
        requests_total=total_requests,
        steps=tuple(
            (name, StepStats.of([getattr(r, attr) for r in reports])) for name, attr in STEPS
        ),
    )


def bench_verify(
    destination: Destination,
    *,
    cycles: int = 20,
    concurrency: int = 1,
    timeout: float = 30.0,
    on_cycle: Callable[[VerificationReport], None] | None = None,
) -> BenchResult:
    """Run ``cycles`` verifications of ``destination``, ``concurrency`` at a time.

    The first :class:`~destinations.VerificationFailed` stops the run (cycles not yet started
    are cancelled) and is raised. ``on_cycle`` is called after each successful cycle, from the
    calling thread.
    """
    if cycles < 1:
        raise ValueError("cycles must be at least 1")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    reports: list[VerificationReport] = []
    started = time.perf_counter()
    if concurrency == 1:
        for _ in range(cycles):
            reports.append(verify(destination, timeout=timeout))
            if on_cycle is not None:
                on_cycle(reports[-1])
    else:
        with ThreadPoolExecutor(concurrency, thread_name_prefix="destinations-bench") as pool:
            pending: set[Future[VerificationReport]] = {
                pool.submit(verify, destination, timeout=timeout) for _ in range(cycles)
            }
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    if future.exception() is not None:
                        for other in pending:
                            other.cancel()
                    reports.append(future.result())
                    if on_cycle is not None:
                        on_cycle(reports[-1])
    return summarise(reports, concurrency, time.perf_counter() - started)


# -- the command line ------------------------------------------------------------------------


@click.group()
def bench() -> None:
    """Measure destinations: how long each step takes, how many requests it makes."""


def _destination(
    params: tuple[str, ...],
    spec_file: str | None,
    destination_id: str | None,
    database_url: str | None,
) -> Destination:
    if destination_id is not None:
        if params or spec_file is not None:
            raise click.UsageError("give --destination ID or -p/--spec, not both")
        return load_stored((destination_id,), database_url)[0]
    if not params and spec_file is None:
        raise click.UsageError(
            "give the destination with --param KEY=VALUE, --spec FILE or --destination ID"
        )
    return parse_or_exit(params, spec_file, flag="--spec")


@bench.command("verify")
@param_option
@spec_option
@destination_option(multiple=False)
@database_url_option
@output_option
@deprecated_alias("--json", "--output", "json")
@click.option(
    "-n",
    "--cycles",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Verification cycles to run.",
)
@click.option(
    "--concurrency",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Cycles running at once (threads).",
)
@click.option("--timeout", default=30.0, show_default=True, help="Deadline per cycle, seconds.")
def verify_command(
    params: tuple[str, ...],
    spec_file: str | None,
    destination_ids: str | None,
    database_url: str | None,
    output: str | None,
    json_deprecated: str | None,
    cycles: int,
    concurrency: int,
    timeout: float,
) -> None:
    """Run N verification cycles (probe put + delete) and print p50/p95/p99/max per step.

    Exit 0 when every cycle verified, 1 when one failed (the run stops there), 2 on bad input.
    """
    if output is not None and json_deprecated is not None:
        raise click.UsageError("give --output FILE (--json FILE is its deprecated name), not both")
    json_out = output if output is not None else json_deprecated
    destination = _destination(params, spec_file, destination_ids, database_url)
    show_bar = sys.stderr.isatty()
    bar = (
        click.progressbar(length=cycles, label=f"verifying {destination.type}", file=sys.stderr)
        if show_bar
        else None
    )
    try:
        if bar is not None:
            with bar:
                result = bench_verify(
                    destination,
                    cycles=cycles,
                    concurrency=concurrency,
                    timeout=timeout,
                    on_cycle=lambda _: bar.update(1),
                )
        else:
            result = bench_verify(
                destination, cycles=cycles, concurrency=concurrency, timeout=timeout
            )
    except VerificationFailed as exc:
        fail_verification(exc)
    if json_out == "-":
        write_output(json_out, result.to_json())
        return
    click.echo(result.table())
    write_output(json_out, result.to_json())
