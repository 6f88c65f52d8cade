"""Deliveries accepted over HTTP (``POST /deliveries``), their per-destination statuses,
their completion webhooks, and each account's webhook endpoint and secret.

A delivery is stored *before* it is answered, so nothing accepted is lost. Whoever runs it
(the in-process runner of ``serve``, :mod:`destinations._runner`, or a Celery worker) records
each destination's status in ``delivery_targets``; the API reads the same rows.

**Claims.** A runner takes a delivery by a conditional ``UPDATE`` that sets ``lease_owner``
and ``lease_until`` only where no live lease is held, and renews the lease while it works.
A runner that dies (SIGKILL) leaves a lease that simply expires; the next runner to look
(the restarted server, or another replica) claims the delivery again. Two runners therefore
never hold one delivery at once, and none is lost. The same columns serve the webhook phase
(a delivery is final by then, so nothing else holds them).

**Statuses.** A delivery is ``queued`` → ``delivering`` → ``success`` | ``partial`` |
``failed``; each destination ``queued`` → ``delivering`` (→ ``retrying`` on Celery) →
``success`` | ``failed`` | ``skipped``. ``run`` counts submissions (1, then +1 per retry, which
re-queues only the destinations that did not succeed, with the same ``now``).
"""

from __future__ import annotations

import dataclasses
import json
import secrets as _random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, final
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import (
    JSON,
    BigInteger,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from .._records import iso_time
from ._secrets import SecretBox
from ._tables import Base, DestinationRow, UTCDateTime, utcnow

__all__ = [
    "DELIVERY_STATUSES",
    "FINAL_DELIVERY_STATUSES",
    "IDEMPOTENCY_WINDOW",
    "DeliveryNotFound",
    "DeliveryRow",
    "DeliveryStore",
    "DeliveryTargetRow",
    "DueWebhook",
    "IdempotencyConflict",
    "NewDelivery",
    "NotRetryable",
    "StoredDelivery",
    "StoredTarget",
    "StoredWebhookAttempt",
    "WebhookAttemptRow",
    "WebhookEndpoint",
    "WebhookEndpointRow",
    "completion_event",
    "event_id",
    "log_entry",
    "new_delivery_id",
    "overall_status",
    "redact_url",
]

DELIVERY_STATUSES: Final = ("queued", "delivering", "success", "partial", "failed")
FINAL_DELIVERY_STATUSES: Final = frozenset({"success", "partial", "failed"})
_OPEN: Final = ("queued", "delivering")
_TARGET_FINAL: Final = frozenset({"success", "failed", "skipped"})
#: How long an ``Idempotency-Key`` of ``POST /deliveries`` is remembered.
IDEMPOTENCY_WINDOW: Final = timedelta(hours=24)


class DeliveryRow(Base):
    """One accepted delivery: the result set by reference, its ``now``, who runs it."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("account_id", "idempotency_key"),
        Index("ix_deliveries_account_id_created_at", "account_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    collection_id: Mapped[str] = mapped_column(String(255))
    collection_name: Mapped[str] = mapped_column(String(255))
    result_set_id: Mapped[str] = mapped_column(String(255), index=True)
    #: ``[{name, path | url, content_type}]``; paths absolute, inside the file root.
    files: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    now: Mapped[datetime] = mapped_column(UTCDateTime())
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: ``local`` (the runner of ``serve``) or ``celery`` (fanned out to workers).
    mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    run: Mapped[int] = mapped_column(Integer)
    #: The last run handed to Celery (0: none yet); a runner fans out a run only once.
    dispatched_run: Mapped[int] = mapped_column(Integer)
    #: Times a runner started this delivery (a resumed one counts again).
    attempts: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: None (no webhook), ``pending``, ``delivered``, ``failed`` or ``superseded`` (a retry
    #: started before the previous run's event was delivered).
    webhook_status: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    #: The event body (JSON text), fixed at completion: every attempt sends the same bytes.
    webhook_event: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_target: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_next_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    webhook_first_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class DeliveryTargetRow(Base):
    """One destination of a delivery and the latest attempt's seed-style status."""

    __tablename__ = "delivery_targets"

    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True
    )
    destination_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    destination_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    log: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    keys: Mapped[list[str]] = mapped_column(JSON)
    bytes: Mapped[int] = mapped_column(BigInteger)
    seconds: Mapped[float] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookAttemptRow(Base):
    """One POST of a completion event (every attempt is kept)."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    run: Mapped[int] = mapped_column(Integer)
    number: Mapped[int] = mapped_column(Integer)
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: ``delivered``, ``retry`` (another attempt is scheduled) or ``failed`` (no more).
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    seconds: Mapped[float] = mapped_column(Float)


class WebhookEndpointRow(Base):
    """An account's default webhook URL and its signing secret (a Fernet token)."""

    __tablename__ = "webhook_endpoints"

    account_id: Mapped[int] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    url: Mapped[str | None] = mapped_column(Text, nullable=True)
    secret: Mapped[str] = mapped_column(Text)
    secret_created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DeliveryNotFound(LookupError):
    """No delivery with this id for this account."""


class IdempotencyConflict(Exception):
    """The ``Idempotency-Key`` was used, within the window, for a different request."""


class NotRetryable(Exception):
    """A retry was asked for a delivery that is still running or fully succeeded."""


def new_delivery_id() -> str:
    return "dlv_" + _random.token_urlsafe(12)


def log_entry(text: str, moment: datetime | None = None) -> dict[str, str]:
    return {"date_time": iso_time(moment or utcnow()), "text": text}


def redact_url(url: str | None) -> str | None:
    """``url`` without its query string and fragment (a presigned URL's signature, a
    token): what responses and events show of a URL the caller gave."""
    if url is None:
        return None
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def overall_status(target_statuses: Iterable[str]) -> str:
    """``success`` when nothing failed (skipped destinations do not count), ``failed`` when
    nothing succeeded and something failed, else ``partial``."""
    statuses = list(target_statuses)
    failed = statuses.count("failed")
    if failed == 0:
        return "success"
    return "partial" if statuses.count("success") else "failed"


def event_id(delivery_id: str, run: int) -> str:
    """The id of the completion event of one run of a delivery (the same on every attempt)."""
    return f"evt_{delivery_id}_{run}"


def completion_event(delivery: StoredDelivery) -> str:
    """The ``delivery.completed`` event (JSON text) sent to the webhook: the delivery with
    its per-destination statuses. ``id`` is unique per completion (a retried delivery
    completes again, with a new event)."""
    return json.dumps(
        {
            "type": "delivery.completed",
            "id": event_id(delivery.id, delivery.run),
            "created_at": iso_time(utcnow()),
            "delivery": delivery.to_dict(webhook_attempts=False),
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else iso_time(moment)


@final
@dataclass(frozen=True, slots=True)
class NewDelivery:
    account_id: int
    collection_id: str
    collection_name: str
    result_set_id: str
    files: Sequence[Mapping[str, str]]
    now: datetime
    mode: str
    #: ``(destination_id, destination_name, status, log text)`` in the order given.
    targets: Sequence[tuple[str, str | None, str, str]]
    webhook_url: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    #: Stored already claimed by this runner (it has a free slot and starts it at once).
    lease_owner: str | None = None
    lease_seconds: float = 0.0


@final
@dataclass(frozen=True, slots=True)
class StoredTarget:
    destination_id: str
    destination_name: str | None
    status: str
    log: tuple[dict[str, str], ...]
    keys: tuple[str, ...]
    bytes: int
    seconds: float
    attempts: int

    @property
    def final(self) -> bool:
        return self.status in _TARGET_FINAL

    def to_dict(self) -> dict[str, Any]:
        return {
            "destination_id": self.destination_id,
            "destination_name": self.destination_name,
            "destination_status": {
                "status": self.status,
                "log": list(self.log),
                "keys": list(self.keys),
                "bytes": self.bytes,
                "seconds": round(self.seconds, 3),
                "attempts": self.attempts,
            },
        }


@final
@dataclass(frozen=True, slots=True)
class StoredWebhookAttempt:
    run: int
    number: int
    attempted_at: datetime
    status_code: int | None
    outcome: str
    error: str | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "number": self.number,
            "attempted_at": iso_time(self.attempted_at),
            "status_code": self.status_code,
            "outcome": self.outcome,
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }


@final
@dataclass(frozen=True, slots=True)
class StoredDelivery:
    """A delivery as stored, with its targets (and webhook attempts when asked for)."""

    id: str
    account_id: int
    collection_id: str
    collection_name: str
    result_set_id: str
    files: tuple[dict[str, str], ...]
    now: datetime
    webhook_url: str | None
    mode: str
    status: str
    run: int
    attempts: int
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    webhook_status: str | None
    targets: tuple[StoredTarget, ...] = ()
    webhook_attempts: tuple[StoredWebhookAttempt, ...] = field(default=(), repr=False)

    @property
    def final(self) -> bool:
        return self.status in FINAL_DELIVERY_STATUSES

    def to_dict(self, *, webhook_attempts: bool = True) -> dict[str, Any]:
        """The delivery as the API and the completion event show it (URLs without their
        query strings; no secret)."""
        files = []
        for f in self.files:
            shown = {"name": f["name"], "content_type": f.get("content_type")}
            if "url" in f:
                shown["url"] = redact_url(f["url"])
            else:
                shown["path"] = f.get("shown_path", f.get("path"))
            files.append(shown)
        out: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "collection_id": self.collection_id,
            "collection_name": self.collection_name,
            "result_set_id": self.result_set_id,
            "now": iso_time(self.now),
            "files": files,
            "run": self.run,
            "attempts": self.attempts,
            "error": self.error,
            "created_at": iso_time(self.created_at),
            "updated_at": iso_time(self.updated_at),
            "finished_at": _iso(self.finished_at),
            "webhook_url": redact_url(self.webhook_url),
            "destinations": [t.to_dict() for t in self.targets],
        }
        if webhook_attempts:
            out["webhook"] = {
                "status": self.webhook_status,
                "attempts": [a.to_dict() for a in self.webhook_attempts],
            }
        return out


@final
@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """An account's webhook settings. ``secret`` is only set on the value returned when a
    secret is created (shown once); its repr never shows it."""

    account_id: int
    url: str | None
    secret_created_at: datetime
    secret: str | None = field(default=None, repr=False)


@final
@dataclass(frozen=True, slots=True)
class DueWebhook:
    """A claimed completion event to send."""

    delivery_id: str
    account_id: int
    run: int
    url: str
    body: str
    first_at: datetime
    attempts: int


def _target(row: DeliveryTargetRow) -> StoredTarget:
    return StoredTarget(
        row.destination_id,
        row.destination_name,
        row.status,
        tuple(row.log),
        tuple(row.keys),
        row.bytes,
        row.seconds,
        row.attempts,
    )


def _delivery(
    row: DeliveryRow,
    targets: Sequence[DeliveryTargetRow] = (),
    attempts: Sequence[WebhookAttemptRow] = (),
) -> StoredDelivery:
    return StoredDelivery(
        id=row.id,
        account_id=row.account_id,
        collection_id=row.collection_id,
        collection_name=row.collection_name,
        result_set_id=row.result_set_id,
        files=tuple(row.files),
        now=row.now,
        webhook_url=row.webhook_url,
        mode=row.mode,
        status=row.status,
        run=row.run,
        attempts=row.attempts,
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        webhook_status=row.webhook_status,
        targets=tuple(_target(t) for t in sorted(targets, key=lambda t: t.position)),
        webhook_attempts=tuple(
            StoredWebhookAttempt(
                a.run, a.number, a.attempted_at, a.status_code, a.outcome, a.error, a.seconds
            )
            for a in sorted(attempts, key=lambda a: a.id)
        ),
    )


def _lease_free(now: datetime) -> Any:
    return or_(DeliveryRow.lease_until.is_(None), DeliveryRow.lease_until < now)


def _needs_runner(now: datetime) -> Any:
    """Local deliveries not finished and Celery ones whose current run was not fanned out
    yet, that no live lease holds."""
    return and_(
        DeliveryRow.status.in_(_OPEN),
        or_(DeliveryRow.mode == "local", DeliveryRow.dispatched_run < DeliveryRow.run),
        _lease_free(now),
    )


class DeliveryStore:
    """Every statement on the delivery tables. ``box`` seals webhook secrets (the same
    :class:`SecretBox` as destinations' secrets)."""

    def __init__(self, engine: Engine, box: SecretBox | None = None) -> None:
        self.engine = engine
        self.box = box

    # -- accept --------------------------------------------------------------------------------

    def insert(self, new: NewDelivery) -> tuple[StoredDelivery, bool]:
        """Store ``new`` (its targets too) and return it with ``True``; or, for an
        ``Idempotency-Key`` seen within :data:`IDEMPOTENCY_WINDOW` with the same request,
        the original delivery with ``False``. Raises :class:`IdempotencyConflict` for the
        same key with another request."""
        if new.idempotency_key is not None:
            existing = self._by_key(new.account_id, new.idempotency_key, new.request_hash)
            if existing is not None:
                return existing, False
        now = utcnow()
        row = DeliveryRow(
            id=new_delivery_id(),
            account_id=new.account_id,
            collection_id=new.collection_id,
            collection_name=new.collection_name,
            result_set_id=new.result_set_id,
            files=[dict(f) for f in new.files],
            now=new.now,
            webhook_url=new.webhook_url,
            mode=new.mode,
            status="queued",
            run=1,
            dispatched_run=0,
            attempts=0,
            created_at=now,
            updated_at=now,
            idempotency_key=new.idempotency_key,
            request_hash=new.request_hash,
            lease_owner=new.lease_owner,
            lease_until=(
                now + timedelta(seconds=new.lease_seconds) if new.lease_owner is not None else None
            ),
        )
        targets = [
            DeliveryTargetRow(
                delivery_id=row.id,
                destination_id=destination_id,
                position=position,
                destination_name=name,
                status=status,
                log=[log_entry(text, now)],
                keys=[],
                bytes=0,
                seconds=0.0,
                attempts=0,
                updated_at=now,
            )
            for position, (destination_id, name, status, text) in enumerate(new.targets)
        ]
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                session.add(row)
                session.flush()
                session.add_all(targets)
        except IntegrityError:
            if new.idempotency_key is None:
                raise
            existing = self._by_key(new.account_id, new.idempotency_key, new.request_hash)
            if existing is None:
                raise
            return existing, False
        if all(t.status in _TARGET_FINAL for t in targets):
            self.finish_if_complete(row.id, None)
            return self.get(row.id), True
        return _delivery(row, targets), True

    def _by_key(self, account_id: int, key: str, request_hash: str | None) -> StoredDelivery | None:
        with Session(self.engine) as session, session.begin():
            row = session.scalar(
                select(DeliveryRow).where(
                    DeliveryRow.account_id == account_id, DeliveryRow.idempotency_key == key
                )
            )
            if row is None:
                return None
            if row.created_at < utcnow() - IDEMPOTENCY_WINDOW:
                row.idempotency_key = None  # expired: the key may name a new delivery
                return None
            if row.request_hash != request_hash:
                raise IdempotencyConflict(key)
            delivery_id = row.id
        return self.get(delivery_id)

    # -- reads ---------------------------------------------------------------------------------

    def get(self, delivery_id: str, account_id: int | None = None) -> StoredDelivery:
        with Session(self.engine) as session:
            query = select(DeliveryRow).where(DeliveryRow.id == delivery_id)
            if account_id is not None:
                query = query.where(DeliveryRow.account_id == account_id)
            row = session.scalar(query)
            if row is None:
                raise DeliveryNotFound(delivery_id)
            targets = session.scalars(
                select(DeliveryTargetRow).where(DeliveryTargetRow.delivery_id == delivery_id)
            ).all()
            attempts = session.scalars(
                select(WebhookAttemptRow).where(WebhookAttemptRow.delivery_id == delivery_id)
            ).all()
            return _delivery(row, targets, attempts)

    def page(
        self,
        account_id: int,
        *,
        offset: int,
        limit: int,
        result_set_id: str | None = None,
        status: str | None = None,
    ) -> tuple[list[StoredDelivery], int]:
        """Newest first: ``limit`` deliveries from ``offset`` and how many match in all."""
        where = [DeliveryRow.account_id == account_id]
        if result_set_id is not None:
            where.append(DeliveryRow.result_set_id == result_set_id)
        if status is not None:
            where.append(DeliveryRow.status == status)
        with Session(self.engine) as session:
            total = session.scalar(select(func.count()).select_from(DeliveryRow).where(*where))
            rows = session.scalars(
                select(DeliveryRow)
                .where(*where)
                .order_by(DeliveryRow.created_at.desc(), DeliveryRow.id.desc())
                .offset(offset)
                .limit(limit)
            ).all()
            ids = [r.id for r in rows]
            by_delivery: dict[str, list[DeliveryTargetRow]] = {i: [] for i in ids}
            if ids:
                for t in session.scalars(
                    select(DeliveryTargetRow).where(DeliveryTargetRow.delivery_id.in_(ids))
                ):
                    by_delivery[t.delivery_id].append(t)
            return [_delivery(r, by_delivery[r.id]) for r in rows], int(total or 0)

    # -- claims --------------------------------------------------------------------------------

    def claim_runs(self, owner: str, lease_seconds: float, limit: int) -> list[str]:
        """Claim up to ``limit`` deliveries that need a runner: local ones not finished, and
        Celery ones whose current run was not fanned out yet. Oldest first."""
        if limit <= 0:
            return []
        now = utcnow()
        return self._claim(_needs_runner(now), owner, now, lease_seconds, limit)

    def count_waiting_runs(self) -> int:
        """How many deliveries wait for a runner now (what :meth:`claim_runs` would hand
        out without a limit): the embedded runner's queue depth. One ``COUNT`` over the
        open deliveries (``status`` is indexed)."""
        query = select(func.count()).select_from(DeliveryRow).where(_needs_runner(utcnow()))
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def claim_webhooks(self, owner: str, lease_seconds: float, limit: int) -> list[DueWebhook]:
        if limit <= 0:
            return []
        now = utcnow()
        due = and_(
            DeliveryRow.webhook_status == "pending",
            DeliveryRow.webhook_next_at <= now,
            _lease_free(now),
        )
        claimed = self._claim(due, owner, now, lease_seconds, limit)
        out: list[DueWebhook] = []
        if not claimed:
            return out
        with Session(self.engine) as session:
            for row in session.scalars(select(DeliveryRow).where(DeliveryRow.id.in_(claimed))):
                count = session.scalar(
                    select(func.count()).where(
                        WebhookAttemptRow.delivery_id == row.id, WebhookAttemptRow.run == row.run
                    )
                )
                assert row.webhook_target is not None and row.webhook_event is not None
                out.append(
                    DueWebhook(
                        row.id,
                        row.account_id,
                        row.run,
                        row.webhook_target,
                        row.webhook_event,
                        row.webhook_first_at or now,
                        int(count or 0),
                    )
                )
        return out

    def _claim(
        self, condition: Any, owner: str, now: datetime, lease_seconds: float, limit: int
    ) -> list[str]:
        with Session(self.engine) as session:
            candidates = session.scalars(
                select(DeliveryRow.id)
                .where(condition)
                .order_by(DeliveryRow.created_at, DeliveryRow.id)
                .limit(limit)
            ).all()
        claimed: list[str] = []
        until = now + timedelta(seconds=lease_seconds)
        for delivery_id in candidates:
            # The condition again, atomically: only one runner's UPDATE matches.
            with self.engine.begin() as connection:
                result = connection.execute(
                    update(DeliveryRow)
                    .where(DeliveryRow.id == delivery_id, condition)
                    .values(lease_owner=owner, lease_until=until)
                )
            if result.rowcount == 1:
                claimed.append(delivery_id)
        return claimed

    def renew(self, owner: str, delivery_ids: Sequence[str], lease_seconds: float) -> None:
        if not delivery_ids:
            return
        with self.engine.begin() as connection:
            connection.execute(
                update(DeliveryRow)
                .where(DeliveryRow.id.in_(list(delivery_ids)), DeliveryRow.lease_owner == owner)
                .values(lease_until=utcnow() + timedelta(seconds=lease_seconds))
            )

    def release(self, owner: str, delivery_id: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(DeliveryRow)
                .where(DeliveryRow.id == delivery_id, DeliveryRow.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )

    # -- running -------------------------------------------------------------------------------

    def start_run(self, owner: str, delivery_id: str, text: str) -> StoredDelivery | None:
        """Mark the claimed delivery ``delivering`` and its unfinished destinations
        ``delivering`` (one more attempt each, ``text`` logged), in one transaction, and
        return it; a Celery delivery is returned unchanged (its workers count attempts).
        None if the claim was lost or it is no longer open."""
        now = utcnow()
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            row = session.scalar(
                select(DeliveryRow).where(
                    DeliveryRow.id == delivery_id,
                    DeliveryRow.lease_owner == owner,
                    DeliveryRow.status.in_(_OPEN),
                )
            )
            if row is None:
                return None
            targets = session.scalars(
                select(DeliveryTargetRow).where(DeliveryTargetRow.delivery_id == delivery_id)
            ).all()
            if row.mode == "local":
                row.status = "delivering"
                row.attempts += 1
                row.updated_at = now
                for target in targets:
                    if target.status in _TARGET_FINAL:
                        continue
                    target.status = "delivering"
                    target.attempts += 1
                    target.log = [*target.log, log_entry(text, now)]
                    target.updated_at = now
            session.flush()
            return _delivery(row, targets)

    def finish_run(
        self,
        owner: str,
        delivery_id: str,
        outcomes: Mapping[str, tuple[str, Sequence[Mapping[str, str]], Sequence[str], int, float]],
        *,
        error: str | None = None,
        webhook_lease: float = 0.0,
    ) -> StoredDelivery | None:
        """One run's end in one transaction: each destination's ``(status, log entries to
        add, keys, bytes, seconds)``, then — every destination final — the delivery's final
        status, its completion event (when a webhook URL applies) and the lease released.
        ``error``: why the run failed as a whole (a file could not be had).
        ``webhook_lease``: keep the claim that long for sending the event at once. Returns the
        finished delivery, or None when the claim was lost meanwhile."""
        now = utcnow()
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            query = select(DeliveryRow).where(
                DeliveryRow.id == delivery_id,
                DeliveryRow.lease_owner == owner,
                DeliveryRow.status.in_(_OPEN),
            )
            row = session.scalar(query.with_for_update())
            if row is None:
                return None
            targets = session.scalars(
                select(DeliveryTargetRow).where(DeliveryTargetRow.delivery_id == delivery_id)
            ).all()
            for target in targets:
                outcome = outcomes.get(target.destination_id)
                if outcome is None:
                    continue
                status, log, keys, size, seconds = outcome
                target.status = status
                target.log = [*target.log, *(dict(e) for e in log)]
                target.keys = list(keys)
                target.bytes = size
                target.seconds = round(seconds, 3)
                target.updated_at = now
            row.updated_at = now
            row.error = error
            if not all(t.status in _TARGET_FINAL for t in targets):
                row.lease_owner = row.lease_until = None
                return None
            row.status = overall_status(t.status for t in targets)
            row.finished_at = now
            row.lease_owner = row.lease_until = None
            target_url = row.webhook_url
            if target_url is None:
                endpoint = session.get(WebhookEndpointRow, row.account_id)
                target_url = endpoint.url if endpoint is not None else None
            if target_url is not None:
                row.webhook_status = "pending"
                row.webhook_target = target_url
                row.webhook_next_at = now
                row.webhook_first_at = None
                row.webhook_event = completion_event(_delivery(row, targets))
                if webhook_lease:  # the finishing runner sends the event itself, now
                    row.lease_owner = owner
                    row.lease_until = now + timedelta(seconds=webhook_lease)
            session.flush()
            return _delivery(row, targets)

    def due_webhook(self, delivery: StoredDelivery) -> DueWebhook | None:
        """The first attempt of ``delivery``'s pending event, which :meth:`finish_run` left
        claimed by the runner that finished it."""
        with Session(self.engine) as session:
            row = session.get(DeliveryRow, delivery.id)
            if row is None or row.webhook_status != "pending" or row.webhook_event is None:
                return None
            assert row.webhook_target is not None
            return DueWebhook(
                row.id, row.account_id, row.run, row.webhook_target, row.webhook_event,
                utcnow(), 0,
            )

    def mark_dispatched(self, owner: str, delivery_id: str, run: int) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(DeliveryRow)
                .where(DeliveryRow.id == delivery_id, DeliveryRow.lease_owner == owner)
                .values(dispatched_run=run, lease_owner=None, lease_until=None)
            )

    def record_target(
        self,
        delivery_id: str,
        destination_id: str,
        status: str,
        log: Sequence[Mapping[str, str]],
        *,
        keys: Sequence[str] = (),
        bytes: int = 0,
        seconds: float = 0.0,
        append_log: bool = True,
        started: bool = False,
    ) -> None:
        """Set one destination's status. ``log`` is appended to what the target holds
        (``append_log``) or replaces it; ``started`` counts one more attempt and moves an
        open delivery to ``delivering`` (a Celery worker began it)."""
        now = utcnow()
        with Session(self.engine) as session, session.begin():
            target = session.get(DeliveryTargetRow, (delivery_id, destination_id))
            if target is None:
                return
            target.status = status
            target.log = [*(target.log if append_log else ()), *(dict(e) for e in log)]
            target.keys = list(keys)
            target.bytes = bytes
            target.seconds = round(seconds, 3)
            target.updated_at = now
            if started:
                target.attempts += 1
                session.execute(
                    update(DeliveryRow)
                    .where(DeliveryRow.id == delivery_id, DeliveryRow.status == "queued")
                    .values(status="delivering", updated_at=now)
                )

    def finish_if_complete(
        self, delivery_id: str, owner: str | None, default_webhook: str | None = None
    ) -> StoredDelivery | None:
        """When every destination is final: the delivery's final status, the lease released,
        and (with a webhook URL: the delivery's own, else the account's default) its
        completion event pending. Returns the finished delivery only to the one caller whose
        update made it final (never twice, even when several workers finish at once)."""
        delivery = self.get(delivery_id)
        if delivery.final or not all(t.final for t in delivery.targets):
            return None
        status = overall_status(t.status for t in delivery.targets)
        now = utcnow()
        finished = dataclasses.replace(delivery, status=status, finished_at=now, updated_at=now)
        if default_webhook is None:
            endpoint = self.webhook_endpoint(delivery.account_id)
            default_webhook = endpoint.url if endpoint is not None else None
        target = delivery.webhook_url or default_webhook
        values: dict[str, Any] = {
            "status": status,
            "finished_at": now,
            "updated_at": now,
            "lease_owner": None,
            "lease_until": None,
        }
        if target is not None:
            finished = dataclasses.replace(finished, webhook_status="pending")
            values.update(
                webhook_status="pending",
                webhook_event=completion_event(finished),
                webhook_target=target,
                webhook_next_at=now,
                webhook_first_at=None,
            )
        where = [DeliveryRow.id == delivery_id, DeliveryRow.status.in_(_OPEN)]
        where.append(DeliveryRow.run == delivery.run)
        if owner is not None:
            where.append(or_(DeliveryRow.lease_owner == owner, DeliveryRow.lease_owner.is_(None)))
        with self.engine.begin() as connection:
            result = connection.execute(update(DeliveryRow).where(*where).values(**values))
        return finished if result.rowcount == 1 else None

    def retry(self, account_id: int, delivery_id: str) -> StoredDelivery:
        """Queue the destinations that did not succeed again (``run`` + 1, same ``now``).
        Raises :class:`DeliveryNotFound` or :class:`NotRetryable`."""
        now = utcnow()
        with Session(self.engine) as session, session.begin():
            row = session.scalar(
                select(DeliveryRow).where(
                    DeliveryRow.id == delivery_id, DeliveryRow.account_id == account_id
                )
            )
            if row is None:
                raise DeliveryNotFound(delivery_id)
            if row.status not in FINAL_DELIVERY_STATUSES:
                raise NotRetryable("the delivery is still running; retry it once it has finished")
            targets = session.scalars(
                select(DeliveryTargetRow).where(DeliveryTargetRow.delivery_id == delivery_id)
            ).all()
            again = [t for t in targets if t.status == "failed"]
            if not again:
                raise NotRetryable("every destination of this delivery succeeded or was skipped")
            result = session.execute(
                update(DeliveryRow)
                .where(DeliveryRow.id == delivery_id, DeliveryRow.run == row.run)
                .values(
                    status="queued",
                    run=row.run + 1,
                    error=None,
                    finished_at=None,
                    updated_at=now,
                    webhook_status=(
                        "superseded" if row.webhook_status == "pending" else row.webhook_status
                    ),
                    webhook_next_at=None,
                )
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise NotRetryable("the delivery was retried by another request just now")
            for target in again:
                target.status = "queued"
                target.log = [*target.log, log_entry(f"queued again (run {row.run + 1})", now)]
                target.updated_at = now
        return self.get(delivery_id)

    # -- webhooks ------------------------------------------------------------------------------

    def record_webhook_attempt(
        self,
        owner: str,
        due: DueWebhook,
        *,
        status_code: int | None,
        outcome: str,
        error: str | None,
        seconds: float,
        next_at: datetime | None,
        attempted_at: datetime,
    ) -> None:
        """Keep the attempt; the event is then ``delivered``, ``failed`` or (``retry``)
        pending again at ``next_at``; the lease is released."""
        values: dict[str, Any] = {"lease_owner": None, "lease_until": None}
        if due.attempts == 0:
            values["webhook_first_at"] = attempted_at
        if outcome == "retry":
            values["webhook_next_at"] = next_at
        else:
            values["webhook_status"] = outcome
            values["webhook_next_at"] = None
        with Session(self.engine) as session, session.begin():
            session.add(
                WebhookAttemptRow(
                    delivery_id=due.delivery_id,
                    run=due.run,
                    number=due.attempts + 1,
                    attempted_at=attempted_at,
                    status_code=status_code,
                    outcome=outcome,
                    error=error,
                    seconds=round(seconds, 3),
                )
            )
            session.execute(
                update(DeliveryRow)
                .where(
                    DeliveryRow.id == due.delivery_id,
                    DeliveryRow.lease_owner == owner,
                    DeliveryRow.run == due.run,
                    DeliveryRow.webhook_status == "pending",
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )

    def webhook_endpoint(self, account_id: int) -> WebhookEndpoint | None:
        with Session(self.engine) as session:
            row = session.get(WebhookEndpointRow, account_id)
            if row is None:
                return None
            return WebhookEndpoint(account_id, row.url, row.secret_created_at)

    def webhook_secret(self, account_id: int) -> str | None:
        """The account's signing secret, decrypted (for signing only; never shown again)."""
        with Session(self.engine) as session:
            row = session.get(WebhookEndpointRow, account_id)
            token = None if row is None else row.secret
        if token is None:
            return None
        secret = self._box().decrypt(token)["secret"]
        assert isinstance(secret, str)
        return secret

    def set_webhook(
        self, account_id: int, url: str | None, *, set_url: bool = True, rotate: bool = False
    ) -> WebhookEndpoint:
        """Set (``set_url``) the account's default webhook URL, creating its secret when it
        has none (or a new one when ``rotate``). The returned value carries the new secret
        only when one was created."""
        now = utcnow()
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            row = session.get(WebhookEndpointRow, account_id, with_for_update=True)
            created: str | None = None
            if row is None or rotate:
                created = "whsec_" + _random.token_urlsafe(32)
                token = self._box().encrypt({"secret": created})
            if row is None:
                assert created is not None
                row = WebhookEndpointRow(
                    account_id=account_id,
                    url=url if set_url else None,
                    secret=token,
                    secret_created_at=now,
                    updated_at=now,
                )
                session.add(row)
            else:
                if set_url:
                    row.url = url
                if created is not None:
                    row.secret = token
                    row.secret_created_at = now
                row.updated_at = now
        return WebhookEndpoint(account_id, row.url, row.secret_created_at, created)

    def rotate_webhook_secrets(self) -> tuple[int, int]:
        """Re-encrypt every account's webhook secret with the box's newest key (``destinations
        keys rotate-encryption``); ``(rotated, failed)``. A row changed meanwhile is left (it
        is on the newest key already)."""
        from .. import SecretsUnreadable

        box = self._box()
        rotated = failed = 0
        with Session(self.engine) as session:
            rows = session.execute(
                select(WebhookEndpointRow.account_id, WebhookEndpointRow.secret)
            ).all()
        for account_id, token in rows:
            try:
                new = box.rotate(token)
            except SecretsUnreadable:
                failed += 1
                continue
            with self.engine.begin() as connection:
                connection.execute(
                    update(WebhookEndpointRow)
                    .where(
                        WebhookEndpointRow.account_id == account_id,
                        WebhookEndpointRow.secret == token,
                    )
                    .values(secret=new)
                )
            rotated += 1
        return rotated, failed

    def _box(self) -> SecretBox:
        if self.box is None:
            raise RuntimeError("webhook secrets need the secret box (encryption keys)")
        return self.box

    # -- destinations ------------------------------------------------------------------------

    def account_destinations(
        self, account_id: int, destination_ids: Sequence[str] | None = None
    ) -> dict[str, tuple[str, bool]]:
        """``id -> (name, enabled)`` of the account's destinations (those of
        ``destination_ids`` only, when given). Reads no secret."""
        query = select(DestinationRow.id, DestinationRow.name, DestinationRow.enabled).where(
            DestinationRow.account_id == account_id
        )
        if destination_ids is not None:
            query = query.where(DestinationRow.id.in_(list(destination_ids)))
        with self.engine.connect() as connection:
            rows = connection.execute(query.order_by(DestinationRow.created_at, DestinationRow.id))
            return {r.id: (r.name, bool(r.enabled)) for r in rows}

    def mark_verified(self, account_id: int, destination_id: str) -> bool:
        """Stamp ``last_verified_at`` (``POST /destinations/{id}/verify``); False if the
        destination is gone."""
        with self.engine.begin() as connection:
            result = connection.execute(
                update(DestinationRow)
                .where(
                    DestinationRow.id == destination_id, DestinationRow.account_id == account_id
                )
                .values(last_verified_at=utcnow())
            )
        return bool(result.rowcount == 1)
