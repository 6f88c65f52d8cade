"""The API's service layer (destinations.api._service) called directly, on a real SQLite
database: list's paging and refusals, the limit, verification refusals and their envelope
fields, updates that must or must not verify, and API-key authentication with its cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from destinations.api import create_api_key, create_app
from destinations.api._errors import ApiError
from destinations.api._service import DestinationService
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
