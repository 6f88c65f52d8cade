"""The s3 plugin's two engines (native obstore, boto3): the shared conformance suite on both
engines against both real S3 servers (moto and SeaweedFS), engine selection, the endpoint
guard's tunnel (every connection of the native client), requests on the wire, errors,
progress and memory of the native engine."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from destinations import (
    Destination,
    StoreError,
    StoreOptions,
    VerificationFailed,
    _guard as core_guard,
    open_store,
    parse_destination,
    verify,
)
from destinations._progress import reporting_progress
from destinations.plugin import MiB
from destinations.testing import ObjectMeta, StoreConformance
from destinations_s3 import S3ProtocolStore
from destinations_s3._native import ENGINE_ENV, NativeS3Store
from destinations_s3._tunnel import tunnel
from tests.emulators.fixtures import MotoHandle
from tests.emulators.seaweedfs import SeaweedFS
from tests.emulators.servers import (
    CountingProxy,
    ProxyCounter,
    free_port,
    s3_key_lister,
    s3_object_reader,
)
from tests.plugins._http_stub import StubServer, s3_error
from tests.plugins.test_s3 import _MotoConformance, _s3compatible, s3_meta_reader
from tests.security.conftest import Recorder
from tests.tls import STAND_IN_PUBLIC, self_signed

ENGINES = {"native": NativeS3Store, "boto3": S3ProtocolStore}


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", "1")
    for name in [n for n in os.environ if n.startswith("AWS_")] + [ENGINE_ENV]:
        monkeypatch.delenv(name, raising=False)


def _compatible(
    key: str, secret: str, bucket: str, endpoint: str, **extra: object
) -> dict[str, object]:
    return {
        "name": "s3compatible test",
        "enabled": True,
        "type": "s3compatible",
        "s3_access_key_id": key,
        "s3_secret_access_key": secret,
        "s3_bucket_name": bucket,
        "s3_endpoint": endpoint,
        "s3_path_prefix": "conformance/%COLLECTION_ID%",
        **extra,
    }


# --- the conformance suite: both engines x both servers ---------------------------------------


@pytest.fixture(scope="module")
def proxy(moto_server: MotoHandle) -> Iterator[CountingProxy]:
    """What _MotoConformance reads moto through (as in test_s3.py)."""
    with CountingProxy(moto_server.endpoint) as counting:
        yield counting


@pytest.fixture(scope="module")
def raw(moto_server: MotoHandle) -> Iterator[Any]:
    client = moto_server.s3_client()
    yield client
    client.close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.close()


class _Pinned:
    engine = "native"

    @pytest.fixture(autouse=True)
    def _engine(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(ENGINE_ENV, self.engine)

    def test_the_engine_is_the_one_pinned(self, destination: Destination) -> None:
        with open_store(destination) as store:
            assert type(store) is ENGINES[self.engine]


class TestNativeOnMoto(_Pinned, _MotoConformance):
    def params(self, moto: MotoHandle, bucket: str, proxy: CountingProxy) -> dict[str, object]:
        return _s3compatible(moto, bucket, proxy.endpoint)


class TestBoto3OnMoto(_Pinned, _MotoConformance):
    engine = "boto3"

    def params(self, moto: MotoHandle, bucket: str, proxy: CountingProxy) -> dict[str, object]:
        return _s3compatible(moto, bucket, proxy.endpoint)


@pytest.fixture(scope="module")
def weed_proxy(seaweedfs: SeaweedFS) -> Iterator[CountingProxy]:
    with CountingProxy(seaweedfs.endpoint) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def weed_raw(seaweedfs: SeaweedFS) -> Iterator[Any]:
    client = seaweedfs.s3_client()
    yield client
    client.close()


@pytest.fixture(scope="module")
def weed_bucket(seaweedfs: SeaweedFS) -> str:
    return seaweedfs.create_bucket()


class _OnSeaweedFS(_Pinned, StoreConformance):
    def params(self, weed: SeaweedFS, bucket: str, endpoint: str) -> dict[str, object]:
        return _compatible(weed.access_key_id, weed.secret_access_key, bucket, endpoint)

    @pytest.fixture
    def destination(
        self, seaweedfs: SeaweedFS, weed_bucket: str, weed_proxy: CountingProxy
    ) -> Destination:
        return parse_destination(self.params(seaweedfs, weed_bucket, weed_proxy.endpoint))

    @pytest.fixture
    def bad_credentials_destination(
        self, seaweedfs: SeaweedFS, weed_bucket: str, weed_proxy: CountingProxy
    ) -> Destination:
        params = self.params(seaweedfs, weed_bucket, weed_proxy.endpoint)
        params["s3_secret_access_key"] = "wrong-" + seaweedfs.secret_access_key
        return parse_destination(params)

    @pytest.fixture
    def missing_bucket_destination(
        self, seaweedfs: SeaweedFS, weed_proxy: CountingProxy
    ) -> Destination:
        return parse_destination(self.params(seaweedfs, "no-such-bucket", weed_proxy.endpoint))

    @pytest.fixture
    def read_object(self, weed_raw: Any, weed_bucket: str) -> Callable[[str], bytes | None]:
        return s3_object_reader(weed_raw, weed_bucket)

    @pytest.fixture
    def list_keys(self, weed_raw: Any, weed_bucket: str) -> Callable[[str], list[str]]:
        return s3_key_lister(weed_raw, weed_bucket)

    @pytest.fixture
    def request_counter(self, weed_proxy: CountingProxy) -> ProxyCounter:
        return weed_proxy.counter()

    @pytest.fixture
    def read_object_meta(
        self, weed_raw: Any, weed_bucket: str
    ) -> Callable[[str], ObjectMeta | None]:
        return s3_meta_reader(weed_raw, weed_bucket)


class TestNativeOnSeaweedFS(_OnSeaweedFS):
    engine = "native"


class TestBoto3OnSeaweedFS(_OnSeaweedFS):
    engine = "boto3"


# --- engine selection ---------------------------------------------------------------------------

_KEYS = {"s3_access_key_id": "AKIAEXAMPLEKEY0001", "s3_secret_access_key": "s3cr3t/Example"}


def _dest(**extra: object) -> Destination:
    params: dict[str, object] = {
        "name": "n",
        "enabled": True,
        "type": "s3compatible",
        "s3_bucket_name": "abc",
        "s3_endpoint": "https://s3.example.com",
        **_KEYS,
        **extra,
    }
    return parse_destination(params)


def _engine_of(dest: Destination) -> str:
    with open_store(dest) as store:
        return "native" if isinstance(store, NativeS3Store) else "boto3"


def test_s3compatible_is_native_by_default_and_s3_is_boto3() -> None:
    assert _engine_of(_dest()) == "native"
    aws = parse_destination(
        {"name": "n", "enabled": True, "type": "s3", "s3_bucket_name": "abc", **_KEYS}
    )
    assert _engine_of(aws) == "boto3"  # region discovery and redirects: boto3's


@pytest.mark.parametrize(
    ("env", "value"),
    [
        (ENGINE_ENV, "boto3"),
        ("AWS_CA_BUNDLE", "/nonexistent/ca.pem"),
        ("AWS_CHECKSUM_ALGORITHM", "SHA256"),  # obstore would read it and send checksums
        ("AWS_SERVER_SIDE_ENCRYPTION", "aws:kms"),
        ("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1"),  # obstore lets it beat the endpoint
    ],
)
def test_boto3_where_native_cannot_serve(
    env: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(env, value)
    assert _engine_of(_dest()) == "boto3"


def test_upload_options_use_boto3() -> None:
    assert _engine_of(_dest(s3_acl="private")) == "boto3"


def test_harmless_aws_variables_keep_native(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.setenv(name, "from-the-environment")
    assert _engine_of(_dest()) == "native"


def test_native_store_opens_without_boto3() -> None:
    code = (
        "import sys, destinations; d = destinations.parse_destination({'name': 'n', "
        "'enabled': True, 'type': 's3compatible', 's3_bucket_name': 'abc', "
        "'s3_endpoint': 'https://s3.example.com', 's3_access_key_id': 'AKIAEXAMPLE0001', "
        "'s3_secret_access_key': 'x'}); s = destinations.open_store(d); "
        "print(type(s).__name__, 'boto3' in sys.modules, 'botocore' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.split() == ["NativeS3Store", "False", "False"]


# --- requests on the wire -------------------------------------------------------------------------


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_verify_is_one_put_and_one_single_object_delete(
    engine: str,
    seaweedfs: SeaweedFS,
    weed_bucket: str,
    weed_proxy: CountingProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENGINE_ENV, engine)
    dest = parse_destination(
        _compatible(
            seaweedfs.access_key_id, seaweedfs.secret_access_key, weed_bucket, weed_proxy.endpoint
        )
    )
    weed_proxy.reset()
    verify(dest, timeout=30)
    assert [(r.method, r.query) for r in weed_proxy.requests] == [("PUT", ""), ("DELETE", "")]


def test_environment_credentials_are_not_used(
    seaweedfs: SeaweedFS, weed_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENTKEY00")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "environment-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "environment-token")
    with StubServer(lambda r: (200, {"ETag": '"e"'}, b"")) as stub:
        dest = parse_destination(
            _compatible(seaweedfs.access_key_id, "s", weed_bucket, stub.endpoint)
        )
        with open_store(dest) as store:
            assert isinstance(store, NativeS3Store)
            store.put("k", io.BytesIO(b"x"), size=1, content_type=None)
        (request,) = stub.requests
    assert f"Credential={seaweedfs.access_key_id}/" in request.headers["authorization"]
    assert "x-amz-security-token" not in request.headers


@pytest.mark.parametrize(("retries", "attempts"), [(0, 1), (1, 2)])
def test_native_retries_are_exactly_what_core_allows(retries: int, attempts: int) -> None:
    with StubServer(lambda r: s3_error(503, "SlowDown")) as stub:
        store = open_store(_dest(s3_endpoint=stub.endpoint), StoreOptions(retries=retries))
        assert isinstance(store, NativeS3Store)
        with store, pytest.raises(StoreError) as info:
            store.put("k", io.BytesIO(b"x"), size=1, content_type=None)
        assert len(stub.requests) == attempts
    assert (info.value.code, info.value.provider_code, info.value.status) == (
        "provider_error",
        "SlowDown",
        503,
    )
    assert info.value.transient is True


def test_multipart_bounds_parts_in_flight_and_sends_attributes() -> None:
    store = open_store(_dest(), StoreOptions(part_size=8 * MiB, max_connections=10))
    assert isinstance(store, NativeS3Store)
    assert store._parts * 8 * MiB <= 48 * MiB


@pytest.mark.parametrize(("size", "multipart"), [(1024, False), (9 * MiB, True)])
def test_a_delivery_builds_only_the_store_it_sends_on(
    size: int,
    multipart: bool,
    seaweedfs: SeaweedFS,
    weed_bucket: str,
    weed_raw: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A small file goes as one PutObject on the plain store; a large one as a multipart
    upload on the store that retries parts with core's policy. Building an obstore store
    costs milliseconds of CPU (its TLS roots are loaded under the GIL), so a delivery of one
    large file builds that one store only, not the plain one as well."""
    from destinations import ResultFile, ResultSet, deliver

    built: list[object] = []
    real_build = NativeS3Store._build

    def counted(self: NativeS3Store, proxy_url: str | None, parts: Any) -> Any:
        built.append(parts)
        return real_build(self, proxy_url, parts)

    monkeypatch.setattr(NativeS3Store, "_build", counted)
    body = os.urandom(size)
    (tmp_path / "f.bin").write_bytes(body)
    prefix = f"builds/{uuid.uuid4().hex[:8]}/"
    dest = parse_destination(
        _compatible(
            seaweedfs.access_key_id,
            seaweedfs.secret_access_key,
            weed_bucket,
            seaweedfs.endpoint,
            s3_path_prefix=prefix,
        )
    )
    rs = ResultSet("c1", "n", "rs1", [ResultFile("f.bin", str(tmp_path / "f.bin"))])
    (status,) = deliver(rs, [dest])
    assert status.status == "success", status.error
    assert len(built) == 1
    assert (built[0] is not None) is multipart  # the part-policy store, or the plain one
    (key,) = s3_key_lister(weed_raw, weed_bucket)(prefix)
    assert s3_object_reader(weed_raw, weed_bucket)(key) == body


def test_a_store_runs_one_multipart_upload_at_a_time(
    seaweedfs: SeaweedFS,
    weed_bucket: str,
    weed_proxy: CountingProxy,
    weed_raw: Any,
    tmp_path: Path,
) -> None:
    """Four large files delivered four at a time: each multipart upload is started, sent and
    completed before the next one starts (obstore holds every part's bytes until it is sent,
    so uploads side by side multiply the memory), while the parts of each go in parallel."""
    from destinations import ResultFile, ResultSet, deliver

    files, bodies = [], {}
    for i in range(4):
        body = os.urandom(9 * MiB)
        (tmp_path / f"f{i}.bin").write_bytes(body)
        files.append(ResultFile(f"f{i}.bin", str(tmp_path / f"f{i}.bin")))
        bodies[f"f{i}.bin"] = body
    prefix = f"turns/{uuid.uuid4().hex[:8]}/"
    dest = parse_destination(
        _compatible(
            seaweedfs.access_key_id,
            seaweedfs.secret_access_key,
            weed_bucket,
            weed_proxy.endpoint,
            s3_path_prefix=prefix,
        )
    )
    weed_proxy.reset()
    (status,) = deliver(ResultSet("c1", "n", "rs1", files), [dest], concurrency=4)
    assert status.status == "success", status.error
    events = []
    for r in weed_proxy.requests:
        if r.method == "POST" and r.query.split("=")[0] == "uploads":
            events.append("start")
        elif r.method == "POST" and "uploadId=" in r.query:
            events.append("complete")
    assert events == ["start", "complete"] * 4
    parts = [r for r in weed_proxy.requests if r.method == "PUT" and "partNumber=" in r.query]
    assert len(parts) == 4 * 2  # 8 MiB + 1 MiB each
    read = s3_object_reader(weed_raw, weed_bucket)
    for key in s3_key_lister(weed_raw, weed_bucket)(prefix):
        assert read(key) == bodies[key.rsplit("/", 1)[1]]


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "expected", "transient"),
    [
        (403, "SignatureDoesNotMatch", "invalid_credentials", False),
        (403, "InvalidAccessKeyId", "invalid_credentials", False),
        (403, "AccessDenied", "access_denied", False),
        (404, "NoSuchBucket", "bucket_not_found", False),
        (400, "AuthorizationHeaderMalformed", "wrong_region", False),
        (500, "InternalError", "provider_error", True),
        (400, "RequestTimeout", "provider_error", True),
        (400, "InvalidArgument", "provider_error", False),
        (503, "SomethingNew", "provider_error", True),
    ],
)
def test_native_error_mapping(status: int, code: str, expected: str, transient: bool) -> None:
    secret = "s3cr3t/Example"
    with (
        StubServer(lambda r: s3_error(status, code, Region="eu-west-1")) as stub,
        open_store(_dest(s3_endpoint=stub.endpoint)) as store,
    ):
        assert isinstance(store, NativeS3Store)
        with pytest.raises(StoreError) as info:
            store.put("k", io.BytesIO(b"x"), size=1, content_type=None)
    err = info.value
    assert (err.code, err.provider_code, err.status, err.transient) == (
        expected,
        code,
        status,
        transient,
    )
    assert secret not in f"{err} {err!r} {err.message}"
    assert "Debug source" not in err.message and "<Error>" not in err.message
    if expected == "wrong_region":
        assert "'eu-west-1'" in err.message and "s3_region" in err.message


def test_native_transport_errors(moto_server: MotoHandle) -> None:
    closed = _dest(s3_endpoint=f"http://127.0.0.1:{free_port()}")
    failure = _fail(closed)
    assert (failure.code, failure.error.transient) == ("endpoint_unreachable", True)
    assert "s3_endpoint" in failure.message
    tls = _dest(s3_endpoint=moto_server.endpoint.replace("http://", "https://"))
    assert _fail(tls).code == "tls_error"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        silent = _dest(s3_endpoint=f"http://127.0.0.1:{listener.getsockname()[1]}")
        with (
            open_store(silent, StoreOptions(timeout=0.3)) as store,
            pytest.raises(StoreError) as info,
        ):
            store.delete("k")
    assert (info.value.code, info.value.provider_code) == ("timeout", "ReadTimeoutError")


def _fail(dest: Destination) -> VerificationFailed:
    with pytest.raises(VerificationFailed) as info:
        verify(dest, timeout=5)
    assert "s3cr3t" not in f"{info.value} {info.value!r} {info.value.message}"
    return info.value


def test_repr_hides_the_secret() -> None:
    with open_store(_dest()) as store:
        assert "s3cr3t" not in f"{store!r} {vars(store)}"


# --- the endpoint guard on the native client: the tunnel ----------------------------------



@pytest.fixture
def guard_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", raising=False)
    monkeypatch.setenv(ENGINE_ENV, "native")
    real = core_guard.blocked_reason
    monkeypatch.setattr(
        core_guard,
        "blocked_reason",
        lambda address: None if str(address) == STAND_IN_PUBLIC else real(address),
    )


@pytest.fixture
def leaf_cert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A self-signed server certificate for 127.0.0.2 (not a CA: rustls refuses those)."""
    cert_file, key_file = self_signed(tmp_path, "stand-in", STAND_IN_PUBLIC, ca=False)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(cert_file))
    return cert_file, key_file


def _https_server(
    cert: tuple[Path, Path], answer: Callable[[BaseHTTPRequestHandler], None]
) -> tuple[ThreadingHTTPServer, list[str], list[object]]:
    seen: list[str] = []
    peers: list[object] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            seen.append(self.command)
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            answer(self)

        do_PUT = do_POST = do_GET = do_DELETE = do_HEAD = _any

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def get_request(self) -> tuple[socket.socket, Any]:
            conn, peer = super().get_request()
            peers.append(peer)
            return conn, peer

    server = Server((STAND_IN_PUBLIC, 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen, peers


def _ok(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(204 if handler.command == "DELETE" else 200)
    handler.send_header("ETag", '"e"')
    handler.send_header("Content-Length", "0")
    handler.end_headers()


def test_every_connection_goes_through_the_tunnel(
    guard_on: None, leaf_cert: tuple[Path, Path]
) -> None:
    server, seen, peers = _https_server(leaf_cert, _ok)
    try:
        dest = _dest(s3_endpoint=f"https://{STAND_IN_PUBLIC}:{server.server_address[1]}")
        with open_store(dest, StoreOptions(max_connections=4)) as store:
            assert isinstance(store, NativeS3Store)
            for i in range(6):
                store.put(f"k{i}", io.BytesIO(b"x" * 10), size=10, content_type=None)
            store.delete("k0")
            ticket = store._ticket
            assert ticket is not None
            assert seen == ["PUT"] * 6 + ["DELETE"]
            # each connection the server accepted is one the tunnel made (and checked); the
            # server's accept loop may lag the tunnel's count by a pooled, unused one
            deadline = time.monotonic() + 5
            while len(peers) < ticket.connects and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(peers) == ticket.connects >= 1
    finally:
        server.shutdown()
        server.server_close()


def test_the_tunnel_refuses_a_name_rebound_to_loopback_at_connect(
    guard_on: None, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``flip.test`` is public (127.0.0.2, let through) for the store's first check, then
    loopback for the tunnel's connect: the tunnel's own check refuses it."""
    real = socket.getaddrinfo
    calls = {"n": 0}

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if str(host) == "flip.test":
            calls["n"] += 1
            return real(STAND_IN_PUBLIC if calls["n"] == 1 else "127.0.0.1", port, *args)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    dest = _dest(s3_endpoint=f"https://flip.test:{recorder.port}")
    with open_store(dest) as store, pytest.raises(StoreError) as info:
        store.put("k", io.BytesIO(b"x"), size=1, content_type=None)
    assert info.value.code == "endpoint_not_allowed"
    assert "flip.test resolves to an address that is not public" in info.value.message
    assert "127.0.0.1" not in info.value.message
    assert calls["n"] == 2  # the store's check, then the tunnel's
    assert recorder.accepted == []


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_native_redirects_to_loopback_make_no_connection(
    scheme: str, guard_on: None, leaf_cert: tuple[Path, Path], recorder: Recorder
) -> None:
    target = f"{scheme}://127.0.0.1:{recorder.port}"

    def redirect(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(307)
        handler.send_header("Location", target + handler.path)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    server, seen, _ = _https_server(leaf_cert, redirect)
    try:
        dest = _dest(s3_endpoint=f"https://{STAND_IN_PUBLIC}:{server.server_address[1]}")
        with pytest.raises(VerificationFailed) as info:
            verify(dest, timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert seen, "the redirector was never reached"
    assert recorder.accepted == []
    assert info.value.code != "ok"


def test_the_tunnel_refuses_connections_without_a_ticket(guard_on: None) -> None:
    tunnel.issue("probe", 5)  # started
    for auth in ("", "Proxy-Authorization: Basic " + base64.b64encode(b"nope:x").decode()):
        with socket.create_connection(("127.0.0.1", tunnel.port), timeout=5) as sock:
            sock.sendall(f"CONNECT 127.0.0.2:443 HTTP/1.1\r\n{auth}\r\n\r\n".encode())
            assert sock.recv(100).startswith(b"HTTP/1.1 407")


def test_plain_http_is_refused_when_the_guard_comes_on(
    seaweedfs: SeaweedFS, weed_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = parse_destination(
        _compatible(
            seaweedfs.access_key_id, seaweedfs.secret_access_key, weed_bucket, seaweedfs.endpoint
        )
    )
    with open_store(dest) as store:
        store.put("k", io.BytesIO(b"x"), size=1, content_type=None)
        monkeypatch.delenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS")
        with pytest.raises(StoreError) as info:
            store.delete("k")
    assert info.value.code == "endpoint_not_allowed"


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_private_and_rebound_addresses_are_refused_in_an_empty_netns(
    engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.security.test_ssrf import PRIVATE, _in_empty_netns

    monkeypatch.setenv(ENGINE_ENV, engine)
    cases = [("s3compatible", f"https://{host}:443") for host in PRIVATE]
    cases.append(("s3compatible", "https://rebind.test:443"))
    outcomes = _in_empty_netns(cases, ("8.8.8.8", "127.0.0.1"))
    assert len(outcomes) == len(cases)
    assert [o for o in outcomes if o["code"] != "endpoint_not_allowed"] == []


# --- progress and memory --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["path", "stream", "small", "unsized"])
def test_native_progress_adds_up_and_comes_often(
    kind: str, seaweedfs: SeaweedFS, weed_bucket: str, weed_raw: Any, tmp_path: Path
) -> None:
    size = 5 * MiB if kind == "small" else 20 * MiB
    body = os.urandom(size)
    path = tmp_path / "p.bin"
    path.write_bytes(body)
    source: Any = path if kind == "path" else io.BytesIO(body)
    dest = parse_destination(
        _compatible(
            seaweedfs.access_key_id, seaweedfs.secret_access_key, weed_bucket, seaweedfs.endpoint
        )
    )
    events: list[int] = []
    lock = threading.Lock()

    def record(n: int) -> None:
        with lock:
            events.append(n)

    key = f"progress/{kind}-{uuid.uuid4().hex[:6]}.bin"
    with open_store(dest, StoreOptions(max_connections=4)) as store:
        assert isinstance(store, NativeS3Store)
        with reporting_progress(record):
            store.put(key, source, size=None if kind == "unsized" else size, content_type=None)
    assert sum(events) == size
    limit = 256 * 1024 if kind == "unsized" else min(8 * MiB, size // 100)
    assert all(0 < n <= limit for n in events)
    assert s3_object_reader(weed_raw, weed_bucket)(key) == body


def test_native_stream_giving_more_or_less_than_announced_writes_nothing(
    seaweedfs: SeaweedFS, weed_bucket: str, weed_raw: Any
) -> None:
    dest = parse_destination(
        _compatible(
            seaweedfs.access_key_id, seaweedfs.secret_access_key, weed_bucket, seaweedfs.endpoint
        )
    )
    options = StoreOptions(multipart_threshold=5 * MiB, part_size=5 * MiB)
    with open_store(dest, options) as store:
        for announced in (6 * MiB, 6 * MiB + 2, 3):
            with pytest.raises(StoreError) as info:
                store.put(
                    "t/over", io.BytesIO(os.urandom(6 * MiB + 1)), size=announced, content_type=None
                )
            assert info.value.provider_code == "IncompleteBody"
            assert info.value.transient is False
    assert s3_object_reader(weed_raw, weed_bucket)("t/over") is None
    assert not weed_raw.list_multipart_uploads(Bucket=weed_bucket).get("Uploads")


_MEMORY_CHILD = """
import io, json, os, sys
import destinations
from destinations import StoreOptions
from destinations.plugin import MiB
def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) * 1024
spec = json.loads(sys.argv[1])
dest = destinations.parse_destination(spec['params'])
store = destinations.open_store(dest, StoreOptions(part_size=8 * MiB, max_connections=8))
store.put('warm', io.BytesIO(b'x'), size=1, content_type=None)
before = hwm()
store.put('big/path.bin', spec['path'], size=spec['size'], content_type=None)
class Gen(io.RawIOBase):
    left = spec['size']
    def readable(self): return True
    def readinto(self, b):
        n = min(len(b), self.left); b[:n] = b'\\x5a' * n; self.left -= n; return n
store.put('big/stream.bin', Gen(), size=spec['size'], content_type=None)
print(json.dumps({'engine': type(store).__name__, 'growth': hwm() - before}))
"""


def test_native_memory_stays_flat_for_large_paths_and_streams(
    seaweedfs: SeaweedFS, weed_bucket: str, weed_raw: Any, tmp_path: Path
) -> None:
    size = 96 * MiB
    path = tmp_path / "big.bin"
    with path.open("wb") as out:
        for _ in range(size // MiB):
            out.write(os.urandom(MiB))
    params = _compatible(
        seaweedfs.access_key_id, seaweedfs.secret_access_key, weed_bucket, seaweedfs.endpoint
    )
    spec = json.dumps({"params": params, "path": str(path), "size": size})
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, spec],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["engine"] == "NativeS3Store"
    assert result["growth"] <= 64 * MiB, result
    head = weed_raw.head_object(Bucket=weed_bucket, Key="big/stream.bin")
    assert head["ContentLength"] == size
