"""The schema (SQLAlchemy 2 models), engines, migrations and API keys.

API keys are 256-bit random tokens, so they are stored as their SHA-256: a slow password
hash (bcrypt, argon2) exists to make guessing *low-entropy* secrets expensive, and nobody can
guess 2**256. A plain digest also lets every request find its account with one indexed
lookup instead of checking a salted hash per account.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    create_engine,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

if TYPE_CHECKING:
    from ._crypto import SecretBox

__all__ = [
    "Account",
    "Base",
    "DestinationRow",
    "create_account",
    "hash_api_key",
    "make_engine",
    "new_destination_id",
    "rotate_secrets",
    "upgrade",
    "utcnow",
]

MIGRATIONS = Path(__file__).with_name("migrations")
#: Serialises schema upgrades when several API replicas start at once against PostgreSQL.
_MIGRATION_LOCK_ID = 0x64657374  # "dest"
API_KEY_PREFIX = "dst_"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, also on SQLite (which drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime; use an aware UTC datetime")
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None:
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Account(Base):
    """One API key, one account: destinations belong to the account that created them."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DestinationRow(Base):
    """A stored destination. ``params`` holds the non-secret fields; ``secrets`` is a Fernet
    token of the secret ones. ``version`` makes concurrent updates detectable."""

    __tablename__ = "destinations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    secrets: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


def make_engine(database_url: str) -> Engine:
    engine = create_engine(database_url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        from sqlalchemy import event

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


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_destination_id() -> str:
    """12 URL-safe characters (72 random bits): short in a URL, unguessable, collision-free
    in practice; ids are never sequential, so they reveal nothing about other accounts."""
    return secrets.token_urlsafe(9)


def create_account(engine: Engine, name: str) -> str:
    """Create an account and return its new API key (only its hash is stored)."""
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    with Session(engine) as session, session.begin():
        session.add(Account(name=name, api_key_hash=hash_api_key(api_key), created_at=utcnow()))
    return api_key


def rotate_secrets(engine: Engine, box: SecretBox, batch: int = 200) -> tuple[int, int]:
    """Re-encrypt every row's secrets with ``box``'s newest key; ``(rotated, failed)``.

    Each row is rewritten only if its token is still the one read (``WHERE secrets = old``),
    so a concurrent update is never overwritten; such a row is already on the newest key.
    """
    from sqlalchemy import select, update

    rotated = failed = 0
    last = ""
    while True:
        with Session(engine) as session:
            rows = session.execute(
                select(DestinationRow.id, DestinationRow.secrets)
                .where(DestinationRow.id > last)
                .order_by(DestinationRow.id)
                .limit(batch)
            ).all()
        if not rows:
            return rotated, failed
        with Session(engine) as session, session.begin():
            for row_id, token in rows:
                try:
                    new = box.rotate(token)
                except RuntimeError:
                    failed += 1
                    continue
                session.execute(
                    update(DestinationRow)
                    .where(DestinationRow.id == row_id, DestinationRow.secrets == token)
                    .values(secrets=new)
                    .execution_options(synchronize_session=False)
                )
                rotated += 1
        last = rows[-1][0]
