"""Delivery over HTTP: what ``POST /deliveries`` costs against the alternatives.

1. **Accepted deliveries per second**: ``POST /deliveries`` (one file under the file root to
   one enabled ``local`` destination: validated, stored, answered 202; the runner delivers
   them in the same process meanwhile) vs ``POST /destinations`` (a disabled ``local``
   destination: validated and stored, nothing verified) on the same ``destinations serve``
   (SQLite). A minimal asyncio HTTP/1.1 client, 16 keep-alive connections; the backlog of
   deliveries is drained before the next round. Best round of each. Reported, no target.
2. **Accept → completion** of a 3-file result set (1, 2 and 4 MiB) to 3 destinations on
   three real servers (moto ``s3compatible``, azurite ``azure``, the OSS double ``oss``):
   from ``POST /deliveries`` until its signed ``delivery.completed`` event reaches a receiver
   in this process (how a client learns it; no polling load on the server), vs calling
   ``destinations.deliver()`` directly in this process with the same files, destinations
   and concurrency (8). Interleaved rounds, medians compared. Target <= 1.2x. The server's
   own accept-to-final time (``finished_at - created_at``) is reported beside it.

Run: ``python benchmarks/bench_deliveries.py`` (``--quick``: fewer requests and rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from _common import ROOT, Row, exchange, median, ms, write

CONNECTIONS = 16
MiB = 1024 * 1024
SIZES = {"a.jsonl": 1 * MiB, "b.csv": 2 * MiB, "c.zip": 4 * MiB}
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _call(url: str, body: Any = None, method: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with _OPENER.open(request, timeout=60) as response:
        return json.loads(response.read())


async def _post_load(
    base: str, path: str, body: bytes, count: int, expect: int
) -> tuple[float, int]:
    """POSTs/s over ``count`` requests on CONNECTIONS keep-alive connections, and how many
    did not answer ``expect``."""
    host, port = base.removeprefix("http://").split(":")
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    done = 0
    failures = 0

    connections = [await asyncio.open_connection(host, int(port)) for _ in range(CONNECTIONS)]
    started = time.perf_counter()

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal done, failures
        while done < count:
            done += 1
            if await exchange(reader, writer, request) != expect:
                failures += 1

    await asyncio.gather(*(worker(r, w) for r, w in connections))
    elapsed = time.perf_counter() - started
    for _, writer in connections:
        writer.close()
    return done / elapsed, failures


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _serve(tmp: Path, db_url: str, file_root: Path, env_extra: dict[str, str]) -> tuple[Any, str]:
    port = _free_port()
    local_root = tmp / "local-root"
    local_root.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESTINATIONS_")}
    env.update(
        DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS="1",
        DESTINATIONS_FILE_ROOT=str(file_root),
        DESTINATIONS_MAX_DESTINATIONS="1000000",
        DESTINATIONS_VERIFICATIONS_PER_MINUTE="0",
        PYTHONPATH=str(ROOT),
        **env_extra,
    )
    log = open(tmp / "serve.log", "ab")  # noqa: SIM115 - the child keeps it
    process = subprocess.Popen(
        [sys.executable, "-m", "destinations", "serve", "--port", str(port), "--database-url",
         db_url, "--local-root", str(local_root)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
    )
    log.close()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            _call(f"{base}/openapi.json")
            return process, base
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp / "serve.log").read_text()[-2000:]) from None
            time.sleep(0.1)


def _api_key(db_url: str) -> str:
    from destinations.api import create_api_key

    return create_api_key("bench", database_url=db_url)


def _drain(base: str, key: str) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        open_ = sum(
            _call(f"{base}/deliveries?api_key={key}&status={s}")["total_results"]
            for s in ("queued", "delivering")
        )
        if open_ == 0:
            return
        time.sleep(0.2)
    raise RuntimeError("the delivery backlog did not drain in 600 s")


def accept_rate(requests: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-deliveries-") as name:
        tmp = Path(name)
        file_root = tmp / "files"
        file_root.mkdir()
        (file_root / "a.json").write_bytes(b'{"a": 1}\n')
        db_url = f"sqlite:///{tmp / 'bench.db'}"
        process, base = _serve(tmp, db_url, file_root, {})
        try:
            key = _api_key(db_url)
            dest = _call(f"{base}/destinations?api_key={key}", {
                "name": "sink", "enabled": True, "type": "local", "local_directory": ".",
                "local_path_prefix": "%RESULT_SET_ID%",
            })["destination"]["id"]
            bodies = {
                "deliveries": (json.dumps({
                    "collection_id": "c", "collection_name": "bench", "result_set_id": "rs",
                    "files": [{"name": "a.json", "path": "a.json"}], "destination_ids": [dest],
                }).encode(), 202),
                "destinations": (json.dumps({
                    "name": "b", "enabled": False, "type": "local", "local_directory": ".",
                }).encode(), 200),
            }
            best = {n: 0.0 for n in bodies}
            per_round: dict[str, list[float]] = {n: [] for n in bodies}
            for i in range(rounds):
                order = list(bodies) if i % 2 == 0 else list(bodies)[::-1]
                for n in order:
                    body, expect = bodies[n]
                    rps, failed = asyncio.run(
                        _post_load(base, f"/{n}?api_key={key}", body, requests, expect)
                    )
                    if failed:
                        raise RuntimeError(f"{failed} POST /{n} did not answer {expect}")
                    per_round[n].append(round(rps, 1))
                    best[n] = max(best[n], rps)
                    _drain(base, key)
            done = _call(f"{base}/deliveries?api_key={key}&status=success")["total_results"]
            expected = requests * rounds
            if done != expected:
                raise RuntimeError(f"{done} of {expected} accepted deliveries succeeded")
            return {"best": best, "rounds": per_round, "delivered": done}
        finally:
            process.terminate()
            process.wait(10)


class _Hook:
    """A loopback receiver of completion events: the moment the event arrived is when the
    client learns the delivery is done (no polling load on the server)."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.arrived = threading.Event()
        self.at = 0.0
        self.events: list[Any] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.at = time.perf_counter()
                owner.events.append(json.loads(body))
                self.send_response(204)
                self.end_headers()
                owner.arrived.set()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def completion(rounds: int) -> dict[str, Any]:
    from destinations import ResultFile, ResultSet, deliver, parse_destination
    from tests.emulators.oss_double import OssDouble
    from tests.emulators.servers import (
        AZURITE_ACCOUNT_KEY,
        AZURITE_ACCOUNT_NAME,
        MOTO_BOOTSTRAP_KEY,
        MOTO_BOOTSTRAP_SECRET,
        Azurite,
        MotoServer,
    )

    oss_key, oss_secret, oss_bucket = "LTAI5tBenchKey", "bench-oss-secret", "bench-oss"
    with tempfile.TemporaryDirectory(prefix="bench-deliveries-") as name, MotoServer() as moto, \
            Azurite() as azurite, OssDouble({oss_key: oss_secret}, buckets=[oss_bucket]) as oss:
        tmp = Path(name)
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        moto.create_bucket(bucket)
        container = f"bench-{uuid.uuid4().hex[:8]}"
        azurite.create_container(container)
        file_root = tmp / "files"
        file_root.mkdir()
        for n, size in SIZES.items():
            (file_root / n).write_bytes(os.urandom(size))
        params = [
            {"name": "moto", "enabled": True, "type": "s3compatible",
             "s3_access_key_id": MOTO_BOOTSTRAP_KEY, "s3_secret_access_key": MOTO_BOOTSTRAP_SECRET,
             "s3_bucket_name": bucket, "s3_endpoint": moto.endpoint, "s3_region": "us-east-1",
             "s3_path_prefix": "%RESULT_SET_ID%"},
            {"name": "azurite", "enabled": True, "type": "azure",
             "azure_account_name": AZURITE_ACCOUNT_NAME, "azure_account_key": AZURITE_ACCOUNT_KEY,
             "azure_container_name": container, "azure_endpoint": azurite.blob_endpoint,
             "azure_path_prefix": "%RESULT_SET_ID%"},
            {"name": "oss", "enabled": True, "type": "oss", "oss_access_key": oss_key,
             "oss_secret_key": oss_secret, "oss_bucket_name": oss_bucket,
             "oss_region_id": "oss-cn-hangzhou", "oss_endpoint": oss.endpoint,
             "oss_path_prefix": "%RESULT_SET_ID%"},
        ]
        db_url = f"sqlite:///{tmp / 'bench.db'}"
        process, base = _serve(tmp, db_url, file_root, {})
        hook = _Hook()
        try:
            key = _api_key(db_url)
            ids = [_call(f"{base}/destinations?api_key={key}", p)["destination"]["id"]
                   for p in params]
            destinations = [parse_destination(p) for p in params]
            files = [{"name": n, "path": n} for n in SIZES]

            _call(f"{base}/webhooks?api_key={key}", {"url": hook.url}, method="PUT")
            server_side: list[float] = []

            def served(i: int) -> float:
                hook.arrived.clear()
                started = time.perf_counter()
                delivery = _call(f"{base}/deliveries?api_key={key}", {
                    "collection_id": "c", "collection_name": "bench",
                    "result_set_id": f"served-{i}", "files": files, "destination_ids": ids,
                })["delivery"]
                if not hook.arrived.wait(120):
                    raise RuntimeError("no completion event in 120 s")
                elapsed = hook.at - started
                event = hook.events[-1]["delivery"]
                if event["id"] != delivery["id"] or event["status"] != "success":
                    raise RuntimeError(f"served delivery: {event}")
                server_side.append(_seconds(event["finished_at"]) - _seconds(event["created_at"]))
                return elapsed

            def direct(i: int) -> float:
                started = time.perf_counter()
                result_set = ResultSet("c", "bench", f"direct-{i}", [
                    ResultFile(n, file_root / n) for n in SIZES
                ])
                report = deliver(result_set, destinations, concurrency=8)
                elapsed = time.perf_counter() - started
                if not report.ok:
                    raise RuntimeError(f"direct delivery failed: {report.statuses}")
                return elapsed

            served(-1)  # warm both sides (imports, first connections)
            direct(-1)
            times: dict[str, list[float]] = {"served": [], "direct": []}
            for i in range(rounds):
                order = [("served", served), ("direct", direct)]
                for side, run in order if i % 2 == 0 else order[::-1]:
                    times[side].append(run(i))
            return {
                "times": {k: [round(t, 4) for t in v] for k, v in times.items()},
                "server_side_accept_to_final": [round(t, 4) for t in server_side],
            }
        finally:
            process.terminate()
            process.wait(10)
            hook.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    requests = 150 if args.quick else 600
    rounds = 2 if args.quick else 5

    rate = accept_rate(requests, 2 if args.quick else 3)
    done = completion(rounds)
    deliveries_rps, destinations_rps = rate["best"]["deliveries"], rate["best"]["destinations"]
    served_s, direct_s = median(done["times"]["served"]), median(done["times"]["direct"])
    ratio = served_s / direct_s
    rows = [
        Row(
            "accepted POST /deliveries vs POST /destinations per second, same serve (SQLite)",
            f"{deliveries_rps:.0f} deliveries/s",
            f"{destinations_rps:.0f} creates/s",
            f"{deliveries_rps / destinations_rps:.2f}x the requests/s",
            "reported",
            None,
            f"{requests} requests x {CONNECTIONS} connections, best round; every accepted "
            f"delivery then succeeded ({rate['delivered']})",
        ),
        Row(
            "accept -> completion, 3 files (1+2+4 MiB) to moto + azurite + OSS double",
            f"{ms(served_s)} POST /deliveries until its event",
            f"{ms(direct_s)} deliver() directly",
            f"{ratio:.2f}x the time",
            "<= 1.2x",
            ratio <= 1.2,
            f"medians of {rounds} interleaved rounds, until the completion event arrived; "
            f"server-side accept to final {ms(median(done['server_side_accept_to_final']))}",
        ),
    ]
    write(Path(args.out), "deliveries", rows, accept=rate, completion=done)


if __name__ == "__main__":
    main()
