"""Secret leak: generated secrets go through create, failed verification (every error code,
at put and at delete, and an unmapped SDK exception that echoes the secret), update, list,
get, delete, the CLI, pydantic serialisation and DEBUG logs of the root logger.

Figure: occurrences of any secret in any output = 0 (over every example x every output).
"""

from __future__ import annotations

import io
import logging
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st
from starlette.testclient import TestClient

from destinations import CODES, parse_destination
from destinations.api import create_api_key, create_app
from destinations.cli import main as cli
from tests.api import vaultplugin
from tests.emulators.servers import Azurite

# A distinctive prefix: no generated secret can be a substring of ordinary output.
secrets = st.text(
    alphabet=string.ascii_letters + string.digits + "-_.~+/=", min_size=2, max_size=58
).map(lambda s: f"Sk{s}Zq")


@pytest.fixture
def client_and_key(tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    vaultplugin.install()
    url = f"sqlite:///{tmp_path / 'leak.db'}"
    app = create_app(database_url=url, local_root=tmp_path, verifications_per_minute=0)
    yield TestClient(app), create_api_key("leak", database_url=url)
    app.state.engine.dispose()


@pytest.fixture
def debug_logs() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield buffer
    root.removeHandler(handler)
    root.setLevel(old_level)


FAILURES = (
    [f"fail-put-{c.replace('_', '-')}" for c in sorted(CODES)]
    + [f"fail-delete-{c.replace('_', '-')}" for c in sorted(CODES)]
    + [vaultplugin.EXPLODE, vaultplugin.BAD_CREDENTIALS]
)
EXAMPLES = 25
TOTALS = {"examples": 0, "outputs": 0, "occurrences": 0}


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(secret=secrets, secret2=secrets)
def test_no_secret_in_any_output(
    client_and_key: tuple[TestClient, str], debug_logs: io.StringIO, secret: str, secret2: str
) -> None:
    client, key = client_and_key
    outputs: list[str] = []

    def call(method: str, path: str, **kwargs: object) -> None:
        response = client.request(method, path, params={"api_key": key}, **kwargs)  # type: ignore[arg-type]
        outputs.append(response.text)
        outputs.append(str(dict(response.headers)))

    def params(bucket: str, value: str) -> dict[str, object]:
        return {
            "name": "leak",
            "enabled": True,
            "type": "vault",
            "vault_access_key_id": "AKIDLEAK",
            "vault_secret_key": value,
            "vault_bucket": bucket,
        }

    created = client.post("/destinations", params={"api_key": key}, json=params("ok", secret))
    outputs.append(created.text)
    assert created.status_code == 200, created.text
    dest_id = created.json()["destination"]["id"]
    for bucket in FAILURES:
        call("POST", "/destinations", json=params(bucket, secret))
        call(
            "PUT",
            f"/destinations/{dest_id}",
            json={"vault_bucket": bucket, "vault_secret_key": secret2},
        )
        call("POST", "/destinations", data=params(bucket, secret))  # as a form
    call("PUT", f"/destinations/{dest_id}", json={"vault_secret_key": secret2})
    call("PUT", f"/destinations/{dest_id}", json={"vault_secret_key": secret2 + "\x00bad"})
    call("POST", "/destinations", json={**params("ok", secret), "vault_secret_key": [secret]})
    call("GET", "/destinations")
    call("GET", f"/destinations/{dest_id}")
    call("DELETE", f"/destinations/{dest_id}")

    runner = CliRunner()
    for bucket in ["ok", *FAILURES]:
        result = runner.invoke(
            cli,
            [
                "verify",
                "-p",
                "type=vault",
                "-p",
                "vault_access_key_id=AK",
                "-p",
                f"vault_secret_key={secret}",
                "-p",
                f"vault_bucket={bucket}",
            ],
        )
        outputs.append(result.output)
        outputs.append(result.stderr)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            outputs.append(repr(result.exception))

    destination = parse_destination(params("ok", secret))
    outputs += [
        repr(destination),
        str(destination),
        repr(destination.settings),
        str(destination.to_params()),
        str(destination.settings.model_dump()),
        destination.settings.model_dump_json(),
    ]
    outputs.append(debug_logs.getvalue())

    found = sum(text.count(s) for text in outputs for s in (secret, secret2))
    TOTALS["examples"] += 1
    TOTALS["outputs"] += len(outputs)
    TOTALS["occurrences"] += found
    assert found == 0
    # The secret did reach the store (so the test is not vacuous).
    assert ("ok", secret) in vaultplugin.VaultStore.puts


def test_report_secret_leak_figure() -> None:
    print(f"\nsecret leak: {TOTALS}")


def test_azure_sas_token_never_in_any_output(
    client_and_key: tuple[TestClient, str],
    debug_logs: io.StringIO,
    azurite: Azurite,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real container SAS on azurite: saved (verified), refused (read-only, expired), listed,
    fetched, through the CLI and the DEBUG logs of the Azure SDK."""
    from datetime import UTC, datetime, timedelta

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    monkeypatch.setenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", "1")
    client, key = client_and_key
    container = "leak-sas"
    azurite.create_container(container)
    now = datetime.now(UTC)

    def sas(expiry: timedelta, **permissions: bool) -> str:
        return generate_container_sas(
            azurite.account_name,
            container,
            account_key=azurite.account_key,
            permission=ContainerSasPermissions(**permissions),
            start=now - timedelta(hours=2),
            expiry=now + expiry,
        )

    tokens = [
        sas(timedelta(hours=1), create=True, write=True, delete=True),
        sas(timedelta(hours=1), read=True),
        sas(timedelta(hours=-1), create=True, write=True, delete=True),
    ]
    outputs: list[str] = []
    statuses = []
    for token in tokens:
        params = {
            "name": "sas",
            "enabled": True,
            "type": "azure",
            "azure_account_name": azurite.account_name,
            "azure_container_name": container,
            "azure_endpoint": azurite.blob_endpoint,
            "azure_sas_token": token,
        }
        response = client.post("/destinations", params={"api_key": key}, json=params)
        statuses.append(response.status_code)
        outputs += [response.text, str(dict(response.headers))]
        result = CliRunner().invoke(
            cli, ["verify", *[x for k, v in params.items() for x in ("-p", f"{k}={v}")]]
        )
        outputs += [result.output, result.stderr]
    outputs.append(client.get("/destinations", params={"api_key": key}).text)
    outputs.append(debug_logs.getvalue())
    assert statuses[0] == 200 and statuses[1] != 200 and statuses[2] != 200
    signatures = [t.split("sig=")[1].split("&")[0] for t in tokens]
    found = sum(text.count(s) for text in outputs for s in (*tokens, *signatures))
    assert found == 0
