"""Delivery to S3 (moto) through ``destinations.deliver`` vs raw boto3, in one run.

1. One large file (256 MiB): ``deliver`` to an ``s3compatible`` destination vs boto3
   ``upload_file`` with the same ``TransferConfig`` (8 MiB threshold and parts, 10 threads).
   Targets: >= 0.95x raw throughput, peak memory growth <= 64 MiB.
2. 1,000 files of 10 KiB: ``deliver`` (concurrency 8) vs boto3 ``put_object`` from a
   ``ThreadPoolExecutor`` of 8. Target: >= 1.0x raw throughput.

Both sides use one client with the same settings (path addressing, checksums only when
required, no SDK retries, 10 pooled connections). Runs are interleaved (deliver, raw, raw,
deliver…) so machine noise hits both alike; the median of each side is compared.

Memory: every measurement runs in a fresh child process, which imports everything and
builds its client first, then records its RSS high-water mark (``ru_maxrss``), uploads, and
records it again. Peak growth = the difference, i.e. how far the upload pushed the resident
set above everything that was already there. (tracemalloc would miss the SDK's C buffers
and socket memory; a child per measurement keeps one run's peak out of the next.)

Run: ``python benchmarks/bench_delivery.py`` (``--quick`` for a smoke run: 32 MiB and 200
files, one round). Prints a Markdown table, writes ``benchmarks/results/delivery.json``.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _common
from _common import Row

MiB = 1024 * 1024
CONCURRENCY = 8
CONNECTIONS = 10
PART = 8 * MiB


def _rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# -- child: one measurement -------------------------------------------------------------------


def _child(args: argparse.Namespace) -> None:
    from tests.emulators.servers import MOTO_BOOTSTRAP_KEY, MOTO_BOOTSTRAP_SECRET, s3_client

    data = Path(args.data)
    prefix = f"{args.mode}/{uuid.uuid4().hex[:8]}"
    if args.mode.startswith("deliver"):
        import destinations
        from destinations import ResultFile, ResultSet, StoreOptions, deliver, open_store

        dest = destinations.parse_destination(
            {
                "name": "bench",
                "enabled": True,
                "type": "s3compatible",
                "s3_access_key_id": MOTO_BOOTSTRAP_KEY,
                "s3_secret_access_key": MOTO_BOOTSTRAP_SECRET,
                "s3_bucket_name": args.bucket,
                "s3_endpoint": args.endpoint,
                "s3_region": "us-east-1",
                "s3_path_prefix": prefix,
            }
        )
        options = StoreOptions(
            timeout=60, multipart_threshold=PART, part_size=PART, max_connections=CONNECTIONS
        )
        open_store(dest, options).close()  # load the SDK and its models before the baseline
        names = ["large.bin"] if args.mode == "deliver-large" else sorted(os.listdir(data))
        rs = ResultSet("c", "bench", "rs", [ResultFile(n, data / n) for n in names])
        base = _rss_peak_mib()
        started = time.perf_counter()
        report = deliver(rs, [dest], concurrency=CONCURRENCY, options=options)
        seconds = time.perf_counter() - started
        (status,) = report
        if status.status != "success":
            raise SystemExit(f"delivery failed: {status.error}")
    else:
        from boto3.s3.transfer import TransferConfig

        client = s3_client(
            args.endpoint,
            MOTO_BOOTSTRAP_KEY,
            MOTO_BOOTSTRAP_SECRET,
            "us-east-1",
            retries={"mode": "standard", "total_max_attempts": 1},
            max_pool_connections=CONNECTIONS,
            connect_timeout=60,
            read_timeout=60,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        config = TransferConfig(
            multipart_threshold=PART,
            multipart_chunksize=PART,
            max_concurrency=CONNECTIONS,
            preferred_transfer_client="classic",
        )
        client.list_objects_v2(Bucket=args.bucket, MaxKeys=1)  # warm the client
        base = _rss_peak_mib()
        started = time.perf_counter()
        if args.mode == "raw-large":
            client.upload_file(
                str(data / "large.bin"), args.bucket, f"{prefix}/large.bin", Config=config
            )
        else:

            def put(name: str) -> None:
                with open(data / name, "rb") as f:
                    body = f.read()
                client.put_object(
                    Bucket=args.bucket,
                    Key=f"{prefix}/{name}",
                    Body=body,
                    ContentType="application/octet-stream",
                )

            with ThreadPoolExecutor(CONCURRENCY) as pool:
                list(pool.map(put, sorted(os.listdir(data))))
        seconds = time.perf_counter() - started
    growth = max(0.0, _rss_peak_mib() - base)
    print(json.dumps({"seconds": seconds, "rss_growth_mib": growth, "rss_base_mib": base}))


# -- parent -------------------------------------------------------------------------------------


def _measure(mode: str, endpoint: str, bucket: str, data: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--endpoint", endpoint, "--bucket", bucket,
         "--data", str(data)],
        capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _make_data(root: Path, large_mib: int, small_count: int) -> tuple[Path, Path]:
    large_dir, small_dir = root / "large", root / "small"
    large_dir.mkdir()
    small_dir.mkdir()
    with open(large_dir / "large.bin", "wb") as f:
        for _ in range(large_mib):
            f.write(os.urandom(MiB))
    for i in range(small_count):
        (small_dir / f"part-{i:05d}.json").write_bytes(os.urandom(10 * 1024))
    return large_dir, small_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=_common.ROOT / "benchmarks" / "results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.mode = args.child
        _child(args)
        return

    from tests.emulators.servers import MotoServer

    large_mib, small_count = (32, 200) if args.quick else (256, 1000)
    rounds = 1 if args.quick else args.rounds
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp, MotoServer() as moto:
        large_dir, small_dir = _make_data(Path(tmp), large_mib, small_count)
        bucket = "bench-delivery"
        moto.create_bucket(bucket)
        plan = [("large", large_dir), ("small", small_dir)]
        for r in range(rounds):
            for kind, data in plan:
                order = ["deliver", "raw"] if r % 2 == 0 else ["raw", "deliver"]
                for side in order:
                    mode = f"{side}-{kind}"
                    m = _measure(mode, moto.endpoint, bucket, data)
                    results.setdefault(mode, []).append(m)
                    print(f"  {mode:<14} {m['seconds']:.2f} s, +{m['rss_growth_mib']:.1f} MiB",
                          file=sys.stderr)  # fmt: skip

    def med(mode: str, key: str) -> float:
        return _common.median(m[key] for m in results[mode])

    large_bytes = large_mib * MiB
    small_bytes = small_count * 10 * 1024
    ratio_large = med("raw-large", "seconds") / med("deliver-large", "seconds")
    ratio_small = med("raw-small", "seconds") / med("deliver-small", "seconds")
    mem_large = max(m["rss_growth_mib"] for m in results["deliver-large"])
    mem_large_raw = max(m["rss_growth_mib"] for m in results["raw-large"])
    mem_small = max(m["rss_growth_mib"] for m in results["deliver-small"])
    mem_small_raw = max(m["rss_growth_mib"] for m in results["raw-small"])

    def mibs(mode: str, nbytes: int) -> str:
        return f"{nbytes / MiB / med(mode, 'seconds'):.0f} MiB/s"

    rows = [
        Row(
            f"deliver 1 x {large_mib} MiB to moto (throughput)",
            mibs("deliver-large", large_bytes),
            f"boto3 upload_file {mibs('raw-large', large_bytes)}",
            f"{ratio_large:.2f}x",
            ">= 0.95x",
            ratio_large >= 0.95,
        ),
        Row(
            f"deliver 1 x {large_mib} MiB to moto (peak RSS growth)",
            f"{mem_large:.1f} MiB",
            f"boto3 upload_file {mem_large_raw:.1f} MiB",
            "—",
            "<= 64 MiB",
            mem_large <= 64,
        ),
        Row(
            f"deliver {small_count} x 10 KiB to moto (throughput)",
            f"{small_count / med('deliver-small', 'seconds'):.0f} files/s",
            f"boto3 put_object x{CONCURRENCY} threads "
            f"{small_count / med('raw-small', 'seconds'):.0f} files/s",
            f"{ratio_small:.2f}x",
            ">= 1.0x",
            ratio_small >= 1.0,
        ),
        Row(
            f"deliver {small_count} x 10 KiB to moto (peak RSS growth)",
            f"{mem_small:.1f} MiB",
            f"boto3 put_object {mem_small_raw:.1f} MiB",
            "—",
            "reported",
            None,
        ),
    ]
    _common.write(
        args.out,
        "delivery",
        rows,
        quick=args.quick,
        rounds=rounds,
        small_bytes=small_bytes,
        command="python benchmarks/bench_delivery.py" + (" --quick" if args.quick else ""),
        measurements=results,
    )


if __name__ == "__main__":
    main()
