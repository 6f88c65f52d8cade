"""The Celery app factory, the delivery task and fan-out."""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, final

from celery import Celery  # type: ignore[import-untyped]
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from .. import (
    DeliveryError,
    InvalidDestination,
    ResultSet,
    RetryPolicy,
    SecretsUnreadable,
    StoreOptions,
    deliver,
)
from .._settings import DEFAULT_QUEUE, env_name, settings
from ..persistence import (
    DestinationRepository,
    StatusName,
    enabled_flags,
    load_secret_box,
    make_engine,
    record_status,
)
from ._message import ReferenceUnavailable, ResultSetRef

__all__ = ["BROKER_URL_ENV", "TASK_NAME", "FanOut", "create_celery", "fan_out"]

log = logging.getLogger("destinations.celery")

BROKER_URL_ENV: Final = env_name("broker_url")
TASK_NAME: Final = "destinations.deliver_to_destination"


def _entry(text: str) -> dict[str, str]:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"date_time": now, "text": text}


class _Context:
    """What a task needs besides its message: the database (one engine per process, made
    after any fork) and the secret box, as one repository. Attached to the app as
    ``app.destinations``."""

    def __init__(
        self,
        database_url: str,
        encryption_keys: str | Sequence[str] | None,
        *,
        shared_root: Path | None,
        concurrency: int,
        options: StoreOptions,
        fetch_timeout: float,
        retry_backoff: float,
        retry_backoff_max: float,
    ) -> None:
        self.database_url = database_url
        self.encryption_keys = encryption_keys
        self.shared_root = shared_root
        self.concurrency = concurrency
        self.options = options
        self.fetch_timeout = fetch_timeout
        self.retry_backoff = retry_backoff
        self.retry_backoff_max = retry_backoff_max
        self._lock = threading.Lock()
        self._pid = -1
        self._engine: Engine | None = None
        self._repository: DestinationRepository | None = None

    def engine(self) -> Engine:
        with self._lock:
            return self._current_engine()

    def _current_engine(self) -> Engine:
        if self._engine is None or self._pid != os.getpid():
            # A pool inherited through fork would share sockets with the parent.
            self._engine = make_engine(self.database_url)
            self._pid = os.getpid()
            self._repository = None
        return self._engine

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def repository(self) -> DestinationRepository:
        """This process's repository. Its secret box is loaded on first use, so fan-out
        (which reads no secret) needs no keys."""
        with self._lock:
            engine = self._current_engine()
            if self._repository is None:
                box = load_secret_box(self.encryption_keys, self.database_url)
                self._repository = DestinationRepository(engine, box)
            return self._repository


class _App(Celery):  # type: ignore[misc]
    destinations: _Context

    def close(self) -> None:
        """Close the broker connections and this process's database engine."""
        super().close()
        self.destinations.close()


def create_celery(
    broker_url: str | None = None,
    database_url: str | None = None,
    *,
    queue: str = DEFAULT_QUEUE,
    encryption_keys: str | Sequence[str] | None = None,
    shared_root: str | os.PathLike[str] | None = None,
    concurrency: int = 4,
    options: StoreOptions | None = None,
    max_retries: int = 8,
    retry_backoff: float = 2.0,
    retry_backoff_max: float = 600.0,
    visibility_timeout: float = 3600.0,
    transport_options: Mapping[str, Any] | None = None,
    fetch_timeout: float = 60.0,
    main: str = "destinations",
) -> Any:
    """A Celery app with the delivery task registered as :data:`TASK_NAME`.

    ``broker_url``: ``redis://host:6379/0`` or ``amqp://user:pass@host:5672//`` (else
    ``DESTINATIONS_BROKER_URL``). ``database_url``: the API's database (else
    ``DESTINATIONS_DATABASE_URL``, else ``sqlite:///destinations.db``); ``encryption_keys``
    as for :func:`destinations.api.create_app`, needed only where tasks run.
    ``shared_root``: when set, workers only open file paths inside it. ``concurrency``:
    uploads in flight inside one task. ``max_retries``, ``retry_backoff`` and
    ``retry_backoff_max`` (seconds): Celery retries of a transient failure, the wait before
    retry *n* drawn from ``[0, min(max, backoff * 2**n)]``. ``visibility_timeout`` (Redis
    only): seconds after which a task a lost worker took is handed out again; keep it above
    the longest delivery plus its longest retry wait.

    The app accepts JSON only (no pickle), acknowledges a task after it ran
    (``task_acks_late``), requeues it when its worker process dies
    (``task_reject_on_worker_lost``) and prefetches one task per worker process.
    """
    env = settings()
    broker_url = broker_url or env.broker_url
    if not broker_url:
        raise ValueError(f"give a broker URL (or set {BROKER_URL_ENV})")
    database_url = database_url or env.database_url
    root = Path(os.path.realpath(shared_root)) if shared_root is not None else None
    app = _App(main, broker=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=queue,
        broker_transport_options={"visibility_timeout": visibility_timeout}
        | dict(transport_options or {}),
        broker_connection_retry_on_startup=True,
        # Tasks are idempotent, so one cut off by a lost broker connection is simply
        # redelivered; finishing it would only race the redelivered copy.
        worker_cancel_long_running_tasks_on_connection_loss=True,
    )
    app.destinations = _Context(
        database_url,
        encryption_keys,
        shared_root=root,
        concurrency=concurrency,
        options=options or StoreOptions(),
        fetch_timeout=fetch_timeout,
        retry_backoff=retry_backoff,
        retry_backoff_max=retry_backoff_max,
    )
    app.task(
        bind=True,
        name=TASK_NAME,
        acks_late=True,
        reject_on_worker_lost=True,
        max_retries=max_retries,
        # A database that is briefly unreachable: Celery's own backoff retry.
        autoretry_for=(OperationalError, InterfaceError),
        retry_backoff=max(1, round(retry_backoff)),
        retry_backoff_max=round(retry_backoff_max),
        retry_jitter=True,
    )(deliver_to_destination)
    return app


def _transient(error: DeliveryError | None) -> bool:
    """The plugin's judgement, carried by the delivery's error (core's one retry rule)."""
    return error is not None and error.transient


def deliver_to_destination(
    task: Any,
    result_set: Mapping[str, Any],
    destination_id: str,
    account_id: int | None = None,
    delivery_id: str | None = None,
) -> str:
    """The task body: deliver ``result_set`` (a :class:`ResultSetRef` message) to the stored
    destination ``destination_id``; returns the final status (or raises ``Retry``).

    ``delivery_id``: the task belongs to a delivery accepted by ``POST /deliveries``; its
    per-destination row there is kept too, and the task that finishes the last destination
    makes the delivery final (its completion webhook is then sent by the API servers).

    Core's in-process retry is set to one attempt: Celery is the one retry layer, so a
    transient failure frees the worker during the backoff and survives a worker restart.
    """
    ctx: _Context = task.app.destinations
    ref = ResultSetRef.from_message(result_set)
    engine = ctx.engine()
    retries = task.request.retries
    max_retries = task.max_retries

    def record(status: StatusName, log: list[dict[str, str]], **extra: Any) -> None:
        if delivery_id is not None:
            _record_delivery(engine, delivery_id, destination_id, status, log, **extra)
        record_status(
            engine,
            result_set_id=ref.result_set_id,
            destination_id=destination_id,
            collection_id=ref.collection_id,
            account_id=account_id,
            status=status,
            log=log,
            **extra,
        )

    redelivered = bool((task.request.delivery_info or {}).get("redelivered"))
    start = f"started on {task.request.hostname or 'a worker'} (retry {retries} of {max_retries}"
    start += ", redelivered)" if redelivered else ")"
    started = [_entry(start)]
    record("delivering", started, started=True)

    def fail(text: str) -> str:
        record("failed", [*started, _entry(text)])
        return "failed"

    try:
        destination = ctx.repository().find(destination_id, account_id)
    except InvalidDestination as exc:
        fields = ", ".join(sorted(exc.errors)) if getattr(exc, "errors", None) else "its fields"
        return fail(f"the stored destination no longer validates ({fields})")
    except SecretsUnreadable:  # the secrets do not decrypt with this worker's keys
        return fail("the stored destination's secrets do not decrypt on this worker")
    if destination is None:
        return fail(f"no destination with id {destination_id!r}")

    try:
        with ref.open(shared_root=ctx.shared_root, timeout=ctx.fetch_timeout) as opened:
            status = deliver(
                opened,
                [destination],
                now=ref.now,
                concurrency=ctx.concurrency,
                options=ctx.options,
                retry=RetryPolicy(attempts=1),
            )[0]
    except ReferenceUnavailable as exc:
        if exc.transient and retries < max_retries:
            _retry(task, ctx, record, [*started, _entry(exc.message)])
        return fail(exc.message)
    except OSError as exc:
        return fail(f"a file could not be read on this worker ({type(exc).__name__})")

    log_entries = [*started, *(e.to_dict() for e in status.log)]
    outcome = {"keys": list(status.keys), "bytes": status.bytes, "seconds": status.seconds}
    if status.status == "failed" and _transient(status.error) and retries < max_retries:
        _retry(task, ctx, record, log_entries, **outcome)
    record(status.status, log_entries, **outcome)
    return status.status


def _record_delivery(
    engine: Engine,
    delivery_id: str,
    destination_id: str,
    status: StatusName,
    log: list[dict[str, str]],
    *,
    started: bool = False,
    **outcome: Any,
) -> None:
    from ..persistence import DeliveryStore

    store = DeliveryStore(engine)
    store.record_target(
        delivery_id, destination_id, status, log, append_log=False, started=started, **outcome
    )
    if status in ("success", "failed", "skipped"):
        store.finish_if_complete(delivery_id, None)


def _retry(task: Any, ctx: _Context, record: Any, log: list[dict[str, str]], **extra: Any) -> None:
    # Exponential backoff with full jitter, as Celery's retry_backoff/retry_jitter do, but
    # in float seconds (Celery's helper draws whole seconds).
    ceiling = min(ctx.retry_backoff_max, ctx.retry_backoff * 2**task.request.retries)
    countdown = random.uniform(0, ceiling)
    text = (
        f"transient failure; Celery retry {task.request.retries + 1} of {task.max_retries} "
        f"in {countdown:.1f} s"
    )
    record("retrying", [*log, _entry(text)], **extra)
    raise task.retry(countdown=countdown)


@final
@dataclass(frozen=True, slots=True)
class FanOut:
    """What :func:`fan_out` did: ``queued`` maps each enabled destination id to its task
    id; ``skipped`` (disabled) and ``missing`` (unknown, or another account's) ids were
    recorded as ``skipped`` and ``failed`` statuses without a task."""

    result_set_id: str
    now: datetime
    queued: Mapping[str, str] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


def fan_out(
    app: Any,
    result_set: ResultSet | ResultSetRef,
    destination_ids: Sequence[str],
    *,
    now: datetime | None = None,
    account_id: int | None = None,
    queue: str | None = None,
) -> FanOut:
    """Send one delivery task per enabled destination in ``destination_ids``.

    ``result_set``: a :class:`~destinations.ResultSet` whose files are paths on storage
    every worker mounts, or a :class:`ResultSetRef` (paths or URLs). ``now`` (default: the
    current time, taken once) goes into every message, so each task — and any retry or
    redelivery of it — writes the same keys. ``account_id``: when given, only that account's
    destinations are delivered to. Reads only the destinations' ``enabled`` flags here; the
    secrets are decrypted by the workers.
    """
    ctx: _Context = app.destinations
    if isinstance(result_set, ResultSet):
        ref = ResultSetRef.from_result_set(result_set, now or datetime.now(UTC))
    else:
        ref = result_set
    message = ref.to_message()
    ids = list(dict.fromkeys(destination_ids))
    engine = ctx.engine()
    flags = enabled_flags(engine, ids)
    task = app.tasks[TASK_NAME]
    queued: dict[str, str] = {}
    skipped: list[str] = []
    missing: list[str] = []
    for destination_id in ids:
        common: dict[str, Any] = {
            "result_set_id": ref.result_set_id,
            "destination_id": destination_id,
            "collection_id": ref.collection_id,
            "account_id": account_id,
        }
        found = flags.get(destination_id)
        if found is None or (account_id is not None and found[1] != account_id):
            record_status(engine, status="failed", log=[_entry("no such destination")], **common)
            missing.append(destination_id)
            continue
        if not found[0]:
            record_status(
                engine,
                status="skipped",
                log=[_entry("skipped: the destination is disabled")],
                **common,
            )
            skipped.append(destination_id)
            continue
        record_status(engine, status="queued", log=[_entry("queued")], **common)
        result = task.apply_async(
            args=(message, destination_id),
            kwargs={"account_id": account_id},
            queue=queue,
        )
        queued[destination_id] = result.id
    return FanOut(ref.result_set_id, ref.now, queued, tuple(skipped), tuple(missing))
