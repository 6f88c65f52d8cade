"""The API's service layer (destinations.api._service) called directly, on a real SQLite
database: list's paging and refusals, the limit, verification refusals and their envelope
fields, updates that must or must not verify, and API-key authentication with its cache."""

from __future__ import annotations

import asyncio
import shutil
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from starlette.applications import Starlette

from destinations import available_types
from destinations.api import create_api_key, create_app
from destinations.api._errors import NOT_FOUND, UNAUTHORIZED, ApiError
from destinations.api._keys import ApiKeys, KeyCache
from destinations.api._limits import RateLimiter
from destinations.api._service import DestinationService
from destinations.persistence import list_keys, revoke_key
from tests.api import vaultplugin

SECRET = "vault-SECRET-strength-91c2"


def params(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Vault one", "type": "vault", "enabled": True,
        "vault_access_key_id": "AKIAEXAMPLE", "vault_secret_key": SECRET,
        "vault_bucket": "reports", "vault_path_prefix": "exports/%DATE%", **overrides,
    }


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Starlette]:
    vaultplugin.install()
    vaultplugin.VaultStore.reset()
    root = tmp_path / "root"
    root.mkdir()
    url = f"sqlite:///{tmp_path / 'svc.db'}"
    app = create_app(database_url=url, local_root=root, max_destinations=3,
                     verifications_per_minute=5)
    app.state.test_url = url
    yield app
    app.state.engine.dispose()


@pytest.fixture
def service(app: Starlette) -> DestinationService:
    svc: DestinationService = app.state.service
    return svc


@pytest.fixture
def account(app: Starlette, service: DestinationService) -> int:
    key = create_api_key("first", database_url=app.state.test_url)
    return service.authenticate(key)


def refusal(call: Any, *args: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        call(*args)
    return info.value


# -- list -------------------------------------------------------------------------------------

def test_list_pages_by_ten_and_reports_usage(service: DestinationService, account: int) -> None:
    service.settings = type(service.settings)(**{**_settings(service), "max_destinations": 30})
    for i in range(12):
        service.create(account, params(name=f"v{i:02d}", enabled=False))
    first = service.list(account, {})
    assert first["usage"] == {"used": 12, "limit": 30, "available": 18}
    assert (first["current_page"], first["total_pages"], first["total_results"]) == (1, 2, 12)
    assert len(first["destinations"]) == 10
    second = service.list(account, {"page": "2", "sort_by": "name"})
    assert [d["name"] for d in second["destinations"]] == ["v10", "v11"]
    down = service.list(account, {"sort_by": "name", "sort_direction": "descending"})
    assert down["destinations"][0]["name"] == "v11"
    found = service.list(account, {"search_term": "  v0 "})
    assert found["total_results"] == 10


def _settings(service: DestinationService) -> dict[str, Any]:
    s = service.settings
    return {f: getattr(s, f) for f in s.__slots__}


def test_an_empty_list_has_one_page(service: DestinationService, account: int) -> None:
    empty = service.list(account, {})
    assert (empty["total_pages"], empty["total_results"], empty["destinations"]) == (1, 0, [])
    assert empty["usage"] == {"used": 0, "limit": 3, "available": 3}


@pytest.mark.parametrize("page", ["0", "-1", "x", "1000001", "1.5"])
def test_a_bad_page_is_refused_with_its_range(
    service: DestinationService, account: int, page: str
) -> None:
    error = refusal(service.list, account, {"page": page})
    assert error.status == 400
    assert error.extra["errors"] == {"page": "must be a whole number from 1 to 1000000"}


def test_the_page_range_ends_are_allowed(service: DestinationService, account: int) -> None:
    assert service.list(account, {"page": "1000000"})["current_page"] == 1000000
    assert service.list(account, {"page": "1"})["current_page"] == 1


def test_bad_sort_fields_are_refused_together(service: DestinationService, account: int) -> None:
    error = refusal(service.list, account, {"sort_by": "id", "sort_direction": "up"})
    assert error.extra["errors"] == {
        "sort_by": "must be name or type",
        "sort_direction": "must be ascending or descending",
    }


# -- create and the limit ---------------------------------------------------------------------

def test_the_limit_is_refused_with_counts(service: DestinationService, account: int) -> None:
    for i in range(3):
        service.create(account, params(name=f"v{i}", enabled=False))
    error = refusal(service.create, account, params(name="one too many", enabled=False))
    assert error.status == 400
    assert error.message == (
        "Destination limit reached: this account has 3 of 3 destinations; delete one before "
        "creating another"
    )
    assert service.list(account, {})["usage"]["available"] == 0


def test_an_id_in_a_create_is_refused(service: DestinationService, account: int) -> None:
    error = refusal(service.create, account, {**params(), "id": "x"})
    assert error.extra["errors"] == {"id": "is assigned by the server; do not send it"}


def test_a_disabled_create_does_not_verify(service: DestinationService, account: int) -> None:
    pending = service.prepare_create(account, params(enabled=False))
    assert pending.verifies is False
    created = pending.run()
    assert created["enabled"] is False and created["last_verified_at"] is None
    assert vaultplugin.VaultStore.puts == []


def test_a_verification_failure_carries_step_code_and_provider_code(
    service: DestinationService, account: int
) -> None:
    error = refusal(service.create, account, params(vault_bucket=vaultplugin.BAD_CREDENTIALS))
    assert error.status == 400
    assert error.message.startswith("Destination verification failed: ")
    assert error.extra["connectivity_problem"] is True
    assert error.extra["step"] == "put"
    assert error.extra["code"] == "invalid_credentials"
    assert SECRET not in error.message
    assert service.list(account, {})["total_results"] == 0


def test_verifications_are_rate_limited_per_account(
    service: DestinationService, account: int
) -> None:
    for _ in range(5):
        with pytest.raises(ApiError):
            service.create(account, params(vault_bucket=vaultplugin.BAD_CREDENTIALS))
    error = refusal(service.create, account, params())
    assert error.status == 429
    assert error.message.startswith(
        "Too many verification attempts: at most 5 a minute per account; retry in "
    )
    retry_after = int(error.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert error.message.endswith(f"retry in {retry_after} s")
    # A change that does not verify is not limited.
    assert service.create(account, params(enabled=False))["enabled"] is False


# -- get, update, delete ----------------------------------------------------------------------

def test_update_verifies_only_what_needs_it(service: DestinationService, account: int) -> None:
    created = service.create(account, params())
    probes = len(vaultplugin.VaultStore.puts)
    renamed = service.prepare_update(account, created["id"], {"name": "renamed"})
    assert renamed.verifies is False
    assert renamed.run()["name"] == "renamed"
    assert len(vaultplugin.VaultStore.puts) == probes
    moved = service.prepare_update(account, created["id"], {"vault_bucket": "other"})
    assert moved.verifies is True
    assert moved.run()["vault_bucket"] == "other"
    assert len(vaultplugin.VaultStore.puts) == probes + 1


def test_a_failed_update_verification_keeps_the_old_destination(
    service: DestinationService, account: int
) -> None:
    created = service.create(account, params())
    error = refusal(service.update, account, created["id"],
                    {"vault_bucket": vaultplugin.BAD_CREDENTIALS})
    assert error.status == 400 and error.extra["step"] == "put"
    assert service.get(account, created["id"])["vault_bucket"] == "reports"


def test_ids_of_others_and_unknown_ids_are_not_found(
    app: Starlette, service: DestinationService, account: int
) -> None:
    created = service.create(account, params(enabled=False))
    other = service.authenticate(create_api_key("second", database_url=app.state.test_url))
    for call, args in (
        (service.get, (other, created["id"])),
        (service.update, (other, created["id"], {"name": "x"})),
        (service.delete, (other, created["id"])),
        (service.get, (account, "no-such-id")),
    ):
        assert refusal(call, *args).status == 404
    service.delete(account, created["id"])
    assert refusal(service.get, account, created["id"]).status == 404
    assert refusal(service.delete, account, created["id"]).status == 404


def test_the_id_cannot_be_changed(service: DestinationService, account: int) -> None:
    created = service.create(account, params(enabled=False))
    error = refusal(service.update, account, created["id"], {"id": "other"})
    assert error.extra["errors"] == {"id": "cannot be changed"}
    same = service.update(account, created["id"], {"id": created["id"], "name": "kept"})
    assert same["name"] == "kept" and same["id"] == created["id"]


# -- API keys -----------------------------------------------------------------------------------

def test_missing_and_unknown_keys_are_refused(service: DestinationService, account: int) -> None:
    for key in (None, "", "not-a-key"):
        error = refusal(service.authenticate, key)
        assert error.status == 401


def test_an_unknown_key_gets_the_one_unauthorized_message(service: DestinationService) -> None:
    for key in (None, "dst_unknown"):
        assert refusal(service.authenticate, key).message == UNAUTHORIZED


# -- not found, messages ------------------------------------------------------------------------

def test_not_found_says_so(service: DestinationService, account: int) -> None:
    for call, args in ((service.get, (account, "nope")), (service.delete, (account, "nope")),
                       (service.update, (account, "nope", {"name": "x"}))):
        error = refusal(call, *args)
        assert (error.status, error.message) == (404, NOT_FOUND)


def test_a_destination_deleted_while_its_update_runs_is_not_found(
    service: DestinationService, account: int
) -> None:
    created = service.create(account, params(enabled=False))
    pending = service.prepare_update(account, created["id"], {"name": "late"})
    service.delete(account, created["id"])
    error = refusal(pending.run)
    assert (error.status, error.message) == (404, NOT_FOUND)


def test_two_updates_of_one_version_the_second_is_refused(
    service: DestinationService, account: int
) -> None:
    created = service.create(account, params(enabled=False))
    first = service.prepare_update(account, created["id"], {"name": "first"})
    second = service.prepare_update(account, created["id"], {"name": "second"})
    assert first.run()["name"] == "first"
    error = refusal(second.run)
    assert (error.status, error.message) == (
        409,
        "The destination was changed by another request while this one was being processed; "
        "nothing was saved. Fetch it again and retry.",
    )
    assert service.get(account, created["id"])["name"] == "first"


def test_a_create_for_an_account_deleted_meanwhile_is_unauthorized(
    app: Starlette, service: DestinationService, account: int
) -> None:
    pending = service.prepare_create(account, params(enabled=False))
    engine: Engine = app.state.engine
    with engine.begin() as connection:
        connection.execute(text("PRAGMA foreign_keys=ON"))
        connection.execute(text("DELETE FROM accounts WHERE id = :id"), {"id": account})
    error = refusal(pending.run)
    assert (error.status, error.message) == (401, UNAUTHORIZED)


# -- verification: what it records, whom it limits ---------------------------------------------

def test_a_verified_create_and_update_record_when_they_were_verified(
    service: DestinationService, account: int
) -> None:
    created = service.create(account, params())
    assert created["last_verified_at"] is not None
    off = service.create(account, params(name="off", enabled=False))
    assert off["last_verified_at"] is None
    on = service.update(account, off["id"], {"enabled": True})
    assert on["last_verified_at"] is not None


def test_a_verification_failure_names_the_provider_code(
    service: DestinationService, account: int
) -> None:
    error = refusal(service.create, account, params(vault_bucket=vaultplugin.BAD_CREDENTIALS))
    assert error.extra["provider_code"] == "InvalidAccessKeyId"


def test_a_create_at_the_limit_is_refused_before_anything_is_verified(
    service: DestinationService, account: int
) -> None:
    for i in range(3):
        service.create(account, params(name=f"v{i}", enabled=False))
    error = refusal(service.prepare_create, account, params(name="fourth"))
    assert error.message.startswith("Destination limit reached: this account has 3 of 3")
    assert vaultplugin.VaultStore.puts == []


def test_the_verification_rate_is_per_account_for_creates_and_updates(
    app: Starlette, service: DestinationService, account: int
) -> None:
    other = service.authenticate(create_api_key("second", database_url=app.state.test_url))
    mine = service.create(account, params(enabled=False))
    for _ in range(5):  # five failing verifications of updates use up this account's share
        with pytest.raises(ApiError):
            service.update(account, mine["id"], {"enabled": True,
                                                 "vault_bucket": vaultplugin.BAD_CREDENTIALS})
    assert refusal(service.prepare_update, account, mine["id"], {"enabled": True}).status == 429
    theirs = service.create(other, params(enabled=False))
    assert service.update(other, theirs["id"], {"enabled": True})["enabled"] is True
    for _ in range(4):
        with pytest.raises(ApiError):
            service.create(other, params(vault_bucket=vaultplugin.BAD_CREDENTIALS))
    assert refusal(service.prepare_create, other, params()).status == 429
    assert refusal(service.prepare_create, account, params()).status == 429


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_wait_under_a_second_is_announced_as_one_second(
    service: DestinationService, account: int
) -> None:
    clock = Clock()
    service.verifications = RateLimiter(1, clock=clock)  # one a minute
    service.create(account, params())
    clock.now += 59.5
    error = refusal(service.prepare_create, account, params(name="soon"))
    assert error.status == 429 and error.headers == {"Retry-After": "1"}
    assert error.message.endswith("retry in 1 s")


@pytest.mark.parametrize(("timeout", "retry_after"), [(0.2, 1), (2.5, 3), (30.0, 5)])
def test_a_full_verification_pool_asks_to_retry_after_the_timeout_at_most_five_seconds(
    tmp_path: Path, timeout: float, retry_after: int
) -> None:
    app = create_app(database_url=f"sqlite:///{tmp_path / 'gate.db'}", verify_timeout=timeout)
    try:
        assert app.state.service.gate.retry_after == retry_after
    finally:
        app.state.engine.dispose()


def test_execute_runs_a_plain_change_and_a_verification(
    service: DestinationService, account: int
) -> None:
    plain = service.prepare_create(account, params(enabled=False))
    assert asyncio.run(service.execute(account, plain))["enabled"] is False
    verified = service.prepare_create(account, params(name="checked"))
    assert asyncio.run(service.execute(account, verified))["last_verified_at"] is not None
    assert service.gate.running(account) == 0


def test_list_sorts_by_the_field_asked_for(service: DestinationService, account: int) -> None:
    for name in ("b", "c", "a"):
        service.create(account, params(name=name, enabled=False))
    listed = service.list(account, {"sort_by": "name"})
    assert [d["name"] for d in listed["destinations"]] == ["a", "b", "c"]


# -- Idempotency-Key ------------------------------------------------------------------------------

def test_an_idempotency_key_is_claimed_replayed_and_refused_for_another_body(
    app: Starlette, service: DestinationService, account: int
) -> None:
    body = params(enabled=False)
    assert service.claim(account, "k1", body).outcome == "new"
    busy = refusal(service.claim, account, "k1", body)
    assert (busy.status, busy.message, busy.headers) == (
        409, "A request with this Idempotency-Key is still being processed; retry shortly",
        {"Retry-After": "1"})
    service.finish(account, "k1", 201, b'{"done": true}')
    reordered = dict(reversed(list(body.items())))
    replay = service.claim(account, "k1", reordered)
    assert (replay.outcome, replay.status, replay.response) == ("replay", 201, '{"done": true}')
    other = refusal(service.claim, account, "k1", {**body, "name": "another"})
    assert (other.status, other.message) == (
        409, "Idempotency-Key was already used with a different request body in the last 24 "
             "hours; use a new key for a new request")
    # the same key of another account is that account's own
    second = service.authenticate(create_api_key("second", database_url=app.state.test_url))
    assert service.claim(second, "k1", body).outcome == "new"


def test_a_released_idempotency_key_can_be_claimed_again(
    service: DestinationService, account: int
) -> None:
    assert service.claim(account, "k2", params()).outcome == "new"
    service.release(account, "k2")
    assert service.claim(account, "k2", params(name="changed")).outcome == "new"


def test_the_request_hash_is_a_keyed_fingerprint_of_canonical_json(
    service: DestinationService,
) -> None:
    body = {"b": "\u00e9", "a": [1, 2], "c": None}
    canonical = '{"a":[1,2],"b":"\\u00e9","c":null}'
    digest = service.request_hash(body)
    assert digest == service.repository.box.fingerprint(canonical.encode())
    assert digest == service.request_hash({"c": None, "a": [1, 2], "b": "\u00e9"})
    assert SECRET not in service.request_hash(params())


# -- local destinations: each account's own subtree -----------------------------------------------

def local(**overrides: Any) -> dict[str, Any]:
    return {"name": "here", "type": "local", "enabled": True, "local_directory": ".",
            **overrides}


def test_local_destinations_live_in_each_accounts_own_subtree(
    app: Starlette, service: DestinationService, account: int, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    other = service.authenticate(create_api_key("second", database_url=app.state.test_url))
    first = service.create(account, local(type=" Local "))
    assert first["local_directory"] == "."
    mine = root / str(account)
    assert mine.is_dir() and stat.S_IMODE(mine.stat().st_mode) == 0o700
    (mine / "exports").mkdir()
    created = service.create(account, local(local_directory="exports"))
    assert created["local_directory"] == "exports"
    assert service.get(account, created["id"])["local_directory"] == "exports"
    listed = service.list(account, {"sort_by": "name", "search_term": "here"})
    assert {d["local_directory"] for d in listed["destinations"]} == {".", "exports"}
    # the other account's "exports" is not this one: it does not exist there
    error = refusal(service.create, other, local(local_directory="exports"))
    assert list(error.extra["errors"]) == ["local_directory"]
    assert (root / str(other)).is_dir()
    assert not (root / str(other) / "exports").exists()


def test_a_local_update_stays_inside_the_subtree(
    service: DestinationService, account: int, tmp_path: Path
) -> None:
    created = service.create(account, local(local_path_prefix="p/%DATE%"))
    (tmp_path / "root" / str(account) / "next").mkdir()
    moved = service.update(account, created["id"], {"local_directory": "next"})
    assert moved["local_directory"] == "next" and moved["local_path_prefix"] == "p/%DATE%"


def test_a_local_destination_whose_directory_is_gone_can_be_repointed_or_retyped(
    service: DestinationService, account: int, tmp_path: Path
) -> None:
    mine = tmp_path / "root" / str(account)
    mine.mkdir(mode=0o700)
    (mine / "gone").mkdir()
    created = service.create(account, local(local_directory="gone", local_path_prefix="p"))
    shutil.rmtree(mine / "gone")  # with the prefix directory the probe made
    (mine / "new").mkdir()
    repointed = service.update(account, created["id"], {"local_directory": "new"})
    assert (repointed["local_directory"], repointed["local_path_prefix"]) == ("new", "p")
    shutil.rmtree(mine / "new")
    retyped = service.update(account, created["id"], {
        "type": "vault", "vault_access_key_id": "AKIAEXAMPLE", "vault_secret_key": SECRET,
        "vault_bucket": "reports"})
    assert retyped["type"] == "vault" and retyped["name"] == "here"
    assert "local_directory" not in retyped and retyped["last_verified_at"] is not None


def test_a_destination_retyped_to_local_is_confined_too(
    service: DestinationService, account: int
) -> None:
    created = service.create(account, params(enabled=False))
    changed = service.update(account, created["id"], {"type": "local", "local_directory": "."})
    assert changed["type"] == "local" and changed["local_directory"] == "."


@pytest.fixture
def rootless(tmp_path: Path) -> Iterator[DestinationService]:
    vaultplugin.install()
    url = f"sqlite:///{tmp_path / 'rootless.db'}"
    app = create_app(database_url=url, local_root=None)
    app.state.test_url = url
    yield app.state.service
    app.state.engine.dispose()


def test_without_a_local_root_the_local_type_is_not_offered(
    rootless: DestinationService, tmp_path: Path
) -> None:
    account = rootless.authenticate(
        create_api_key("x", database_url=f"sqlite:///{tmp_path / 'rootless.db'}"))
    offered = [t for t in available_types() if t != "local"]
    assert rootless.offered_types() == offered
    message = f"type 'local' is not offered by this server; offered types: {', '.join(offered)}"
    error = refusal(rootless.create, account, local())
    assert error.extra["errors"] == {"type": message}
    created = rootless.create(account, params(enabled=False))
    error = refusal(rootless.update, account, created["id"], {"type": "local",
                                                              "local_directory": "."})
    assert error.extra["errors"] == {"type": message}


def test_with_a_local_root_the_local_type_is_offered(service: DestinationService) -> None:
    assert service.offered_types() == available_types()
    assert "local" in service.offered_types()


# -- the key cache and authentication ------------------------------------------------------------

def test_the_key_cache_keeps_hits_for_its_ttl_and_drops_the_oldest() -> None:
    clock = Clock()
    cache = KeyCache(0.5, clock=clock)
    cache.put("h1", 1)
    clock.now += 0.4
    assert cache.get("h1") == 1
    clock.now += 0.1
    assert cache.get("h1") is None
    full = KeyCache(10, clock=clock)
    for i in range(1025):
        full.put(f"k{i}", i)
    assert full.get("k0") is None and full.get("k1") == 1 and full.get("k1024") == 1024
    full.forget("k1")
    full.forget("never-there")
    assert full.get("k1") is None and full.get("k2") == 2
    full.forget()
    assert full.get("k2") is None


def test_a_cache_with_no_ttl_keeps_nothing() -> None:
    cache = KeyCache(0, clock=Clock())
    cache.put("h", 1)
    assert cache.get("h") is None


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split()).lower())

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


def kinds(seen: list[str]) -> list[str]:
    out = []
    for s in seen:
        if "from key_generation" in s:
            out.append("generation")
        elif s.startswith("select") and "api_key_hash" in s:
            out.append("lookup")
        elif s.startswith("update accounts") and "last_used_at" in s:
            out.append("used")
    return out


def test_authentication_reads_the_database_only_as_often_as_documented(
    app: Starlette,
) -> None:
    engine: Engine = app.state.engine
    key = create_api_key("timed", database_url=app.state.test_url)
    clock = Clock()
    keys = ApiKeys(engine, 30.0, clock=clock)
    expected = [
        (0.0, ["generation", "lookup", "used"]),
        (0.5, []),  # cached, generation checked under a second ago, used under a minute ago
        (1.0, ["generation"]),  # a second later: the revocation generation again
        (30.5, ["generation", "lookup"]),  # the cached hit expired
        (59.9, ["generation"]),
        (60.0, ["used"]),  # last used a minute ago: stamped again
    ]
    start = clock.now
    account = None
    for at, reads in expected:
        clock.now = start + at
        with statements(engine) as seen:
            account = keys.authenticate(key)
        assert kinds(seen) == reads, at
    (info,) = [k for k in list_keys(engine) if k.id == account]
    assert info.last_used_at is not None


def test_a_revoked_key_is_refused_within_a_second_and_others_still_work(
    app: Starlette,
) -> None:
    engine: Engine = app.state.engine
    revoked = create_api_key("revoked", database_url=app.state.test_url)
    kept = create_api_key("kept", database_url=app.state.test_url)
    clock = Clock()
    keys = ApiKeys(engine, 30.0, clock=clock)
    gone = keys.authenticate(revoked)
    keys.authenticate(kept)
    assert revoke_key(engine, gone) is True
    clock.now += 1.0
    error = refusal(keys.authenticate, revoked)
    assert (error.status, error.message) == (401, UNAUTHORIZED)
    keys.authenticate(kept)  # looked up again after the cache was emptied, and cached
    clock.now += 0.5
    with statements(engine) as seen:
        keys.authenticate(kept)
    assert kinds(seen) == []
    clock.now += 0.5
    with statements(engine) as seen:
        keys.authenticate(kept)
    assert kinds(seen) == ["generation"]  # unchanged generation: the cache is kept


def test_a_verification_that_hangs_is_given_up_after_the_servers_timeout(tmp_path: Path) -> None:
    vaultplugin.install()
    vaultplugin.VaultStore.reset()
    url = f"sqlite:///{tmp_path / 'slow.db'}"
    app = create_app(database_url=url, verify_timeout=0.5)
    service: DestinationService = app.state.service
    try:
        account = service.authenticate(create_api_key("slow", database_url=url))
        started = time.monotonic()
        error = refusal(service.create, account, params(vault_bucket=vaultplugin.GATED))
        assert time.monotonic() - started < 10  # the store itself would give up after 20 s
        assert error.status == 400 and error.extra["code"] == "timeout"
        assert service.list(account, {})["total_results"] == 0
    finally:
        vaultplugin.VaultStore.gate.set()
        app.state.engine.dispose()


def test_a_running_verification_holds_one_of_its_accounts_slots(
    service: DestinationService, account: int
) -> None:
    async def scenario() -> dict[str, Any]:
        pending = service.prepare_create(account, params(vault_bucket=vaultplugin.GATED))
        task = asyncio.ensure_future(service.execute(account, pending))
        try:
            assert await asyncio.to_thread(vaultplugin.VaultStore.waiting.wait, 10)
            assert service.gate.running(account) == 1
        finally:
            vaultplugin.VaultStore.gate.set()
        return await task

    assert asyncio.run(scenario())["last_verified_at"] is not None
    assert service.gate.running(account) == 0


def test_without_a_local_root_other_types_are_created_and_updated(
    rootless: DestinationService, tmp_path: Path
) -> None:
    account = rootless.authenticate(
        create_api_key("y", database_url=f"sqlite:///{tmp_path / 'rootless.db'}"))
    created = rootless.create(account, params(enabled=False))
    assert rootless.update(account, created["id"], {"name": "renamed"})["name"] == "renamed"


def test_the_last_used_stamps_kept_in_memory_are_bounded(app: Starlette) -> None:
    engine: Engine = app.state.engine
    api_keys = [create_api_key(f"k{i}", database_url=app.state.test_url) for i in range(6)]
    clock = Clock()
    keys = ApiKeys(engine, 30.0, clock=clock)
    keys.cache = KeyCache(30.0, max_entries=1, clock=clock)  # stamps kept: at most 4 x 1

    def stamps(key: str) -> list[str]:
        with statements(engine) as seen:
            keys.authenticate(key)
        return [k for k in kinds(seen) if k == "used"]

    for key in api_keys[:4]:
        assert stamps(key) == ["used"]
    assert stamps(api_keys[0]) == []  # four remembered: stamped under a minute ago
    assert stamps(api_keys[4]) == ["used"]  # a fifth: the memory is emptied
    assert stamps(api_keys[0]) == ["used"]  # so the first is stamped again


class _BrokenEntryPoint:
    """An installed type whose plugin fails to import, as a broken install's would."""

    name = "brokentype"
    value = "destinations_brokentype"

    class dist:
        name = "destinations-brokentype"

    def load(self) -> None:
        raise ModuleNotFoundError("No module named 'brokentype_sdk'")


def test_a_type_that_cannot_load_is_a_400_for_the_customer_and_an_error_for_the_operator(
    service: DestinationService,
    account: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from destinations._plugins import host

    plugins = host()
    monkeypatch.setattr(
        plugins, "_entry_points", {**plugins.entry_points(), "brokentype": _BrokenEntryPoint()}
    )
    with caplog.at_level("ERROR", logger="destinations.api"):
        error = refusal(
            service.create,
            account,
            {"name": "b", "enabled": True, "type": "brokentype"},
        )
    assert error.status == 400
    assert error.extra["errors"] == {
        "type": "this destination type is installed but cannot be loaded on this server right "
        "now; ask the operator"
    }
    # the customer's answer names no distribution; the operator's log says what to install
    assert "pip install" not in f"{error.message} {error.extra}"
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(
        m.startswith("destination type 'brokentype' is provided by destinations-brokentype")
        and m.endswith("pip install destinations-brokentype")
        and "brokentype_sdk" in m
        for m in logged
    ), logged
