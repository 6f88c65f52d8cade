"""A fresh PostgreSQL schema per test, on the server this machine runs (127.0.0.1:5432).

Each test gets its own schema (via ``search_path`` in the URL), dropped afterwards, so runs
never see each other's tables. An unreachable server fails the test; it is never skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

POSTGRES_URL = os.environ.get(
    "DESTINATIONS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextmanager
def fresh_schema(prefix: str = "destinations_test") -> Iterator[str]:
    """Yield a database URL whose tables live in a new schema, dropped on exit."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, poolclass=NullPool)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_URL}?options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
