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


GUARD_HELP = """Run the Destinations HTTP API.

\b
The endpoint guard: every endpoint a customer gives (s3_endpoint, gcs_endpoint,
azure_endpoint, oss_endpoint, sftp_host) is resolved and refused when it is loopback,
private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local, a cloud metadata address
(169.254.169.254) or plain http: otherwise a customer could make this server reach its
own network (SSRF). For local emulators in development only, set
DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS=1 (serve then says so at start); never in
production. Installing a plugin into a running server needs a restart.
"""


@click.command(help=GUARD_HELP)
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
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, envvar="DESTINATIONS_LOG_FORMAT",
              help="json: one JSON object per line with request_id and account_id, for log "
                   "pipelines (env DESTINATIONS_LOG_FORMAT).")
@click.option("--metrics/--no-metrics", default=True, show_default=True,
              help="Serve Prometheus metrics at GET /metrics (needs prometheus-client).")
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
    log_format: str,
    metrics: bool,
) -> None:
    import uvicorn

    from .. import SecretsUnreadable
    from .._settings import settings
    from ._app import create_app
    from ._timeouts import header_timeout_protocol

    log_config = _configure_logs(log_format)
    api_log = logging.getLogger("destinations.api")
    if settings().allow_private_endpoints:
        api_log.warning(
            "DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS is on: THE ENDPOINT GUARD IS OFF. Customers "
            "can make this server connect to loopback, private and metadata addresses and "
            "plain http. For local emulators in development only; never in production."
        )
    _log_missing_types(api_log)

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
            metrics=metrics,
        )
    except (ValueError, SecretsUnreadable) as exc:
        raise click.ClickException(f"not starting: {exc}") from exc
    click.echo(f"local destinations may write inside {os.path.realpath(root)}", err=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=log_config,
        http=header_timeout_protocol(header_timeout),
        timeout_keep_alive=timeout_keep_alive,
        h11_max_incomplete_event_size=max_header_bytes,
        limit_concurrency=limit_concurrency,
    )


def _configure_logs(log_format: str) -> dict[str, Any]:
    """Set up this process's log lines; the uvicorn ``log_config`` to match."""
    if log_format == "json":
        from .._logging import configure_json_logging, uvicorn_json_log_config

        configure_json_logging()
        config = uvicorn_json_log_config()
        config["filters"] = {"redact_api_key": {"()": RedactApiKey}}
        config["handlers"]["default"]["filters"] = ["redact_api_key"]
        return config
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    api_log = logging.getLogger("destinations.api")
    api_log.addHandler(handler)
    api_log.setLevel(logging.INFO)
    return _log_config()


def _log_missing_types(log: logging.Logger) -> None:
    """Tell the operator (never an API customer) which built-in types are not installed."""
    from .. import available_types
    from .._errors import BUILTIN_DISTRIBUTIONS

    installed = set(available_types())
    log.info("destination types offered: %s", ", ".join(sorted(installed)) or "none")
    missing: dict[str, list[str]] = {}
    for name, dist in BUILTIN_DISTRIBUTIONS.items():
        if name not in installed:
            missing.setdefault(dist, []).append(name)
    for dist, names in missing.items():
        log.info(
            "types %s are not installed: pip install %s, then restart this server",
            ", ".join(names), dist,
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
@click.option("--allow-duplicate", is_flag=True,
              help="Create another account even if one with this name exists.")
@click.option("--exist-ok", is_flag=True,
              help="When an account with this name exists, say so and exit 0 without "
                   "creating one (for set-up scripts run more than once).")
@_database_url
def create_key(name: str, allow_duplicate: bool, exist_ok: bool, database_url: str) -> None:
    """Create an account and print its API key (once; only a hash is stored).

    The key is printed alone on the last line of stdout (the rest goes to stderr), so
    KEY=$(destinations keys create --name NAME) captures it. A name that already exists is
    refused (exit 1) unless --allow-duplicate (create another) or --exist-ok (exit 0).
    """
    from . import create_api_key

    existing = _accounts_named(name, database_url)
    if existing and not allow_duplicate:
        message = (
            f"an account named {name!r} already exists ({existing} of them); its key was "
            "printed when it was created and cannot be shown again (destinations keys list "
            "shows the accounts). Use --allow-duplicate to create another one."
        )
        if exist_ok:
            click.echo(message, err=True)
            return
        raise click.ClickException(message)
    api_key = create_api_key(name, database_url=database_url)
    click.echo(f"Created account {name!r}. Its API key, shown only this once, is the next "
               "line:", err=True)
    click.echo(api_key)


def _accounts_named(name: str, database_url: str) -> int:
    """How many accounts are called ``name`` (0 for a database not created yet)."""
    from sqlalchemy import func, inspect, select
    from sqlalchemy.engine import make_url

    from ..persistence import Account, make_engine

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        return 0  # connecting would create the file (0644, before the 0600 one is made)
    engine = make_engine(database_url, create_file=False)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table(Account.__tablename__):
                return 0
            count = connection.execute(
                select(func.count()).select_from(Account).where(Account.name == name)
            ).scalar()
    finally:
        engine.dispose()
    return int(count or 0)


@keys.command("rotate-encryption")
@_database_url
def rotate_encryption(database_url: str) -> None:
    """Re-encrypt every stored secret with the newest encryption key.

    Put a new key first in DESTINATIONS_ENCRYPTION_KEYS (or the key file beside a SQLite
    database), keeping the old ones after it, and restart every replica; then run this.
    When it reports every row rotated, the old keys can be removed.
    """
    from .. import SecretsUnreadable
    from ..persistence import DeliveryStore, load_secret_box, make_engine, rotate_secrets, upgrade

    try:
        # No test decryption first: this command counts the rows no key opens itself.
        box = load_secret_box(None, database_url, check=False)
    except (ValueError, SecretsUnreadable) as exc:
        raise click.ClickException(str(exc)) from exc
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        rotated, failed = rotate_secrets(engine, box)
        hooks, hooks_failed = DeliveryStore(engine, box).rotate_webhook_secrets()
    finally:
        engine.dispose()
    click.echo(f"re-encrypted {rotated} destination(s) with the newest key")
    click.echo(f"re-encrypted {hooks} webhook secret(s) with the newest key")
    unreadable = [
        f"{count} {what} could not be decrypted with any configured key (left unchanged)"
        for count, what in ((failed, "destination(s)"), (hooks_failed, "webhook secret(s)"))
        if count
    ]
    if unreadable:
        raise click.ClickException(
            "; ".join(unreadable) + "; add the key they were encrypted with and run this again"
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


# -- destinations webhooks -------------------------------------------------------------------

_account = click.option(
    "--account", required=True,
    help="The account: its id (destinations keys list) or its name, when only one has it.",
)


def _account_id(engine: Any, account: str) -> int:
    """The id of ``account`` (an id, or a name only one account has); exit 2 otherwise."""
    from sqlalchemy import select

    from ..persistence import Account

    with engine.connect() as connection:
        if account.isdigit():
            found = connection.execute(
                select(Account.id).where(Account.id == int(account))
            ).scalars().all()
        else:
            found = connection.execute(
                select(Account.id).where(Account.name == account)
            ).scalars().all()
    if len(found) != 1:
        why = "no account" if not found else f"{len(found)} accounts"
        click.echo(f"error: {why} named {account!r}; give the id from `destinations keys list`",
                   err=True)
        sys.exit(2)
    return int(found[0])


@click.group()
def webhooks() -> None:
    """Manage accounts' completion webhooks (signed delivery.completed events)."""


@webhooks.command("set")
@_account
@click.argument("url", required=False)
@click.option("--rotate-secret", is_flag=True, help="Replace the signing secret (shown once).")
@_database_url
def set_webhook(account: str, url: str | None, rotate_secret: bool, database_url: str) -> None:
    """Set the account's default webhook URL (no URL: remove it). The first time, and with
    --rotate-secret, prints the signing secret: only this once."""
    from .._fetch import check_url
    from ..persistence import DeliveryStore, load_secret_box, make_engine, upgrade

    if url is not None:
        problem = check_url(url)
        if problem is not None:
            click.echo(f"error: URL {problem}", err=True)
            sys.exit(2)
    try:
        box = load_secret_box(None, database_url)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        account_id = _account_id(engine, account)
        endpoint = DeliveryStore(engine, box).set_webhook(account_id, url, rotate=rotate_secret)
    finally:
        engine.dispose()
    click.echo(f"account {account_id}: webhook {'set' if url else 'removed'}")
    if endpoint.secret is not None:
        click.echo("Its signing secret is shown only this once:")
        click.echo(endpoint.secret)


@webhooks.command("show")
@_account
@_database_url
def show_webhook(account: str, database_url: str) -> None:
    """The account's default webhook URL (never the secret)."""
    from ..persistence import DeliveryStore, make_engine, upgrade

    engine = make_engine(database_url)
    try:
        upgrade(engine)
        endpoint = DeliveryStore(engine).webhook_endpoint(_account_id(engine, account))
    finally:
        engine.dispose()
    if endpoint is None:
        click.echo("no webhook")
    else:
        created = f"{endpoint.secret_created_at:%Y-%m-%d %H:%M} UTC"
        click.echo(f"url: {endpoint.url or '-'}; secret created {created}")
