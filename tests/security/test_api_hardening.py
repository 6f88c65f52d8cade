"""Tenant isolation, limits (field lengths, body size, verification rate) and encryption key
rotation, through the HTTP API on SQLite and PostgreSQL.

Figures: cross-account reads, updates and deletes = 0 (every endpoint x the other account's
ids); the (N+1)-th verification in a minute answers 429 with Retry-After.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.testclient import TestClient

import destinations
from destinations.api import create_api_key
from destinations.api.cli import keys as keys_cli
from destinations.persistence import DestinationRow, SecretBox, make_engine
from tests.api.vaultplugin import VaultStore


def _vault(name: str = "d", secret: str = "s3cr3t-value", bucket: str = "ok") -> dict[str, object]:
    return {
        "name": name,
        "enabled": True,
        "type": "vault",
        "vault_access_key_id": "AKIDTENANT",
        "vault_secret_key": secret,
        "vault_bucket": bucket,
    }


def test_tenant_isolation(client: TestClient, api_key: str, other_key: str) -> None:
    mine = [
        client.post("/destinations", params={"api_key": api_key}, json=_vault(f"a{i}"))
        for i in range(3)
    ]
    ids = [r.json()["destination"]["id"] for r in mine]
    theirs = client.post("/destinations", params={"api_key": other_key}, json=_vault("b"))
    their_id = theirs.json()["destination"]["id"]
    attempts = crossed = 0
    for dest_id in ids:
        for method, body in (
            ("GET", None),
            ("PUT", {"name": "stolen"}),
            ("PUT", {"vault_bucket": "elsewhere"}),
            ("DELETE", None),
        ):
            response = client.request(
                method, f"/destinations/{dest_id}", params={"api_key": other_key}, json=body
            )
            attempts += 1
            if response.status_code != 404:
                crossed += 1
            assert response.json()["request_info"] == {
                "success": False,
                "message": "Destination not found",
            }
    listing = client.get("/destinations", params={"api_key": other_key}).json()
    assert [d["id"] for d in listing["destinations"]] == [their_id]
    assert listing["usage"]["used"] == 1
    searched = client.get("/destinations", params={"api_key": other_key, "search_term": "a"})
    assert searched.json()["total_results"] == 0
    # Unchanged for the owner.
    for dest_id in ids:
        got = client.get(f"/destinations/{dest_id}", params={"api_key": api_key})
        assert got.status_code == 200 and got.json()["destination"]["name"].startswith("a")
    assert crossed == 0, f"{crossed} of {attempts} cross-account requests succeeded"


def test_field_lengths(client: TestClient, api_key: str) -> None:
    too_long = client.post(
        "/destinations", params={"api_key": api_key}, json=_vault(secret="x" * 8193)
    )
    assert too_long.status_code == 400
    assert too_long.json()["request_info"]["errors"] == {
        "vault_secret_key": "must be at most 8192 characters"
    }
    name = client.post("/destinations", params={"api_key": api_key}, json=_vault("n" * 256))
    assert name.status_code == 400 and "name" in name.json()["request_info"]["errors"]
    nested = client.post(
        "/destinations", params={"api_key": api_key}, json={**_vault(), "vault_bucket": {"a": 1}}
    )
    assert nested.status_code == 400
    body = client.post(
        "/destinations",
        params={"api_key": api_key},
        content=b"{" + b" " * 70_000 + b"}",
        headers={"content-type": "application/json"},
    )
    assert body.status_code == 413 and body.json()["request_info"]["success"] is False


def test_verification_rate_limit(
    make_app: Callable[..., Starlette], vault: type[VaultStore], database_url: str
) -> None:
    app = make_app(verifications_per_minute=3)
    client = TestClient(app)
    key = create_api_key("rate", database_url=database_url)
    other = create_api_key("rate2", database_url=database_url)
    statuses = [
        client.post(
            "/destinations", params={"api_key": key}, json=_vault(f"r{i}", bucket="bad-credentials")
        ).status_code
        for i in range(4)
    ]
    assert statuses == [400, 400, 400, 429]
    limited = client.post("/destinations", params={"api_key": key}, json=_vault("r"))
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    info = limited.json()["request_info"]
    assert info["success"] is False and "Too many verification attempts" in info["message"]
    # Per account; and saving disabled (no verification) is not limited.
    assert (
        client.post("/destinations", params={"api_key": other}, json=_vault("o")).status_code == 200
    )
    disabled = client.post(
        "/destinations", params={"api_key": key}, json={**_vault("off"), "enabled": False}
    )
    assert disabled.status_code == 200


def test_rotate_encryption_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vault: type[VaultStore]
) -> None:
    from destinations.api import create_app

    url = f"sqlite:///{tmp_path / 'rotate.db'}"
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    app = create_app(database_url=url, encryption_keys=[old], local_root=tmp_path)
    key = create_api_key("rot", database_url=url)
    client = TestClient(app)
    ids = [
        client.post(
            "/destinations", params={"api_key": key}, json=_vault(f"k{i}", secret=f"secret-{i}")
        ).json()["destination"]["id"]
        for i in range(5)
    ]
    app.state.engine.dispose()

    # New key first, old kept: old rows still decrypt (an update works) before rotation.
    monkeypatch.setenv("DESTINATIONS_ENCRYPTION_KEYS", f"{new},{old}")
    app2 = create_app(database_url=url, local_root=tmp_path)
    updated = TestClient(app2).put(
        f"/destinations/{ids[0]}", params={"api_key": key}, json={"name": "renamed"}
    )
    assert updated.status_code == 200
    app2.state.engine.dispose()

    result = CliRunner().invoke(keys_cli, ["rotate-encryption", "--database-url", url])
    assert result.exit_code == 0, result.output
    assert "re-encrypted 5 destination(s)" in result.output

    engine = make_engine(url)
    with Session(engine) as session:
        tokens = dict(session.execute(select(DestinationRow.name, DestinationRow.secrets)).all())
    engine.dispose()
    only_new = SecretBox([new])
    for i in range(1, 5):
        assert only_new.decrypt(tokens[f"k{i}"])["vault_secret_key"] == f"secret-{i}"
    assert only_new.decrypt(tokens["renamed"])["vault_secret_key"] == "secret-0"
    with pytest.raises(destinations.SecretsUnreadable) as info:
        SecretBox([old]).decrypt(tokens["k1"])  # the old key is retired
    assert old not in str(info.value) and new not in str(info.value)
    assert "secret-1" not in str(info.value)
