"""The read path: one threadpool hop per request, the API-key cache, masked-field sets."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from destinations.api import _app, create_api_key
from destinations.api._keys import KeyCache
from tests.api.test_api import KEY_ID, SECRET, create, failure, vault_params


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_key_cache_keeps_hits_for_ttl_and_is_bounded() -> None:
    clock = Clock()
    cache = KeyCache(30.0, max_entries=2, clock=clock)
    assert cache.get("a") is None
    cache.put("a", 1)
    assert cache.get("a") == 1
    clock.now += 29.9
    assert cache.get("a") == 1
    clock.now += 0.1
    assert cache.get("a") is None  # expired
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)  # over the bound: the oldest entry goes
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, 2, 3)
    cache.forget("b")
    assert cache.get("b") is None
    cache.forget()
    assert cache.get("c") is None


def test_key_cache_off_with_zero_ttl() -> None:
    cache = KeyCache(0.0)
    cache.put("a", 1)
    assert cache.get("a") is None


def test_unknown_key_answers_401_every_time_and_is_never_cached(
    app: Starlette, client: TestClient, api_key: str, database_url: str
) -> None:
    for _ in range(3):
        assert client.get("/destinations", params={"api_key": api_key}).status_code == 200
        failure(client.get("/destinations", params={"api_key": api_key + "x"}), 401)
        failure(client.get("/destinations"), 401)
        failure(client.get("/destinations", params={"api_key": ""}), 401)
    # A key that failed once works as soon as it exists: failures are not remembered.
    later = create_api_key("later", database_url=database_url)
    assert client.get("/destinations", params={"api_key": later}).status_code == 200


def test_cached_key_keeps_tenants_apart(
    client: TestClient, api_key: str, other_key: str
) -> None:
    mine = create(client, api_key, **vault_params())
    for _ in range(2):  # the second round is answered from the key cache
        theirs = client.get("/destinations", params={"api_key": other_key}).json()
        assert theirs["destinations"] == [] and theirs["usage"]["used"] == 0
        failure(client.get(f"/destinations/{mine['id']}", params={"api_key": other_key}), 404)
        listing = client.get("/destinations", params={"api_key": api_key}).json()
        assert [d["id"] for d in listing["destinations"]] == [mine["id"]]


@pytest.mark.parametrize("method", ["list", "get", "delete"])
def test_reads_and_deletes_take_one_threadpool_hop(
    client: TestClient, api_key: str, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    destination = create(client, api_key, **vault_params())
    calls: list[Any] = []
    real = _app.run_in_threadpool

    async def counting(func: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(func)
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(_app, "run_in_threadpool", counting)
    url = "/destinations" if method == "list" else f"/destinations/{destination['id']}"
    verb = "delete" if method == "delete" else "get"
    response = getattr(client, verb)(url, params={"api_key": api_key})
    assert response.status_code == 200, response.text
    assert len(calls) == 1


def test_presented_rows_mask_and_hide_on_every_read(client: TestClient, api_key: str) -> None:
    created = create(client, api_key, **vault_params())
    create(client, api_key, **vault_params(name="Vault two"))
    listing = client.get("/destinations", params={"api_key": api_key}).json()
    fetched = client.get(f"/destinations/{created['id']}", params={"api_key": api_key}).json()
    shown = [*listing["destinations"], fetched["destination"], created]
    for destination in shown:
        assert destination["vault_access_key_id"] == "****" + KEY_ID[-4:]
        assert "vault_secret_key" not in destination
        assert SECRET not in str(destination)
    assert listing["destinations"][0] == fetched["destination"] == created


def test_bad_key_on_a_write_answers_401_before_the_body_is_judged(client: TestClient) -> None:
    failure(client.post("/destinations", params={"api_key": "nope"}, content=b"{not json",
                        headers={"Content-Type": "application/json"}), 401)
    failure(client.put("/destinations/x", params={"api_key": "nope"}, content=b"x" * 100_000,
                       headers={"Content-Type": "application/json"}), 401)
