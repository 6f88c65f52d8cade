"""With a broker configured, ``POST /deliveries`` fans out to real ``destinations worker``
processes (RabbitMQ, PostgreSQL shared by the API and the workers): the workers write the
same per-destination rows the API answers from, the last one makes the delivery final, and
the API's runner sends the signed completion event."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from destinations.api import create_api_key, create_app
from tests.api.deliveries_support import FileServer, Receiver, wait_for
from tests.delivery.conftest import TEMPLATE, s3_reader
from tests.emulators.fixtures import MotoHandle
from tests.postgres import fresh_schema
from tests.scaleout.conftest import RABBITMQ_URL, Broker, Database, Workers, _reachable


@pytest.fixture
def rabbitmq() -> Iterator[Broker]:
    _reachable(RABBITMQ_URL)
    broker = Broker("rabbitmq", RABBITMQ_URL, f"destinations-test-{os.urandom(5).hex()}")
    yield broker
    broker.cleanup()


@pytest.fixture
def database() -> Iterator[Database]:
    with fresh_schema("destinations_dlv_celery") as url:
        db = Database(url)
        yield db
        db.engine.dispose()


def test_a_delivery_fans_out_to_the_workers_and_is_answered_from_the_same_rows(
    rabbitmq: Broker,
    database: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    moto_server: MotoHandle,
) -> None:
    monkeypatch.setenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", "1")
    monkeypatch.setenv("DESTINATIONS_QUEUE", rabbitmq.queue)
    monkeypatch.setenv("DESTINATIONS_WEBHOOK_RETRY_INITIAL", "0.05")
    workers = Workers(rabbitmq, database, tmp_path)
    files_server = FileServer()
    receiver = Receiver()
    try:
        workers.start("w1")
        file_root = tmp_path / "files"
        file_root.mkdir()
        local_root = tmp_path / "local-root"
        local_root.mkdir()
        (file_root / "rows.jsonl").write_bytes(b'{"r": 1}\n' * 500)
        files_server.files["part.csv"] = b"a,b\n1,2\n"
        files_server.fail["part.csv"] = [503]  # the worker's Celery retry fetches it again
        bucket = f"dlv-celery-{os.urandom(4).hex()}"
        moto_server.create_bucket(bucket)
        app = create_app(database_url=database.url, encryption_keys=[database.key],
                         local_root=local_root, file_root=file_root, broker_url=rabbitmq.url)
        key = create_api_key("celery-api", database_url=database.url)
        params = {"api_key": key}
        with TestClient(app) as client:
            assert app.state.deliveries.mode == "celery"
            moto = client.post("/destinations", params=params, json={
                "name": "moto", "enabled": True, "type": "s3compatible",
                "s3_access_key_id": moto_server.access_key_id,
                "s3_secret_access_key": moto_server.secret_access_key,
                "s3_bucket_name": bucket, "s3_endpoint": moto_server.endpoint,
                "s3_region": "us-east-1", "s3_path_prefix": TEMPLATE,
            }).json()["destination"]["id"]
            local = client.post("/destinations", params=params, json={
                "name": "local", "enabled": True, "type": "local", "local_directory": ".",
            }).json()["destination"]["id"]
            receiver.secret = client.put("/webhooks", params=params,
                                         json={"url": receiver.url}).json()["webhook"]["secret"]
            r = client.post("/deliveries", params=params, json={
                "collection_id": "c", "collection_name": "Celery", "result_set_id": "rs-celery",
                "files": [{"name": "rows.jsonl", "path": "rows.jsonl"},
                          {"name": "part.csv", "url": files_server.url("part.csv")}],
                "destination_ids": [moto, local],
            })
            assert r.status_code == 202, r.text
            delivery_id = r.json()["delivery"]["id"]

            def done() -> Any:
                d = client.get(f"/deliveries/{delivery_id}", params=params).json()["delivery"]
                return d if d["status"] in ("success", "partial", "failed") else None

            delivery = wait_for(done, 90)
            assert delivery["status"] == "success", (delivery, workers.logs())
            by_id = {t["destination_id"]: t["destination_status"] for t in delivery["destinations"]}
            read = s3_reader(moto_server.s3_client(), bucket)
            rows = (file_root / "rows.jsonl").read_bytes()
            k_rows, k_part = by_id[moto]["keys"]
            assert read(k_rows) == rows and read(k_part) == files_server.files["part.csv"]
            local_dir = next(p for p in local_root.iterdir() if p.is_dir())
            assert (local_dir / by_id[local]["keys"][0]).read_bytes() == rows
            assert any("started on w1@" in e["text"] for e in by_id[moto]["log"])
            assert max(s["attempts"] for s in by_id.values()) >= 2  # the 503 was retried
            assert files_server.requests["part.csv"] >= 3  # fetched by each task, 503 once
            wait_for(lambda: receiver.accepted[delivery_id] == 1, 30)
            time.sleep(0.3)
            assert dict(receiver.accepted) == {delivery_id: 1}
            assert receiver.bad_signatures == 0
    finally:
        workers.stop()
        files_server.close()
        receiver.close()
