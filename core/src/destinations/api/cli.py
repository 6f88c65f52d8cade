"""``destinations serve`` and ``destinations keys …`` (loaded only when they run)."""

from __future__ import annotations

import copy
import logging
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

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
                   f"missing; each account gets its own subdirectory, named by its id "
                   f"(env {LOCAL_ROOT_ENV}).")
@click.option("--header-timeout", default=10.0, show_default=True,
              type=click.FloatRange(min=0.1),
              help="Seconds a client may take to send a request line and headers (from "
                   "connecting, or from starting the next request); then it is dropped.")
@click.option("--body-timeout", default=30.0, show_default=True,
              type=click.FloatRange(min=0.1),
              help="Seconds a write body may take to arrive; then 408.")
@click.option("--timeout-keep-alive", default=5, show_default=True,
              type=click.IntRange(min=1),
              help="Seconds an idle keep-alive connection stays open.")
@click.option("--max-header-bytes", default=16 * 1024, show_default=True,
              type=click.IntRange(min=1024),
              help="Largest request line plus headers accepted (h11's incomplete event size).")
@click.option("--limit-concurrency", default=256, show_default=True,
              type=click.IntRange(min=1),
              help="Connections and requests served at once; more answer 503.")
@click.option("--verification-workers", default=32, show_default=True,
              type=click.IntRange(min=1),
              help="Threads that run verifications (never the request threads).")
@click.option("--verifications-per-account", default=4, show_default=True,
              type=click.IntRange(min=1),
              help="Verifications one account may run at once; more answer 429.")
def serve(
    host: str,
    port: int,
    database_url: str,
    local_root: str,
    header_timeout: float,
    body_timeout: float,
    timeout_keep_alive: int,
    max_header_bytes: int,
    limit_concurrency: int,
    verification_workers: int,
    verifications_per_account: int,
) -> None:
    """Run the Destinations HTTP API."""
    import uvicorn

    from .. import SecretsUnreadable
    from ._app import create_app
    from ._timeouts import header_timeout_protocol

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
        app = create_app(
            database_url=database_url,
            local_root=root,
            body_timeout=body_timeout,
            verification_workers=verification_workers,
            verifications_per_account=verifications_per_account,
        )
    except (ValueError, SecretsUnreadable) as exc:
        raise click.ClickException(f"not starting: {exc}") from exc
    click.echo(f"local destinations may write inside {os.path.realpath(root)}", err=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=_log_config(),
        http=header_timeout_protocol(header_timeout),
        timeout_keep_alive=timeout_keep_alive,
        h11_max_incomplete_event_size=max_header_bytes,
        limit_concurrency=limit_concurrency,
    )


def redact_api_keys(text: str) -> str:
    """``text`` with the value of every query parameter whose *decoded* name is
    ``api_key`` (any case; ``api%5Fkey`` too) replaced by ``[redacted]``."""
    return _QUERY_PAIR.sub(_redact_pair, text)


_QUERY_PAIR = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;\s#?]*)=(?P<value>[^&;\s#]*)")


def _redact_pair(match: re.Match[str]) -> str:
    name = unquote_plus(match["name"], errors="replace")
    if name.strip().lower() == "api_key":
        return f"{match['lead']}{match['name']}=[redacted]"
    return match[0]


class RedactApiKey(logging.Filter):
    """Blanks the value of ``api_key`` in access-log lines, by the parameter's decoded name:
    the key is a credential, and uvicorn logs the full path with its query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_api_keys(a) if isinstance(a, str) else a for a in record.args
            )
        record.msg = redact_api_keys(str(record.msg))
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
    from .. import SecretsUnreadable
    from ..persistence import load_secret_box, make_engine, rotate_secrets, upgrade

    try:
        # No test decryption first: this command counts the rows no key opens itself.
        box = load_secret_box(None, database_url, check=False)
    except (ValueError, SecretsUnreadable) as exc:
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


@keys.command("list")
@_database_url
def list_keys_command(database_url: str) -> None:
    """List the API keys: id, name, created, last used, revoked (never the key itself)."""
    from ..persistence import list_keys, make_engine, upgrade

    engine = make_engine(database_url)
    try:
        upgrade(engine)
        found = list_keys(engine)
    finally:
        engine.dispose()
    click.echo(f"{'ID':>6}  {'NAME':<24}  {'CREATED':<20}  {'LAST USED':<20}  REVOKED")
    for info in found:
        click.echo(
            f"{info.id:>6}  {info.name[:24]:<24}  {_when(info.created_at):<20}  "
            f"{_when(info.last_used_at):<20}  {_when(info.revoked_at, '-')}"
        )


@keys.command("revoke")
@click.argument("key_id", metavar="ID", type=int)
@_database_url
def revoke_key_command(key_id: int, database_url: str) -> None:
    """Revoke API key ID (from `destinations keys list`): every API process refuses it
    within a second. The account's destinations stay."""
    from ..persistence import make_engine, revoke_key, upgrade

    engine = make_engine(database_url)
    try:
        upgrade(engine)
        revoked = revoke_key(engine, key_id)
    finally:
        engine.dispose()
    if revoked is None:
        click.echo(f"error: no API key with id {key_id} (see destinations keys list)", err=True)
        sys.exit(2)
    click.echo(f"API key {key_id} {'revoked' if revoked else 'was already revoked'}")


def _when(moment: datetime | None, never: str = "never") -> str:
    if moment is None:
        return never
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
