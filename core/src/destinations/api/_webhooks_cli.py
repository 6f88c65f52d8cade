"""``destinations webhooks set|show``: an account's default completion webhook, for the
operator (the API's ``PUT /webhooks`` does the same for the account itself)."""

from __future__ import annotations

import sys

import click
from sqlalchemy import Engine, select

from ..persistence import DATABASE_URL_ENV, DEFAULT_DATABASE_URL

_database_url = click.option(
    "--database-url", envvar=DATABASE_URL_ENV, default=DEFAULT_DATABASE_URL, show_default=True,
    help=f"SQLAlchemy URL of the database (env {DATABASE_URL_ENV}).",
)
_account = click.option(
    "--account", required=True,
    help="The account: its id (destinations keys list) or its name, when only one has it.",
)


def _account_id(engine: Engine, account: str) -> int:
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
