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
  callback it registers (:func:`queue_depth_from`): ``destinations worker --metrics-port``
  reads its broker queue's length on a short interval; ``serve``'s delivery runner counts
  the deliveries waiting for it (``queue="embedded"``) at each scrape.

**Workers** (:func:`start_worker_server`): a Celery worker serves ``/metrics`` on its own
port from its main process. Its prefork children count deliveries, so with the prefork pool
prometheus-client's *multiprocess mode* is used (:func:`prepare_multiprocess`, before
prometheus-client is first imported): every child writes its samples to files in one
directory, the main process's collector sums them (counters and histograms survive a child
that is replaced), and a child that exits marks itself dead (:func:`mark_process_dead`).
The solo and threads pools run tasks in the main process and use the default registry.

Labels are types, statuses and error codes only: never a destination's name, id, bucket or
key, so no customer data (nor secret) reaches a scrape, and cardinality stays bounded.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import math
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import pluggy

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from ._records import Destination, DestinationStatus, ResultSet

__all__ = [
    "CONTENT_TYPE",
    "MULTIPROC_DIR_ENV",
    "available",
    "clear_queue_depth",
    "destinations_delivery_finished",
    "destinations_file_delivered",
    "mark_process_dead",
    "metrics",
    "observe_retry",
    "observe_upload",
    "observe_verification",
    "prepare_multiprocess",
    "queue_depth_from",
    "render",
    "set_queue_depth",
    "start_worker_server",
]

log = logging.getLogger("destinations.metrics")

#: prometheus-client's switch to multiprocess mode (read once, when it is first imported).
MULTIPROC_DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

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
            "Deliveries waiting in a queue, where this process knows it (a broker queue's "
            "messages not yet taken by a worker; queue=embedded: deliveries waiting for "
            "serve's runner).",
            ["queue"],
            # A worker's main process sets it; in multiprocess mode one value, no pid label.
            multiprocess_mode="livemostrecent",
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
    """The process's metrics, created on first use.

    None without prometheus-client, and None until the process uses Prometheus (something
    imported prometheus-client: ``serve``'s ``/metrics``, ``worker --metrics-port``, or the
    embedding service's own exporter): a library call such as ``deliver()`` in a process
    that exports nothing does not pay for importing it (30-50 ms of CPU) or counting.
    """
    global _metrics
    if _metrics is None and "prometheus_client" in sys.modules and available():
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


def set_queue_depth(queue: str, depth: float) -> None:
    m = metrics()
    if m is not None:
        m.queue_depth.labels(queue).set(depth)


_readers: dict[str, Callable[[], float]] = {}


def queue_depth_from(queue: str, read: Callable[[], float]) -> None:
    """Read the queue's depth at every scrape with ``read()`` (e.g. a database count). A
    ``read`` that raises gives NaN for that scrape (the scrape itself still answers). Not
    for multiprocess mode (its files hold values, not callbacks): use
    :func:`set_queue_depth` there."""
    m = metrics()
    if m is None:
        return

    def guarded() -> float:
        try:
            return float(read())
        except Exception as exc:
            log.warning("queue %s: reading its depth failed (%s)", queue, type(exc).__name__)
            return math.nan

    with _lock:
        _readers[queue] = read
        m.queue_depth.labels(queue).set_function(guarded)


def clear_queue_depth(queue: str, read: Callable[[], float] | None = None) -> None:
    """Stop reporting ``queue`` (only if ``read`` is still its reader, when given)."""
    m = metrics()
    if m is None:
        return
    with _lock:
        if read is not None and _readers.get(queue) != read:
            return
        _readers.pop(queue, None)
        with contextlib.suppress(KeyError):
            m.queue_depth.remove(queue)


# -- workers ------------------------------------------------------------------------------


def prepare_multiprocess(directory: str) -> None:
    """Put prometheus-client into multiprocess mode with ``directory`` for this process and
    the children it forks: created if missing, its old sample files (``*.db``, from an
    earlier run) removed. Must run before prometheus-client is first imported."""
    values = sys.modules.get("prometheus_client.values")
    if values is not None and values.ValueClass is values.MutexValue:
        # prometheus-client picked single-process values when it was imported.
        raise RuntimeError("prometheus-client was imported before multiprocess mode was set")
    os.makedirs(directory, exist_ok=True)
    for path in glob.glob(os.path.join(directory, "*.db")):
        os.remove(path)
    os.environ[MULTIPROC_DIR_ENV] = directory


def mark_process_dead(pid: int) -> None:
    """A child process of a multiprocess worker exits (its live gauges go)."""
    if os.environ.get(MULTIPROC_DIR_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def start_worker_server(host: str, port: int) -> WSGIServer:
    """Serve ``/metrics`` on ``host:port`` (0: any free port; the server's
    ``server_port`` says which) from a daemon thread: the multiprocess collector's sum over
    every process in multiprocess mode, else this process's default registry."""
    from prometheus_client import CollectorRegistry, start_http_server

    metrics()  # the families exist (at zero) before the first task
    directory = os.environ.get(MULTIPROC_DIR_ENV)
    if directory:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        server, _ = start_http_server(port, addr=host, registry=registry)
    else:
        server, _ = start_http_server(port, addr=host)
    return server


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
