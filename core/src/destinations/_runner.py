"""The runner inside ``serve``: a bounded pool that runs accepted deliveries and sends their
completion webhooks, apart from the threads that answer requests.

* **Claims, not queues.** Work is found in the database (:class:`DeliveryStore`): the runner
  claims deliveries with a lease, renews the leases of what it runs every third of
  :attr:`RunnerConfig.lease_seconds`, and releases them when done. A server that is killed
  leaves leases that expire, and the next runner to look (the restarted server or another
  replica) claims those deliveries again: none is lost, none runs in two places at once.
  A new delivery wakes the runner at once; otherwise it looks every ``poll_interval``.
* **Idempotent.** A resumed or retried delivery uses the ``now`` fixed at acceptance, so it
  writes the same keys (puts overwrite).
* **Bounded.** ``workers`` deliveries at once (each with ``concurrency`` uploads in flight,
  :func:`~destinations.deliver`), and a few webhook posts at once on their own threads.
* **Files.** Paths are re-checked inside the file root when the delivery runs; URLs are
  fetched once per run into a temporary directory through the endpoint guard
  (:mod:`destinations._fetch`), bounded in bytes and time, 5xx and timeouts retried; a
  file that cannot be had fails the run's destinations with a message naming the file.
* **With Celery** (``celery_app``), a delivery's run is fanned out as one task per
  destination instead; the workers record the same per-destination rows.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from . import _metrics
from ._deliver import deliver
from ._errors import InvalidDestination, SecretsUnreadable, StoreError
from ._fetch import check_url, fetch_with_retries
from ._records import Destination, ResultFile, ResultSet
from ._retry import RetryPolicy
from ._store import StoreOptions
from ._webhooks import WebhookPolicy, WebhookSender
from .persistence import (
    DeliveryStore,
    DestinationRepository,
    DueWebhook,
    StoredDelivery,
    StoredTarget,
    event_id,
    log_entry,
    utcnow,
)

__all__ = ["EMBEDDED_QUEUE", "DeliveryRunner", "FileUnavailable", "RunnerConfig", "open_files"]

#: ``destinations_queue_depth{queue=...}`` of the deliveries waiting for this runner.
EMBEDDED_QUEUE = "embedded"

log = logging.getLogger("destinations.deliveries")


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    file_root: Path | None = None
    workers: int = 2
    concurrency: int = 8
    lease_seconds: float = 60.0
    poll_interval: float = 1.0
    max_delivery_bytes: int = 10 * 1024**3
    max_fetch_bytes: int = 5 * 1024**3
    fetch_timeout: float = 300.0
    webhook: WebhookPolicy = field(default_factory=WebhookPolicy)
    webhook_workers: int = 4
    options: StoreOptions = field(default_factory=StoreOptions)
    retry: RetryPolicy | None = None
    queue: str | None = None


class FileUnavailable(Exception):
    """A file of the delivery cannot be had; ``message`` names the file (never a server
    path or a URL)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def inside_root(root: Path | None, path: str) -> str | None:
    """The real path of ``path`` when it is a regular file inside ``root``, else None (the
    caller says only that, never what exists there)."""
    if root is None:
        return None
    real = os.path.realpath(root / path)
    if not Path(real).is_relative_to(root) or not os.path.isfile(real):
        return None
    return real


def open_files(
    files: tuple[dict[str, str], ...], config: RunnerConfig, spool: str
) -> list[ResultFile]:
    """Every file of a delivery as a local path: paths checked inside the root again (they
    may have changed since acceptance), URLs fetched into ``spool``. Raises
    :class:`FileUnavailable`."""
    out: list[ResultFile] = []
    total = 0
    for index, f in enumerate(files):
        name = f["name"]
        if "url" in f:
            target = os.path.join(spool, str(index))
            try:
                size = fetch_with_retries(
                    f["url"],
                    target,
                    name=name,
                    max_bytes=min(config.max_fetch_bytes, config.max_delivery_bytes - total),
                    timeout=config.fetch_timeout,
                )
            except StoreError as exc:
                raise FileUnavailable(exc.message) from exc
        else:
            real = inside_root(config.file_root, f["path"])
            if real is None:
                raise FileUnavailable(f"file {name!r}: no longer a file inside the file root")
            target, size = real, os.path.getsize(real)
        total += size
        if total > config.max_delivery_bytes:
            raise FileUnavailable(
                f"file {name!r}: the delivery's files exceed {config.max_delivery_bytes} bytes"
            )
        out.append(ResultFile(name, target, content_type=f.get("content_type")))
    return out


class DeliveryRunner:
    """Runs the deliveries of ``store`` (destinations loaded through ``repository``)."""

    def __init__(
        self,
        store: DeliveryStore,
        repository: DestinationRepository,
        config: RunnerConfig,
        *,
        celery_app: Any = None,
    ) -> None:
        self.store = store
        self.repository = repository
        self.config = config
        self.celery_app = celery_app
        self.owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._reserved = 0
        self._sending: set[str] = set()
        #: Work handed to a pool and not begun yet (cancelled when the runner stops).
        self._queued: dict[str, Future[None]] = {}
        self._threads: list[threading.Thread] = []
        self._pool: ThreadPoolExecutor | None = None
        self._webhook_pool: ThreadPoolExecutor | None = None
        self._sender: WebhookSender | None = None
        #: Called with each delivery id a run finished (tests, benchmarks).
        self.on_finished: Callable[[str], None] | None = None
        self._waiting = store.count_waiting_runs

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the pools (idempotent): unfinished deliveries whose lease has expired are
        claimed on the first look, so a restarted server resumes what it was running."""
        with self._lock:
            if self._threads or self._stopping.is_set():
                return
            self._pool = ThreadPoolExecutor(
                self.config.workers, thread_name_prefix="destinations-delivery"
            )
            self._webhook_pool = ThreadPoolExecutor(
                self.config.webhook_workers, thread_name_prefix="destinations-webhook"
            )
            self._sender = WebhookSender(self.config.webhook)
            for target, name in ((self._loop, "claims"), (self._heartbeat, "leases")):
                thread = threading.Thread(
                    target=target, name=f"destinations-runner-{name}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
            # Deliveries waiting for a runner, counted at each scrape of /metrics.
            _metrics.queue_depth_from(EMBEDDED_QUEUE, self._waiting)

    @property
    def started(self) -> bool:
        return bool(self._threads)

    def reserve(self) -> str | None:
        """A slot for a delivery about to be stored: the owner to store it claimed by (then
        :meth:`run_reserved` starts it without a trip through the claim loop), or None
        when every slot is taken (the loop claims it when one frees)."""
        with self._lock:
            if not self._threads or self._stopping.is_set():
                return None
            if len(self._running) + self._reserved >= self.config.workers:
                return None
            self._reserved += 1
            return self.owner

    def run_reserved(self, delivery_id: str | None) -> None:
        """Start the delivery stored with :meth:`reserve`'s claim (None: it was not stored,
        give the slot back)."""
        with self._lock:
            self._reserved -= 1
            if delivery_id is None:
                return
            self._running.add(delivery_id)
        assert self._pool is not None
        self._submit(self._pool, self._run, delivery_id, delivery_id)

    def notify(self) -> None:
        """Look for work now (a delivery was accepted or retried)."""
        self._wake.set()

    def stop(self, grace: float = 10.0) -> None:
        """Claim nothing more; wait up to ``grace`` seconds for what runs (a delivery still
        running after that keeps its lease until it expires, then is resumed elsewhere)."""
        self._stopping.set()
        self._wake.set()
        _metrics.clear_queue_depth(EMBEDDED_QUEUE, self._waiting)
        for thread in self._threads:
            thread.join(grace)
        with self._lock:
            for delivery_id, future in list(self._queued.items()):
                if future.cancel():  # never begun: its lease expires, another runner takes it
                    self._running.discard(delivery_id)
                    self._sending.discard(delivery_id)
            self._queued.clear()
        for pool in (self._pool, self._webhook_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        waited = 0.0
        while self.busy and waited < grace:
            time.sleep(0.05)
            waited += 0.05
        if self._sender is not None:
            self._sender.close()

    def _submit(
        self, pool: ThreadPoolExecutor | None, work: Callable[[Any], None], arg: Any, key: str
    ) -> None:
        assert pool is not None

        def begin(value: Any) -> None:
            with self._lock:
                self._queued.pop(key, None)
            work(value)

        with self._lock:
            self._queued[key] = pool.submit(begin, arg)

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._running or self._sending)

    # -- loops ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self._claim()
            except Exception as exc:  # the database briefly unreachable: look again later
                log.warning("claiming deliveries failed (%s); trying again", type(exc).__name__)
            self._wake.wait(self.config.poll_interval)

    def _claim(self) -> None:
        assert self._pool is not None and self._webhook_pool is not None
        with self._lock:
            free = self.config.workers - len(self._running) - self._reserved
            free_senders = self.config.webhook_workers - len(self._sending)
        lease = self.config.lease_seconds
        for delivery_id in self.store.claim_runs(self.owner, lease, free):
            with self._lock:
                self._running.add(delivery_id)
            self._submit(self._pool, self._run, delivery_id, delivery_id)
        for due in self.store.claim_webhooks(self.owner, lease, free_senders):
            with self._lock:
                self._sending.add(due.delivery_id)
            self._submit(self._webhook_pool, self._send, due, due.delivery_id)

    def _heartbeat(self) -> None:
        interval = self.config.lease_seconds / 3
        while True:
            if self._stopping.is_set():
                if not self.busy:
                    return
                time.sleep(min(interval, 0.5))  # stopping: keep what still runs claimed
            else:
                self._stopping.wait(interval)
            with self._lock:
                held = [*self._running, *self._sending]
            try:
                self.store.renew(self.owner, held, self.config.lease_seconds)
            except Exception as exc:
                log.warning("renewing delivery leases failed (%s)", type(exc).__name__)

    # -- one delivery --------------------------------------------------------------------------

    def _run(self, delivery_id: str) -> None:
        try:
            started = self.store.start_run(self.owner, delivery_id, "started")
            if started is None:
                return
            if started.mode == "celery":
                self._dispatch(started)
            else:
                self._deliver(started)
        except Exception as exc:
            # Left claimed: the lease expires and the delivery is tried again then.
            log.error("delivery %s: the runner failed (%s)", delivery_id, type(exc).__name__)
        finally:
            with self._lock:
                self._running.discard(delivery_id)
            self._wake.set()  # a slot is free

    def _deliver(self, delivery: StoredDelivery) -> None:
        delivery_id = delivery.id
        pending = [t for t in delivery.targets if not t.final]
        outcomes: dict[str, tuple[str, list[dict[str, str]], tuple[str, ...], int, float]] = {}
        ready: list[tuple[StoredTarget, Destination]] = []
        error: str | None = None
        for target in pending:
            problem, destination = self._load(delivery, target)
            if destination is None:
                outcomes[target.destination_id] = ("failed", [log_entry(problem)], (), 0, 0.0)
            else:
                ready.append((target, destination))
        if ready:
            with tempfile.TemporaryDirectory(prefix="destinations-delivery-") as spool:
                try:
                    files = open_files(delivery.files, self.config, spool)
                    result_set = ResultSet(
                        delivery.collection_id,
                        delivery.collection_name,
                        delivery.result_set_id,
                        files,
                    )
                except FileUnavailable as exc:
                    error = exc.message
                    for target, _ in ready:
                        outcomes[target.destination_id] = (
                            "failed", [log_entry(exc.message)], (), 0, 0.0
                        )
                else:
                    report = deliver(
                        result_set,
                        [d for _, d in ready],
                        now=delivery.now,
                        concurrency=self.config.concurrency,
                        options=self.config.options,
                        retry=self.config.retry,
                    )
                    for (target, _), status in zip(ready, report, strict=True):
                        outcomes[target.destination_id] = (
                            status.status,
                            [e.to_dict() for e in status.log],
                            status.keys,
                            status.bytes,
                            status.seconds,
                        )
        finished = self.store.finish_run(
            self.owner, delivery_id, outcomes, error=error,
            webhook_lease=self.config.lease_seconds,
        )
        if finished is not None:
            if self.on_finished is not None:
                self.on_finished(delivery_id)
            if finished.webhook_status == "pending":
                due = self.store.due_webhook(finished)
                if due is not None:
                    with self._lock:
                        self._sending.add(due.delivery_id)
                    assert self._webhook_pool is not None
                    self._submit(self._webhook_pool, self._send, due, due.delivery_id)

    def _load(
        self, delivery: StoredDelivery, target: StoredTarget
    ) -> tuple[str, Destination | None]:
        try:
            destination = self.repository.find(target.destination_id, delivery.account_id)
        except InvalidDestination as exc:
            fields = ", ".join(sorted(exc.errors)) if exc.errors else "its fields"
            return f"the stored destination no longer validates ({fields})", None
        except SecretsUnreadable:
            return "the stored destination's secrets cannot be decrypted on this server", None
        if destination is None:
            return "the destination was deleted", None
        return "", destination

    def _dispatch(self, delivery: StoredDelivery) -> None:
        """Fan one run out to the Celery workers (one task per destination not done)."""
        from .celery import TASK_NAME, FileRef, ResultSetRef

        assert self.celery_app is not None, "a Celery delivery needs the broker configured"
        ref = ResultSetRef(
            delivery.collection_id,
            delivery.collection_name,
            delivery.result_set_id,
            delivery.now,
            [
                FileRef(
                    f["name"], path=f.get("path"), url=f.get("url"), content_type=f["content_type"]
                )
                for f in delivery.files
            ],
        )
        message = ref.to_message()
        task = self.celery_app.tasks[TASK_NAME]
        for target in delivery.targets:
            if target.final:
                continue
            self.store.record_target(
                delivery.id, target.destination_id, "queued", [log_entry("queued on the workers")]
            )
            task.apply_async(
                args=(message, target.destination_id),
                kwargs={"account_id": delivery.account_id, "delivery_id": delivery.id},
                queue=self.config.queue,
            )
        self.store.mark_dispatched(self.owner, delivery.id, delivery.run)

    # -- one webhook ---------------------------------------------------------------------------

    def _send(self, due: DueWebhook) -> None:
        try:
            self._post(due)
        except Exception as exc:
            log.error("delivery %s: sending its webhook failed (%s)", due.delivery_id,
                      type(exc).__name__)
        finally:
            with self._lock:
                self._sending.discard(due.delivery_id)

    def _post(self, due: DueWebhook) -> None:
        assert self._sender is not None
        policy = self.config.webhook
        attempted_at = utcnow()
        secret = self.store.webhook_secret(due.account_id)
        problem = check_url(due.url)
        error: str | None
        if secret is None or problem is not None:
            error = (
                "the account has no webhook secret" if secret is None else f"webhook_url {problem}"
            )
            self.store.record_webhook_attempt(
                self.owner, due, status_code=None, outcome="failed", error=error, seconds=0.0,
                next_at=None, attempted_at=attempted_at,
            )
            return
        result = self._sender.post(due.url, due.body, secret, event_id(due.delivery_id, due.run))
        next_at = None
        error = result.error
        if result.delivered:
            outcome = "delivered"
        elif result.transient:
            first = due.first_at if due.attempts else attempted_at
            wait = policy.next_wait(due.attempts + 1)
            next_at = utcnow() + timedelta(seconds=wait)
            if (next_at - first).total_seconds() > policy.window:
                outcome, next_at = "failed", None
                error = f"{error}; no more attempts ({policy.window:g} s after the first)"
            else:
                outcome = "retry"
        else:
            outcome = "failed"
        self.store.record_webhook_attempt(
            self.owner, due, status_code=result.status_code, outcome=outcome, error=error,
            seconds=result.seconds, next_at=next_at, attempted_at=attempted_at,
        )
        if next_at is not None:
            log.info("delivery %s: webhook attempt %d failed; next in %.1f s", due.delivery_id,
                     due.attempts + 1, (next_at - utcnow()).total_seconds())
