"""The typed settings object: names, defaults, freshness, errors that name the variable and
never echo a value, and no secret in its repr."""

import os
from pathlib import Path

import pytest

from destinations._settings import ENV_PREFIX, InvalidSettings, Settings, env_name, settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def test_defaults():
    current = settings()
    assert current.database_url == "sqlite:///destinations.db"
    assert current.encryption_keys is None
    assert current.local_root is None
    assert current.allow_private_endpoints is False
    assert current.broker_url is None
    assert current.queue == "destinations"
    assert current.max_destinations == 50
    assert current.verifications_per_minute == 30


def test_every_field_is_prefix_plus_its_name(monkeypatch, tmp_path):
    values = {
        "DESTINATIONS_DATABASE_URL": "postgresql://u:pw@127.0.0.1/db",
        "DESTINATIONS_ENCRYPTION_KEYS": "k1,k2",
        "DESTINATIONS_LOCAL_ROOT": str(tmp_path),
        "DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS": "1",
        "DESTINATIONS_BROKER_URL": "redis://127.0.0.1:6379/0",
        "DESTINATIONS_QUEUE": "q2",
        "DESTINATIONS_MAX_DESTINATIONS": "7",
        "DESTINATIONS_VERIFICATIONS_PER_MINUTE": "0",
    }
    names = {env_name(f) for f in Settings.model_fields}
    assert set(values) <= names  # the settings the API and workers read
    assert all(n.startswith("DESTINATIONS_") and n == n.upper() for n in names)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    current = settings()
    assert current.database_url == values["DESTINATIONS_DATABASE_URL"]
    assert current.encryption_keys_text() == "k1,k2"
    assert current.local_root == Path(tmp_path)
    assert current.allow_private_endpoints is True
    assert current.broker_url == values["DESTINATIONS_BROKER_URL"]
    assert current.queue == "q2"
    assert current.max_destinations == 7
    assert current.verifications_per_minute == 0


def test_fresh_after_a_runtime_change_and_cached_otherwise(monkeypatch):
    first = settings()
    assert settings() is first  # nothing changed: the same object
    monkeypatch.setenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", "true")
    assert settings().allow_private_endpoints is True
    monkeypatch.delenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS")
    assert settings().allow_private_endpoints is False


@pytest.mark.parametrize(
    ("value", "on"),
    [("1", True), (" TRUE ", True), ("true", True), ("0", False), ("yes", False),
     ("on", False), ("ture", False), ("", False)],
)
def test_switch_reads_as_the_guard_always_did(monkeypatch, value, on):
    monkeypatch.setenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", value)
    assert settings().allow_private_endpoints is on


def test_empty_means_unset(monkeypatch):
    monkeypatch.setenv("DESTINATIONS_DATABASE_URL", "")
    monkeypatch.setenv("DESTINATIONS_LOCAL_ROOT", "")
    monkeypatch.setenv("DESTINATIONS_ENCRYPTION_KEYS", "")
    current = settings()
    assert current.database_url == "sqlite:///destinations.db"
    assert current.local_root is None
    assert current.encryption_keys is None


def test_names_are_exact(monkeypatch):
    monkeypatch.setenv("destinations_queue", "lower")
    assert settings().queue == "destinations"


@pytest.mark.parametrize(
    ("name", "value"),
    [("DESTINATIONS_MAX_DESTINATIONS", "lots-s3cr3t"),
     ("DESTINATIONS_VERIFICATIONS_PER_MINUTE", "-1")],
)
def test_a_bad_value_names_the_variable_not_the_value(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidSettings) as info:
        settings()
    assert name in str(info.value)
    assert value not in str(info.value)
    assert isinstance(info.value, ValueError)
    monkeypatch.delenv(name)
    assert settings().max_destinations == 50  # recovers once fixed


def test_repr_shows_no_secret(monkeypatch):
    monkeypatch.setenv("DESTINATIONS_ENCRYPTION_KEYS", "key-s3cr3t")
    monkeypatch.setenv("DESTINATIONS_DATABASE_URL", "postgresql://u:db-s3cr3t@127.0.0.1/d")
    monkeypatch.setenv("DESTINATIONS_BROKER_URL", "amqp://u:mq-s3cr3t@127.0.0.1//")
    text = repr(settings()) + str(settings())
    for secret in ("key-s3cr3t", "db-s3cr3t", "mq-s3cr3t"):
        assert secret not in text
