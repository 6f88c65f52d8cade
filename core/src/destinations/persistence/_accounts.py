"""Accounts and their API keys.

API keys are 256-bit random tokens, so they are stored as their SHA-256: a slow password
hash (bcrypt, argon2) exists to make guessing *low-entropy* secrets expensive, and nobody can
guess 2**256. A plain digest also lets every request find its account with one indexed
lookup instead of checking a salted hash per account.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final

from sqlalchemy import Engine, bindparam, select
from sqlalchemy.orm import Session

from ._tables import Account, utcnow

__all__ = ["API_KEY_PREFIX", "account_for_key_hash", "create_account", "hash_api_key"]

API_KEY_PREFIX: Final = "dst_"
#: Built once, with a bound parameter (building a statement costs more than running it);
#: a Core select of one column on a Connection: no ORM Session, no entity loading.
_AUTHENTICATE = select(Account.__table__.c.id).where(
    Account.__table__.c.api_key_hash == bindparam("key_hash")
)


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def create_account(engine: Engine, name: str) -> str:
    """Create an account and return its new API key (only its hash is stored)."""
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    with Session(engine) as session, session.begin():
        session.add(Account(name=name, api_key_hash=hash_api_key(api_key), created_at=utcnow()))
    return api_key


def account_for_key_hash(engine: Engine, key_hash: str) -> int | None:
    """The id of the account whose API key hashes to ``key_hash``, or None."""
    with engine.connect() as connection:
        account_id = connection.execute(_AUTHENTICATE, {"key_hash": key_hash}).scalar()
    return None if account_id is None else int(account_id)
