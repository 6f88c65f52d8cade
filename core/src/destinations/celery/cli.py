"""``destinations worker``: a Celery worker for the delivery tasks."""

from __future__ import annotations

import json
from typing import Any

import click

from .._settings import DEFAULT_QUEUE
from ..persistence import DATABASE_URL_ENV, DEFAULT_DATABASE_URL
from ._app import BROKER_URL_ENV, create_celery


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
    hostname: str | None,
    celery_args: tuple[str, ...],
) -> None:
    """Run a Celery worker for delivery tasks (needs destinations[celery]).

    Migrates the database first (a no-op when it is current). Arguments after `--` go to
    `celery worker` unchanged (e.g. `-- --without-gossip -E`). Encryption keys come from
    DESTINATIONS_ENCRYPTION_KEYS.
    """
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
    argv = ["worker", f"--loglevel={loglevel}", "-Q", queue, "-P", pool]
    if concurrency is not None:
        argv += ["-c", str(concurrency)]
    if hostname is not None:
        argv += ["-n", hostname]
    app.worker_main(argv=[*argv, *celery_args])
