"""The Destinations HTTP API in-process, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.testclient import TestClient

from destinations import available_types, get_type
from tests.api.vaultplugin import BAD_CREDENTIALS, GATED, VaultStore

SECRET = "vault-SECRET-do-not-leak-7f3a9c"
KEY_ID = "AKIAEXAMPLEWXYZ"


def vault_params(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Vault one", "type": "vault", "enabled": True,
        "vault_access_key_id": KEY_ID, "vault_secret_key": SECRET,
        "vault_bucket": "reports", "vault_path_prefix": "exports/%DATE%", **overrides,
    }


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


def create(client: TestClient, key: str, **params: Any) -> dict[str, Any]:
    response = client.post("/destinations", params={"api_key": key}, json=params)
    assert response.status_code == 200, response.text
    destination: dict[str, Any] = response.json()["destination"]
    return destination


def raw_rows(app: Starlette) -> list[dict[str, Any]]:
    with app.state.engine.connect() as connection:
        result = connection.execute(sa.text("SELECT * FROM destinations ORDER BY id"))
        return [dict(row._mapping) for row in result]


def failure(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["request_info"]["success"] is False
    info: dict[str, Any] = body["request_info"]
    return info


# -- create ---------------------------------------------------------------------------------

def test_create_local_form_encoded_verifies_and_leaves_nothing(
    client: TestClient, api_key: str, local_root: Path
) -> None:
    # Each account writes inside its own subtree, ROOT/<account id> (the first account is 1).
    (local_root / "1" / "out").mkdir(parents=True)
    response = client.post(
        f"/destinations?api_key={api_key}",
        content="name=My+first+local+destination&type=local&enabled=true"
                "&local_directory=out&local_path_prefix=exports%2F%25DATE%25",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["request_info"] == {"success": True}
    destination = body["destination"]
    assert destination["name"] == "My first local destination"
    assert destination["type"] == "local" and destination["enabled"] is True
    assert destination["local_directory"] == "out"
    assert destination["local_path_prefix"] == "exports/%DATE%"
    assert destination["last_verified_at"] and destination["created_at"].endswith("Z")
    assert files_under(local_root) == []  # the probe was put, then deleted

    fetched = client.get(f"/destinations/{destination['id']}", params={"api_key": api_key})
    assert fetched.json() == {"request_info": {"success": True}, "destination": destination}


def test_create_local_json(client: TestClient, api_key: str, local_root: Path) -> None:
    destination = create(client, api_key, name="json", type="local", enabled=True,
                         local_directory=".")
    assert destination["local_directory"] == "."
    assert files_under(local_root) == []
    disabled = create(client, api_key, name="off", type="local", enabled="false",
                      local_directory=".")
    assert disabled["enabled"] is False and disabled["last_verified_at"] is None


def test_failed_verification_stores_nothing(
    app: Starlette, client: TestClient, api_key: str
) -> None:
    response = client.post("/destinations", params={"api_key": api_key},
                           json=vault_params(vault_bucket=BAD_CREDENTIALS))
    info = failure(response, 400)
    assert info["connectivity_problem"] is True
    assert info["step"] == "put" and info["code"] == "invalid_credentials"
    assert info["provider_code"] == "InvalidAccessKeyId"
    assert "vault_secret_key" in info["message"] and SECRET not in response.text
    assert raw_rows(app) == []
    listing = client.get("/destinations", params={"api_key": api_key}).json()
    assert listing["usage"]["used"] == 0 and listing["destinations"] == []


# -- validation -----------------------------------------------------------------------------

def test_bad_parameters_name_each_field(client: TestClient, api_key: str) -> None:
    response = client.post("/destinations", params={"api_key": api_key},
                           data={"type": "vault", "enabled": "maybe", "vault_bucket": "b",
                                 "local_directory": "x", "bogus": "1"})
    info = failure(response, 400)
    for field in ("name", "enabled", "vault_access_key_id", "vault_secret_key",
                  "local_directory", "bogus"):
        assert field in info["errors"]
        assert field in info["message"]

    info = failure(client.post("/destinations", params={"api_key": api_key}, json={}), 400)
    assert {"name", "enabled", "type"} <= set(info["errors"])
    info = failure(client.post("/destinations", params={"api_key": api_key},
                               content=b"[1]", headers={"content-type": "application/json"}),
                   400)
    assert "JSON object" in info["message"]
    info = failure(client.post("/destinations", params={"api_key": api_key},
                               content=b"name=a&name=b"), 400)
    assert info["errors"] == {"name": "given more than once"}
    info = failure(client.get("/destinations", params={"api_key": api_key, "page": "0",
                                                        "sort_by": "size",
                                                        "sort_direction": "up"}), 400)
    assert set(info["errors"]) == {"page", "sort_by", "sort_direction"}


def test_local_directory_must_resolve_inside_the_root(
    client: TestClient, api_key: str, local_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (local_root / "1").mkdir()
    (local_root / "1" / "sneaky").symlink_to(outside)
    for directory in (str(outside), "../elsewhere", "sneaky", "/"):
        info = failure(client.post("/destinations", params={"api_key": api_key},
                                   data={"name": "x", "type": "local", "enabled": "false",
                                         "local_directory": directory}), 400)
        assert list(info["errors"]) == ["local_directory"], directory
    assert files_under(outside) == []


def test_local_type_not_offered_without_a_root(
    make_app: Callable[..., Starlette], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from destinations.api import create_api_key

    monkeypatch.delenv("DESTINATIONS_LOCAL_ROOT", raising=False)
    client = TestClient(make_app(local_root=None))
    key = create_api_key("k", database_url=database_url)
    info = failure(client.post("/destinations", params={"api_key": key},
                               data={"name": "x", "type": "local", "enabled": "false",
                                     "local_directory": "/tmp"}), 400)
    assert list(info["errors"]) == ["type"] and "not offered" in info["message"]
    assert "LocalDestinationParams" not in client.get("/openapi.json").text


# -- list, get, update, delete --------------------------------------------------------------

def test_list_pages_searches_sorts_and_reports_usage(client: TestClient, api_key: str) -> None:
    names = [f"Dest {i:02d}" for i in range(12)]
    for i, name in enumerate(names):
        kind = {"type": "local", "local_directory": "."} if i % 2 else vault_params()
        create(client, api_key, **{**kind, "name": name, "enabled": False})

    def page(**query: Any) -> dict[str, Any]:
        response = client.get("/destinations", params={"api_key": api_key, **query})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    first = page()
    assert first["usage"] == {"used": 12, "limit": 50, "available": 38}
    assert [d["name"] for d in first["destinations"]] == names[:10]
    assert [d["name"] for d in page(page=2)["destinations"]] == names[10:]
    assert page(page=3)["destinations"] == []
    assert [d["name"] for d in page(sort_by="name", sort_direction="descending")
            ["destinations"]] == names[::-1][:10]
    by_type = page(sort_by="type", page=1)["destinations"] + page(sort_by="type", page=2)[
        "destinations"]
    assert [d["type"] for d in by_type] == ["local"] * 6 + ["vault"] * 6
    found = page(search_term="dEST 1")
    assert [d["name"] for d in found["destinations"]] == ["Dest 10", "Dest 11"]
    assert found["usage"]["used"] == 12
    assert page(search_term="%")["destinations"] == []  # LIKE wildcards are literal


def test_partial_update_keeps_fields_and_rename_does_not_verify(
    app: Starlette, client: TestClient, api_key: str
) -> None:
    created = create(client, api_key, **vault_params())
    assert len(VaultStore.puts) == 1
    url = f"/destinations/{created['id']}"
    renamed = client.put(url, params={"api_key": api_key}, data={"name": "Renamed"})
    assert renamed.status_code == 200, renamed.text
    after = renamed.json()["destination"]
    assert after["name"] == "Renamed"
    assert {k: v for k, v in after.items() if k not in ("name", "updated_at")} == {
        k: v for k, v in created.items() if k not in ("name", "updated_at")}
    assert len(VaultStore.puts) == 1  # a rename alone does not verify

    moved = client.put(url, params={"api_key": api_key}, json={"vault_bucket": "archive"})
    assert moved.status_code == 200, moved.text
    assert VaultStore.puts[-1] == ("archive", SECRET)  # the stored secret was kept
    assert moved.json()["destination"]["vault_path_prefix"] == "exports/%DATE%"

    disabled = client.put(url, params={"api_key": api_key}, json={"enabled": False})
    assert disabled.json()["destination"]["enabled"] is False
    assert len(VaultStore.puts) == 2
    enabled = client.put(url, params={"api_key": api_key}, data={"enabled": "true"})
    assert enabled.status_code == 200 and len(VaultStore.puts) == 3  # re-enable verifies
    assert raw_rows(app)[0]["version"] == 5


def test_failed_update_leaves_the_old_destination_byte_identical(
    app: Starlette, client: TestClient, api_key: str
) -> None:
    created = create(client, api_key, **vault_params())
    before = raw_rows(app)
    response = client.put(f"/destinations/{created['id']}", params={"api_key": api_key},
                          json={"vault_bucket": BAD_CREDENTIALS, "name": "new name"})
    info = failure(response, 400)
    assert info["connectivity_problem"] is True and info["code"] == "invalid_credentials"
    assert raw_rows(app) == before
    fetched = client.get(f"/destinations/{created['id']}", params={"api_key": api_key})
    assert fetched.json()["destination"] == created

    invalid = client.put(f"/destinations/{created['id']}", params={"api_key": api_key},
                         json={"vault_path_prefix": "%NOPE%"})
    assert list(failure(invalid, 400)["errors"]) == ["vault_path_prefix"]
    assert raw_rows(app) == before


def test_type_change_needs_the_new_types_required_fields(
    client: TestClient, api_key: str
) -> None:
    created = create(client, api_key, **vault_params())
    url = f"/destinations/{created['id']}"
    info = failure(client.put(url, params={"api_key": api_key}, json={"type": "local"}), 400)
    assert list(info["errors"]) == ["local_directory"]
    response = client.put(url, params={"api_key": api_key},
                          json={"type": "local", "local_directory": "."})
    assert response.status_code == 200, response.text
    destination = response.json()["destination"]
    assert destination["type"] == "local"
    assert not [k for k in destination if k.startswith("vault_")]


def test_delete(client: TestClient, api_key: str) -> None:
    created = create(client, api_key, **vault_params())
    url = f"/destinations/{created['id']}"
    response = client.delete(url, params={"api_key": api_key})
    assert response.status_code == 200
    assert response.json() == {"request_info": {"success": True,
                                                "message": "1 Destination deleted"}}
    failure(client.get(url, params={"api_key": api_key}), 404)
    failure(client.delete(url, params={"api_key": api_key}), 404)


def test_limit_per_account(
    make_app: Callable[..., Starlette], vault: object, database_url: str
) -> None:
    from destinations.api import create_api_key

    client = TestClient(make_app(max_destinations=3))
    key = create_api_key("small", database_url=database_url)
    for i in range(3):
        create(client, key, **vault_params(name=f"d{i}", enabled=False))
    info = failure(client.post("/destinations", params={"api_key": key},
                               json=vault_params(enabled=False)), 400)
    assert "limit" in info["message"] and "3 of 3" in info["message"]
    usage = client.get("/destinations", params={"api_key": key}).json()["usage"]
    assert usage == {"used": 3, "limit": 3, "available": 0}


def test_concurrent_update_is_refused_not_lost(
    app: Starlette, client: TestClient, api_key: str
) -> None:
    created = create(client, api_key, **vault_params())
    url = f"/destinations/{created['id']}"
    slow: dict[str, Any] = {}

    def slow_update() -> None:  # verifies, and the gate holds its verification open
        slow["response"] = TestClient(app).put(url, params={"api_key": api_key},
                                               json={"vault_bucket": GATED})

    worker = threading.Thread(target=slow_update)
    worker.start()
    try:
        assert VaultStore.waiting.wait(10)
        quick = client.put(url, params={"api_key": api_key}, json={"name": "meanwhile"})
        assert quick.status_code == 200, quick.text
    finally:
        VaultStore.gate.set()
        worker.join(20)
    info = failure(slow["response"], 409)
    assert "changed by another request" in info["message"]
    final = client.get(url, params={"api_key": api_key}).json()["destination"]
    assert final["name"] == "meanwhile" and final["vault_bucket"] == "reports"


# -- errors ---------------------------------------------------------------------------------

def test_missing_or_wrong_api_key(client: TestClient, api_key: str) -> None:
    for params in ({}, {"api_key": ""}, {"api_key": api_key + "x"}):
        for method, path in (("GET", "/destinations"), ("POST", "/destinations"),
                             ("GET", "/destinations/abc"), ("DELETE", "/destinations/abc")):
            info = failure(client.request(method, path, params=params), 401)
            if params.get("api_key"):
                assert info["message"] == "Supplied api_key is not valid"
            else:  # none at all says so, and how to give one
                assert info["message"] == "api_key is missing: add ?api_key=YOUR_KEY to the URL"


def test_not_found(client: TestClient, api_key: str, other_key: str) -> None:
    mine = create(client, api_key, **vault_params())
    theirs = f"/destinations/{mine['id']}"
    other = {"api_key": other_key}
    failure(client.get(theirs, params=other), 404)
    failure(client.put(theirs, params=other, json={"name": "stolen"}), 404)
    failure(client.delete(theirs, params=other), 404)
    assert client.get("/destinations", params=other).json()["destinations"] == []
    assert client.get(theirs, params={"api_key": api_key}).json()["destination"] == mine

    failure(client.get("/destinations/nope", params={"api_key": api_key}), 404)
    failure(client.get("/nowhere", params={"api_key": api_key}), 404)
    failure(client.patch(theirs, params={"api_key": api_key}, json={}), 404)
    failure(client.post(theirs, params={"api_key": api_key}, json={}), 404)
    failure(client.delete("/destinations", params={"api_key": api_key}), 404)


def test_body_over_the_limit(make_app: Callable[..., Starlette], api_key: str) -> None:
    client = TestClient(make_app(max_body_bytes=1024))
    big = {"name": "x" * 2000}
    info = failure(client.post("/destinations", params={"api_key": api_key}, json=big), 413)
    assert "1024 bytes" in info["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(10):
            yield b"name=" + b"y" * 500 + b"&"

    response = client.put("/destinations/abc", params={"api_key": api_key}, content=chunks(),
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert "content-length" not in response.request.headers
    failure(response, 413)


# -- secrets --------------------------------------------------------------------------------

def test_no_secret_in_any_response_or_in_the_database(
    app: Starlette, client: TestClient, api_key: str, database_url: str
) -> None:
    bodies = []
    response = client.post("/destinations", params={"api_key": api_key}, json=vault_params())
    bodies.append(response.text)
    destination = response.json()["destination"]
    assert destination["vault_access_key_id"] == "****WXYZ"
    assert "vault_secret_key" not in destination
    url = f"/destinations/{destination['id']}"
    bodies.append(client.get(url, params={"api_key": api_key}).text)
    bodies.append(client.get("/destinations", params={"api_key": api_key}).text)
    bodies.append(client.put(url, params={"api_key": api_key}, data={"name": "n"}).text)
    bodies.append(client.post("/destinations", params={"api_key": api_key},
                              json=vault_params(vault_bucket=BAD_CREDENTIALS)).text)
    for body in bodies:
        assert SECRET not in body and "vault_secret_key\":" not in body
        assert KEY_ID not in body

    rows = raw_rows(app)
    assert SECRET not in json.dumps(rows, default=str)
    assert VaultStore.puts[0][1] == SECRET  # yet the store got the real secret
    if database_url.startswith("sqlite"):
        app.state.engine.dispose()
        db_file = Path(database_url.removeprefix("sqlite:///"))
        assert db_file.read_bytes().count(SECRET.encode()) == 0
        assert b"reports" in db_file.read_bytes()  # the non-secret fields are there
        key_file = db_file.with_name(db_file.name + ".key")
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"


def test_api_keys_are_stored_hashed(app: Starlette, api_key: str) -> None:
    with app.state.engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT api_key_hash FROM accounts")).scalars().all()
    assert api_key not in stored and all(len(h) == 64 for h in stored)


# -- openapi --------------------------------------------------------------------------------

def test_openapi_documents_every_installed_type(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    schemas = response.json()["components"]["schemas"]
    types = available_types()
    assert {"local", "vault"} <= set(types)
    for name in types:
        params = schemas[f"{name.capitalize()}DestinationParams"]
        dtype = get_type(name)
        assert set(dtype.fields.model_fields) <= set(params["properties"])
        assert set(dtype.required_fields) <= set(params["required"])
        shown = schemas[f"{name.capitalize()}Destination"]["properties"]
        assert not dtype.secret_fields & set(shown)
    assert schemas["VaultDestinationParams"]["properties"]["vault_secret_key"]["writeOnly"]


def test_environment_settings(
    database_url: str, local_root: Path, monkeypatch: pytest.MonkeyPatch, vault: object
) -> None:
    from cryptography.fernet import Fernet

    from destinations.api import create_api_key, create_app

    monkeypatch.setenv("DESTINATIONS_DATABASE_URL", database_url)
    monkeypatch.setenv("DESTINATIONS_LOCAL_ROOT", os.fspath(local_root))
    monkeypatch.setenv("DESTINATIONS_ENCRYPTION_KEYS",
                       f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}")
    app = create_app()
    try:
        key = create_api_key("env")
        client = TestClient(app)
        create(client, key, name="env", type="local", enabled=True, local_directory=".")
    finally:
        app.state.engine.dispose()
