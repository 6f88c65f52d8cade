"""Delivery over HTTP, in-process (the app and its runner), on SQLite and PostgreSQL,
against the real servers: moto (s3compatible), azurite (azure), the OSS double and local."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.testclient import TestClient

from destinations.api import create_api_key
from destinations.persistence import DeliveryRow, DeliveryStore, NewDelivery
from tests.api.deliveries_support import FileServer, wait_for
from tests.delivery.conftest import (
    OSS_KEY,
    OSS_SECRET,
    TEMPLATE,
    azure_reader,
    make_payload,
    oss_reader,
    s3_reader,
)
from tests.emulators.fixtures import OSS_BUCKET, MotoHandle
from tests.emulators.oss_double import OssDouble
from tests.emulators.servers import AZURITE_ACCOUNT_KEY, AZURITE_ACCOUNT_NAME, Azurite

FINAL = ("success", "partial", "failed")


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every server here is on 127.0.0.1: the operator switch the endpoint guard honours.
    monkeypatch.setenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", "1")
    unset = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "DESTINATIONS_BROKER_URL")
    for name in unset:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def file_root(tmp_path: Path) -> Path:
    root = tmp_path / "file-root"
    root.mkdir()
    return root


@pytest.fixture
def served(
    make_app: Callable[..., Starlette], file_root: Path, database_url: str
) -> Iterator[tuple[TestClient, str]]:
    app = make_app(file_root=file_root)
    key = create_api_key("deliveries", database_url=database_url)
    with TestClient(app) as client:  # the lifespan starts (and stops) the runner
        yield client, key


@pytest.fixture
def files_server() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.close()


def _create(client: TestClient, key: str, params: dict[str, Any]) -> str:
    r = client.post("/destinations", params={"api_key": key}, json=params)
    assert r.status_code == 200, r.text
    destination_id: str = r.json()["destination"]["id"]
    return destination_id


def _submit(client: TestClient, key: str, body: dict[str, Any], **headers: str) -> Any:
    return client.post("/deliveries", params={"api_key": key}, json=body, headers=headers)


def _finished(client: TestClient, key: str, delivery_id: str, timeout: float = 60) -> Any:
    def done() -> Any:
        d = client.get(f"/deliveries/{delivery_id}", params={"api_key": key}).json()["delivery"]
        return d if d["status"] in FINAL else None

    return wait_for(done, timeout)


def _body(files: list[dict[str, str]], ids: list[str] | None = None, rs: str = "rs-1") -> Any:
    body: dict[str, Any] = {
        "collection_id": "c-42",
        "collection_name": "Daily/Products",
        "result_set_id": rs,
        "files": files,
    }
    if ids is not None:
        body["destination_ids"] = ids
    return body


def _local(name: str = "local") -> dict[str, Any]:
    return {
        "name": name,
        "enabled": True,
        "type": "local",
        "local_directory": ".",
        "local_path_prefix": TEMPLATE,
    }


def _local_read(local_root: Path, key: str) -> bytes:
    found = list(local_root.glob(f"*/{key}"))
    assert len(found) == 1, (key, found)
    return found[0].read_bytes()


def test_every_type_at_once_keys_present_and_byte_identical(
    served: tuple[TestClient, str],
    file_root: Path,
    local_root: Path,
    moto_server: MotoHandle,
    azurite: Azurite,
    oss_double: OssDouble,
) -> None:
    client, key = served
    bucket = f"dlv-{os.urandom(5).hex()}"
    moto_server.create_bucket(bucket)
    container = f"dlv-{os.urandom(5).hex()}"
    azurite.create_container(container)
    payload = make_payload(file_root / "rs", "rs-every")
    ids = {
        "s3compatible": _create(client, key, {
            "name": "moto", "enabled": True, "type": "s3compatible",
            "s3_access_key_id": moto_server.access_key_id,
            "s3_secret_access_key": moto_server.secret_access_key,
            "s3_bucket_name": bucket, "s3_endpoint": moto_server.endpoint,
            "s3_region": "us-east-1", "s3_path_prefix": TEMPLATE,
        }),
        "azure": _create(client, key, {
            "name": "azurite", "enabled": True, "type": "azure",
            "azure_account_name": AZURITE_ACCOUNT_NAME, "azure_account_key": AZURITE_ACCOUNT_KEY,
            "azure_container_name": container, "azure_endpoint": azurite.blob_endpoint,
            "azure_path_prefix": TEMPLATE,
        }),
        "oss": _create(client, key, {
            "name": "oss", "enabled": True, "type": "oss", "oss_access_key": OSS_KEY,
            "oss_secret_key": OSS_SECRET, "oss_bucket_name": OSS_BUCKET,
            "oss_region_id": "oss-cn-hangzhou", "oss_endpoint": oss_double.endpoint,
            "oss_path_prefix": TEMPLATE,
        }),
        "local": _create(client, key, _local()),
    }
    files = [{"name": name, "path": f"rs/{name}"} for name in payload.data]
    r = _submit(client, key, _body(files, rs="rs-every"))  # no ids: every enabled destination
    assert r.status_code == 202, r.text
    assert r.json()["request_info"] == {"success": True}
    accepted = r.json()["delivery"]
    assert accepted["status"] == "queued" and accepted["id"].startswith("dlv_")
    assert {d["destination_id"] for d in accepted["destinations"]} == set(ids.values())

    delivery = _finished(client, key, accepted["id"])
    assert delivery["status"] == "success", delivery
    readers: dict[str, Callable[[str], bytes]] = {
        ids["s3compatible"]: s3_reader(moto_server.s3_client(), bucket),
        ids["azure"]: azure_reader(azurite, container),
        ids["oss"]: oss_reader(oss_double),
        ids["local"]: lambda k: _local_read(local_root, k),
    }
    date = delivery["now"][:10].replace("-", "_")
    for target in delivery["destinations"]:
        status = target["destination_status"]
        assert status["status"] == "success", target
        assert status["attempts"] == 1 and status["bytes"] == sum(map(len, payload.data.values()))
        assert {"date_time", "text"} <= set(status["log"][0])
        assert len(status["keys"]) == len(payload.data)
        for k, (name, body) in zip(status["keys"], payload.data.items(), strict=True):
            assert k.startswith(f"deliveries/Daily_Products/{date}/") and k.endswith(name)
            assert readers[target["destination_id"]](k) == body, (target["destination_id"], k)
    assert delivery["files"][0]["path"] == "rs/orders.json"  # as given: no server path
    assert str(file_root) not in str(delivery)


def test_url_files_4xx_fails_naming_the_file_5xx_is_retried(
    served: tuple[TestClient, str], local_root: Path, files_server: FileServer
) -> None:
    client, key = served
    dest = _create(client, key, _local())
    files_server.files["a.jsonl"] = b'{"a": 1}\n' * 100
    files_server.fail["a.jsonl"] = [503, 502]  # two 5xx, then the file
    r = _submit(client, key, _body([{"name": "a.jsonl", "url": files_server.url("a.jsonl") +
                                     "?X-Amz-Signature=abc"}], [dest]))
    assert r.status_code == 202, r.text
    ok = _finished(client, key, r.json()["delivery"]["id"])
    assert ok["status"] == "success", ok
    assert files_server.requests["a.jsonl"] == 3
    (k,) = ok["destinations"][0]["destination_status"]["keys"]
    assert _local_read(local_root, k) == files_server.files["a.jsonl"]
    assert "X-Amz-Signature" not in str(ok)  # a URL's query string is never shown

    r = _submit(client, key, _body([{"name": "gone.csv", "url": files_server.url("gone.csv")}],
                                   [dest], rs="rs-2"))
    failed = _finished(client, key, r.json()["delivery"]["id"])
    assert failed["status"] == "failed"
    assert files_server.requests["gone.csv"] == 1  # a 404 is not retried
    assert "'gone.csv'" in failed["error"] and "404" in failed["error"]
    log = failed["destinations"][0]["destination_status"]["log"]
    assert "'gone.csv'" in log[-1]["text"]


def test_bad_input_is_400_naming_it_and_nothing_is_queued(
    served: tuple[TestClient, str],
    file_root: Path,
    tmp_path: Path,
    database_url: str,
) -> None:
    client, key = served
    other = create_api_key("other", database_url=database_url)
    mine = _create(client, key, _local())
    foreign = _create(client, other, _local("theirs"))
    (file_root / "a.json").write_text("{}")
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    (file_root / "escape.json").symlink_to(outside)
    good = [{"name": "a.json", "path": "a.json"}]

    def refused(body: Any) -> str:
        r = _submit(client, key, body)
        assert r.status_code == 400, r.text
        assert r.json()["request_info"]["success"] is False
        message: str = r.json()["request_info"]["message"]
        return message

    assert "'nope'" in refused(_body(good, [mine, "nope"]))
    assert repr(foreign) in refused(_body(good, [foreign]))
    # Outside the root, missing, a symlink out, a directory: one message, no server path.
    messages = {
        refused(_body([{"name": "x.json", "path": p}], [mine]))
        for p in (str(outside), "../outside.json", "missing.json", "escape.json", ".", "/etc")
    }
    assert len(messages) == 1, messages
    (message,) = messages
    assert "files[0].path" in message and str(tmp_path) not in message
    assert "files" in refused(_body([], [mine]))
    assert "files[0]" in refused(_body([{"name": "a", "url": "x", "path": "a.json"}], [mine]))
    assert "files[0].url" in refused(_body([{"name": "a", "url": "ftp://h/x"}], [mine]))
    assert "files[1].name" in refused(_body([*good, {"name": "a.json", "path": "a.json"}]))
    assert "collection_id" in refused({**_body(good), "collection_id": ""})
    assert "surprise" in refused({**_body(good), "surprise": 1})
    assert "webhook_url" in refused({**_body(good), "webhook_url": "https://h.example/x"})
    surrogate = client.post(
        "/deliveries", params={"api_key": key}, headers={"Content-Type": "application/json"},
        content=b'{"collection_id":"c","collection_name":"n","result_set_id":"\\ud800",'
        b'"files":[{"name":"a.json","path":"a.json"}]}',
    )
    assert surrogate.status_code == 400, surrogate.text
    unauthorized = client.post("/deliveries", params={"api_key": "bad"}, json=_body(good))
    assert unauthorized.status_code == 401
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(DeliveryRow)) == 0


def test_limits_are_settings(
    make_app: Callable[..., Starlette],
    file_root: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    files_server: FileServer,
) -> None:
    monkeypatch.setenv("DESTINATIONS_MAX_DELIVERY_FILES", "2")
    monkeypatch.setenv("DESTINATIONS_MAX_DELIVERY_BYTES", "100")
    monkeypatch.setenv("DESTINATIONS_MAX_FETCH_BYTES", "50")
    app = make_app(file_root=file_root)
    key = create_api_key("limits", database_url=database_url)
    (file_root / "big.json").write_bytes(b"x" * 101)
    files_server.files["u.json"] = b"y" * 51
    with TestClient(app) as client:
        mine = _create(client, key, _local())
        three = [{"name": f"{i}.json", "path": "big.json"} for i in range(3)]
        r = _submit(client, key, _body(three, [mine]))
        assert r.status_code == 400 and "at most 2 files" in r.text
        r = _submit(client, key, _body(three[:1], [mine]))
        assert r.status_code == 400 and "more than 100 bytes" in r.text
        r = _submit(client, key, _body([{"name": "u.json", "url": files_server.url("u.json")}],
                                       [mine]))
        assert r.status_code == 202
        failed = _finished(client, key, r.json()["delivery"]["id"])
        assert failed["status"] == "failed" and "more than 50 bytes" in failed["error"]


def test_idempotent_replay_returns_the_original_never_a_second(
    served: tuple[TestClient, str], file_root: Path
) -> None:
    client, key = served
    dest = _create(client, key, _local())
    (file_root / "a.json").write_text("{}")
    body = _body([{"name": "a.json", "path": "a.json"}], [dest])
    first = _submit(client, key, body, **{"Idempotency-Key": "k-1"})
    assert first.status_code == 202
    results: list[Any] = []

    def again() -> None:
        results.append(_submit(client, key, body, **{"Idempotency-Key": "k-1"}))

    threads = [threading.Thread(target=again) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {r.status_code for r in results} == {202}
    assert {r.json()["delivery"]["id"] for r in results} == {first.json()["delivery"]["id"]}
    assert all(r.headers["Idempotent-Replayed"] == "true" for r in results)
    changed = _submit(client, key, {**body, "result_set_id": "other"}, **{"Idempotency-Key": "k-1"})
    assert changed.status_code == 409 and "Idempotency-Key" in changed.text
    listed = client.get("/deliveries", params={"api_key": key}).json()
    assert listed["total_results"] == 1
    _finished(client, key, first.json()["delivery"]["id"])


def test_list_newest_first_ten_a_page_with_filters(
    served: tuple[TestClient, str], file_root: Path
) -> None:
    client, key = served
    dest = _create(client, key, _local())
    (file_root / "a.json").write_text("{}")
    ids = []
    for i in range(12):
        r = _submit(client, key, _body([{"name": "a.json", "path": "a.json"}], [dest],
                                       rs="even" if i % 2 == 0 else "odd"))
        ids.append(r.json()["delivery"]["id"])
    page1 = client.get("/deliveries", params={"api_key": key}).json()
    page2 = client.get("/deliveries", params={"api_key": key, "page": 2}).json()
    assert page1["total_results"] == 12 and page1["total_pages"] == 2
    shown = [d["id"] for d in page1["deliveries"] + page2["deliveries"]]
    assert shown == ids[::-1]
    even = client.get("/deliveries", params={"api_key": key, "result_set_id": "even"}).json()
    assert [d["id"] for d in even["deliveries"]] == ids[::2][::-1]
    for delivery_id in ids:
        _finished(client, key, delivery_id)
    done = client.get("/deliveries", params={"api_key": key, "status": "success"}).json()
    assert done["total_results"] == 12
    for bad in ({"page": "0"}, {"page": "9" * 40}, {"status": "done"}):
        r = client.get("/deliveries", params={"api_key": key, **bad})
        assert r.status_code == 400 and next(iter(bad)) in r.json()["request_info"]["message"]
    assert client.get("/deliveries/dlv_nope", params={"api_key": key}).status_code == 404


def test_retry_after_the_destination_was_fixed_redelivers_only_what_failed_same_keys(
    served: tuple[TestClient, str],
    file_root: Path,
    moto_server: MotoHandle,
    database_url: str,
) -> None:
    client, key = served
    bucket = f"dlv-later-{os.urandom(4).hex()}"
    moto_server.create_bucket(bucket)
    broken = _create(client, key, {
        "name": "moto", "enabled": True, "type": "s3compatible",
        "s3_access_key_id": moto_server.access_key_id,
        "s3_secret_access_key": moto_server.secret_access_key, "s3_bucket_name": bucket,
        "s3_endpoint": moto_server.endpoint, "s3_region": "us-east-1",
        "s3_path_prefix": TEMPLATE,
    })
    raw = moto_server.s3_client()
    raw.delete_bucket(Bucket=bucket)  # verified, then broken: its deliveries fail
    good = _create(client, key, _local())
    payload = make_payload(file_root / "retry", "rs-retry")
    files = [{"name": n, "path": f"retry/{n}"} for n in payload.data if n != "big.zip"]
    r = _submit(client, key, _body(files, [good, broken], rs="rs-retry"))
    first = _finished(client, key, r.json()["delivery"]["id"])
    assert first["status"] == "partial", first
    by_id = {t["destination_id"]: t["destination_status"] for t in first["destinations"]}
    assert by_id[good]["status"] == "success" and by_id[broken]["status"] == "failed"
    conflict = client.post(f"/deliveries/{first['id']}/retry", params={"api_key": key})
    assert conflict.status_code == 202  # failed ones may be retried at once

    second = _finished(client, key, first["id"])
    assert second["status"] == "partial" and second["run"] == 2
    moto_server.create_bucket(bucket)
    time.sleep(0.01)
    r = client.post(f"/deliveries/{first['id']}/retry", params={"api_key": key})
    assert r.status_code == 202 and r.json()["delivery"]["status"] == "queued"
    third = _finished(client, key, first["id"])
    assert third["status"] == "success" and third["run"] == 3
    after = {t["destination_id"]: t["destination_status"] for t in third["destinations"]}
    assert after[good]["attempts"] == 1  # not delivered again
    assert after[broken]["attempts"] == 3
    assert after[broken]["keys"] == by_id[good]["keys"]  # the same now: the same keys
    read = s3_reader(raw, bucket)
    for k, name in zip(after[broken]["keys"], [f["name"] for f in files], strict=True):
        assert read(k) == payload.data[name]
    nothing = client.post(f"/deliveries/{first['id']}/retry", params={"api_key": key})
    assert nothing.status_code == 409 and "succeeded" in nothing.text
    other = create_api_key("stranger", database_url=database_url)
    assert client.post(f"/deliveries/{first['id']}/retry",
                       params={"api_key": other}).status_code == 404


def test_verify_without_saving_and_reverify_a_stored_one(
    make_app: Callable[..., Starlette], database_url: str, local_root: Path
) -> None:
    app = make_app(verifications_per_minute=3)
    key = create_api_key("verifier", database_url=database_url)
    with TestClient(app) as client:
        r = client.post("/destinations/verify", params={"api_key": key}, json=_local())
        assert r.status_code == 200, r.text
        assert r.json()["verification"]["type"] == "local"
        assert client.get("/destinations", params={"api_key": key}).json()["destinations"] == []
        bad = client.post("/destinations/verify", params={"api_key": key}, json={
            "name": "x", "type": "s3compatible", "s3_access_key_id": "AKIDEXAMPLE",
            "s3_secret_access_key": "sk-never-shown", "s3_bucket_name": "bucket",
            "s3_endpoint": "http://127.0.0.1:9", "s3_region": "us-east-1",
        })
        assert bad.status_code == 400, bad.text
        info = bad.json()["request_info"]
        assert info["connectivity_problem"] is True and info["step"] == "put"
        assert "sk-never-shown" not in bad.text
        stored = _create(client, key, {**_local(), "enabled": False})  # not verified
        before = client.get(f"/destinations/{stored}", params={"api_key": key}).json()
        assert before["destination"]["last_verified_at"] is None
        r = client.post(f"/destinations/{stored}/verify", params={"api_key": key})
        assert r.status_code == 200, r.text
        assert r.json()["destination"]["last_verified_at"] is not None
        limited = client.post(f"/destinations/{stored}/verify", params={"api_key": key})
        assert limited.status_code == 429 and "Retry-After" in limited.headers
        assert client.post("/destinations/nope/verify", params={"api_key": key}).status_code == 404


@pytest.mark.parametrize("runners", [2])
def test_two_runners_never_hold_one_delivery_at_once(database_url: str, runners: int,
                                                     make_app: Callable[..., Starlette]) -> None:
    app = make_app()  # migrates the schema
    store = DeliveryStore(app.state.engine)
    account = create_api_key("claims", database_url=database_url)
    del account
    with Session(app.state.engine) as session:
        from destinations.persistence import Account

        account_id = session.scalars(select(Account.id)).first()
    assert account_id is not None
    from datetime import UTC, datetime

    made = []
    for i in range(20):
        delivery, _ = store.insert(NewDelivery(
            account_id, "c", "n", f"rs-{i}", [{"name": "a", "url": "https://x.example/a",
                                              "content_type": "text/plain"}],
            datetime.now(UTC), "local", [("d1", "d", "queued", "queued")]))
        made.append(delivery.id)
    claimed: dict[str, list[str]] = {}
    barrier = threading.Barrier(8)

    def claim(owner: str) -> None:
        barrier.wait()
        for _ in range(5):
            for delivery_id in store.claim_runs(owner, 30, 5):
                claimed.setdefault(delivery_id, []).append(owner)

    threads = [threading.Thread(target=claim, args=(f"runner-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(made)
    assert all(len(owners) == 1 for owners in claimed.values()), claimed
    # An expired lease is claimed again (a killed server's delivery), a live one never.
    victim = made[0]
    assert store.claim_runs("late", 30, 50) == []
    with Session(app.state.engine) as session, session.begin():
        row = session.get(DeliveryRow, victim)
        assert row is not None
        from datetime import timedelta

        row.lease_until = datetime.now(UTC) - timedelta(seconds=1)
    assert store.claim_runs("late", 30, 50) == [victim]
