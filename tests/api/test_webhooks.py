"""Completion webhooks, in-process, on SQLite and PostgreSQL: a receiver on loopback checks
every signature and counts events (exactly one accepted per completed delivery, through
503s), attempts are recorded, the guard refuses what it must, the secret never leaks, and the
README's Python and Node verification snippets accept a real request."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.testclient import TestClient

from destinations.api import create_api_key
from destinations.persistence import DeliveryStore, WebhookEndpointRow
from tests.api.deliveries_support import Receiver, wait_for
from tests.security.conftest import Recorder, destinations_cli

ROOT = Path(__file__).resolve().parents[2]
FAST = {
    "DESTINATIONS_WEBHOOK_RETRY_INITIAL": "0.05",
    "DESTINATIONS_WEBHOOK_RETRY_MAX_WAIT": "0.2",
    "DESTINATIONS_WEBHOOK_TIMEOUT": "2",
}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", "1")
    monkeypatch.delenv("DESTINATIONS_BROKER_URL", raising=False)
    for name, value in FAST.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def setup(
    make_app: Callable[..., Starlette], database_url: str, tmp_path: Path
) -> Iterator[tuple[TestClient, str, Path]]:
    root = tmp_path / "files"
    root.mkdir()
    (root / "a.json").write_text('{"a": 1}')
    app = make_app(file_root=root)
    key = create_api_key("hooks", database_url=database_url)
    with TestClient(app) as client:
        r = client.post("/destinations", params={"api_key": key}, json={
            "name": "local", "enabled": True, "type": "local", "local_directory": ".",
        })
        assert r.status_code == 200, r.text
        yield client, key, root


def _submit(client: TestClient, key: str, rs: str, **extra: Any) -> str:
    body = {"collection_id": "c", "collection_name": "n", "result_set_id": rs,
            "files": [{"name": "a.json", "path": "a.json"}], **extra}
    r = client.post("/deliveries", params={"api_key": key}, json=body)
    assert r.status_code == 202, r.text
    delivery_id: str = r.json()["delivery"]["id"]
    return delivery_id


def _delivery(client: TestClient, key: str, delivery_id: str) -> Any:
    return client.get(f"/deliveries/{delivery_id}", params={"api_key": key}).json()["delivery"]


def _webhook_done(client: TestClient, key: str, delivery_id: str) -> Any:
    def done() -> Any:
        d = _delivery(client, key, delivery_id)
        return d if d["webhook"]["status"] in ("delivered", "failed") else None

    return wait_for(done, 30)


def test_one_signed_event_per_completed_delivery_through_503s(
    setup: tuple[TestClient, str, Path], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, key, _ = setup
    r = client.put("/webhooks", params={"api_key": key}, json={"url": receiver.url})
    assert r.status_code == 200, r.text
    secret = r.json()["webhook"]["secret"]
    assert secret.startswith("whsec_")
    receiver.secret = secret
    receiver.script = [503, 503]  # the first event is refused twice, then accepted
    ids = [_submit(client, key, f"rs-{i}") for i in range(3)]
    finished = [_webhook_done(client, key, i) for i in ids]
    time.sleep(0.5)  # nothing more may arrive
    assert receiver.bad_signatures == 0
    assert dict(receiver.accepted) == {i: 1 for i in ids}
    assert len(receiver.received) == 5
    for d in finished:
        assert d["status"] == "success" and d["webhook"]["status"] == "delivered"
        outcomes = [a["outcome"] for a in d["webhook"]["attempts"]]
        assert outcomes[-1] == "delivered" and set(outcomes[:-1]) <= {"retry"}
    assert sum(len(d["webhook"]["attempts"]) for d in finished) == 5
    codes = [[a["status_code"] for a in d["webhook"]["attempts"]] for d in finished]
    assert sorted(c for per in codes for c in per) == [200, 200, 200, 503, 503]
    assert all(per[-1] == 200 for per in codes)
    by_delivery = {}
    for got in receiver.received:
        by_delivery.setdefault(got["event"]["delivery"]["id"], set()).add(got["event_id"])
    assert all(len(event_ids) == 1 for event_ids in by_delivery.values())  # same id each try
    event = receiver.received[-1]["event"]
    assert event["type"] == "delivery.completed"
    target = event["delivery"]["destinations"][0]["destination_status"]
    assert target["status"] == "success" and target["keys"] == ["a.json"]

    # The secret: once in the PUT answer, never again, nowhere else.
    shown = client.get("/webhooks", params={"api_key": key}).json()
    assert shown["webhook"]["has_secret"] is True and "secret" not in shown["webhook"]
    for text in (json.dumps(shown), json.dumps(finished), caplog.text,
                 json.dumps([g["event"] for g in receiver.received])):
        assert secret not in text
    store = DeliveryStore(client.app.state.engine)  # type: ignore[attr-defined]
    account = client.app.state.service.authenticate(key)  # type: ignore[attr-defined]
    endpoint = store.set_webhook(account, receiver.url)
    assert endpoint.secret is None  # not created again, so not shown again
    assert secret not in repr(endpoint)
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        stored = session.scalars(select(WebhookEndpointRow.secret)).all()
    assert stored and all(secret not in token for token in stored)  # encrypted at rest

    # A new secret signs what comes next; the old one no longer verifies.
    rotated = client.post("/webhooks/secret", params={"api_key": key}).json()["webhook"]["secret"]
    assert rotated != secret
    receiver.secret = rotated
    later = _submit(client, key, "rs-rotated")
    _webhook_done(client, key, later)
    assert receiver.accepted[later] == 1 and receiver.bad_signatures == 0


def test_a_delivery_webhook_url_wins_and_retries_stop_after_the_window(
    setup: tuple[TestClient, str, Path], receiver: Receiver
) -> None:
    client, key, _ = setup
    receiver.secret = client.put("/webhooks", params={"api_key": key}, json={}).json()[
        "webhook"]["secret"]
    receiver.script = [503] * 1000
    runner = client.app.state.deliveries.runner  # type: ignore[attr-defined]
    from dataclasses import replace

    from destinations._webhooks import WebhookPolicy

    runner.config = replace(runner.config, webhook=WebhookPolicy(2.0, 0.05, 0.2, 0.6))
    delivery_id = _submit(client, key, "rs-window", webhook_url=receiver.url)
    done = _webhook_done(client, key, delivery_id)
    assert done["webhook"]["status"] == "failed"
    attempts = done["webhook"]["attempts"]
    assert len(attempts) >= 2 and attempts[-1]["outcome"] == "failed"
    assert "no more attempts" in attempts[-1]["error"]
    assert all(a["status_code"] == 503 for a in attempts)
    count = len(receiver.received)
    time.sleep(0.5)
    assert len(receiver.received) == count == len(attempts)


def test_the_guard_refuses_private_webhooks_without_connecting(
    setup: tuple[TestClient, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, key, _ = setup
    recorder = Recorder()
    try:
        monkeypatch.delenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS")
        plain = client.put("/webhooks", params={"api_key": key},
                           json={"url": f"http://127.0.0.1:{recorder.port}/x"})
        assert plain.status_code == 400 and "https" in plain.text
        r = client.put("/webhooks", params={"api_key": key},
                       json={"url": f"https://127.0.0.1:{recorder.port}/x"})
        assert r.status_code == 200  # saved; refused when the connection is made
        delivery_id = _submit(client, key, "rs-guard")
        done = _webhook_done(client, key, delivery_id)
        (attempt,) = done["webhook"]["attempts"]
        assert attempt["outcome"] == "failed" and "loopback" in attempt["error"]
        assert recorder.accepted == []
    finally:
        recorder.close()


def test_readme_verification_snippets_accept_a_real_event(
    setup: tuple[TestClient, str, Path], receiver: Receiver, tmp_path: Path
) -> None:
    client, key, _ = setup
    receiver.secret = client.put("/webhooks", params={"api_key": key},
                                 json={"url": receiver.url}).json()["webhook"]["secret"]
    _webhook_done(client, key, _submit(client, key, "rs-readme"))
    (got,) = receiver.received
    timestamp, signature, body = got["timestamp"], got["signature"], got["body"]
    readme = (ROOT / "README.md").read_text()
    python = re.search(r"<!-- webhook-verify-python -->\s*```python\n(.*?)```", readme, re.S)
    node = re.search(r"<!-- webhook-verify-node -->\s*```js\n(.*?)```", readme, re.S)
    assert python and node, "README lost its verification snippets"
    namespace: dict[str, Any] = {}
    exec(python.group(1), namespace)  # the README's own snippet
    verify = namespace["verify_destinations_signature"]
    assert verify(receiver.secret, timestamp, body, signature) is True
    assert verify(receiver.secret, timestamp, body + b" ", signature) is False
    assert verify("whsec_other", timestamp, body, signature) is False
    node_bin = shutil.which("node")
    assert node_bin, "node is needed to test the README's Node snippet"
    (tmp_path / "body.json").write_bytes(body)
    script = node.group(1) + (
        "\nconst fs = require('fs');"
        "\nconst [secret, ts, sig, file] = process.argv.slice(2);"
        "\nconst raw = fs.readFileSync(file);"
        "\nconsole.log(JSON.stringify([verifyDestinationsSignature(secret, ts, raw, sig),"
        " verifyDestinationsSignature(secret, ts, Buffer.concat([raw, Buffer.from(' ')]), sig)]));"
    )
    (tmp_path / "check.js").write_text(script)
    done = subprocess.run(
        [node_bin, str(tmp_path / "check.js"), receiver.secret, timestamp, signature,
         str(tmp_path / "body.json")],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [True, False]


def test_cli_sets_the_default_webhook_and_shows_the_secret_once(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1",
           "DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS": "1", "PYTHONPATH": str(ROOT)}
    key = create_api_key("cli", database_url=database_url)
    assert key
    first = destinations_cli("webhooks", "set", "--account", "cli", "https://hooks.example/d",
                             "--database-url", database_url, env=env)
    assert first.returncode == 0, first.stderr
    secret = first.stdout.strip().splitlines()[-1]
    assert secret.startswith("whsec_")
    again = destinations_cli("webhooks", "set", "--account", "1", "https://hooks.example/e",
                             "--database-url", database_url, env=env)
    assert again.returncode == 0 and "whsec_" not in again.stdout
    shown = destinations_cli("webhooks", "show", "--account", "cli", "--database-url",
                             database_url, env=env)
    assert "https://hooks.example/e" in shown.stdout and secret not in shown.stdout
    bad = destinations_cli("webhooks", "set", "--account", "nobody", "https://h.example/x",
                           "--database-url", database_url, env=env)
    assert bad.returncode == 2 and "nobody" in bad.stderr


def test_rotate_encryption_re_encrypts_webhook_secrets(tmp_path: Path) -> None:
    from click.testing import CliRunner
    from cryptography.fernet import Fernet

    from destinations.api.cli import keys as keys_cli
    from destinations.persistence import SecretBox, make_engine, upgrade

    url = f"sqlite:///{tmp_path / 'rotate.db'}"
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    create_api_key("rotating", database_url=url)
    engine = make_engine(url)
    upgrade(engine)
    created = DeliveryStore(engine, SecretBox([old])).set_webhook(1, "https://hooks.example/x")
    result = CliRunner().invoke(
        keys_cli, ["rotate-encryption", "--database-url", url],
        env={"DESTINATIONS_ENCRYPTION_KEYS": f"{new},{old}"},
    )
    assert result.exit_code == 0, result.output
    assert "re-encrypted 1 webhook secret(s)" in result.output
    assert DeliveryStore(engine, SecretBox([new])).webhook_secret(1) == created.secret
    engine.dispose()
