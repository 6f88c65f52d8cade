"""``destinations worker``: a Celery worker for the delivery tasks.

**Metrics** (``--metrics-port N``): the worker's main process serves ``/metrics`` on its
own port, for the whole worker. The prefork pool runs tasks in child processes, so it uses
prometheus-client's multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` (``--metrics-dir``, else
a fresh temporary directory) is set before prometheus-client is imported; each child
writes its samples there, the main process sums them at each scrape, and a child that exits
marks itself dead. One port per worker (not per child) keeps the scrape config one target
per host however many children run or are replaced. The solo and threads pools run tasks in
the main process and serve its default registry (with process metrics). The queue's depth
is read from the broker every ``--metrics-interval`` seconds (kombu's passive queue
declare: the message count on RabbitMQ, the queue list's length on Redis) into
``destinations_queue_depth{queue=...}``.

**Logs** (``--log-format json``): every line one JSON object through core's formatter; a
task's lines carry ``task_id``, ``result_set_id``, ``destination_id`` and ``account_id``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import logging
import os
import shutil
import tempfile
import threading
from typing import Any

import click

from .. import _metrics
from .._logging import log_context
from .._settings import DEFAULT_QUEUE
from ..persistence import DATABASE_URL_ENV, DEFAULT_DATABASE_URL
from ._app import BROKER_URL_ENV, TASK_NAME, create_celery, deliver_to_destination

log = logging.getLogger("destinations.celery")


@click.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--broker-url",
    envvar=BROKER_URL_ENV,
    required=True,
    help=f"redis://… or amqp://… (or {BROKER_URL_ENV}).",
)
@click.option(
    "--database-url",
    envvar=DATABASE_URL_ENV,
    default=DEFAULT_DATABASE_URL,
    show_default=True,
    help=f"The API's database (or {DATABASE_URL_ENV}).",
)
@click.option("--queue", "-Q", default=DEFAULT_QUEUE, show_default=True)
@click.option(
    "--concurrency", "-c", type=int, default=None, help="Worker processes (default: one per CPU)."
)
@click.option(
    "--pool",
    "-P",
    type=click.Choice(["prefork", "solo", "threads"]),
    default="prefork",
    show_default=True,
)
@click.option(
    "--uploads", type=int, default=4, show_default=True, help="Uploads in flight inside one task."
)
@click.option(
    "--shared-root",
    type=click.Path(file_okay=False),
    help="Open file paths only inside this directory.",
)
@click.option("--max-retries", type=int, default=8, show_default=True)
@click.option(
    "--retry-backoff",
    type=float,
    default=2.0,
    show_default=True,
    help="Seconds; retry n waits up to backoff * 2**n.",
)
@click.option("--retry-backoff-max", type=float, default=600.0, show_default=True)
@click.option(
    "--visibility-timeout",
    type=float,
    default=3600.0,
    show_default=True,
    help="Redis: seconds before a lost worker's task is handed out again.",
)
@click.option(
    "--transport-option",
    "transport_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A broker transport option (VALUE parsed as JSON when it parses), e.g. "
    "global_keyprefix=prod: for Redis.",
)
@click.option("--loglevel", "-l", default="info", show_default=True)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="DESTINATIONS_LOG_FORMAT",
    help="json: one JSON object per line (no banner), a task's lines with task_id, "
    "result_set_id, destination_id and account_id (env DESTINATIONS_LOG_FORMAT).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=None,
    help="Serve Prometheus metrics for this worker at http://HOST:PORT/metrics (0: any free "
    "port, logged at start). Off when not given.",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics port listens on (0.0.0.0 for a Prometheus on another host).",
)
@click.option(
    "--metrics-dir",
    type=click.Path(file_okay=False),
    envvar=_metrics.MULTIPROC_DIR_ENV,
    default=None,
    help="Prefork pool: the directory where every worker process writes its samples "
    f"(or {_metrics.MULTIPROC_DIR_ENV}; default a fresh temporary directory). One per "
    "worker; its *.db files are removed at start.",
)
@click.option(
    "--metrics-interval",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds between reads of the queue's depth from the broker.",
)
@click.option("--hostname", "-n", default=None, help="Worker node name.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(
    broker_url: str,
    database_url: str,
    queue: str,
    concurrency: int | None,
    pool: str,
    uploads: int,
    shared_root: str | None,
    max_retries: int,
    retry_backoff: float,
    retry_backoff_max: float,
    visibility_timeout: float,
    transport_options: tuple[str, ...],
    loglevel: str,
    log_format: str,
    metrics_port: int | None,
    metrics_host: str,
    metrics_dir: str | None,
    metrics_interval: float,
    hostname: str | None,
    celery_args: tuple[str, ...],
) -> None:
    """Run a Celery worker for delivery tasks (needs destinations[celery]).

    Migrates the database first (a no-op when it is current). Arguments after `--` go to
    `celery worker` unchanged (e.g. `-- --without-gossip -E`). Encryption keys come from
    DESTINATIONS_ENCRYPTION_KEYS.

    With --metrics-port, the worker's main process serves Prometheus metrics for all its
    processes (prefork: prometheus-client's multiprocess mode, in --metrics-dir).
    """
    # Multiprocess mode is chosen when prometheus-client is first imported: before anything.
    temporary_dir: str | None = None
    if metrics_port is not None:
        if importlib.util.find_spec("prometheus_client") is None:
            raise click.ClickException(
                "--metrics-port needs prometheus-client: pip install 'destinations[metrics]'"
            )
        if pool == "prefork" or metrics_dir is not None:
            if metrics_dir is None:
                metrics_dir = temporary_dir = tempfile.mkdtemp(prefix="destinations-metrics-")
            _metrics.prepare_multiprocess(metrics_dir)
    if log_format == "json":
        _json_logs(loglevel)
    try:
        _run_worker(
            broker_url=broker_url,
            database_url=database_url,
            queue=queue,
            concurrency=concurrency,
            pool=pool,
            uploads=uploads,
            shared_root=shared_root,
            max_retries=max_retries,
            retry_backoff=retry_backoff,
            retry_backoff_max=retry_backoff_max,
            visibility_timeout=visibility_timeout,
            transport_options=transport_options,
            loglevel=loglevel,
            json_logs=log_format == "json",
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            metrics_dir=metrics_dir,
            metrics_interval=metrics_interval,
            hostname=hostname,
            celery_args=celery_args,
        )
    finally:
        if temporary_dir is not None:
            shutil.rmtree(temporary_dir, ignore_errors=True)


def _run_worker(
    *,
    broker_url: str,
    database_url: str,
    queue: str,
    concurrency: int | None,
    pool: str,
    uploads: int,
    shared_root: str | None,
    max_retries: int,
    retry_backoff: float,
    retry_backoff_max: float,
    visibility_timeout: float,
    transport_options: tuple[str, ...],
    loglevel: str,
    json_logs: bool,
    metrics_port: int | None,
    metrics_host: str,
    metrics_dir: str | None,
    metrics_interval: float,
    hostname: str | None,
    celery_args: tuple[str, ...],
) -> None:
    from celery import signals  # type: ignore[import-untyped]

    from ..persistence import make_engine, upgrade

    extra: dict[str, Any] = {}
    for item in transport_options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--transport-option {item!r}: expected KEY=VALUE")
        try:
            extra[key] = json.loads(value)
        except json.JSONDecodeError:
            extra[key] = value

    engine = make_engine(database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    app = create_celery(
        broker_url,
        database_url,
        queue=queue,
        shared_root=shared_root,
        concurrency=uploads,
        max_retries=max_retries,
        retry_backoff=retry_backoff,
        retry_backoff_max=retry_backoff_max,
        visibility_timeout=visibility_timeout,
        transport_options=extra,
    )

    def say(text: str) -> None:
        if json_logs:
            log.info("%s", text)
        else:  # Celery sets up text logging only when the worker starts
            click.echo(text, err=True)

    signals.task_prerun.connect(_task_started, weak=False)
    signals.task_postrun.connect(_task_finished, weak=False)
    stop = threading.Event()
    if metrics_port is not None:
        try:
            server = _metrics.start_worker_server(metrics_host, metrics_port)
        except OSError as exc:
            raise click.ClickException(
                f"--metrics-port {metrics_port}: cannot listen on {metrics_host} "
                f"({exc.strerror or type(exc).__name__})"
            ) from exc
        where = f"multiprocess, in {metrics_dir}" if metrics_dir else "this process"
        say(
            f"metrics at http://{_url_host(metrics_host)}:{server.server_port}/metrics "
            f"({where}); queue depth read every {metrics_interval:g} s"
        )

        main_pid = os.getpid()

        def child_started(**_: Any) -> None:
            if os.getpid() != main_pid:  # (the solo pool sends this in the main process)
                server.socket.close()  # a prefork child's copy of the listening socket

        def child_exiting(pid: int, **_: Any) -> None:
            _metrics.mark_process_dead(pid)

        signals.worker_process_init.connect(child_started, weak=False)
        signals.worker_process_shutdown.connect(child_exiting, weak=False)
        threading.Thread(
            target=_watch_queue,
            args=(app, queue, metrics_interval, stop),
            name="destinations-queue-depth",
            daemon=True,
        ).start()

    argv = ["worker", f"--loglevel={loglevel}", "-Q", queue, "-P", pool]
    if json_logs:
        argv = ["--quiet", *argv]  # the banner is not JSON; the log says when it is ready
        say(f"worker for queue {queue!r} on {app.connection_for_read().as_uri()}, pool {pool}")
    if concurrency is not None:
        argv += ["-c", str(concurrency)]
    if hostname is not None:
        argv += ["-n", hostname]
    try:
        app.worker_main(argv=[*argv, *celery_args])
    finally:
        stop.set()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _json_logs(loglevel: str) -> None:
    """JSON lines now and in every worker process (Celery configures no logging of its own
    when a ``setup_logging`` receiver is connected)."""
    from celery import signals

    from .._logging import configure_json_logging

    named = logging.getLevelName(loglevel.upper())
    level = named if isinstance(named, int) else logging.INFO
    configure_json_logging(level)

    def setup(loglevel: int | None = None, **_: Any) -> None:
        configure_json_logging(loglevel or level)

    signals.setup_logging.connect(setup, weak=False)


# -- a task's log context ------------------------------------------------------------------

_TASK_PARAMETERS = inspect.signature(deliver_to_destination)
_contexts: dict[str, contextlib.ExitStack] = {}


def _task_started(
    task_id: str | None = None,
    task: Any = None,
    args: Any = None,
    kwargs: Any = None,
    **_: Any,
) -> None:
    """Before a delivery task runs: its ids on every log line it writes (until it ends)."""
    if task_id is None or getattr(task, "name", None) != TASK_NAME:
        return
    try:
        bound = _TASK_PARAMETERS.bind(task, *(args or ()), **(kwargs or {})).arguments
    except TypeError:
        return  # not a message of ours; Celery reports it
    message = bound.get("result_set")
    result_set_id = message.get("result_set_id") if isinstance(message, dict) else None
    destination_id = bound.get("destination_id")
    account_id = bound.get("account_id")
    stack = contextlib.ExitStack()
    stack.enter_context(
        log_context(
            task_id=task_id,
            result_set_id=result_set_id if isinstance(result_set_id, str) else None,
            destination_id=destination_id if isinstance(destination_id, str) else None,
            account_id=account_id if isinstance(account_id, int) else None,
        )
    )
    _contexts[task_id] = stack
    log.info(
        "delivering result set %s to destination %s (attempt %d)",
        result_set_id,
        destination_id,
        int(getattr(task.request, "retries", 0) or 0) + 1,
    )


def _task_finished(
    task_id: str | None = None, retval: Any = None, state: str | None = None, **_: Any
) -> None:
    stack = _contexts.pop(task_id, None) if task_id is not None else None
    if stack is None:
        return
    with stack:
        outcome = retval if state == "SUCCESS" and isinstance(retval, str) else state
        log.info("delivery task finished: %s", str(outcome).lower())


# -- queue depth ---------------------------------------------------------------------------


def broker_queue_depth(app: Any, queue: str) -> int:
    """Messages waiting in ``queue`` on the app's broker (not those a worker holds), from
    kombu's queue declare: RabbitMQ's message count (a passive declare, which never creates
    the queue), or on Redis the length of the queue's list(s), every priority's, through the
    transport's key prefix. A queue the broker does not have holds 0.

    On Redis the declare is not passive: kombu's Redis declare only notes the queue in the
    channel (it writes nothing), while its passive check asks ``EXISTS`` without the
    ``global_keyprefix`` (kombu 5.7) and so finds no prefixed queue."""
    with app.connection_for_read() as connection:
        channel = connection.channel()
        passive = connection.transport.driver_type != "redis"
        try:
            return int(channel.queue_declare(queue=queue, passive=passive).message_count)
        except connection.channel_errors:
            return 0
        finally:
            with contextlib.suppress(Exception):  # a channel the broker already closed
                channel.close()


def _watch_queue(app: Any, queue: str, interval: float, stop: threading.Event) -> None:
    """Set the queue's depth now and every ``interval`` seconds (a fresh connection each
    time: a prefork child must not inherit a live broker connection from this thread)."""
    failing = False
    while True:
        try:
            depth: float = broker_queue_depth(app, queue)
        except Exception as exc:
            depth = float("nan")
            if not failing:
                log.warning("queue %s: reading its depth failed (%s)", queue, type(exc).__name__)
            failing = True
        else:
            if failing:
                log.info("queue %s: its depth is readable again", queue)
            failing = False
        _metrics.set_queue_depth(queue, depth)
        if stop.wait(interval):
            return
