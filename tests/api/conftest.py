"""Fixtures: a real database per test (a SQLite file, and a fresh PostgreSQL schema dropped
afterwards), the app on it, and accounts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from starlette.applications import Starlette
from starlette.testclient import TestClient

from destinations.api import create_api_key, create_app
from tests.api import vaultplugin
from tests.postgres import fresh_schema

#: PostgreSQL must be reachable: an unreachable server fails these tests, never skips them.


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'api.db'}"
        return
    with fresh_schema("destinations_test") as url:
        yield url


@pytest.fixture
def local_root(tmp_path: Path) -> Path:
    root = tmp_path / "local-root"
    root.mkdir()
    return root


@pytest.fixture
def vault() -> type[vaultplugin.VaultStore]:
    return vaultplugin.install()


@pytest.fixture
def make_app(database_url: str, local_root: Path) -> Iterator[Callable[..., Starlette]]:
    apps: list[Starlette] = []

    def make(**options: Any) -> Starlette:
        options.setdefault("local_root", local_root)
        if not database_url.startswith("sqlite"):
            options.setdefault("encryption_keys", [Fernet.generate_key().decode()])
        app = create_app(database_url=database_url, **options)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.state.engine.dispose()


@pytest.fixture
def app(make_app: Callable[..., Starlette], vault: object) -> Starlette:
    return make_app()


@pytest.fixture
def client(app: Starlette) -> TestClient:
    return TestClient(app)


@pytest.fixture
def api_key(database_url: str, app: Starlette) -> str:
    return create_api_key("first", database_url=database_url)


@pytest.fixture
def other_key(database_url: str, app: Starlette) -> str:
    return create_api_key("second", database_url=database_url)
