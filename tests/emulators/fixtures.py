"""pytest plugin: session-scoped real storage servers on 127.0.0.1.

Enable it from ``tests/conftest.py``::

    pytest_plugins = ["tests.emulators.fixtures"]

Fixtures (all session-scoped, started on first use, stopped at session end):

- ``moto_server`` -> :class:`MotoHandle`: moto with auth switched ON and an IAM key pair
  allowed ``s3:*``.  Every request must be SigV4-signed with that pair.  Do not POST
  ``/moto-api/reset`` on it: that wipes the IAM user while auth stays on.
- ``azurite`` -> :class:`~tests.emulators.servers.Azurite` (devstoreaccount1, well-known key).
- ``gcs_emulator`` -> :class:`~tests.emulators.servers.GcsEmulator` (checks no credentials).
- ``oss_double`` -> ``tests.emulators.oss_double.OssDouble`` with
  ``OSS_CREDENTIALS`` and bucket ``OSS_BUCKET``.

A server that cannot start fails every test that uses it, with the reason and the server's
log tail; it is never skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from tests.emulators.servers import (
    Azurite,
    GcsEmulator,
    MotoServer,
    ServerProcess,
    ServerStartError,
)

if TYPE_CHECKING:
    from tests.emulators.oss_double import OssDouble

__all__ = [
    "OSS_BUCKET",
    "OSS_CREDENTIALS",
    "MotoHandle",
    "azurite",
    "gcs_emulator",
    "moto_server",
    "oss_double",
]

OSS_CREDENTIALS: dict[str, str] = {"LTAI5tTestAccessKey": "test-oss-secret"}
OSS_BUCKET = "dest-test"


@dataclass(frozen=True)
class MotoHandle:
    """A running moto server with auth enforced, plus the IAM key pair that may use it."""

    server: MotoServer
    access_key_id: str
    secret_access_key: str

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def s3_client(self, region: str = "us-east-1", **config: Any) -> Any:
        """boto3 S3 client signed with the IAM pair (isolated from env / ~/.aws)."""
        return self.server.s3_client(region, self.access_key_id, self.secret_access_key, **config)

    def create_bucket(self, name: str, region: str = "us-east-1") -> None:
        self.server.create_bucket(name, region, self.access_key_id, self.secret_access_key)


def _start_or_fail(server: ServerProcess) -> None:
    try:
        server.start()
    except ServerStartError as exc:
        server.stop()
        pytest.fail(f"{server.name} could not start: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoHandle]:
    server = MotoServer()
    _start_or_fail(server)
    try:
        try:
            key_id, secret = server.enable_auth()
        except Exception as exc:
            pytest.fail(
                f"moto_server started but enabling auth failed: {exc!r}\n"
                f"--- log tail ---\n{server.log_tail()}",
                pytrace=False,
            )
        yield MotoHandle(server, key_id, secret)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    server = Azurite()
    _start_or_fail(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GcsEmulator]:
    server = GcsEmulator()
    _start_or_fail(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def oss_double() -> Iterator[OssDouble]:
    # Imported here so this plugin loads even where oss_double.py is absent or broken.
    from tests.emulators.oss_double import OssDouble

    double = OssDouble(dict(OSS_CREDENTIALS), buckets=[OSS_BUCKET])
    try:
        double.start()
    except Exception as exc:
        pytest.fail(f"OSS test double could not start: {exc!r}", pytrace=False)
    try:
        yield double
    finally:
        double.stop()
