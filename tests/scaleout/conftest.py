"""Fixtures for scale-out: the real brokers on this machine (Redis, RabbitMQ), a database
shared with worker processes, stored destinations, and real ``destinations worker``
processes started and stopped (by pid) by the tests.

Every test uses its own queue name (and, on Redis, its own key prefix), and deletes what it
left on the broker. An unreachable broker or database fails the test; it is never skipped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from destinations import Destination
from destinations.persistence import (
    FINAL_STATUSES,
    DestinationRepository,
    SecretBox,
    StoredStatus,
    create_account,
    make_engine,
    read_delivery_statuses,
    upgrade,
)
from tests.postgres import fresh_schema

REDIS_URL = os.environ.get("DESTINATIONS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get(
    "DESTINATIONS_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//"
)
ROOT = Path(__file__).resolve().parents[2]


def _reachable(url: str) -> None:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=3).close()
    except OSError as exc:
        pytest.fail(
            f"{parts.scheme} broker at {parts.hostname}:{parts.port} is unreachable: {exc}",
            pytrace=False,
        )


@dataclass
class Broker:
    """One broker, one queue name for this test."""

    kind: str
    url: str
    queue: str
    transport_options: dict[str, Any] = field(default_factory=dict)

    def raw_messages(self) -> list[bytes]:
        """Every message waiting in the queue, raw as the broker holds it, left in place."""
        if self.kind == "redis":
            import redis

            client = redis.Redis.from_url(self.url)
            try:
                key = self.transport_options["global_keyprefix"] + self.queue
                return [bytes(m) for m in client.lrange(key, 0, -1)]
            finally:
                client.close()
        import amqp

        # A passive consumer: basic_get without ack, then close the channel, which puts
        # every unacknowledged message back.
        parts = urlsplit(self.url)
        connection = amqp.Connection(
            f"{parts.hostname}:{parts.port}", userid=parts.username, password=parts.password
        )
        connection.connect()
        try:
            channel = connection.channel()
            out: list[bytes] = []
            while (message := channel.basic_get(self.queue, no_ack=False)) is not None:
                body = message.body
                out.append(body if isinstance(body, bytes) else body.encode())
                out.append(repr(message.properties).encode())
            channel.close()
            return out
        finally:
            connection.close()

    def cleanup(self) -> None:
        if self.kind == "redis":
            import redis

            client = redis.Redis.from_url(self.url)
            try:
                prefix = self.transport_options["global_keyprefix"]
                keys = list(client.scan_iter(match=prefix + "*"))
                if keys:
                    client.delete(*keys)
            finally:
                client.close()
            return
        import amqp

        parts = urlsplit(self.url)
        connection = amqp.Connection(
            f"{parts.hostname}:{parts.port}", userid=parts.username, password=parts.password
        )
        connection.connect()
        try:
            channel = connection.channel()
            channel.queue_delete(self.queue)
            channel.close()
        finally:
            connection.close()


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    queue = f"destinations-test-{uuid.uuid4().hex[:10]}"
    if request.param == "redis":
        _reachable(REDIS_URL)
        b = Broker(
            "redis",
            REDIS_URL,
            queue,
            {
                "global_keyprefix": f"{queue}:",
                # A killed worker's task comes back after a few seconds, not an hour.
                "visibility_timeout": 8,
                "unacked_restore_interval": 1,
                "unacked_restore_throttle": 1,
            },
        )
    else:
        _reachable(RABBITMQ_URL)
        b = Broker("rabbitmq", RABBITMQ_URL, queue)
    yield b
    b.cleanup()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_schema("destinations_scaleout") as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shared.db'}"


@pytest.fixture(autouse=True)
def _private_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every server here is on 127.0.0.1: the operator switch core's endpoint guard honours.
    monkeypatch.setenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", "1")


class Database:
    """The shared database: migrated, with one account, storing destinations as the API does
    (non-secret fields as JSON, secret ones as one Fernet token)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.key = Fernet.generate_key().decode()
        self.box = SecretBox([self.key])
        self.engine = make_engine(url)
        self.repository = DestinationRepository(self.engine, self.box)
        upgrade(self.engine)
        create_account(self.engine, "scale-out")
        with self.engine.connect() as connection:
            self.account_id = int(
                connection.execute(sa.text("SELECT max(id) FROM accounts")).scalar_one()
            )

    def store(self, destination: Destination) -> str:
        """Store ``destination`` for the account, as the API's create does."""
        row = self.repository.insert(self.account_id, destination, verified=False, limit=10**6)
        return row.id

    def statuses(self, **filters: Any) -> list[StoredStatus]:
        return read_delivery_statuses(self.engine, **filters)

    def wait_final(self, expected: int, timeout: float, workers: Workers) -> list[StoredStatus]:
        """Every status, once ``expected`` rows are final (fails with the workers' logs)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.statuses()
            done = [r for r in rows if r.status in FINAL_STATUSES]
            if len(done) >= expected:
                return rows
            if time.monotonic() > deadline:
                pending = [
                    (r.result_set_id, r.destination_id, r.status, r.log[-1:])
                    for r in rows
                    if r.status not in FINAL_STATUSES
                ][:5]
                pytest.fail(
                    f"{len(done)} of {expected} statuses final after {timeout} s; "
                    f"pending e.g. {pending}\n{workers.logs()}",
                    pytrace=False,
                )
            time.sleep(0.2)


@pytest.fixture
def make_database() -> Iterator[Callable[[str], Database]]:
    made: list[Database] = []

    def make(url: str) -> Database:
        db = Database(url)
        made.append(db)
        return db

    yield make
    for db in made:
        db.engine.dispose()


class Workers:
    """``destinations worker`` processes (``--pool=solo``: one process each, so SIGKILL
    takes down the very process running the task)."""

    def __init__(self, broker: Broker, database: Database, log_dir: Path) -> None:
        self.broker = broker
        self.database = database
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self,
        name: str,
        *,
        wait: bool = True,
        options: Sequence[str] = (),
        celery_options: Sequence[str] = (),
    ) -> subprocess.Popen[bytes]:
        """Start worker ``name``; ``options`` are more ``destinations worker`` options (a
        repeated one, e.g. ``--pool prefork``, wins over the default here),
        ``celery_options`` more ``celery worker`` ones."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AWS_", "DESTINATIONS_", "CELERY_"))
        }
        env.update(
            DESTINATIONS_ENCRYPTION_KEYS=self.database.key,
            DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS="1",
            PYTHONPATH=str(ROOT),
            PYTHONDONTWRITEBYTECODE="1",
        )
        command = [
            sys.executable,
            "-m",
            "destinations",
            "worker",
            "--broker-url",
            self.broker.url,
            "--database-url",
            self.database.url,
            "--queue",
            self.broker.queue,
            "--pool",
            "solo",
            "--hostname",
            f"{name}@%h",
            "--max-retries",
            "12",
            "--retry-backoff",
            "0.1",
            "--retry-backoff-max",
            "1",
            "--loglevel",
            "info",
        ]
        for key, value in self.broker.transport_options.items():
            command += ["--transport-option", f"{key}={value}"]
        command += [*options, "--", "--without-mingle", "--without-gossip", *celery_options]
        log = open(self.log_dir / f"worker-{name}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.log_dir
        )
        log.close()
        self.procs[name] = proc
        if wait:
            self.wait_ready(name)
        return proc

    def wait_ready(self, name: str, timeout: float = 30.0) -> None:
        path = self.log_dir / f"worker-{name}.log"
        deadline = time.monotonic() + timeout
        while b" ready." not in path.read_bytes():
            if self.procs[name].poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"worker {name} did not start\n{self.logs()}", pytrace=False)
            time.sleep(0.1)

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def logs(self) -> str:
        out = []
        for path in sorted(self.log_dir.glob("worker-*.log")):
            out.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(out)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture
def make_workers(tmp_path: Path) -> Iterator[Callable[[Broker, Database], Workers]]:
    made: list[Workers] = []

    def make(broker: Broker, database: Database) -> Workers:
        log_dir = tmp_path / "workers"
        log_dir.mkdir(exist_ok=True)
        workers = Workers(broker, database, log_dir)
        made.append(workers)
        return workers

    yield make
    for workers in made:
        workers.stop()
