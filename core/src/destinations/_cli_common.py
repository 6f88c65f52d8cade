"""What the commands share: reading a destination from flags, a file or the API's database,
and reporting bad input the same way everywhere (exit status 2)."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from . import (
    Destination,
    DestinationsError,
    InvalidDestination,
    SecretsUnreadable,
    VerificationFailed,
    parse_destination,
)

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "database_url_option",
    "deprecated_alias",
    "destination_option",
    "fail_input",
    "fail_verification",
    "install_hints",
    "load_params",
    "load_stored",
    "output_option",
    "param_option",
    "parse_or_exit",
    "spec_option",
    "write_output",
]

param_option = click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A destination field, e.g. -p type=s3 -p s3_bucket_name=my-bucket. A value "
    "@PATH is read from that file (@- from stdin), env:NAME from that environment "
    "variable: keep secrets off the command line, e.g. "
    "-p s3_secret_access_key=@/run/secrets/s3.",
)

spec_option = click.option(
    "--spec",
    "spec_file",
    metavar="FILE",
    help="Destination fields as a JSON object in FILE (- = stdin); -p flags override them.",
)


def destination_option(*, multiple: bool) -> Callable[[F], F]:
    """``--destination/-d ID``: a destination stored by the HTTP API."""
    return click.option(
        "--destination",
        "-d",
        "destination_ids",
        multiple=multiple,
        metavar="ID",
        help="A destination stored by the HTTP API, by id"
        + (" (repeatable)" if multiple else "")
        + "; reads --database-url and the encryption keys (needs the api extra).",
    )


output_option = click.option(
    "--output",
    "-o",
    "output",
    metavar="FILE",
    help="Also write the result as JSON to FILE (- = print only the JSON, on stdout).",
)


def deprecated_alias(old: str, new: str, dest: str) -> Callable[[F], F]:
    """A hidden ``old`` flag kept working as ``new`` (stored in ``dest``), with a warning."""

    def warn(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is not None:
            click.echo(f"warning: {old} is deprecated here; use {new} (same value)", err=True)
        return value

    return click.option(old, f"{dest}_deprecated", metavar="FILE", hidden=True, callback=warn,
                        expose_value=True)


def write_output(output: str | None, data: Any) -> bool:
    """Write ``data`` as JSON to ``output`` (``-`` = stdout); True when it went to stdout
    (the caller then prints nothing else there)."""
    if output is None:
        return False
    text = json.dumps(data, indent=2)
    if output == "-":
        click.echo(text)
        return True
    try:
        Path(output).write_text(text + "\n")
    except OSError as exc:
        raise click.UsageError(
            f"--output {output}: cannot write ({exc.strerror or type(exc).__name__})"
        ) from exc
    return False


def install_hints(exc: DestinationsError, params: Mapping[str, Any] | None) -> list[str]:
    """The operator's install hint for a type the input names but no plugin provides."""
    if not isinstance(exc, InvalidDestination) or "type" not in exc.errors or not params:
        return []
    from ._errors import install_hint

    if "unknown destination type" not in exc.errors["type"]:
        return []
    hint = install_hint(params.get("type"))
    return [hint] if hint else []


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
        try:
            text = sys.stdin.read() if json_file == "-" else Path(json_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise click.UsageError(f"{flag} {json_file}: cannot read ({reason})") from exc
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
        data[key.strip()] = _param_value(key.strip(), value)
    data.setdefault("name", "command line")
    data.setdefault("enabled", True)
    return data


#: ``-p KEY=@PATH`` reads the value from a file, ``-p KEY=env:NAME`` from an environment
#: variable, so a secret need not be on the command line (where ``ps`` shows it).
FILE_PREFIX = "@"
ENV_PREFIX = "env:"


def _param_value(key: str, value: str) -> str:
    """A ``--param`` value: literal, or read from ``@PATH`` (one trailing newline dropped)
    or ``env:NAME``. Errors name the flag and the file or variable, never a value."""
    if value.startswith(FILE_PREFIX):
        path = value[len(FILE_PREFIX) :]
        if not path:
            raise click.UsageError(f"--param {key}=@PATH: give the file to read the value from")
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8"
            raise click.UsageError(
                f"--param {key}=@{path}: cannot read the file ({reason})"
            ) from None
        return text[:-1] if text.endswith("\n") else text
    if value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX) :]
        found = os.environ.get(name) if name else None
        if found is None:
            raise click.UsageError(
                f"--param {key}=env:{name}: the environment variable {name or '(empty name)'} "
                "is not set"
            )
        return found
    return value


def fail_input(
    exc: DestinationsError,
    heading: str = "invalid destination:",
    params: Mapping[str, Any] | None = None,
) -> NoReturn:
    """Print what is wrong (field by field for :class:`InvalidDestination`), and for a type
    that is not installed what to install, and exit 2."""
    if isinstance(exc, InvalidDestination):
        click.echo(heading, err=True)
        for field, message in exc.errors.items():
            click.echo(f"  {field}: {message}", err=True)
    else:
        click.echo(f"error: {exc}", err=True)
    for hint in install_hints(exc, params):
        click.echo(f"hint: {hint}", err=True)
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
    data = load_params(params, json_file, flag=flag)
    try:
        return parse_destination(data)
    except DestinationsError as exc:
        fail_input(exc, params=data)


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
    _refuse_missing_sqlite(url)
    out: list[Destination] = []
    for destination_id in ids:
        try:
            out.append(persistence.load_destination(url, destination_id))
        except persistence.DestinationNotFound as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except InvalidDestination as exc:
            fail_input(exc, f"stored destination {destination_id!r} is no longer valid:")
        except (SecretsUnreadable, ValueError) as exc:
            # The message names where the keys come from (a key file that is empty, corrupt
            # or unreadable), never a key.
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
    return out


def _refuse_missing_sqlite(url: str) -> None:
    """A command that only reads must not create an empty SQLite database where the
    operator's is not (run from another directory, a mistyped path): exit 2 naming it."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return
    if database.startswith("file:") or parsed.query.get("mode") == "memory":
        return
    if not Path(database).exists():
        click.echo(
            f"error: the database {database!r} does not exist (relative to "
            f"{Path.cwd()}); run from the directory that holds the HTTP API's database, "
            "or give --database-url (or DESTINATIONS_DATABASE_URL)",
            err=True,
        )
        sys.exit(2)
