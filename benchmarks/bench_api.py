"""API throughput: ``GET /destinations`` vs a bare endpoint on the same server and database.

A real ``uvicorn`` process (one worker) serves the production app from ``create_app()``;
this script's ``app_factory`` also mounts, on that same app instance and only here, a bare
route ``GET /bare`` that runs one ``SELECT 1`` on the app's own engine in the threadpool and
returns a small JSON body: the floor for any endpoint that touches the database.
``GET /destinations`` (an account with 10 destinations, one full page) authenticates the key,
counts, and lists a page.

The load generator is a minimal asyncio HTTP/1.1 client (16 keep-alive connections) in this
process, bounded by a request count and a deadline. Rounds alternate the two endpoints; best
round of each.
SQLite (a file) and PostgreSQL (a dedicated schema, dropped afterwards).

Target: ``GET /destinations`` >= 0.5x the requests/s of the bare endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _common import ROOT, Row, exchange, write

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CONNECTIONS = 16
PAGE = 10


def app_factory() -> Any:
    """The production app plus ``GET /bare`` (for uvicorn ``--factory``; benchmark only)."""
    from sqlalchemy import text
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from destinations.api import create_app

    app = create_app(
        database_url=os.environ["BENCH_DATABASE_URL"], local_root=os.environ["BENCH_LOCAL_ROOT"]
    )
    engine = app.state.engine

    def select_one() -> int:
        with engine.connect() as connection:
            value: int = connection.execute(text("SELECT 1")).scalar_one()
            return value

    async def bare(request: Request) -> Response:
        return JSONResponse(
            {"request_info": {"success": True}, "value": await run_in_threadpool(select_one)}
        )

    app.router.routes.append(Route("/bare", bare, methods=["GET"]))
    return app


async def _load(base: str, path: str, requests: int, deadline: float) -> tuple[float, int]:
    """Requests/s over ``requests`` GETs on CONNECTIONS keep-alive connections (or until
    ``deadline`` s), and how many did not answer 200.

    A minimal HTTP/1.1 client on asyncio streams (prebuilt request bytes, responses framed
    by Content-Length): httpx costs about as much CPU per request as the server does, and on
    this 2-core machine the load generator would otherwise be what is measured.
    """
    host, port = base.removeprefix("http://").split(":")
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    done = 0
    failures = 0

    connections = [await asyncio.open_connection(host, int(port)) for _ in range(CONNECTIONS)]
    for reader, writer in connections:  # warm each connection
        await exchange(reader, writer, request)
    started = time.perf_counter()
    stop_at = started + deadline

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal done, failures
        while done < requests and time.perf_counter() < stop_at:
            done += 1
            if await exchange(reader, writer, request) != 200:
                failures += 1

    await asyncio.gather(*(worker(r, w) for r, w in connections))
    elapsed = time.perf_counter() - started
    for _, writer in connections:
        writer.close()
    return done / elapsed, failures


def _call(url: str, body: dict[str, Any] | None = None) -> Any:
    """One request straight to loopback (no environment proxy); the JSON answer."""
    import json
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with opener.open(request, timeout=30) as response:
        return json.loads(response.read())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_database(label: str, url: str, requests: int, rounds: int) -> dict[str, Any]:
    from cryptography.fernet import Fernet

    from destinations.api import create_api_key

    root = Path(tempfile.mkdtemp(prefix="bench-api-"))
    port = _free_port()
    env = {
        **os.environ,
        "BENCH_DATABASE_URL": url,
        "BENCH_LOCAL_ROOT": str(root),
        "DESTINATIONS_ENCRYPTION_KEYS": os.environ.get("DESTINATIONS_ENCRYPTION_KEYS")
        or Fernet.generate_key().decode(),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks"), str(ROOT)]),
    }
    os.environ["DESTINATIONS_ENCRYPTION_KEYS"] = env["DESTINATIONS_ENCRYPTION_KEYS"]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench_api:app_factory",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=root,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _call(f"{base}/openapi.json")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"uvicorn did not start for {label}") from None
                time.sleep(0.1)
        key = create_api_key("bench", database_url=url)
        for i in range(PAGE):
            _call(
                f"{base}/destinations?api_key={key}",
                {
                    "name": f"dest {i}",
                    "type": "local",
                    "enabled": True,
                    "local_directory": ".",  # the account's own directory in the root
                    "local_path_prefix": "exports/%DATE%",
                },
            )
        listing = _call(f"{base}/destinations?api_key={key}")
        assert len(listing["destinations"]) == PAGE, listing
        paths = {"list": f"/destinations?api_key={key}", "bare": "/bare"}
        best = {name: 0.0 for name in paths}
        per_round: dict[str, list[float]] = {name: [] for name in paths}
        failures = 0
        asyncio.run(_load(base, paths["list"], requests // 4, 10))  # warm-up
        asyncio.run(_load(base, paths["bare"], requests // 4, 10))
        for i in range(rounds):
            order = list(paths) if i % 2 == 0 else list(paths)[::-1]
            for name in order:
                rps, failed = asyncio.run(_load(base, paths[name], requests, 30))
                failures += failed
                per_round[name].append(round(rps, 1))
                best[name] = max(best[name], rps)
        if failures:
            raise RuntimeError(f"{failures} requests failed during the {label} run")
        return {"list_rps": best["list"], "bare_rps": best["bare"], "rounds": per_round}
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--postgres-url", default=PG_URL)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    requests = 300 if args.quick else 2000
    rounds = 2 if args.quick else 5

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-api-db-") as tmp:
        results["SQLite"] = run_database("SQLite", f"sqlite:///{tmp}/api.db", requests, rounds)
    if not args.no_postgres:
        from sqlalchemy import create_engine, text

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(args.postgres_url)
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            url = f"{args.postgres_url}?options=-csearch_path%3D{schema}"
            results["PostgreSQL"] = run_database("PostgreSQL", url, requests, rounds)
        finally:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()

    rows = []
    for label, r in results.items():
        ratio = r["list_rps"] / r["bare_rps"]
        rows.append(
            Row(
                f"API GET /destinations vs bare SELECT 1 endpoint, {label}",
                f"{r['list_rps']:.0f} req/s",
                f"{r['bare_rps']:.0f} req/s",
                f"{ratio:.2f}x the requests/s",
                ">= 0.5x",
                ratio >= 0.5,
            )
        )
    write(
        Path(args.out),
        "api",
        rows,
        requests_per_round=requests,
        connections=CONNECTIONS,
        results=results,
    )


if __name__ == "__main__":
    main()
