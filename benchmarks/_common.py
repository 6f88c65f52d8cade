"""Shared by the benchmark scripts: result rows, the machine, output files, local servers.

Every script writes ``<out>/<name>.json`` as ``{"rows": [Row...], "machine": ..., ...}``;
``run_all.py`` gathers the rows into one table.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests.emulators (the local servers) lives at the repo root
    sys.path.insert(0, str(ROOT))

# Every server here is on loopback; core's endpoint guard lets it through only with this.
os.environ.setdefault("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", "1")
for _name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "STORAGE_EMULATOR_HOST"):
    os.environ.pop(_name, None)


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the results table."""

    benchmark: str
    framework: str
    alternative: str
    ratio: str
    target: str
    met: bool | None  # None: no target, reported only
    note: str = ""


def machine() -> dict[str, Any]:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "loadavg": [round(x, 2) for x in load],
    }


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 0.1 else f"{seconds * 1e3:.0f} ms"


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def write(out: Path, name: str, rows: list[Row], **details: Any) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = {"machine": machine(), "rows": [asdict(r) for r in rows], **details}
    (out / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(table(rows))


def table(rows: list[Row]) -> str:
    lines = [
        "| benchmark | destinations | alternative | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = "—" if r.met is None else ("yes" if r.met else "**no**")
        note = f" ({r.note})" if r.note else ""
        lines.append(
            f"| {r.benchmark}{note} | {r.framework} | {r.alternative} | {r.ratio} | "
            f"{r.target} | {met} |"
        )
    return "\n".join(lines)


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    """Send one prebuilt HTTP/1.1 request on a keep-alive connection and read its response
    (framed by Content-Length); the status. The load generators' minimal client: httpx costs
    about as much CPU per request as the server does."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status
