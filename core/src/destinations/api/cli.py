"""``destinations serve`` and ``destinations keys create`` (loaded only when they run)."""

from __future__ import annotations

import copy
import logging
import os
import re
from pathlib import Path
from typing import Any

import click

from ..persistence import DATABASE_URL_ENV, DEFAULT_DATABASE_URL
from ._app import LOCAL_ROOT_ENV

DEFAULT_LOCAL_ROOT = "./destinations-data"

_database_url = click.option(
    "--database-url", envvar=DATABASE_URL_ENV, default=DEFAULT_DATABASE_URL, show_default=True,
    help=f"SQLAlchemy URL of the database (env {DATABASE_URL_ENV}).",
)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@_database_url
@click.option("--local-root", envvar=LOCAL_ROOT_ENV, default=DEFAULT_LOCAL_ROOT,
              show_default=True, type=click.Path(file_okay=False),
              help=f"The only directory `local` destinations may write into, created if "
                   f"missing (env {LOCAL_ROOT_ENV}).")
def serve(host: str, port: int, database_url: str, local_root: str) -> None:
    """Run the Destinations HTTP API."""
    import uvicorn

    from ._app import create_app

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    api_log = logging.getLogger("destinations.api")
    api_log.addHandler(handler)
    api_log.setLevel(logging.INFO)

    root = Path(local_root)
    if not root.is_dir():
        root.mkdir(parents=True)
        click.echo(f"created local root {os.path.realpath(root)}", err=True)
    try:
        app = create_app(database_url=database_url, local_root=root)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"local destinations may write inside {os.path.realpath(root)}", err=True)
    uvicorn.run(app, host=host, port=port, log_config=_log_config())


class RedactApiKey(logging.Filter):
    """Blanks ``api_key=…`` in access-log lines: the key is a credential, and uvicorn logs
    the full path with its query string."""

    _pattern = re.compile(r"(api_key=)[^&\s]*", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self._pattern.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                for a in record.args
            )
        record.msg = self._pattern.sub(r"\1[redacted]", str(record.msg))
        return True


def _log_config() -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_api_key"] = {"()": RedactApiKey}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_api_key")
    return config


@click.group()
def keys() -> None:
    """Manage API keys (one account per key) and the encryption of stored secrets."""


@keys.command("create")
@click.option("--name", required=True, help="A name for the account the key belongs to.")
@_database_url
def create_key(name: str, database_url: str) -> None:
    """Create an account and print its API key (once; only a hash is stored)."""
    from . import create_api_key

    api_key = create_api_key(name, database_url=database_url)
    click.echo(f"Created account {name!r}. Its API key is shown only this once:")
    click.echo(api_key)


@keys.command("rotate-encryption")
@_database_url
def rotate_encryption(database_url: str) -> None:
    """Re-encrypt every stored secret with the newest encryption key.

    Put a new key first in DESTINATIONS_ENCRYPTION_KEYS (or the key file beside a SQLite
    database), keeping the old ones after it, and restart every replica; then run this.
    When it reports every row rotated, the old keys can be removed.
    """
    from ..persistence import load_secret_box, make_engine, rotate_secrets, upgrade

    try:
        box = load_secret_box(None, database_url)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        rotated, failed = rotate_secrets(engine, box)
    finally:
        engine.dispose()
    click.echo(f"re-encrypted {rotated} destination(s) with the newest key")
    if failed:
        raise click.ClickException(
            f"{failed} destination(s) could not be decrypted with any configured key "
            "(left unchanged); add the key they were encrypted with and run this again"
        )
