"""Per-destination delivery statuses, stored where the API and the embedding service read them.

One row per (result set, destination), upserted: a task that is redelivered or retried
overwrites its row, so the row always shows the latest attempt. ``status`` moves through
``queued`` (fanned out) → ``delivering`` (a worker started it; ``attempts`` counts starts)
→ ``retrying`` (a transient failure; Celery will run it again) → ``success``, ``failed`` or
``skipped`` (final). ``log``, ``keys``, ``bytes`` and ``seconds`` are the seed's
``destination_status`` record of the latest attempt.

No foreign keys: a status outlives the destination it describes (a deleted destination's
history is still an answer to "where did result set 42 go?").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, final

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from ._tables import DeliveryStatusRow, utcnow

__all__ = [
    "FINAL_STATUSES",
    "StatusName",
    "StoredStatus",
    "read_delivery_statuses",
    "record_status",
]

StatusName = Literal["queued", "delivering", "retrying", "success", "failed", "skipped"]
FINAL_STATUSES: Final[frozenset[str]] = frozenset({"success", "failed", "skipped"})


@final
@dataclass(frozen=True, slots=True)
class StoredStatus:
    """One stored row. :meth:`to_dict` is the seed's ``destination_status`` record plus the
    ids, ``attempts`` and ``updated_at``."""

    result_set_id: str
    destination_id: str
    account_id: int | None
    collection_id: str
    status: str
    log: tuple[dict[str, str], ...]
    keys: tuple[str, ...]
    bytes: int
    seconds: float
    attempts: int
    updated_at: datetime

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return {
            "result_set_id": self.result_set_id,
            "destination_id": self.destination_id,
            "status": self.status,
            "log": list(self.log),
            "keys": list(self.keys),
            "bytes": self.bytes,
            "seconds": self.seconds,
            "attempts": self.attempts,
            "updated_at": self.updated_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }


def record_status(
    engine: Engine,
    *,
    result_set_id: str,
    destination_id: str,
    collection_id: str,
    status: StatusName,
    account_id: int | None = None,
    log: Sequence[dict[str, str]] = (),
    keys: Sequence[str] = (),
    bytes: int = 0,
    seconds: float = 0.0,
    started: bool = False,
) -> None:
    """Insert or overwrite the row of (``result_set_id``, ``destination_id``).

    ``started`` adds one to ``attempts`` (a worker began the task: the first delivery, a
    retry or a redelivery after a lost worker).
    """
    values: dict[str, Any] = {
        "result_set_id": result_set_id,
        "destination_id": destination_id,
        "account_id": account_id,
        "collection_id": collection_id,
        "status": status,
        "log": list(log),
        "keys": list(keys),
        "bytes": bytes,
        "seconds": round(seconds, 3),
        "attempts": 1 if started else 0,
        "updated_at": utcnow(),
    }
    dialect = engine.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    else:  # pragma: no cover - the API supports SQLite and PostgreSQL
        raise ValueError(f"delivery statuses need SQLite or PostgreSQL, not {dialect}")
    statement = insert(DeliveryStatusRow).values(**values)
    update: dict[str, Any] = {
        k: statement.excluded[k] for k in values if k not in ("result_set_id", "destination_id")
    }
    update["attempts"] = DeliveryStatusRow.attempts + (1 if started else 0)
    if account_id is None:
        update.pop("account_id")  # a worker that was not told keeps what fan-out stored
    statement = statement.on_conflict_do_update(
        index_elements=["result_set_id", "destination_id"], set_=update
    )
    with engine.begin() as connection:
        connection.execute(statement)


def read_delivery_statuses(
    engine: Engine,
    result_set_id: str | None = None,
    *,
    destination_id: str | None = None,
    account_id: int | None = None,
    status: str | None = None,
) -> list[StoredStatus]:
    """Stored statuses matching every filter given, ordered by result set and destination.

    Pass ``account_id`` when answering an API client, so it sees only its own deliveries.
    """
    query = select(DeliveryStatusRow).order_by(
        DeliveryStatusRow.result_set_id, DeliveryStatusRow.destination_id
    )
    if result_set_id is not None:
        query = query.where(DeliveryStatusRow.result_set_id == result_set_id)
    if destination_id is not None:
        query = query.where(DeliveryStatusRow.destination_id == destination_id)
    if account_id is not None:
        query = query.where(DeliveryStatusRow.account_id == account_id)
    if status is not None:
        query = query.where(DeliveryStatusRow.status == status)
    with Session(engine) as session:
        rows = session.scalars(query).all()
        return [
            StoredStatus(
                result_set_id=r.result_set_id,
                destination_id=r.destination_id,
                account_id=r.account_id,
                collection_id=r.collection_id,
                status=r.status,
                log=tuple(r.log),
                keys=tuple(r.keys),
                bytes=r.bytes,
                seconds=r.seconds,
                attempts=r.attempts,
                updated_at=r.updated_at,
            )
            for r in rows
        ]
