"""Idempotency keys of ``POST /destinations``: the first request with a key claims it, its
successful response is stored, and a retry with the same key and body within
:data:`IDEMPOTENCY_TTL` gets that response again (another body: a mismatch)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final, Literal

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from ._tables import IdempotencyRow, utcnow

__all__ = [
    "IDEMPOTENCY_TTL",
    "Claim",
    "claim_idempotency_key",
    "finish_idempotency_key",
    "release_idempotency_key",
]

IDEMPOTENCY_TTL: Final = timedelta(hours=24)
_T = IdempotencyRow
_C = IdempotencyRow


@dataclass(frozen=True, slots=True)
class Claim:
    """``new``: this request owns the key now (finish or release it). ``replay``: the
    original ``status`` and ``response`` (JSON text). ``mismatch``: the key was used with
    another body. ``in_progress``: the first request with the key has not finished."""

    outcome: Literal["new", "replay", "mismatch", "in_progress"]
    status: int | None = None
    response: str | None = None


def claim_idempotency_key(engine: Engine, account_id: int, key: str, request_hash: str) -> Claim:
    """Claim ``key`` for the account's request whose body hashes to ``request_hash``."""
    now = utcnow()
    mine = (_C.account_id == account_id) & (_C.key == key)
    for _ in range(3):
        with engine.begin() as connection:
            # Expired records of this account go first (an index on created_at).
            connection.execute(
                delete(_T).where(_C.account_id == account_id, _C.created_at < now - IDEMPOTENCY_TTL)
            )
            found = connection.execute(
                select(_C.request_hash, _C.status, _C.response).where(mine)
            ).first()
        if found is not None:
            if found.request_hash != request_hash:
                return Claim("mismatch")
            if found.response is None:
                return Claim("in_progress")
            return Claim("replay", found.status, found.response)
        try:
            with engine.begin() as connection:
                connection.execute(
                    insert(_T).values(
                        account_id=account_id,
                        key=key,
                        request_hash=request_hash,
                        status=None,
                        response=None,
                        created_at=now,
                    )
                )
        except IntegrityError:
            continue  # claimed concurrently (or the account is gone): read it again
        return Claim("new")
    return Claim("in_progress")


def finish_idempotency_key(
    engine: Engine, account_id: int, key: str, status: int, response: str
) -> None:
    """Store the response of the request that claimed ``key``."""
    with engine.begin() as connection:
        connection.execute(
            update(_T)
            .where(_C.account_id == account_id, _C.key == key)
            .values(status=status, response=response)
        )


def release_idempotency_key(engine: Engine, account_id: int, key: str) -> None:
    """Forget a claim whose request failed: a retry with the key runs afresh."""
    with engine.begin() as connection:
        connection.execute(
            delete(_T).where(_C.account_id == account_id, _C.key == key, _C.response.is_(None))
        )
