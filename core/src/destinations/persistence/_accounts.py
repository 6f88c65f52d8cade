"""Accounts and their API keys.

API keys are 256-bit random tokens, so they are stored as their SHA-256: a slow password
hash (bcrypt, argon2) exists to make guessing *low-entropy* secrets expensive, and nobody can
guess 2**256. A plain digest also lets every request find its account with one indexed
lookup instead of checking a salted hash per account.

A key is revoked by stamping ``revoked_at`` and raising the one ``key_generation`` row in
the same transaction; API processes compare that generation at most once a second and drop
their cached keys when it moved (:class:`destinations.api._keys.ApiKeys`).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import Engine, bindparam, select, update
from sqlalchemy.orm import Session

from ._tables import Account, KeyGeneration, utcnow

__all__ = [
    "API_KEY_PREFIX",
    "KeyInfo",
    "account_for_key_hash",
    "create_account",
    "hash_api_key",
    "key_generation",
    "list_keys",
    "mark_used",
    "revoke_key",
]

API_KEY_PREFIX: Final = "dst_"
_ACCOUNTS = Account.__table__.c
#: Built once, with a bound parameter (building a statement costs more than running it);
#: a Core select of one column on a Connection: no ORM Session, no entity loading.
_AUTHENTICATE = select(_ACCOUNTS.id).where(
    _ACCOUNTS.api_key_hash == bindparam("key_hash"), _ACCOUNTS.revoked_at.is_(None)
)
_GENERATION = select(KeyGeneration.__table__.c.generation).where(
    KeyGeneration.__table__.c.id == 1
)
_MARK_USED = (
    update(Account)
    .where(Account.id == bindparam("account_id"))
    .values(last_used_at=bindparam("now"))
)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What ``destinations keys list`` shows of one key (never the key, nor its hash)."""

    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()


def create_account(engine: Engine, name: str) -> str:
    """Create an account and return its new API key (only its hash is stored)."""
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    with Session(engine) as session, session.begin():
        session.add(Account(name=name, api_key_hash=hash_api_key(api_key), created_at=utcnow()))
    return api_key


def account_for_key_hash(engine: Engine, key_hash: str) -> int | None:
    """The id of the account whose unrevoked API key hashes to ``key_hash``, or None."""
    with engine.connect() as connection:
        account_id = connection.execute(_AUTHENTICATE, {"key_hash": key_hash}).scalar()
    return None if account_id is None else int(account_id)


def key_generation(engine: Engine) -> int:
    """The revocation generation (raised by every :func:`revoke_key`)."""
    with engine.connect() as connection:
        return int(connection.execute(_GENERATION).scalar() or 0)


def mark_used(engine: Engine, account_id: int, now: datetime | None = None) -> None:
    """Stamp the key's ``last_used_at``."""
    with engine.begin() as connection:
        connection.execute(_MARK_USED, {"account_id": account_id, "now": now or utcnow()})


def list_keys(engine: Engine) -> list[KeyInfo]:
    """Every key, oldest first."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                _ACCOUNTS.id,
                _ACCOUNTS.name,
                _ACCOUNTS.created_at,
                _ACCOUNTS.last_used_at,
                _ACCOUNTS.revoked_at,
            ).order_by(_ACCOUNTS.id)
        ).all()
    return [KeyInfo(*row) for row in rows]


def revoke_key(engine: Engine, account_id: int) -> bool | None:
    """Revoke the key of ``account_id``: True if revoked now, False if it already was, None
    if there is no such key. The account's destinations stay."""
    with Session(engine) as session, session.begin():
        revoked = session.scalar(
            select(Account.revoked_at).where(Account.id == account_id).with_for_update()
        )
        exists = session.scalar(select(Account.id).where(Account.id == account_id))
        if exists is None:
            return None
        if revoked is not None:
            return False
        session.execute(
            update(Account).where(Account.id == account_id).values(revoked_at=utcnow())
        )
        session.execute(
            update(KeyGeneration)
            .where(KeyGeneration.id == 1)
            .values(generation=KeyGeneration.generation + 1)
        )
    return True
