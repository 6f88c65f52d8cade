"""50 destinations verified at once vs one verification, on one moto server (auth on).

Each destination is ``s3compatible`` with its own path prefix in one bucket; the 50 run in
50 threads, each ``verify()`` opening its own store, as 50 customers saving at the same
moment would. Rounds alternate one verification and a batch of 50; medians.

The same measurement with the raw SDK (a new boto3 client per put + delete, 50 threads) shows
what the SDK and the server allow on this machine, so the framework's share can be read off.

Target: 50 at once <= 3x the time of one.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import Row, median, ms, write
from bench_verify import _SAMPLE_BODY, raw_boto3, raw_key

from destinations import parse_destination, verify
from tests.emulators.servers import MotoServer

N = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 3 if args.quick else 15

    with MotoServer() as moto:
        key_id, secret = moto.enable_auth()
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        moto.create_bucket(bucket)
        dests = [
            parse_destination(
                {
                    "name": f"customer {i}",
                    "enabled": True,
                    "type": "s3compatible",
                    "s3_access_key_id": key_id,
                    "s3_secret_access_key": secret,
                    "s3_bucket_name": bucket,
                    "s3_endpoint": moto.endpoint,
                    "s3_region": "us-east-1",
                    "s3_path_prefix": f"customers/{i:02d}/%DATE%",
                }
            )
            for i in range(N)
        ]

        def raw_cycle() -> None:
            raw = raw_boto3(
                key_id, secret, bucket, "us-east-1", "path", "when_required", moto.endpoint
            )
            try:
                k = raw_key()
                raw.put(k, _SAMPLE_BODY)
                raw.delete(k)
            finally:
                raw.close()

        pool = ThreadPoolExecutor(N, thread_name_prefix="bench")

        def batch(fns: list[Callable[[], Any]]) -> None:
            for f in [pool.submit(fn) for fn in fns]:
                f.result()

        sides: dict[str, Callable[[], None]] = {
            "verify_one": lambda: verify(dests[0]),
            "verify_50": lambda: batch([lambda d=d: verify(d) for d in dests]),
            "raw_one": raw_cycle,
            "raw_50": lambda: batch([raw_cycle] * N),
        }
        for fn in sides.values():  # warm-up: threads started, models loaded
            fn()
        times: dict[str, list[float]] = {k: [] for k in sides}
        for _ in range(rounds):
            for name, fn in sides.items():
                if name.endswith("_one"):
                    best = float("inf")
                    for _ in range(3):
                        started = time.perf_counter()
                        fn()
                        best = min(best, time.perf_counter() - started)
                    times[name].append(best)
                else:
                    started = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - started)
        pool.shutdown()

    one, fifty = median(times["verify_one"]), median(times["verify_50"])
    raw_one, raw_fifty = median(times["raw_one"]), median(times["raw_50"])
    ratio, raw_ratio = fifty / one, raw_fifty / raw_one
    rows = [
        Row(
            f"{N} destinations verified at once vs one (moto, s3compatible)",
            ms(fifty),
            ms(one),
            f"{ratio:.1f}x the time of one",
            "<= 3x",
            ratio <= 3,
        ),
        Row(
            f"the same with the raw SDK: {N} put+delete at once vs one (new client each)",
            ms(raw_fifty),
            ms(raw_one),
            f"{raw_ratio:.1f}x the time of one",
            "none (what SDK + server allow)",
            None,
        ),
        Row(
            f"{N} at once: verify vs raw SDK",
            ms(fifty),
            ms(raw_fifty),
            f"{fifty / raw_fifty:.2f}x the time",
            "none (the framework's share)",
            None,
        ),
    ]
    write(
        Path(args.out),
        "concurrency",
        rows,
        rounds=rounds,
        times_ms={k: [round(t * 1e3, 2) for t in v] for k, v in times.items()},
    )


if __name__ == "__main__":
    main()
