"""Upload and verification on a real S3 server (SeaweedFS) and on a client-cost sink, against
raw boto3, obstore and s5cmd, in one run, interleaved.

Servers: SeaweedFS (``weed mini``, tests/emulators/seaweedfs.py) and ``benchmarks/sink.py``
(an S3-speaking server that discards every byte: it is NOT a store; it shows what each client
costs; its object and byte counts are checked after every run). 8 uploads in flight, 8 MiB
parts, the same files for every client. Each measurement runs in a fresh child process
(``--worker``), so client CPU (user+sys of that process, and of s5cmd as its child) and peak
RSS growth (VmHWM after setup vs after the run) are the client's alone. Rounds rotate the
client order; the table gives medians, and the spread (min-max) in the JSON.

Workloads: 1,000 x 10 KiB; 100 x 1 MiB; 1 x 256 MiB; 8 x 32 MiB (large files side by side:
peak RSS growth); verify cycle (new store, put, delete)
vs obstore's own new store + put + delete; first store in a fresh process (import, parse,
open) vs obstore's import + store, every process with bytecode caches (as installed
packages have them); 50 destinations verified at once vs one.

Run: ``nice python benchmarks/bench_native.py --out benchmarks/results`` (``--quick``: one
round, smaller counts). Full run: 4 rounds, each client once in each position.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import _common
from _common import Row

HERE = Path(__file__).resolve().parent
PART = 8 * 1024 * 1024
INFLIGHT = 8
CLIENTS = ("destinations", "boto3", "obstore", "s5cmd")


# --- worker (runs in a fresh child process) ---------------------------------------------------


def _hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _destination(spec: dict[str, Any], name: str, **extra: Any) -> Any:
    """The ``s3compatible`` destination destinations delivers to in this benchmark."""
    import destinations

    return destinations.parse_destination(
        {
            "name": name,
            "enabled": True,
            "type": "s3compatible",
            "s3_endpoint": spec["endpoint"],
            "s3_bucket_name": spec["bucket"],
            "s3_access_key_id": spec["key"],
            "s3_secret_access_key": spec["secret"],
            "s3_region": "us-east-1",
            **extra,
        }
    )


def _obstore(spec: dict[str, Any], **extra: Any) -> Any:
    """obstore's own store for the same bucket, no retries (the peer side)."""
    from obstore.store import S3Store

    return S3Store(
        spec["bucket"],
        endpoint=spec["endpoint"],
        access_key_id=spec["key"],
        secret_access_key=spec["secret"],
        region="us-east-1",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
        retry_config={"max_retries": 0},
        **extra,
    )


def _upload(spec: dict[str, Any]) -> dict[str, Any]:
    client, endpoint, bucket, files = (
        spec["client"],
        spec["endpoint"],
        spec["bucket"],
        spec["files"],
    )
    key, secret = spec["key"], spec["secret"]
    prefix = f"run-{uuid.uuid4().hex[:8]}"
    if client == "destinations":
        from destinations import ResultFile, ResultSet, StoreOptions, deliver

        dest = _destination(spec, "bench", s3_path_prefix=prefix)
        options = StoreOptions(
            timeout=60, multipart_threshold=PART, part_size=PART, max_connections=INFLIGHT
        )
        rs = ResultSet("c", "bench", "rs", [ResultFile(Path(f).name, Path(f)) for f in files])
        before, cpu0, t0 = _hwm(), _cpu(), time.perf_counter()
        report = deliver(rs, [dest], concurrency=INFLIGHT, options=options)
        wall = time.perf_counter() - t0
        assert report.ok, report
    elif client == "boto3":
        from concurrent.futures import ThreadPoolExecutor

        from boto3.s3.transfer import TransferConfig

        from tests.emulators.servers import s3_client

        s3 = s3_client(
            endpoint,
            key,
            secret,
            max_pool_connections=INFLIGHT,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        config = TransferConfig(
            multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=INFLIGHT
        )

        def one(path: str) -> None:
            s3.upload_file(path, bucket, f"{prefix}/{Path(path).name}", Config=config)

        before, cpu0, t0 = _hwm(), _cpu(), time.perf_counter()
        if len(files) == 1:
            one(files[0])
        else:
            with ThreadPoolExecutor(INFLIGHT) as pool:
                list(pool.map(one, files))
        wall = time.perf_counter() - t0
    elif client == "obstore":
        from concurrent.futures import ThreadPoolExecutor

        import obstore

        store = _obstore(spec)

        def one(path: str) -> None:
            obstore.put(
                store,
                f"{prefix}/{Path(path).name}",
                Path(path),
                chunk_size=PART,
                max_concurrency=INFLIGHT,
            )

        before, cpu0, t0 = _hwm(), _cpu(), time.perf_counter()
        if len(files) == 1:
            one(files[0])
        else:
            with ThreadPoolExecutor(INFLIGHT) as pool:
                list(pool.map(one, files))
        wall = time.perf_counter() - t0
    else:  # s5cmd
        folder = str(Path(files[0]).parent)
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": "us-east-1",
        }
        argv = [
            shutil.which("s5cmd") or str(Path(sys.executable).parent / "s5cmd"),
            "--endpoint-url",
            endpoint,
            "--numworkers",
            str(INFLIGHT),
            "cp",
            "--concurrency",
            str(INFLIGHT),
            "--part-size",
            str(PART // (1024 * 1024)),
            f"{folder}/*",
            f"s3://{bucket}/{prefix}/",
        ]
        before, cpu0, t0 = _hwm(), _cpu(), time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        wall = time.perf_counter() - t0
    return {"wall": wall, "cpu": _cpu() - cpu0, "rss": max(0, _hwm() - before)}


def _verify(spec: dict[str, Any]) -> dict[str, Any]:
    n = spec["n"]
    times: list[float] = []
    if spec["client"] == "destinations":
        import destinations

        def dest(i: int) -> Any:
            return _destination(spec, f"bench {i}")

        if spec.get("fanout"):
            from concurrent.futures import ThreadPoolExecutor

            dests = [dest(i) for i in range(spec["fanout"])]
            destinations.verify(dests[0], timeout=30)  # warm
            for _ in range(n):
                t0 = time.perf_counter()
                with ThreadPoolExecutor(len(dests)) as pool:
                    list(pool.map(lambda d: destinations.verify(d, timeout=30), dests))
                times.append(time.perf_counter() - t0)
            return {"times": times}
        d = dest(0)
        destinations.verify(d, timeout=30)
        for _ in range(n):
            t0 = time.perf_counter()
            destinations.verify(d, timeout=30)
            times.append(time.perf_counter() - t0)
        return {"times": times}
    import obstore

    def cycle() -> None:
        store = _obstore(spec, disable_bulk_delete=True)
        probe = f"probe-{uuid.uuid4().hex}.txt"
        obstore.put(store, probe, b"destinations verification probe\n", use_multipart=False)
        obstore.delete(store, probe)

    cycle()
    for _ in range(n):
        t0 = time.perf_counter()
        cycle()
        times.append(time.perf_counter() - t0)
    return {"times": times}


_FIRST = {
    "destinations": (
        "import time; t0 = time.perf_counter(); import destinations; "
        "d = destinations.parse_destination({'name': 'n', 'enabled': True, "
        "'type': 's3compatible', 's3_endpoint': 'https://s3.example.com', "
        "'s3_bucket_name': 'abc', 's3_access_key_id': 'AKIAEXAMPLE0001', "
        "'s3_secret_access_key': 'x'}); s = destinations.open_store(d); "
        "print(time.perf_counter() - t0, type(s).__name__)"
    ),
    "obstore": (
        "import time; t0 = time.perf_counter(); from obstore.store import S3Store; "
        "s = S3Store('abc', endpoint='https://s3.example.com', access_key_id='AKIAEXAMPLE0001', "
        "secret_access_key='x', region='us-east-1'); print(time.perf_counter() - t0, 'S3Store')"
    ),
    "boto3": (
        "import time; t0 = time.perf_counter(); import boto3; "
        "c = boto3.session.Session().client('s3', endpoint_url='https://s3.example.com', "
        "aws_access_key_id='AKIAEXAMPLE0001', aws_secret_access_key='x', "
        "region_name='us-east-1'); print(time.perf_counter() - t0, 'client')"
    ),
    "available_types": (
        "import time; t0 = time.perf_counter(); import destinations; "
        "destinations.available_types(); print(time.perf_counter() - t0, 'types')"
    ),
}


def worker(spec: dict[str, Any]) -> None:
    result = _verify(spec) if spec["kind"] == "verify" else _upload(spec)
    print(json.dumps(result))


# --- driver -------------------------------------------------------------------------------------


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    done = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker {spec['client']} failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _sink_stats(endpoint: str, reset: bool = False) -> dict[str, int]:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        endpoint + ("/__reset" if reset else "/__stats"), method="POST" if reset else "GET"
    )
    with opener.open(request, timeout=10) as answer:
        body = answer.read()
    return json.loads(body) if body else {}


def _files(root: Path, count: int, size: int, tag: str) -> list[str]:
    folder = root / tag
    folder.mkdir()
    paths = []
    for i in range(count):
        path = folder / f"f{i:04d}.bin"
        with path.open("wb") as out:
            left = size
            while left:
                n = min(left, 8 * 1024 * 1024)
                out.write(os.urandom(n))
                left -= n
        paths.append(str(path))
    return paths


def spread(values: list[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker")
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    from tests.emulators.seaweedfs import SeaweedFS
    from tests.emulators.servers import free_port, wait_for_http

    rounds = 1 if args.quick else 4  # each client once in each position of the order
    scale = 10 if args.quick else 1
    weed = SeaweedFS()
    weed.start()
    sink_port = free_port()
    sink = subprocess.Popen([sys.executable, str(HERE / "sink.py"), str(sink_port)])
    sink_url = f"http://127.0.0.1:{sink_port}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-native-"))
    results: dict[str, Any] = {}
    try:
        wait_for_http(sink_url + "/__stats", process=sink, name="sink")
        bucket = weed.create_bucket()
        targets = {
            "SeaweedFS": (weed.endpoint, bucket, weed.access_key_id, weed.secret_access_key),
            "sink": (sink_url, "sink", "AKIASINK0000", "sink-secret"),
        }
        workloads = {
            "1,000 x 10 KiB": _files(tmp, 1000 // scale, 10 * 1024, "small"),
            "100 x 1 MiB": _files(tmp, 100 // scale, 1024 * 1024, "medium"),
            "1 x 256 MiB": _files(tmp, 1, (256 // scale) * 1024 * 1024, "large"),
            "8 x 32 MiB": _files(tmp, 8, (32 // scale) * 1024 * 1024, "eight"),
        }
        # Warm-up, not recorded: a new bucket's first writes (SeaweedFS assigns its volumes)
        # would otherwise land on whichever client goes first.
        for endpoint, bkt, key, secret in targets.values():
            for client in CLIENTS:
                _child(
                    {
                        "kind": "upload",
                        "client": client,
                        "endpoint": endpoint,
                        "bucket": bkt,
                        "key": key,
                        "secret": secret,
                        "files": workloads["1,000 x 10 KiB"][:50],
                    }
                )
        for wname, files in workloads.items():
            expected = sum(os.path.getsize(f) for f in files)
            for tname, (endpoint, bkt, key, secret) in targets.items():
                cell: dict[str, list[dict[str, Any]]] = {c: [] for c in CLIENTS}
                for r in range(rounds):
                    order = CLIENTS[r % len(CLIENTS) :] + CLIENTS[: r % len(CLIENTS)]
                    for client in order:
                        if tname == "sink":
                            _sink_stats(endpoint, reset=True)
                        spec = {
                            "kind": "upload",
                            "client": client,
                            "endpoint": endpoint,
                            "bucket": bkt,
                            "key": key,
                            "secret": secret,
                            "files": files,
                        }
                        got = _child(spec)
                        if tname == "sink":
                            stats = _sink_stats(endpoint)
                            assert stats["objects"] == len(files), (client, stats)
                            assert stats["bytes"] == expected, (client, stats, expected)
                        cell[client].append(got)
                        print(wname, tname, client, got, flush=True)
                results[f"{wname} | {tname}"] = cell
        # verification
        endpoint, bkt, key, secret = targets["SeaweedFS"]
        n = 10 if args.quick else 40
        for tname in ("SeaweedFS", "sink"):
            endpoint, bkt, key, secret = targets[tname]
            cell = {}
            for client in ("destinations", "obstore", "destinations", "obstore"):
                spec = {
                    "kind": "verify",
                    "client": client,
                    "endpoint": endpoint,
                    "bucket": bkt,
                    "key": key,
                    "secret": secret,
                    "n": n,
                }
                cell.setdefault(client, []).extend(_child(spec)["times"])
            results[f"verify | {tname}"] = cell
        endpoint, bkt, key, secret = targets["SeaweedFS"]
        fan = {}
        for fanout in (1, 50):
            spec = {
                "kind": "verify",
                "client": "destinations",
                "endpoint": endpoint,
                "bucket": bkt,
                "key": key,
                "secret": secret,
                "n": 3 if not args.quick else 1,
                "fanout": fanout,
            }
            fan[str(fanout)] = _child(spec)["times"]
        results["fanout"] = fan
        first: dict[str, list[float]] = {k: [] for k in _FIRST}
        # With bytecode, as an installed package runs (pip compiles on install): this tree's
        # editable sources otherwise compile on every start when PYTHONDONTWRITEBYTECODE is
        # set (about 20 ms here), while the peers' site-packages have theirs. The cache goes
        # to a temporary prefix, filled by one unrecorded round.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AWS_") and k != "PYTHONDONTWRITEBYTECODE"
        }
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        for code in _FIRST.values():
            subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, env=env)
        for _ in range(rounds + 2):
            for name, code in _FIRST.items():
                out = subprocess.run(
                    [sys.executable, "-c", code],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=env,
                )
                first[name].append(float(out.stdout.split()[0]))
        results["first"] = first
    finally:
        sink.terminate()
        sink.wait(10)
        weed.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    rows = _rows(results, workloads)
    _common.write(args.out, "native", rows, results=results)
    print(report_table(results))


def _med(runs: list[dict[str, Any]], field: str) -> float:
    return statistics.median(r[field] for r in runs)


#: The workloads issue 14 sets a wall-time goal for (the others are reported).
_GOAL_WORKLOADS = ("1,000 x 10 KiB", "100 x 1 MiB", "1 x 256 MiB")


def _rows(results: dict[str, Any], workloads: dict[str, list[str]]) -> list[Row]:
    rows: list[Row] = []
    for wname in workloads:
        for tname in ("SeaweedFS", "sink"):
            cell = results[f"{wname} | {tname}"]
            ours = _med(cell["destinations"], "wall")
            best = min(_med(cell[c], "wall") for c in CLIENTS if c != "destinations")
            goal = wname in _GOAL_WORKLOADS
            rows.append(
                Row(
                    f"{wname}, {tname}",
                    f"{ours:.3f} s",
                    f"fastest peer {best:.3f} s",
                    f"{best / ours:.2f}x",
                    ">= 1.0x" if goal else "reported",
                    best / ours >= 1.0 if goal else None,
                )
            )
    return rows


def report_table(results: dict[str, Any]) -> str:
    head = "| workload | destinations | raw boto3 | obstore | s5cmd |\n|---|---|---|---|---|"
    lines = [head]
    for key, cell in results.items():
        if " | " not in key or key.startswith("verify"):
            continue
        wname, tname = key.split(" | ")
        ours = _med(cell["destinations"], "wall")
        ratios = [f"{ours / _med(cell[c], 'wall'):.2f}" for c in CLIENTS[1:]]
        lines.append(
            f"| {wname}, {tname}: wall-time ratio (destinations {ours:.3f} s) | 1.00 | "
            + " | ".join(ratios)
            + " |"
        )
        files = len(cell["destinations"][0:1]) and None
        cpu = [_med(cell[c], "cpu") for c in CLIENTS]
        lines.append(
            f"| {wname}, {tname}: client CPU (s, median) | "
            + " | ".join(f"{c:.3f}" for c in cpu)
            + " |"
        )
        if wname.startswith(("1 x", "8 x")):
            rss = [_med(cell[c], "rss") / 2**20 for c in CLIENTS]
            lines.append(
                f"| {wname}, {tname}: peak RSS growth (MiB) | "
                + " | ".join(f"{r:.0f}" for r in rss)
                + " |"
            )
        del files
    for tname in ("SeaweedFS", "sink"):
        cell = results[f"verify | {tname}"]
        ours, theirs = statistics.median(cell["destinations"]), statistics.median(cell["obstore"])
        lines.append(
            f"| verify cycle, {tname}: destinations {ours * 1e3:.2f} ms, obstore new "
            f"store+put+delete {theirs * 1e3:.2f} ms (ours / obstore) | "
            f"{ours / theirs:.2f} | — | 1.00 | — |"
        )
    fan = results["fanout"]
    one, fifty = statistics.median(fan["1"]), statistics.median(fan["50"])
    lines.append(
        f"| 50 destinations verified at once vs one (SeaweedFS) | {fifty / one:.1f}x "
        f"({fifty * 1e3:.0f} ms vs {one * 1e3:.1f} ms) | — | — | — |"
    )
    first = {k: statistics.median(v) * 1e3 for k, v in results["first"].items()}
    lines.append(
        f"| first store in a fresh process (import, parse, open) | "
        f"{first['destinations']:.0f} ms | {first['boto3']:.0f} ms (import + client) | "
        f"{first['obstore']:.0f} ms (import + store) | — |"
    )
    lines.append(
        f"| `import destinations; available_types()` | {first['available_types']:.0f} ms"
        " | — | — | — |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
