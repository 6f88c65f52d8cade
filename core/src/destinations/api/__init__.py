"""The Destinations HTTP API: an ASGI app to mount in a service or run with ``destinations
serve``. Needs the ``api`` extra (``pip install 'destinations[api]'``).

``create_app()`` migrates its database to the newest schema and returns a Starlette app;
``create_api_key()`` makes an account and returns its key (stored only hashed).
"""

from __future__ import annotations

from .._settings import settings
from ..persistence import (
    DEFAULT_DATABASE_URL,
    ENCRYPTION_KEYS_ENV,
    create_account,
    make_engine,
    upgrade,
)
from ._app import DATABASE_URL_ENV, LOCAL_ROOT_ENV, create_app


def create_api_key(name: str, *, database_url: str | None = None) -> str:
    """Create an account called ``name`` and return its new API key (shown only once)."""
    url = database_url or settings().database_url
    engine = make_engine(url)
    try:
        upgrade(engine)
        return create_account(engine, name)
    finally:
        engine.dispose()


__all__ = [
    "DATABASE_URL_ENV",
    "DEFAULT_DATABASE_URL",
    "ENCRYPTION_KEYS_ENV",
    "LOCAL_ROOT_ENV",
    "create_api_key",
    "create_app",
]
