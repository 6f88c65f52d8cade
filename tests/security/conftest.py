"""Fixtures for the hardening tests: a loopback listener that records connections, a
`destinations serve` process, and a fresh PostgreSQL schema."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet

from tests.api.conftest import (  # noqa: F401 - the API fixtures, shared
    api_key,
    app,
    client,
    database_url,
    local_root,
    make_app,
    other_key,
    vault,
)
from tests.emulators.servers import free_port
from tests.postgres import fresh_schema

ALLOW_ENV = "DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS"


class Recorder:
    """A TCP listener on a loopback address that accepts, records and closes connections."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((host, 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self.accepted: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(peer)
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.close()


@pytest.fixture
def guard_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_ENV, raising=False)


@dataclass
class Server:
    """A running `destinations serve`."""

    url: str
    database_url: str
    api_key: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path
    extra_keys: list[str] = field(default_factory=list)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def destinations_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "destinations", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start_server(
    db_url: str, env: dict[str, str], log: Path, root: Path, *extra_args: str
) -> Server:
    """Start `destinations serve` (``extra_args`` after the usual options) and wait until it
    answers; RuntimeError with the log's tail if it exits first."""
    port = free_port()
    out = log.open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "destinations",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--database-url",
            db_url,
            "--local-root",
            str(root),
            *extra_args,
        ],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            requests.get(url + "/openapi.json", timeout=20)
            break
        except requests.RequestException:
            time.sleep(0.1)
    else:
        process.kill()
        process.wait(10)
        raise RuntimeError("server did not start in 30 s")
    return Server(url, db_url, "", env, process, log)


def server_env(keys: list[str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESTINATIONS_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if keys:
        env["DESTINATIONS_ENCRYPTION_KEYS"] = ",".join(keys)
    return env


def create_key(db_url: str, env: dict[str, str], name: str = "t") -> str:
    done = destinations_cli("keys", "create", "--name", name, "--database-url", db_url, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_schema("destinations_sec") as url:
        yield url


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    """``serve(database_url=None, keys=None)`` starts a server with a fresh account."""
    servers: list[Server] = []

    def start(db_url: str | None = None, keys: list[str] | None = None) -> Server:
        url = db_url or f"sqlite:///{tmp_path / 'served.db'}"
        if keys is None and not url.startswith("sqlite"):
            keys = [Fernet.generate_key().decode()]
        env = server_env(keys)
        root = tmp_path / "local-root"
        root.mkdir(exist_ok=True)
        server = start_server(url, env, tmp_path / "server.log", root)
        server.api_key = create_key(url, env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()
