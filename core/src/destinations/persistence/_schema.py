"""Engines and migrations: SQLite (foreign keys on) or PostgreSQL, upgraded by Alembic."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text

__all__ = ["MIGRATIONS", "make_engine", "upgrade"]

#: Alembic's script location (``env.py`` and ``versions/``).
MIGRATIONS = Path(__file__).with_name("migrations")
#: Serialises schema upgrades when several API replicas start at once against PostgreSQL.
_MIGRATION_LOCK_ID = 0x64657374  # "dest"


def make_engine(database_url: str, *, create_file: bool = True) -> Engine:
    """An engine for ``database_url``. A SQLite database file that does not exist yet is
    created empty with mode 0600 first (SQLite would create it 0644 under the usual umask;
    its journal and WAL files copy the database file's mode). ``create_file=False``: leave
    a missing file missing (SQLite still creates it on first connect)."""
    engine = create_engine(database_url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if create_file and database and database != ":memory:" and not database.startswith(
            "file:"
        ):
            path = Path(database)
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))

        @event.listens_for(engine, "connect")
        def _foreign_keys(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (a no-op when it is already there)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID}
            )
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
