"""The persistence package: one row <-> destination conversion, SecretsUnreadable wherever
secrets do not decrypt (box, CLI, worker task, rotation), settings from the environment,
and the layout rule (API, workers and CLI use only persistence's public names)."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from starlette.applications import Starlette
from starlette.testclient import TestClient

import destinations
from destinations import ResultFile, ResultSet, parse_destination
from destinations.api import create_api_key
from destinations.api.cli import keys as keys_cli
from destinations.celery import TASK_NAME, ResultSetRef, create_celery
from destinations.cli import main
from destinations.persistence import (
    DestinationRepository,
    SecretBox,
    create_account,
    load_destination,
    load_secret_box,
    make_engine,
    read_delivery_statuses,
    upgrade,
)
from tests.api.vaultplugin import VaultStore

CORE = Path(destinations.__file__).parent
SECRET = "vault-s3cr3t-value"


def _vault(name: str = "stored") -> destinations.Destination:
    return parse_destination(
        {
            "name": name,
            "type": "vault",
            "enabled": True,
            "vault_bucket": "ok",
            "vault_access_key_id": "AKIAEXAMPLE1234",
            "vault_secret_key": SECRET,
        }
    )


@pytest.fixture
def stored(
    database_url: str, vault: type[VaultStore]
) -> tuple[str, str, DestinationRepository]:
    """A migrated database with one account holding one vault destination; (url, id, repo)."""
    engine = make_engine(database_url)
    upgrade(engine)
    create_account(engine, "ops")
    repository = DestinationRepository(engine, SecretBox([Fernet.generate_key().decode()]))
    row = repository.insert(1, _vault(), verified=False, limit=10)
    yield database_url, row.id, repository
    engine.dispose()


def test_row_values_keep_secrets_encrypted_and_round_trip(
    stored: tuple[str, str, DestinationRepository],
) -> None:
    _, destination_id, repository = stored
    row = repository.find_row(destination_id)
    assert row is not None
    assert SECRET not in str(row.params) and SECRET not in row.secrets
    assert "vault_secret_key" not in row.params
    assert row.params["vault_bucket"] == "ok"
    back = repository.find(destination_id)
    assert back is not None and back.id == destination_id
    assert back.to_params(reveal_secrets=True)["vault_secret_key"] == SECRET
    assert back == parse_destination({**_vault().to_params(reveal_secrets=True),
                                      "id": destination_id})
    assert repository.find(destination_id, account_id=2) is None  # another account's
    assert repository.find("nosuchid") is None


def test_wrong_keys_raise_secrets_unreadable_naming_the_source_never_a_key(
    stored: tuple[str, str, DestinationRepository], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, destination_id, repository = stored
    row = repository.find_row(destination_id)
    assert row is not None
    wrong = Fernet.generate_key().decode()
    monkeypatch.setenv("DESTINATIONS_ENCRYPTION_KEYS", wrong)
    with pytest.raises(destinations.SecretsUnreadable) as info:
        load_secret_box(None, url).decrypt(row.secrets)
    message = str(info.value)
    assert "DESTINATIONS_ENCRYPTION_KEYS" in message
    assert wrong not in message and SECRET not in message
    assert isinstance(info.value, destinations.DestinationsError)
    assert not isinstance(info.value, RuntimeError)
    with pytest.raises(destinations.SecretsUnreadable, match="the keys given"):
        load_destination(url, destination_id, encryption_keys=wrong)


def test_cli_deliver_with_wrong_keys_exits_2_without_a_secret(
    stored: tuple[str, str, DestinationRepository],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, destination_id, _ = stored
    wrong = Fernet.generate_key().decode()
    monkeypatch.setenv("DESTINATIONS_ENCRYPTION_KEYS", wrong)
    (tmp_path / "a.csv").write_text("x\n")
    result = CliRunner().invoke(
        main,
        ["deliver", str(tmp_path / "a.csv"), "--collection-id", "c", "--collection-name", "n",
         "--result-set-id", "1", "--destination", destination_id, "--database-url", url],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "cannot be decrypted" in result.output
    assert wrong not in result.output and SECRET not in result.output


def test_rotation_counts_rows_no_key_opens(
    stored: tuple[str, str, DestinationRepository], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _, _ = stored
    monkeypatch.setenv("DESTINATIONS_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    result = CliRunner().invoke(keys_cli, ["rotate-encryption", "--database-url", url])
    assert result.exit_code == 1
    assert "re-encrypted 0 destination(s)" in result.output
    assert "1 destination(s) could not be decrypted" in result.output


def test_worker_task_with_wrong_keys_records_failed(
    stored: tuple[str, str, DestinationRepository], tmp_path: Path
) -> None:
    url, destination_id, repository = stored
    (tmp_path / "a.csv").write_text("x\n")
    ref = ResultSetRef.from_result_set(
        ResultSet("c", "n", "rs1", [ResultFile("a.csv", tmp_path / "a.csv")]), datetime.now(UTC)
    )
    # apply() runs the task here, synchronously: the broker is never contacted.
    app = create_celery(
        "redis://127.0.0.1:6379/15", url, encryption_keys=[Fernet.generate_key().decode()]
    )
    try:
        outcome = app.tasks[TASK_NAME].apply(args=(ref.to_message(), destination_id)).get()
    finally:
        app.close()
    assert outcome == "failed"
    (status,) = read_delivery_statuses(repository.engine, "rs1")
    assert status.status == "failed"
    assert status.log[-1]["text"] == (
        "the stored destination's secrets do not decrypt on this worker"
    )
    assert SECRET not in str(status.to_dict())


def test_limits_come_from_the_environment(
    database_url: str,
    make_app: object,
    vault: type[VaultStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DESTINATIONS_MAX_DESTINATIONS", "1")
    monkeypatch.setenv("DESTINATIONS_VERIFICATIONS_PER_MINUTE", "0")
    app: Starlette = make_app()  # type: ignore[operator]
    client = TestClient(app)
    key = create_api_key("first", database_url=database_url)
    body = {"name": "a", "type": "vault", "enabled": "false", "vault_bucket": "ok",
            "vault_access_key_id": "AKIAEXAMPLE1234", "vault_secret_key": SECRET}  # fmt: skip
    assert client.post(f"/destinations?api_key={key}", data=body).status_code == 200
    second = client.post(f"/destinations?api_key={key}", data={**body, "name": "b"})
    assert second.status_code == 400
    assert "1 of 1 destinations" in second.json()["request_info"]["message"]
    assert client.get(f"/destinations?api_key={key}").json()["usage"]["limit"] == 1


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports (relative ones resolved), plus importlib names."""
    package = ".".join(("destinations", *path.relative_to(CORE).with_suffix("").parts))
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            module = node.module or ""
            name = f"{base}.{module}".rstrip(".") if node.level else module
            found.append(name)
            found.extend(f"{name}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith("destinations.")
        ):
            found.append(node.value)  # importlib.import_module("destinations.x")
    return found


def _owner(path: Path) -> str:
    parts = path.relative_to(CORE).parts
    return parts[0] if len(parts) > 1 else "core"


@pytest.mark.parametrize("package", ["api", "celery", "persistence"])
def test_no_private_module_of_another_package_is_imported(package: str) -> None:
    """api, celery and persistence (and the CLI) use each other's public names only."""
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        if _owner(path) == package:
            continue
        for name in _imports(path):
            parts = name.split(".")
            if parts[:2] == ["destinations", package] and any(
                p.startswith("_") and p != "__init__" for p in parts[2:3]
            ):
                offenders.append(f"{path.relative_to(CORE)} imports {name}")
    assert offenders == []


def test_celery_and_the_cli_do_not_import_the_api() -> None:
    users = [*sorted((CORE / "celery").rglob("*.py")), CORE / "_cli_common.py"]
    offenders = [
        f"{path.relative_to(CORE)}: {name}"
        for path in users
        for name in _imports(path)
        if name.startswith("destinations.api")
    ]
    assert offenders == []


def test_the_row_to_destination_conversion_exists_once() -> None:
    """Only the repository builds a destination from a row's ``params`` and secrets."""
    hits = [
        str(path.relative_to(CORE))
        for path in sorted(CORE.rglob("*.py"))
        if "**row.params" in path.read_text()
    ]
    assert hits == ["persistence/_repository.py"]
