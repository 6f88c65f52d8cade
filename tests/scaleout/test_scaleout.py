"""Scale-out against the real Redis and RabbitMQ on this machine, with real worker processes:
fan-out to three destinations (one injecting transient 503s), every file exactly once and
byte-identical, statuses stored, no secret on the broker, and a worker SIGKILLed mid-task."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from destinations import ResultFile, ResultSet, object_key, parse_destination
from destinations.celery import FileRef, ResultSetRef, create_celery, fan_out
from tests.delivery.faulty_proxy import FaultyProxy
from tests.emulators.fixtures import MotoHandle
from tests.scaleout.conftest import Broker, Database, Workers

TEMPLATE = "scaleout/%COLLECTION_NAME%/%DATE%/%RESULT_SET_ID%"
NOW = datetime(2026, 5, 20, 23, 59, 58, 123456, tzinfo=UTC)


@pytest.fixture(scope="module")
def bucket(moto_server: MotoHandle) -> str:
    name = f"dest-scaleout-{uuid.uuid4().hex[:10]}"
    moto_server.create_bucket(name)
    return name


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server for files referenced by URL."""
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def s3compatible(moto: MotoHandle, bucket: str, endpoint: str, name: str) -> Any:
    return parse_destination(
        {
            "name": name,
            "enabled": True,
            "type": "s3compatible",
            "s3_access_key_id": moto.access_key_id,
            "s3_secret_access_key": moto.secret_access_key,
            "s3_bucket_name": bucket,
            "s3_endpoint": endpoint,
            "s3_region": "us-east-1",
            "s3_path_prefix": TEMPLATE,
        }
    )


def files_of(rs_index: int) -> dict[str, bytes]:
    marker = f"payload-{rs_index}-{uuid.uuid4().hex}"
    return {
        "rows.jsonl": b"".join(
            json.dumps({"rs": rs_index, "row": i, "m": marker}).encode() + b"\n" for i in range(40)
        ),
        "summary.csv": f"rs,marker\n{rs_index},{marker}\n".encode(),
    }


def listed(raw: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for page in raw.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = raw.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def decoded(raw: bytes) -> bytes:
    """A Redis entry is a JSON envelope with a base64 body: check both forms."""
    try:
        envelope = json.loads(raw)
        return raw + base64.b64decode(envelope["body"])
    except (ValueError, KeyError, TypeError):
        return raw


def test_fan_out_50_result_sets_to_three_destinations_on_two_workers(
    broker: Broker,
    postgres_url: str,
    make_database: Callable[[str], Database],
    make_workers: Callable[[Broker, Database], Workers],
    moto_server: MotoHandle,
    bucket: str,
    file_server: tuple[str, Path],
    tmp_path: Path,
) -> None:
    db = make_database(postgres_url)
    local_dir = tmp_path / "local-out"
    local_dir.mkdir()
    run = uuid.uuid4().hex[:8]
    with FaultyProxy(moto_server.endpoint, seed=8, error=0.12) as proxy:
        direct = db.store(s3compatible(moto_server, bucket, moto_server.endpoint, f"direct-{run}"))
        faulty = db.store(s3compatible(moto_server, bucket, proxy.endpoint, f"faulty-{run}"))
        local = db.store(
            parse_destination(
                {
                    "name": "local",
                    "enabled": True,
                    "type": "local",
                    "local_directory": str(local_dir),
                    "local_path_prefix": TEMPLATE,
                }
            )
        )
        disabled = db.store(
            parse_destination(
                {
                    "name": "off",
                    "enabled": False,
                    "type": "local",
                    "local_directory": str(local_dir),
                    "local_path_prefix": "off",
                }
            )
        )
        app = create_celery(
            broker.url,
            db.url,
            queue=broker.queue,
            encryption_keys=db.key,
            transport_options=broker.transport_options,
        )
        base_url, served = file_server
        expected: dict[str, dict[str, bytes]] = {}  # result set id -> {file name: bytes}
        collection = f"Daily {run}"
        try:
            # Workers are not running yet: every message waits on the broker to be inspected.
            for i in range(50):
                rs_id = f"rs-{run}-{i:02d}"
                data = files_of(i)
                expected[rs_id] = data
                if i % 5 == 0:  # one in five by URL, the rest by shared path
                    (served / rs_id).mkdir()
                    refs = []
                    for name, body in data.items():
                        (served / rs_id / name).write_bytes(body)
                        refs.append(FileRef(name, url=f"{base_url}/{rs_id}/{name}"))
                    fanned = fan_out(
                        app,
                        ResultSetRef("c-1", collection, rs_id, NOW, refs),
                        [direct, faulty, local, disabled, "no-such-id"],
                        account_id=db.account_id,
                    )
                else:
                    directory = tmp_path / "shared" / rs_id
                    directory.mkdir(parents=True)
                    files = []
                    for name, body in data.items():
                        (directory / name).write_bytes(body)
                        files.append(ResultFile(name, directory / name))
                    fanned = fan_out(
                        app,
                        ResultSet("c-1", collection, rs_id, files),
                        [direct, faulty, local, disabled, "no-such-id"],
                        now=NOW,
                        account_id=db.account_id,
                    )
                assert set(fanned.queued) == {direct, faulty, local}
                assert fanned.skipped == (disabled,)
                assert fanned.missing == ("no-such-id",)

            messages = broker.raw_messages()
            assert len(messages) >= 150
            secrets = [moto_server.secret_access_key.encode(), db.key.encode()]
            for raw in messages:
                body = decoded(raw)
                for secret in secrets:
                    assert secret not in body
                assert b"payload-" not in body  # files travel by reference only
            assert any(b'"now"' in decoded(m) for m in messages)

            workers = make_workers(broker, db)
            workers.start("w1", wait=False)
            workers.start("w2", wait=False)
            workers.wait_ready("w1")
            workers.wait_ready("w2")
            rows = db.wait_final(expected=250, timeout=100, workers=workers)
            workers.stop()
            faults = proxy.faults
        finally:
            app.close()

    by_status: dict[str, int] = {}
    for row in rows:
        by_status[row.status] = by_status.get(row.status, 0) + 1
    assert by_status == {"success": 150, "skipped": 50, "failed": 50}, workers.logs()
    assert all(r.destination_id == "no-such-id" for r in rows if r.status == "failed")
    assert all(r.destination_id == disabled for r in rows if r.status == "skipped")
    assert faults["error"] > 0
    retried = [r for r in rows if r.destination_id == faulty and r.attempts > 1]
    assert retried, "the faulty destination never needed a Celery retry"
    assert all(r.account_id == db.account_id for r in rows)

    # Every file exactly once per destination, byte-identical, at the deterministic key.
    raw = moto_server.s3_client()
    stored = listed(raw, bucket, f"scaleout/{collection}/")
    raw.close()
    want: dict[str, bytes] = {}
    for rs_id, data in expected.items():
        prefix = f"scaleout/{collection}/2026_05_20/{rs_id}"
        for name, body in data.items():
            want[object_key(prefix, name)] = body
    assert stored == want  # the direct and the faulty destination share the bucket and keys
    local_files = {
        str(p.relative_to(local_dir)): p.read_bytes() for p in local_dir.rglob("*") if p.is_file()
    }
    assert local_files == want
    for row in rows:
        if row.status == "success":
            assert sorted(row.keys) == sorted(
                object_key(f"scaleout/{collection}/2026_05_20/{row.result_set_id}", n)
                for n in expected[row.result_set_id]
            )
            assert row.bytes == sum(len(b) for b in expected[row.result_set_id].values())
            assert any("delivered 2 file(s)" in e["text"] for e in row.log)


def test_worker_killed_mid_task_is_redelivered(
    broker: Broker,
    sqlite_url: str,
    make_database: Callable[[str], Database],
    make_workers: Callable[[Broker, Database], Workers],
    moto_server: MotoHandle,
    bucket: str,
    tmp_path: Path,
) -> None:
    db = make_database(sqlite_url)
    run = uuid.uuid4().hex[:8]
    body = b"slow bytes " * 5000
    path = tmp_path / "slow.bin"
    path.write_bytes(body)
    rs = ResultSet("c-2", f"Killed {run}", "rs-killed", [ResultFile("slow.bin", path)])
    # Every answer through the proxy waits 3 s: the kill lands while the put is in flight.
    with FaultyProxy(moto_server.endpoint, slow=1.0, delay=3.0) as proxy:
        dest = db.store(s3compatible(moto_server, bucket, proxy.endpoint, f"slow-{run}"))
        app = create_celery(
            broker.url,
            db.url,
            queue=broker.queue,
            encryption_keys=db.key,
            transport_options=broker.transport_options,
        )
        try:
            workers = make_workers(broker, db)
            workers.start("doomed")
            fan_out(app, rs, [dest], now=NOW)
            deadline = time.monotonic() + 20
            while not any(r.status == "delivering" for r in db.statuses()):
                assert time.monotonic() < deadline, workers.logs()
                time.sleep(0.05)
            while not proxy.requests:  # the put has reached the (slow) server
                assert time.monotonic() < deadline, workers.logs()
                time.sleep(0.05)
            workers.kill("doomed")
            (row,) = db.statuses()
            assert row.status == "delivering"
            assert row.attempts == 1

            workers.start("rescuer")
            rows = db.wait_final(expected=1, timeout=40, workers=workers)
            workers.stop()
        finally:
            app.close()

    (row,) = rows
    assert row.status == "success", workers.logs()
    assert row.attempts >= 2  # the killed attempt and the redelivered one
    assert "rescuer@" in json.dumps(row.log)
    key = object_key(f"scaleout/Killed {run}/2026_05_20/rs-killed", "slow.bin")
    assert row.keys == (key,)
    raw = moto_server.s3_client()
    assert listed(raw, bucket, f"scaleout/Killed {run}/") == {key: body}
    raw.close()
