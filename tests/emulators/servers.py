"""Real local storage servers for the test suite, each listening on 127.0.0.1 only.

Plain Python (no pytest import) so the classes can be used from fixtures, benchmarks and
one-off scripts alike.  Every server is a subprocess started on a free loopback port, polled
until it answers HTTP, and stopped by its own process id.  Its stdout and stderr go to a
temporary log file (never a pipe that could fill up and block the server); the tail of that
log is part of every start-up error.

- :class:`MotoServer`  -- S3 (and IAM) through ``moto_server``; ``enable_auth()`` switches on
  real SigV4 checking with an IAM user's key pair.
- :class:`Azurite`     -- Azure Blob through ``azurite-blob`` from ``tests/emulators/node_modules``
  (install with ``npm ci --prefix tests/emulators``).
- :class:`GcsEmulator` -- Google Cloud Storage JSON API through ``gcp-storage-emulator``.
- :class:`CountingProxy` -- an in-process loopback reverse proxy that forwards requests
  unchanged and records ``(method, path, query, status)`` of each one, to count how many
  storage requests an operation makes.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import http.client
import ipaddress
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self
from urllib.parse import urlsplit

__all__ = [
    "AZURITE_ACCOUNT_KEY",
    "AZURITE_ACCOUNT_NAME",
    "EMULATORS_DIR",
    "Azurite",
    "CountingProxy",
    "GcsEmulator",
    "MotoServer",
    "RecordedRequest",
    "ServerProcess",
    "ServerStartError",
    "free_port",
    "gcs_client",
    "s3_client",
    "wait_for_http",
]

LOOPBACK = "127.0.0.1"
EMULATORS_DIR = Path(__file__).resolve().parent
AZURITE_BIN = EMULATORS_DIR / "node_modules" / ".bin" / "azurite-blob"

AZURITE_ACCOUNT_NAME = "devstoreaccount1"
# The well-known, public development key every azurite install uses (not a secret).
AZURITE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

# Credentials moto's *server process* sees and the ones used for the IAM set-up calls made
# before auth is switched on (moto accepts anything then).  Dummy values on purpose.
MOTO_BOOTSTRAP_KEY = "testing"
MOTO_BOOTSTRAP_SECRET = "testing"

# A urllib opener that never goes through an environment proxy: traffic stays on loopback.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Environment variables that would change how a server or an SDK behaves if inherited.
_SCRUBBED_ENV_PREFIXES = ("AWS_", "MOTO_", "BOTO_", "AZURE_", "AZURITE_", "GOOGLE_", "GCLOUD_")
_SCRUBBED_ENV_NAMES = frozenset(
    {
        "INITIAL_NO_AUTH_ACTION_COUNT",
        "TEST_SERVER_MODE",
        "STORAGE_EMULATOR_HOST",
        "CLOUDSDK_CORE_PROJECT",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "PORT",  # gcp-storage-emulator reads PORT/HOST as defaults
        "HOST",
    }
)


class ServerStartError(RuntimeError):
    """A server did not start (missing binary, exited early, or did not answer in time)."""


# --------------------------------------------------------------------------------------------
# helpers


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(path: Path | None, max_bytes: int = 4000) -> str:
    if path is None:
        return "(no log)"
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError as exc:
        return f"(log unreadable: {exc})"
    text = data.decode("utf-8", "replace").strip()
    return text or "(empty)"


def wait_for_http(
    url: str,
    *,
    timeout: float = 20.0,
    interval: float = 0.02,
    process: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
    name: str = "server",
) -> None:
    """Poll ``url`` until it answers HTTP (any status counts as an answer).

    Raises :class:`ServerStartError` if ``process`` exits first or ``timeout`` passes; the
    message includes the last lines of ``log_path`` (the server's stdout/stderr).
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        if process is not None and process.poll() is not None:
            raise ServerStartError(
                f"{name} exited with code {process.returncode} before answering {url}.\n"
                f"--- log tail ---\n{_log_tail(log_path)}"
            )
        try:
            with _NO_PROXY_OPENER.open(url, timeout=2.0) as resp:
                resp.read()
            return
        except urllib.error.HTTPError as exc:  # an HTTP error status is still an answer
            exc.close()
            return
        except (OSError, http.client.HTTPException) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise ServerStartError(
                f"{name} did not answer {url} within {timeout:.1f}s "
                f"(last error: {last_error!r}).\n--- log tail ---\n{_log_tail(log_path)}"
            )
        time.sleep(interval)


def _scrubbed_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_SCRUBBED_ENV_PREFIXES) and k not in _SCRUBBED_ENV_NAMES
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    if extra:
        env.update(extra)
    return env


def _isolated_boto3_session(access_key: str, secret: str, region: str) -> Any:
    """A boto3 session that reads no profile, no ~/.aws files and no configured endpoints."""
    import boto3
    import botocore.session

    core = botocore.session.Session(
        session_vars={
            # (config-file key, env var, default, conversion): no env var, no file lookup.
            "profile": (None, None, None, None),
            "config_file": (None, None, os.devnull, None),
            "credentials_file": (None, None, os.devnull, None),
        }
    )
    core.set_config_variable("ignore_configured_endpoint_urls", True)
    return boto3.session.Session(
        aws_access_key_id=access_key,
        aws_secret_access_key=secret,
        region_name=region,
        botocore_session=core,
    )


def s3_client(
    endpoint: str,
    access_key: str,
    secret: str,
    region: str = "us-east-1",
    **config: Any,
) -> Any:
    """A boto3 S3 client isolated from the environment and ~/.aws.

    Explicit credentials, path-style addressing, no shared config/credentials files, no
    profile, no configured endpoint URLs: nothing from the developer's machine leaks in.
    Extra keyword arguments go to ``botocore.config.Config``.
    """
    from botocore.config import Config

    session = _isolated_boto3_session(access_key, secret, region)
    cfg: dict[str, Any] = {
        "s3": {"addressing_style": "path"},
        "retries": {"mode": "standard", "total_max_attempts": 2},
        "connect_timeout": 5,
        "read_timeout": 30,
    }
    cfg.update(config)
    return session.client("s3", endpoint_url=endpoint, config=Config(**cfg))


def _iam_client(endpoint: str, access_key: str, secret: str) -> Any:
    from botocore.config import Config

    session = _isolated_boto3_session(access_key, secret, "us-east-1")
    return session.client(
        "iam",
        endpoint_url=endpoint,
        config=Config(retries={"mode": "standard", "total_max_attempts": 2}),
    )


def gcs_client(endpoint: str, project: str = "test-project") -> Any:
    """A google-cloud-storage client for a loopback endpoint (emulator or proxy in front).

    Anonymous credentials and an explicit project (no google.auth.default(), no metadata
    server lookup); ``client_options["api_endpoint"]`` routes JSON API, upload and download
    calls to ``endpoint``, so STORAGE_EMULATOR_HOST is not needed.

    google-cloud-storage >= 3.17 also fires a *background* ``GET /storage/v1/b/BUCKET``
    (its bucket-metadata cache for OpenTelemetry attributes) on the first call naming a
    bucket, from a daemon thread at an unpredictable moment.  That would make request counts
    flaky, so it is switched off on this client (the global equivalent is the environment
    variable ``DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA=true``).
    """
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project=project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": endpoint},
    )
    if hasattr(client, "_bucket_metadata_cache"):
        client._bucket_metadata_cache = None
    return client


# --------------------------------------------------------------------------------------------
# subprocess servers

_LIVE_SERVERS: set[ServerProcess] = set()  # strong refs: an unreferenced server still stops


@atexit.register
def _stop_leftovers() -> None:  # last resort if a caller forgot stop()
    for server in list(_LIVE_SERVERS):
        server.stop()


class ServerProcess(abc.ABC):
    """Base class: a server subprocess on a free loopback port with a temp log file."""

    name: str = "server"
    start_timeout: float = 30.0
    start_attempts: int = 3  # a new port each time, in case another process took ours

    def __init__(self) -> None:
        self.host = LOOPBACK
        self.port: int = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.startup_seconds: float | None = None

    # subclass hooks ---------------------------------------------------------------------
    @abc.abstractmethod
    def command(self, port: int) -> list[str]:
        """The server's command line, listening on ``port``."""

    def env(self) -> dict[str, str]:
        return _scrubbed_env()

    def ready_url(self, port: int) -> str:
        return f"http://{self.host}:{port}/"

    def cwd(self) -> Path | None:
        return None

    # lifecycle --------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        self._require_running()
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _require_running(self) -> None:
        if not self.is_running():
            raise RuntimeError(f"{self.name} is not running; call start() first")

    def start(self) -> Self:
        if self.is_running():
            return self
        started = time.monotonic()
        last: ServerStartError | None = None
        for _ in range(self.start_attempts):
            port = free_port(self.host)
            argv = self.command(port)  # may raise ServerStartError (e.g. not installed)
            fd, log_name = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log")
            self.log_path = Path(log_name)
            with os.fdopen(fd, "wb") as log:
                try:
                    self.process = subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=self.env(),
                        cwd=self.cwd(),
                    )
                except OSError as exc:
                    self.stop()
                    raise ServerStartError(f"cannot run {self.name}: {exc}") from exc
            self.port = port
            _LIVE_SERVERS.add(self)
            try:
                wait_for_http(
                    self.ready_url(port),
                    timeout=self.start_timeout,
                    process=self.process,
                    log_path=self.log_path,
                    name=self.name,
                )
            except ServerStartError as exc:
                last = exc
                exited_early = self.process.poll() is not None
                self.stop()
                if not exited_early:  # a timeout: retrying will not help
                    break
                continue
            self.startup_seconds = time.monotonic() - started
            return self
        assert last is not None
        raise last

    def stop(self) -> None:
        """Stop the process this object started (by its pid): terminate, wait, kill."""
        proc, self.process = self.process, None
        _LIVE_SERVERS.discard(self)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    def log_tail(self, max_bytes: int = 4000) -> str:
        return _log_tail(self.log_path, max_bytes)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"port={self.port} pid={self.pid}" if self.is_running() else "stopped"
        return f"<{type(self).__name__} {state}>"


class MotoServer(ServerProcess):
    """``moto_server`` (S3, IAM, ...) on 127.0.0.1.

    moto keeps all state (buckets, IAM users, the auth switch) inside the server process, so
    it is shared by every client of this server and independent of any in-process
    ``moto.mock_aws``.  Until :meth:`enable_auth` it accepts any credentials.
    """

    name = "moto_server"

    def __init__(self) -> None:
        super().__init__()
        self.credentials: tuple[str, str] | None = None

    def command(self, port: int) -> list[str]:
        script = Path(sys.executable).parent / "moto_server"
        if script.exists():
            return [str(script), "-H", self.host, "-p", str(port)]
        return [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(port)]

    def stop(self) -> None:
        super().stop()
        self.credentials = None  # a restarted server has no IAM user and auth off

    def env(self) -> dict[str, str]:
        # No inherited AWS_*/MOTO_* (an INITIAL_NO_AUTH_ACTION_COUNT or profile would change
        # behaviour); dummy credentials for any AWS SDK code moto runs inside itself.
        return _scrubbed_env(
            {
                "AWS_ACCESS_KEY_ID": MOTO_BOOTSTRAP_KEY,
                "AWS_SECRET_ACCESS_KEY": MOTO_BOOTSTRAP_SECRET,
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            }
        )

    def ready_url(self, port: int) -> str:
        return f"http://{self.host}:{port}/moto-api/"

    @property
    def endpoint(self) -> str:
        return self.base_url

    @property
    def auth_enabled(self) -> bool:
        return self.credentials is not None

    def enable_auth(self, user_name: str = "destinations-test") -> tuple[str, str]:
        """Create an IAM user allowed ``s3:*`` on ``*`` and switch on request authentication.

        Returns ``(access_key_id, secret_access_key)``.  From then on every request must be
        signed with this pair (or another IAM key): a wrong secret gets 403
        ``SignatureDoesNotMatch``, an unknown key 403 ``InvalidAccessKeyId``.  Idempotent.
        """
        self._require_running()
        if self.credentials is not None:
            return self.credentials
        iam = _iam_client(self.endpoint, MOTO_BOOTSTRAP_KEY, MOTO_BOOTSTRAP_SECRET)
        try:
            iam.create_user(UserName=user_name)
            iam.put_user_policy(
                UserName=user_name,
                PolicyName="s3-all",
                PolicyDocument=json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
                    }
                ),
            )
            key = iam.create_access_key(UserName=user_name)["AccessKey"]
        finally:
            iam.close()
        self._post_moto_api("/moto-api/reset-auth", b"0")
        self.credentials = (key["AccessKeyId"], key["SecretAccessKey"])
        return self.credentials

    def _post_moto_api(self, path: str, body: bytes) -> bytes:
        # moto answers 500 without the text/plain content type.
        req = urllib.request.Request(
            self.endpoint + path,
            data=body,
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with _NO_PROXY_OPENER.open(req, timeout=10) as resp:
            data: bytes = resp.read()
            return data

    def s3_client(
        self,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret: str | None = None,
        **config: Any,
    ) -> Any:
        """An S3 client for this server; defaults to the enable_auth() key pair if any."""
        default_key, default_secret = self.credentials or (
            MOTO_BOOTSTRAP_KEY,
            MOTO_BOOTSTRAP_SECRET,
        )
        return s3_client(
            self.endpoint,
            access_key or default_key,
            secret or default_secret,
            region,
            **config,
        )

    def create_bucket(
        self,
        name: str,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret: str | None = None,
    ) -> None:
        client = self.s3_client(region, access_key, secret)
        try:
            if region == "us-east-1":
                client.create_bucket(Bucket=name)
            else:
                client.create_bucket(
                    Bucket=name,
                    CreateBucketConfiguration={"LocationConstraint": region},
                )
        finally:
            client.close()


class Azurite(ServerProcess):
    """``azurite-blob`` 3.35.0 (from tests/emulators/node_modules) on 127.0.0.1, in memory."""

    name = "azurite-blob"
    account_name = AZURITE_ACCOUNT_NAME
    account_key = AZURITE_ACCOUNT_KEY

    def __init__(self, binary: Path | None = None) -> None:
        super().__init__()
        self.binary = binary if binary is not None else AZURITE_BIN

    def command(self, port: int) -> list[str]:
        if not self.binary.exists():
            raise ServerStartError(
                f"azurite is not installed ({self.binary} is missing): "
                "run `npm ci --prefix tests/emulators` (Node 20) from the repository root"
            )
        return [
            str(self.binary),
            "--blobHost",
            self.host,
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--silent",
            "--skipApiVersionCheck",
            "--disableTelemetry",
        ]

    def cwd(self) -> Path | None:
        # azurite writes debug/extent files relative to its cwd with some flags: keep them
        # out of the work tree.
        return Path(tempfile.gettempdir())

    @property
    def blob_endpoint(self) -> str:
        return f"{self.base_url}/{self.account_name}"

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={self.account_name};"
            f"AccountKey={self.account_key};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    def create_container(self, name: str) -> None:
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient(
            self.blob_endpoint,
            credential={"account_name": self.account_name, "account_key": self.account_key},
        )
        with service:
            service.create_container(name)


class GcsEmulator(ServerProcess):
    """``gcp-storage-emulator`` (GCS JSON API) on 127.0.0.1, in memory.  Checks no credentials."""

    name = "gcp-storage-emulator"
    project = "test-project"

    def command(self, port: int) -> list[str]:
        script = Path(sys.executable).parent / "gcp-storage-emulator"
        prefix = (
            [str(script)] if script.exists() else [sys.executable, "-m", "gcp_storage_emulator"]
        )
        return [*prefix, "start", "--host", self.host, "--port", str(port), "--in-memory", "-q"]

    def ready_url(self, port: int) -> str:
        return f"http://{self.host}:{port}/storage/v1/b?project={self.project}"

    @property
    def endpoint(self) -> str:
        return self.base_url

    def client(self) -> Any:
        """A google-cloud-storage client for this emulator; see :func:`gcs_client`."""
        return gcs_client(self.endpoint, self.project)

    def create_bucket(self, name: str) -> None:
        client = self.client()
        try:
            client.create_bucket(name)
        finally:
            client.close()


# --------------------------------------------------------------------------------------------
# counting reverse proxy


class RecordedRequest(NamedTuple):
    method: str
    path: str
    query: str
    status: int


_HOP_BY_HOP_RESPONSE = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}
)


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections are dropped after this
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _relay_request_body(self, upstream: http.client.HTTPConnection) -> None:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            # Relay the chunk framing as is (sizes, extensions, data, trailers).
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("client closed mid-body")
                upstream.send(line)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailer section, ends with an empty line
                        trailer = self.rfile.readline(65537)
                        if not trailer:
                            raise ConnectionError("client closed in trailers")
                        upstream.send(trailer)
                        if trailer in (b"\r\n", b"\n"):
                            return
                self._relay_exact(upstream, size + 2)  # data + CRLF
        length = self.headers.get("Content-Length")
        if length:
            self._relay_exact(upstream, int(length))

    def _relay_exact(self, upstream: http.client.HTTPConnection, remaining: int) -> None:
        while remaining > 0:
            data = self.rfile.read(min(remaining, 65536))
            if not data:
                raise ConnectionError("client closed mid-body")
            upstream.send(data)
            remaining -= len(data)

    def _proxy(self) -> None:
        split = urlsplit(self.path)
        server = self.server
        upstream = http.client.HTTPConnection(
            server.upstream_host, server.upstream_port, timeout=60
        )
        try:
            try:
                upstream.putrequest(
                    self.command, self.path, skip_host=True, skip_accept_encoding=True
                )
                for name, value in self.headers.items():
                    upstream.putheader(name, value)
                upstream.endheaders()
                self._relay_request_body(upstream)
                resp = upstream.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                server.record(RecordedRequest(self.command, split.path, split.query, 502))
                body = f"counting proxy: upstream error: {exc!r}\n".encode()
                self.close_connection = True
                self.send_response_only(502)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                return
            # Record before answering: once the client has its response, the entry exists.
            server.record(RecordedRequest(self.command, split.path, split.query, resp.status))
            self._relay_response(resp)
        finally:
            upstream.close()

    def _relay_response(self, resp: http.client.HTTPResponse) -> None:
        self.send_response_only(resp.status, resp.reason)
        headers = resp.getheaders()
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP_RESPONSE:
                self.send_header(name, value)
        names = {name.lower() for name, _ in headers}
        no_body = self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
        if no_body:
            mode = "none"
        elif "transfer-encoding" in names and resp.chunked:
            mode = "chunked"
            self.send_header("Transfer-Encoding", "chunked")
        elif "content-length" in names:
            mode = "length"
        else:  # delimited by connection close
            mode = "close"
            self.close_connection = True
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if mode == "none":
            return
        while True:
            data = resp.read1(65536) if mode == "chunked" else resp.read(65536)
            if not data:
                break
            if mode == "chunked":
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self.wfile.write(data)
        if mode == "chunked":
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _proxy


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__((LOOPBACK, 0), _ProxyHandler)
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self._lock = threading.Lock()
        self._records: list[RecordedRequest] = []
        self._connections: set[Any] = set()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client dropping an idle kept-alive connection (reset, broken pipe, timeout) is
        # normal for SDK connection pools: stay quiet about it, report anything else.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    def close_client_connections(self) -> None:
        """Drop kept-alive client connections so no handler thread outlives stop()."""
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)

    def record(self, entry: RecordedRequest) -> None:
        with self._lock:
            self._records.append(entry)

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


class CountingProxy:
    """A loopback HTTP reverse proxy that counts the requests it forwards.

    Every request is forwarded unchanged to ``upstream`` (``http://127.0.0.1:PORT``): the same
    method, raw path and query, and headers -- ``Host`` included, so it names the proxy and
    signatures computed by the client for ``endpoint`` (SigV4 signs Host) still match.  Request
    bodies are streamed (Content-Length or chunked framing relayed as is); responses are
    streamed back.  Each request is recorded as ``RecordedRequest(method, path, query,
    status)`` in arrival-of-response order, before the response reaches the client.

    Use ``proxy.endpoint`` (plus any path prefix such as ``/devstoreaccount1``) as the SDK's
    endpoint, then read ``proxy.requests`` / ``proxy.count`` and ``proxy.reset()``.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://HOST:PORT, got {upstream!r}")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError(f"upstream must have no path or query, got {upstream!r}")
        if not _is_loopback_host(parts.hostname):
            raise ValueError(f"upstream must be a loopback address, got {parts.hostname!r}")
        self.upstream = f"http://{parts.hostname}:{parts.port}"
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port
        self._server: _ProxyServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        if self._server is not None:
            return self
        server = _ProxyServer(self._upstream_host, self._upstream_port)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"counting-proxy-{server.server_address[1]}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.close_client_connections()
        if thread is not None:
            thread.join(timeout=5)

    def _require(self) -> _ProxyServer:
        if self._server is None:
            raise RuntimeError("CountingProxy is not running; call start() first")
        return self._server

    @property
    def port(self) -> int:
        port: int = self._require().server_address[1]
        return port

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the requests recorded since start or the last reset()."""
        return self._require().snapshot()

    @property
    def count(self) -> int:
        return len(self.requests)

    def reset(self) -> None:
        self._require().clear()

    def counter(self) -> ProxyCounter:
        """This proxy as the conformance suite's ``RequestCounter``."""
        return ProxyCounter(self)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ProxyCounter:
    """A :class:`CountingProxy` seen as ``destinations.testing.RequestCounter``."""

    def __init__(self, proxy: CountingProxy) -> None:
        self._proxy = proxy

    def reset(self) -> None:
        self._proxy.reset()

    def count(self) -> int:
        return self._proxy.count


def s3_object_reader(raw: Any, bucket: str) -> Any:
    """``key -> bytes | None`` through a raw boto3 client (None when the key is absent)."""
    from botocore.exceptions import ClientError

    def read(key: str) -> bytes | None:
        try:
            body: bytes = raw.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise
        return body

    return read


def s3_key_lister(raw: Any, bucket: str) -> Any:
    """``prefix -> keys`` through a raw boto3 client, every page."""

    def list_keys(prefix: str) -> list[str]:
        keys: list[str] = []
        for page in raw.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    return list_keys
