"""What the commands share: reading a destination from flags, a file or the API's database,
and reporting bad input the same way everywhere (exit status 2)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from . import (
    Destination,
    DestinationsError,
    InvalidDestination,
    SecretsUnreadable,
    VerificationFailed,
    parse_destination,
)

__all__ = [
    "database_url_option",
    "fail_input",
    "fail_verification",
    "load_params",
    "load_stored",
    "param_option",
    "parse_or_exit",
]

param_option = click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A destination field, e.g. -p type=s3 -p s3_bucket_name=my-bucket.",
)

database_url_option = click.option(
    "--database-url",
    envvar="DESTINATIONS_DATABASE_URL",
    metavar="URL",
    help="The HTTP API's database, for --destination (env DESTINATIONS_DATABASE_URL, else "
    "sqlite:///destinations.db).",
)


def load_params(
    params: tuple[str, ...], json_file: str | None, *, flag: str = "--json"
) -> dict[str, Any]:
    """Destination fields from a JSON file (``-`` = stdin) overlaid with ``KEY=VALUE`` flags;
    ``name`` and ``enabled`` default to "command line" and true."""
    data: dict[str, Any] = {}
    if json_file is not None:
        text = sys.stdin.read() if json_file == "-" else Path(json_file).read_text()
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise click.UsageError(f"{flag} {json_file}: not valid JSON ({exc.msg})") from exc
        if not isinstance(loaded, dict):
            raise click.UsageError(f"{flag} {json_file}: expected a JSON object")
        data.update(loaded)
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--param {item.split('=')[0]!r}: expected KEY=VALUE")
        data[key.strip()] = value
    data.setdefault("name", "command line")
    data.setdefault("enabled", True)
    return data


def fail_input(exc: DestinationsError, heading: str = "invalid destination:") -> NoReturn:
    """Print what is wrong (field by field for :class:`InvalidDestination`) and exit 2."""
    if isinstance(exc, InvalidDestination):
        click.echo(heading, err=True)
        for field, message in exc.errors.items():
            click.echo(f"  {field}: {message}", err=True)
    else:
        click.echo(f"error: {exc}", err=True)
    sys.exit(2)


def fail_verification(exc: VerificationFailed) -> NoReturn:
    """Print the failed step, code, provider code and what to fix, and exit 1."""
    click.echo(f"verification failed: step={exc.step} code={exc.code}", err=True)
    if exc.provider_code:
        click.echo(f"provider code: {exc.provider_code}", err=True)
    click.echo(exc.message, err=True)
    sys.exit(1)


def parse_or_exit(
    params: tuple[str, ...], json_file: str | None, *, flag: str = "--json"
) -> Destination:
    try:
        return parse_destination(load_params(params, json_file, flag=flag))
    except DestinationsError as exc:
        fail_input(exc)


def load_stored(ids: tuple[str, ...], database_url: str | None) -> list[Destination]:
    """Destinations stored by the HTTP API, decrypted here; exit 2 when one cannot be."""
    try:
        # By name, so neither this module nor its type check pulls in the api extra.
        persistence = importlib.import_module("destinations.persistence")
    except ModuleNotFoundError as exc:
        raise click.ClickException(
            f"--destination needs the HTTP API extra ({exc.name} is missing): "
            "pip install 'destinations[api]'"
        ) from exc
    from ._settings import settings

    url = database_url or settings().database_url
    out: list[Destination] = []
    for destination_id in ids:
        try:
            out.append(persistence.load_destination(url, destination_id))
        except persistence.DestinationNotFound as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except InvalidDestination as exc:
            fail_input(exc, f"stored destination {destination_id!r} is no longer valid:")
        except SecretsUnreadable as exc:  # the message names where the keys come from, no key
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
    return out
