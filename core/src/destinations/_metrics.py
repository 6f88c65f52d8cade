"""Prometheus metrics (prometheus-client, the ``metrics`` extra; without it every call here
is a no-op and nothing is imported).

What is counted, and where it comes from:

* deliveries and files, bytes, delivery duration: this module is an **observer plugin**
  (entry point ``destinations.observers: metrics``), so ``destinations_file_delivered`` and
  ``destinations_delivery_finished`` feed it wherever deliveries run (``deliver()``, the CLI,
  the API's runner, Celery workers);
* verifications by type, outcome and code, and each verify step's latency: one call from
  :func:`destinations.verify` (:func:`observe_verification`);
* uploads (one put attempt's latency, by type and outcome) and retries: two calls from the
  delivery engine (:func:`observe_upload`, :func:`observe_retry`);
* queue depth: a gauge the process that knows it sets (:func:`set_queue_depth`) or a
  callback it registers (:func:`queue_depth_from`).

Labels are types, statuses and error codes only: never a destination's name, id, bucket or
key, so no customer data (nor secret) reaches a scrape, and cardinality stays bounded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import pluggy

if TYPE_CHECKING:
    from ._records import Destination, DestinationStatus, ResultSet

__all__ = [
    "CONTENT_TYPE",
    "available",
    "destinations_delivery_finished",
    "destinations_file_delivered",
    "metrics",
    "observe_retry",
    "observe_upload",
    "observe_verification",
    "queue_depth_from",
    "render",
    "set_queue_depth",
]

#: Seconds: verify steps and uploads on loopback take milliseconds, real ones up to minutes.
LATENCY_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)
DELIVERY_BUCKETS: Final = (0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Every metric, registered once in prometheus-client's default registry."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.verifications = Counter(
            "destinations_verifications",
            "Verifications (probe put + delete), by type, outcome (success|failed) and error "
            "code (none on success).",
            ["type", "outcome", "code"],
        )
        self.verify_step_seconds = Histogram(
            "destinations_verify_step_seconds",
            "Seconds per verification step (connect, put, delete, total) of successful "
            "verifications.",
            ["type", "step"],
            buckets=LATENCY_BUCKETS,
        )
        self.deliveries = Counter(
            "destinations_deliveries",
            "Deliveries of a result set to one destination, by type and final status "
            "(success|failed|skipped).",
            ["type", "status"],
        )
        self.delivery_seconds = Histogram(
            "destinations_delivery_seconds",
            "Seconds one destination's delivery took, by type and status.",
            ["type", "status"],
            buckets=DELIVERY_BUCKETS,
        )
        self.files = Counter(
            "destinations_files",
            "Result files, by type and status (delivered|failed|not_attempted).",
            ["type", "status"],
        )
        self.bytes = Counter(
            "destinations_delivered_bytes", "Bytes of result files delivered, by type.", ["type"]
        )
        self.uploads = Histogram(
            "destinations_upload_seconds",
            "Seconds per put attempt of a result file, by type and outcome (success|error).",
            ["type", "outcome"],
            buckets=LATENCY_BUCKETS,
        )
        self.retries = Counter(
            "destinations_retries",
            "Put attempts retried after a transient failure, by type and error code.",
            ["type", "code"],
        )
        self.queue_depth = Gauge(
            "destinations_queue_depth",
            "Deliveries waiting in a queue, where this process knows it.",
            ["queue"],
        )


_lock = threading.Lock()
_metrics: Metrics | None = None
_available: bool | None = None


def available() -> bool:
    """Whether prometheus-client is installed (checked once)."""
    global _available
    if _available is None:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            _available = False
        else:
            _available = True
    return _available


def metrics() -> Metrics | None:
    """The process's metrics, created on first use; None without prometheus-client."""
    global _metrics
    if _metrics is None and available():
        with _lock:
            if _metrics is None:
                _metrics = Metrics()
    return _metrics


def render() -> bytes:
    """The default registry in the Prometheus text format (what ``/metrics`` answers)."""
    from prometheus_client import generate_latest

    metrics()  # so the families exist (at zero) before the first event
    return generate_latest()


# -- small calls from core ----------------------------------------------------------------


def observe_verification(
    destination_type: str,
    *,
    code: str | None,
    steps: dict[str, float] | None = None,
) -> None:
    """One verification: ``code`` None on success; ``steps`` seconds per step."""
    m = metrics()
    if m is None:
        return
    outcome = "success" if code is None else "failed"
    m.verifications.labels(destination_type, outcome, code or "none").inc()
    for step, seconds in (steps or {}).items():
        m.verify_step_seconds.labels(destination_type, step).observe(seconds)


def observe_upload(destination_type: str, seconds: float, *, ok: bool) -> None:
    m = metrics()
    if m is not None:
        m.uploads.labels(destination_type, "success" if ok else "error").observe(seconds)


def observe_retry(destination_type: str, code: str) -> None:
    m = metrics()
    if m is not None:
        m.retries.labels(destination_type, code).inc()


def set_queue_depth(queue: str, depth: int) -> None:
    m = metrics()
    if m is not None:
        m.queue_depth.labels(queue).set(depth)


def queue_depth_from(queue: str, read: Callable[[], float]) -> None:
    """Read the queue's depth at every scrape with ``read()`` (e.g. the broker's count)."""
    m = metrics()
    if m is not None:
        m.queue_depth.labels(queue).set_function(read)


# -- the observer plugin (entry point destinations.observers: metrics) --------------------

_hookimpl = pluggy.HookimplMarker("destinations")


@_hookimpl
def destinations_file_delivered(
    result_set: ResultSet, destination: Destination, key: str, size: int
) -> None:
    m = metrics()
    if m is not None:
        m.files.labels(destination.type, "delivered").inc()
        m.bytes.labels(destination.type).inc(size)


@_hookimpl
def destinations_delivery_finished(result_set: ResultSet, status: DestinationStatus) -> None:
    m = metrics()
    if m is None:
        return
    kind = status.destination.type
    m.deliveries.labels(kind, status.status).inc()
    m.delivery_seconds.labels(kind, status.status).observe(status.seconds)
    if status.status == "failed":
        files = len(result_set.files)
        written = sum(1 for k in status.keys if k != status.manifest_key)
        if status.error is not None and status.error.step == "put":
            m.files.labels(kind, "failed").inc()
            written += 1
        if files > written:
            m.files.labels(kind, "not_attempted").inc(files - written)
