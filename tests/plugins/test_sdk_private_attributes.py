"""Every private (or undocumented) SDK attribute the plugins and the endpoint guard rely on
still exists, and the installed SDKs are inside the caps the plugin pyprojects declare.

An SDK upgrade that moves one of these fails here, loudly, instead of silently in
production (an unguarded connection, a metadata request, progress that never moves).
"""

from __future__ import annotations

import inspect
import io
import socket
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------------------------
# the caps


def _requirements(plugin: str) -> dict[str, Requirement]:
    data = tomllib.loads((ROOT / "plugins" / plugin / "pyproject.toml").read_text())
    reqs = (Requirement(r) for r in data["project"]["dependencies"])
    return {r.name: r for r in reqs}


@pytest.mark.parametrize(
    ("plugin", "dist"),
    [
        ("s3", "boto3"),
        ("s3", "botocore"),
        ("s3", "s3transfer"),
        ("s3", "urllib3"),
        ("gcs", "google-cloud-storage"),
        ("gcs", "google-auth"),
        ("gcs", "requests"),
        ("gcs", "urllib3"),
        ("azure", "requests"),
        ("azure", "urllib3"),
        ("oss", "requests"),
        ("oss", "urllib3"),
    ],
)
def test_sdk_is_capped_and_the_installed_version_is_inside(plugin: str, dist: str) -> None:
    requirement = _requirements(plugin)[dist]
    uppers = [spec for spec in requirement.specifier if spec.operator == "<"]
    assert uppers, f"{plugin}: {dist} has no upper bound"
    assert requirement.specifier.contains(version(dist)), (dist, version(dist), requirement)


# --------------------------------------------------------------------------------------------
# botocore (destinations_s3._guard)


def _boto_client() -> object:
    import botocore.session

    return botocore.session.get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url="https://s3.example.com",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
    )


def test_botocore_pool_classes_by_scheme() -> None:
    client = _boto_client()
    http_session = client._endpoint.http_session  # type: ignore[attr-defined]
    pools = http_session._pool_classes_by_scheme
    assert isinstance(pools, dict)
    assert set(pools) == {"http", "https"}
    # The guard swaps entries of this dict in place: the pool manager (and every proxy
    # manager) must share the very same dict object.
    assert http_session._manager.pool_classes_by_scheme is pools
    source = inspect.getsource(type(http_session)._get_proxy_manager)
    assert "pool_classes_by_scheme = self._pool_classes_by_scheme" in source


def test_botocore_connection_classes_are_urllib3_ones() -> None:
    from botocore.awsrequest import (
        AWSHTTPConnection,
        AWSHTTPConnectionPool,
        AWSHTTPSConnection,
        AWSHTTPSConnectionPool,
    )
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    assert issubclass(AWSHTTPConnection, HTTPConnection)
    assert issubclass(AWSHTTPSConnection, HTTPSConnection)
    assert issubclass(AWSHTTPConnectionPool, HTTPConnectionPool)
    assert issubclass(AWSHTTPSConnectionPool, HTTPSConnectionPool)
    assert AWSHTTPSConnectionPool.ConnectionCls is AWSHTTPSConnection


def test_the_guard_attaches_to_a_botocore_client() -> None:
    from destinations.http_guard import GuardedConnection
    from destinations_s3._guard import guard_client

    client = _boto_client()
    guard_client(client, "s3_endpoint")
    pools = client._endpoint.http_session._pool_classes_by_scheme  # type: ignore[attr-defined]
    for scheme in ("http", "https"):
        assert issubclass(pools[scheme].ConnectionCls, GuardedConnection)


def test_botocore_exception_names_the_classifier_matches() -> None:
    import botocore.exceptions as bex

    for name in (
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "SSLError",
        "ProxyConnectionError",
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ResponseStreamingError",
    ):
        assert isinstance(getattr(bex, name), type), name


# --------------------------------------------------------------------------------------------
# urllib3 (destinations.http_guard)


def test_urllib3_connection_attributes_the_guard_reads() -> None:
    from urllib3.connection import HTTPConnection, HTTPSConnection

    assert callable(HTTPConnection._new_conn)
    for cls in (HTTPConnection, HTTPSConnection):
        conn = cls("example.com", 443, timeout=3.0)
        for name in (
            "_tunnel_host",
            "_tunnel_port",
            "proxy",
            "_dns_host",
            "port",
            "timeout",
            "source_address",
            "socket_options",
        ):
            assert hasattr(conn, name), f"{cls.__name__}.{name}"
        assert conn._dns_host == "example.com"
        assert conn._tunnel_host is None and conn.proxy is None


def test_urllib3_pool_and_manager_attributes() -> None:
    from urllib3 import PoolManager
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    assert hasattr(HTTPConnectionPool, "ConnectionCls")
    assert hasattr(HTTPSConnectionPool, "ConnectionCls")
    manager = PoolManager()
    assert set(manager.pool_classes_by_scheme) == {"http", "https"}


def test_urllib3_exceptions_the_guard_raises_and_the_classifier_matches() -> None:
    import urllib3.exceptions as uex
    from urllib3.connection import HTTPConnection

    conn = HTTPConnection("example.com", 80)
    err = socket.gaierror(socket.EAI_NONAME, "x")
    assert isinstance(uex.NameResolutionError("example.com", conn, err), uex.NewConnectionError)
    assert isinstance(uex.ConnectTimeoutError(conn, "m"), uex.TimeoutError)
    assert isinstance(uex.NewConnectionError(conn, "m"), uex.HTTPError)
    for name in (
        "ReadTimeoutError",
        "SSLError",
        "ProxyError",
        "IncompleteRead",
        "InvalidChunkLength",
        "ProtocolError",
    ):
        assert isinstance(getattr(uex, name), type), name


# --------------------------------------------------------------------------------------------
# requests (destinations.requests_guard) and google-auth (destinations_gcs)


def test_requests_adapter_hooks() -> None:
    import requests.exceptions as rex
    from requests.adapters import HTTPAdapter

    from destinations.http_guard import GuardedConnection
    from destinations.requests_guard import GuardedAdapter

    for name in ("init_poolmanager", "proxy_manager_for"):
        assert callable(getattr(HTTPAdapter, name)), name
    adapter = GuardedAdapter(guard_label="x")
    classes = adapter.poolmanager.pool_classes_by_scheme
    assert issubclass(classes["https"].ConnectionCls, GuardedConnection)
    for name in (
        "ConnectTimeout",
        "ReadTimeout",
        "Timeout",
        "SSLError",
        "ProxyError",
        "ChunkedEncodingError",
        "ConnectionError",
    ):
        assert isinstance(getattr(rex, name), type), name


def test_google_auth_session_sends_through_send() -> None:
    """The JSON API store meters upload bodies by overriding ``send`` of its
    AuthorizedSession, which google-auth must reach through requests' Session.request."""
    import requests
    from google.auth.transport.requests import AuthorizedSession

    assert issubclass(AuthorizedSession, requests.Session)
    assert "send" not in vars(AuthorizedSession)  # it does not bypass Session.send
    assert "super(AuthorizedSession, self).request(" in inspect.getsource(AuthorizedSession.request)


# --------------------------------------------------------------------------------------------
# google-cloud-storage (destinations_gcs._json_api)


def test_google_cloud_storage_bucket_metadata_cache() -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project="p",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": "https://storage.example.com"},
    )
    try:
        assert hasattr(client, "_bucket_metadata_cache")
        # the library itself treats a falsy cache as "off"
        source = inspect.getsource(type(client))
        assert 'hasattr(self, "_bucket_metadata_cache") and self._bucket_metadata_cache' in source
    finally:
        client.close()


def test_google_cloud_storage_blob_properties_for_put() -> None:
    from google.cloud import storage

    blob = storage.Blob("k", bucket=None)  # type: ignore[arg-type]
    blob.content_encoding = "gzip"
    blob.metadata = {"origin": "x"}
    assert (blob.content_encoding, blob.metadata) == ("gzip", {"origin": "x"})


# --------------------------------------------------------------------------------------------
# s3transfer (destinations_s3 progress)


def test_s3transfer_body_hooks() -> None:
    from boto3.s3.transfer import OSUtils, create_transfer_manager
    from s3transfer.utils import ReadFileChunk

    assert "osutil" in inspect.signature(create_transfer_manager).parameters
    for name in ("open_file_chunk_reader", "open_file_chunk_reader_from_fileobj"):
        assert callable(getattr(OSUtils, name)), name
    chunk = OSUtils().open_file_chunk_reader_from_fileobj(
        fileobj=io.BytesIO(b"abcdef"), chunk_size=4, full_file_size=6, callbacks=[]
    )
    assert isinstance(chunk, ReadFileChunk)
    for name in (
        "signal_transferring",
        "signal_not_transferring",
        "enable_callback",
        "disable_callback",
    ):
        assert callable(getattr(chunk, name)), name
    assert (len(chunk), chunk.read(10), chunk.tell()) == (4, b"abcd", 4)
