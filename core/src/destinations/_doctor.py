"""``destinations doctor``: check and explain the operator's set-up, changing nothing.

Checks, each ``ok``, ``warn`` or ``FAIL`` with what to do:

* the database: reachable, and migrated to the newest schema (never created nor migrated
  here: a SQLite file that does not exist is a failure);
* the encryption keys: configured (``DESTINATIONS_ENCRYPTION_KEYS`` or the key file beside a
  SQLite database), and decrypting *every* stored secret;
* each installed plugin: importable, with its distribution's version and its SDK's (the
  distributions it requires);
* the endpoint guard's mode (off is a warning: development only);
* the local root (``DESTINATIONS_LOCAL_ROOT``, else ``./destinations-data``): a writable
  directory;
* the broker, when ``DESTINATIONS_BROKER_URL`` is set: reachable.

Exit 0 only when nothing failed. No message holds a key, a secret or a password (URLs are
shown with the password masked).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import click

from ._settings import settings

__all__ = ["Check", "doctor", "run_checks"]

Outcome = Literal["ok", "warn", "FAIL"]
DEFAULT_LOCAL_ROOT = "./destinations-data"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    outcome: Outcome
    detail: str


def _shown(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(the configured URL)"


def check_database(url: str) -> Iterator[Check]:
    try:
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        from .persistence import MIGRATIONS
    except ModuleNotFoundError as exc:
        yield Check("database", "FAIL", f"needs the api extra ({exc.name} is missing): "
                    "pip install 'destinations[api]'")
        return
    parsed = make_url(url)
    database = parsed.database
    local_file = parsed.get_backend_name() == "sqlite" and database not in (None, "", ":memory:")
    if local_file and not Path(str(database)).exists():
        yield Check("database", "FAIL", f"{_shown(url)}: the file does not exist (relative "
                    f"to {Path.cwd()}); run from the API's directory or set "
                    "DESTINATIONS_DATABASE_URL")
        return
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_heads()
    except Exception as exc:
        yield Check("database", "FAIL", f"{_shown(url)}: cannot connect "
                    f"({type(exc).__name__})")
        return
    finally:
        engine.dispose()
    script = ScriptDirectory(str(MIGRATIONS))
    heads = set(script.get_heads())
    if set(current) == heads:
        yield Check("database", "ok", f"{_shown(url)}: reachable, schema at {', '.join(heads)}")
    elif not current:
        yield Check("database", "FAIL", f"{_shown(url)}: reachable but not migrated (no schema); "
                    "destinations serve migrates it on start")
    else:
        yield Check("database", "FAIL", f"{_shown(url)}: schema at {', '.join(current)}, newest "
                    f"is {', '.join(heads)}; start destinations serve (it migrates) once")


def check_secrets(url: str) -> Iterator[Check]:
    try:
        from sqlalchemy import create_engine, inspect, select
        from sqlalchemy.engine import make_url

        from . import SecretsUnreadable
        from .persistence import DestinationRow, SecretBox
    except ModuleNotFoundError:
        return  # said by the database check
    parsed = make_url(url)
    keys = settings().encryption_keys_text()
    if keys:
        source = "DESTINATIONS_ENCRYPTION_KEYS"
        key_list = [k for k in keys.replace(",", " ").split() if k]
    else:
        if parsed.get_backend_name() != "sqlite" or not parsed.database:
            yield Check("encryption keys", "FAIL", "DESTINATIONS_ENCRYPTION_KEYS is not set "
                        f"(needed for {parsed.get_backend_name()})")
            return
        key_file = Path(parsed.database + ".key")
        if not key_file.is_file():
            yield Check("encryption keys", "FAIL", f"no DESTINATIONS_ENCRYPTION_KEYS and no key "
                        f"file {key_file}; destinations serve creates one for a new database")
            return
        source = f"the key file {key_file}"
        key_list = [k for k in key_file.read_text().split() if k]
    try:
        box = SecretBox(key_list, source=source)
    except ValueError as exc:
        yield Check("encryption keys", "FAIL", str(exc))
        return
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").exists():
        return
    engine = create_engine(url)
    total = unreadable = 0
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table(DestinationRow.__tablename__):
                yield Check("encryption keys", "ok", f"{len(key_list)} key(s) from {source}; "
                            "no stored secrets yet")
                return
            for token in connection.execute(select(DestinationRow.__table__.c.secrets)).scalars():
                total += 1
                try:
                    box.decrypt(token)
                except SecretsUnreadable:
                    unreadable += 1
    except Exception as exc:
        yield Check("encryption keys", "FAIL", f"cannot read stored secrets ({type(exc).__name__})")
        return
    finally:
        engine.dispose()
    if unreadable:
        yield Check("encryption keys", "FAIL", f"{unreadable} of {total} destination(s)' secrets "
                    f"do not decrypt with the {len(key_list)} key(s) from {source}; add the keys "
                    "they were encrypted with (after the newest)")
    else:
        yield Check("encryption keys", "ok", f"{len(key_list)} key(s) from {source} decrypt all "
                    f"{total} stored destination(s)")


def _requirement_versions(dist: str) -> list[str]:
    """``name version`` of each installed distribution ``dist`` requires (its SDK), leaving
    out core and requirements behind an extra or a marker that does not apply."""
    try:
        from packaging.requirements import Requirement
    except ModuleNotFoundError:  # pragma: no cover - packaging comes with pip and setuptools
        return []
    out: list[str] = []
    for text in metadata.requires(dist) or []:
        req = Requirement(text)
        if req.name == "destinations" or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        try:
            out.append(f"{req.name} {metadata.version(req.name)}")
        except metadata.PackageNotFoundError:
            out.append(f"{req.name} (not installed)")
    return out


def check_plugins() -> Iterator[Check]:
    from ._errors import DestinationsError
    from ._plugins import available_types, host

    for name in available_types():
        dist = host().distribution_of(name) or "?"
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "?"
        try:
            host().get(name)
        except DestinationsError as exc:
            yield Check(f"plugin {name}", "FAIL", str(exc))
            continue
        sdk = ", ".join(_requirement_versions(dist)) if dist != "destinations" else "none"
        yield Check(f"plugin {name}", "ok", f"{dist} {version}; SDK: {sdk or 'none'}")


def check_guard() -> Iterator[Check]:
    if settings().allow_private_endpoints:
        yield Check("endpoint guard", "warn", "OFF (DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS is "
                    "on): loopback, private and metadata endpoints and plain http are allowed; "
                    "development only, never in production")
    else:
        yield Check("endpoint guard", "ok", "on: loopback, private, link-local and metadata "
                    "endpoints and plain http are refused")


def check_local_root() -> Iterator[Check]:
    root = settings().local_root or Path(DEFAULT_LOCAL_ROOT)
    if not root.exists():
        yield Check("local root", "warn", f"{root} does not exist yet (destinations serve "
                    "creates it)")
    elif not root.is_dir():
        yield Check("local root", "FAIL", f"{root} is not a directory")
    elif not os.access(root, os.W_OK | os.X_OK):
        yield Check("local root", "FAIL", f"{root} is not writable by this user")
    else:
        yield Check("local root", "ok", f"{os.path.realpath(root)} (writable)")


def check_broker() -> Iterator[Check]:
    url = settings().broker_url
    if not url:
        yield Check("broker", "ok", "not configured (DESTINATIONS_BROKER_URL unset: no scale-out)")
        return
    try:
        kombu: Any = importlib.import_module("kombu")  # untyped; the celery extra
    except ModuleNotFoundError:
        yield Check("broker", "FAIL", "DESTINATIONS_BROKER_URL is set but the scale-out extra "
                    "is missing: pip install 'destinations[celery]'")
        return
    connection = kombu.Connection(url, connect_timeout=3)
    shown = connection.as_uri()  # password masked
    try:
        connection.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:
        yield Check("broker", "FAIL", f"{shown}: unreachable ({type(exc).__name__})")
    else:
        yield Check("broker", "ok", f"{shown}: reachable")
    finally:
        connection.release()


def run_checks(database_url: str | None = None) -> list[Check]:
    url = database_url or settings().database_url
    steps: list[Callable[[], Iterator[Check]]] = [
        lambda: check_database(url),
        lambda: check_secrets(url),
        check_plugins,
        check_guard,
        check_local_root,
        check_broker,
    ]
    out: list[Check] = []
    for step in steps:
        out.extend(step())
    return out


@click.command()
@click.option("--database-url", envvar="DESTINATIONS_DATABASE_URL", metavar="URL",
              help="The API's database (env DESTINATIONS_DATABASE_URL, else "
                   "sqlite:///destinations.db).")
@click.option("--output", "-o", metavar="FILE", help="Also write the checks as JSON (- = only "
              "the JSON, on stdout).")
def doctor(database_url: str | None, output: str | None) -> None:
    """Check the set-up (database, keys, plugins, guard, local root, broker); exit 0 only
    when nothing failed. Changes nothing."""
    checks = run_checks(database_url)
    failed = any(c.outcome == "FAIL" for c in checks)
    data: dict[str, Any] = {"ok": not failed, "checks": [asdict(c) for c in checks]}
    if output == "-":
        click.echo(json.dumps(data, indent=2))
    else:
        for c in checks:
            click.echo(f"{c.outcome:<4} {c.name}: {c.detail}")
        click.echo("all is well" if not failed else "some checks FAILED (see above)")
        if output is not None:
            Path(output).write_text(json.dumps(data, indent=2) + "\n")
    sys.exit(1 if failed else 0)
