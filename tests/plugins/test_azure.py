"""destinations-azure against azurite (real HTTP through the real SDK), plus a loopback stub
that answers with the Azure error codes azurite cannot produce."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import socket
import threading
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import ContainerClient, ExponentialRetry

from destinations import (
    Destination,
    InvalidDestination,
    StoreError,
    StoreOptions,
    VerificationFailed,
    open_store,
    parse_destination,
    verify,
)
from destinations._progress import reporting_progress
from destinations.plugin import MiB
from destinations.testing import ObjectMeta, StoreConformance
from destinations_azure import AzureFields, AzureStore
from tests.delivery.faulty_proxy import FaultyProxy
from tests.emulators.servers import (
    AZURITE_ACCOUNT_KEY,
    AZURITE_ACCOUNT_NAME,
    Azurite,
    CountingProxy,
    ProxyCounter,
    free_port,
)

WRONG_KEY = base64.b64encode(b"not the azurite key".ljust(64, b"!")).decode()


@pytest.fixture(autouse=True)
def _allow_loopback_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    # azurite lives on 127.0.0.1: the operator switch core's endpoint guard honours.
    monkeypatch.setenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", "1")


def _params(endpoint: str, container: str, **overrides: object) -> dict[str, object]:
    params: dict[str, object] = {
        "name": "azure test",
        "enabled": True,
        "type": "azure",
        "azure_account_name": AZURITE_ACCOUNT_NAME,
        "azure_account_key": AZURITE_ACCOUNT_KEY,
        "azure_container_name": container,
        "azure_path_prefix": "conformance/%COLLECTION_ID%",
        "azure_endpoint": endpoint,
    }
    params.update(overrides)
    return params


def _raw_container(azurite: Azurite, name: str) -> ContainerClient:
    """An independent client straight at azurite (not through the proxy or the store)."""
    return ContainerClient(
        azurite.blob_endpoint,
        name,
        credential={"account_name": azurite.account_name, "account_key": azurite.account_key},
    )


@pytest.fixture(scope="module")
def container(azurite: Azurite) -> str:
    name = f"dest-{uuid.uuid4().hex[:12]}"
    azurite.create_container(name)
    return name


@pytest.fixture(scope="module")
def raw(azurite: Azurite, container: str) -> Iterator[ContainerClient]:
    with _raw_container(azurite, container) as client:
        yield client


@pytest.fixture(scope="module")
def proxy(azurite: Azurite) -> Iterator[CountingProxy]:
    with CountingProxy(azurite.base_url) as p:
        yield p


@pytest.fixture
def proxied_endpoint(proxy: CountingProxy) -> str:
    # Path-style account URL: the shared-key signature covers /account/container/blob, not
    # the Host header, so the proxy's port does not break it.
    return f"{proxy.endpoint}/{AZURITE_ACCOUNT_NAME}"


def _read(raw: ContainerClient, key: str) -> bytes | None:
    try:
        return raw.download_blob(key).readall()
    except ResourceNotFoundError:
        return None


def _read_meta(raw: ContainerClient, key: str) -> ObjectMeta | None:
    """Get Blob Properties through the raw SDK, straight from azurite."""
    try:
        props = raw.get_blob_client(key).get_blob_properties()
    except ResourceNotFoundError:
        return None
    return {
        "content_type": props.content_settings.content_type,
        "content_encoding": props.content_settings.content_encoding,
        "metadata": dict(props.metadata),
    }


class TestAzureConformance(StoreConformance):
    @pytest.fixture
    def destination(self, proxied_endpoint: str, container: str) -> Destination:
        return parse_destination(_params(proxied_endpoint, container))

    @pytest.fixture
    def bad_credentials_destination(self, proxied_endpoint: str, container: str) -> Destination:
        return parse_destination(_params(proxied_endpoint, container, azure_account_key=WRONG_KEY))

    @pytest.fixture
    def missing_bucket_destination(self, proxied_endpoint: str) -> Destination:
        return parse_destination(_params(proxied_endpoint, "no-such-container"))

    @pytest.fixture
    def read_object(self, raw: ContainerClient) -> Callable[[str], bytes | None]:
        return lambda key: _read(raw, key)

    @pytest.fixture
    def list_keys(self, raw: ContainerClient) -> Callable[[str], list[str]]:
        return lambda prefix: list(raw.list_blob_names(name_starts_with=prefix))

    @pytest.fixture
    def request_counter(self, proxy: CountingProxy) -> ProxyCounter:
        return proxy.counter()

    @pytest.fixture
    def read_object_meta(self, raw: ContainerClient) -> Callable[[str], ObjectMeta | None]:
        return lambda key: _read_meta(raw, key)


# --- fields -----------------------------------------------------------------------------


def _fields(**overrides: object) -> dict[str, object]:
    return _params("http://127.0.0.1:10000/devstoreaccount1", "results", **overrides)


def _settings(params: dict[str, object]) -> AzureFields:
    settings = parse_destination(params).settings
    assert isinstance(settings, AzureFields)
    return settings


def _errors(params: dict[str, object]) -> dict[str, str]:
    with pytest.raises(InvalidDestination) as info:
        parse_destination(params)
    return info.value.errors


@pytest.mark.parametrize("name", ["abc", "a" * 24, "devstoreaccount1", "0123"])
def test_account_name_accepted(name: str) -> None:
    assert _settings(_fields(azure_account_name=name)).azure_account_name == name


@pytest.mark.parametrize("name", ["ab", "a" * 25, "MyAccount", "my-account", "my_account", ""])
def test_account_name_rejected(name: str) -> None:
    errors = _errors(_fields(azure_account_name=name))
    assert list(errors) == ["azure_account_name"]
    assert "3 to 24 lowercase letters and digits" in errors["azure_account_name"]


@pytest.mark.parametrize("name", ["abc", "a-b-c", "0ab", "a" * 63, "results-2026"])
def test_container_name_accepted(name: str) -> None:
    assert _settings(_fields(azure_container_name=name)).azure_container_name == name


@pytest.mark.parametrize(
    "name", ["ab", "a" * 64, "-abc", "abc-", "a--b", "Results", "a_b", "a.b", "a b", ""]
)
def test_container_name_rejected(name: str) -> None:
    errors = _errors(_fields(azure_container_name=name))
    assert list(errors) == ["azure_container_name"]
    assert "container name" in errors["azure_container_name"]


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("not base64!", "must not contain spaces"),  # the toolkit's Secret checks come first
        ("abc", "base64"),
        ("====", "base64"),
        ("", "required"),
        ("c2VjcmV0-_x", "base64"),
        ("Zm9v\nYmFy\u00e9", "printable ASCII"),
    ],
)
def test_account_key_must_be_base64_and_is_never_echoed(key: str, fragment: str) -> None:
    errors = _errors(_fields(azure_account_key=key))
    # blank is "not given": then the SAS token is the other way, named too
    assert list(errors) == (
        ["azure_account_key", "azure_sas_token"] if not key.strip() else ["azure_account_key"]
    )
    assert fragment in errors["azure_account_key"]
    if key:
        assert key not in str(errors)


def test_required_fields() -> None:
    params = _fields()
    for name in ("azure_account_name", "azure_account_key", "azure_container_name"):
        del params[name]
    assert _errors(params) == {
        "azure_account_name": "required",
        "azure_container_name": "required",
    }
    params["azure_account_name"], params["azure_container_name"] = "abc", "abc"
    errors = _errors(params)
    assert set(errors) == {"azure_account_key", "azure_sas_token"}
    assert all("either azure_account_key or azure_sas_token" in m for m in errors.values())


def test_unknown_field_is_rejected() -> None:
    assert "azure_sas" in _errors(_fields(azure_sas="x"))


@pytest.mark.parametrize(
    "endpoint",
    [
        "ftp://example.com",
        "example.blob.core.windows.net",
        "https://",
        "https://user:pw@acct.blob.core.windows.net",
        "https://acct.blob.core.windows.net/?sv=2020&sig=abc",
        "https://acct.blob.core.windows.net:99999",
    ],
)
def test_endpoint_rejected(endpoint: str) -> None:
    errors = _errors(_fields(azure_endpoint=endpoint))
    assert list(errors) == ["azure_endpoint"]
    assert "sig=abc" not in errors["azure_endpoint"]


def test_endpoint_default_and_override() -> None:
    fields = AzureFields(
        azure_account_name="mydata",
        azure_account_key=AZURITE_ACCOUNT_KEY,  # type: ignore[arg-type]
        azure_container_name="results",
    )
    assert fields.account_url == "https://mydata.blob.core.windows.net"
    sovereign = fields.model_copy(
        update={"azure_endpoint": "https://mydata.blob.core.usgovcloudapi.net"}
    )
    assert sovereign.account_url == "https://mydata.blob.core.usgovcloudapi.net"
    settings = _settings(_fields(azure_endpoint="http://127.0.0.1:10000/devstoreaccount1/"))
    assert settings.azure_endpoint == "http://127.0.0.1:10000/devstoreaccount1"
    assert _settings(_fields(azure_endpoint="")).azure_endpoint is None


def test_type_declaration() -> None:
    dtype = parse_destination(_fields()).destination_type
    assert dtype.secret_fields == frozenset({"azure_account_key", "azure_sas_token"})
    assert dtype.required_fields == ("azure_account_name", "azure_container_name")
    assert dtype.endpoint_fields == ("azure_endpoint",)
    assert dtype.prefix_field == "azure_path_prefix"
    schema = dtype.fields.model_json_schema()["properties"]
    assert set(schema) == set(dtype.fields.model_fields)
    for name, prop in schema.items():
        assert prop.get("description"), name


def test_secret_never_in_repr_or_params() -> None:
    dest = parse_destination(_fields())
    text = f"{dest!r} {dest} {dest.settings!r} {dest.to_params()}"
    assert AZURITE_ACCOUNT_KEY not in text


# --- error mapping against azurite --------------------------------------------------------


def _store(
    endpoint: str, container: str, options: StoreOptions | None = None, **overrides: object
) -> AzureStore:
    dest = parse_destination(_params(endpoint, container, **overrides))
    store = open_store(dest, options or StoreOptions(timeout=5))
    assert isinstance(store, AzureStore)
    return store


def _put_error(store: AzureStore, key: str = "k.txt") -> StoreError:
    with store, pytest.raises(StoreError) as info:
        store.put(key, io.BytesIO(b"x"), size=1, content_type="text/plain")
    return info.value


def test_wrong_key_is_invalid_credentials(azurite: Azurite, container: str) -> None:
    err = _put_error(_store(azurite.blob_endpoint, container, azure_account_key=WRONG_KEY))
    assert (err.code, err.provider_code) == ("invalid_credentials", "AuthorizationFailure")
    assert WRONG_KEY not in f"{err} {err!r} {err.message}"
    assert "azure_account_key" in err.message


def test_wrong_key_on_delete_is_invalid_credentials(azurite: Azurite, container: str) -> None:
    store = _store(azurite.blob_endpoint, container, azure_account_key=WRONG_KEY)
    with store, pytest.raises(StoreError) as info:
        store.delete("missing.txt")
    assert info.value.code == "invalid_credentials"


def test_unknown_account_is_bucket_not_found(azurite: Azurite, container: str) -> None:
    endpoint = f"{azurite.base_url}/otheraccount"
    err = _put_error(_store(endpoint, container, azure_account_name="otheraccount"))
    assert (err.code, err.provider_code) == ("bucket_not_found", "ResourceNotFound")


def test_delete_in_missing_container_is_bucket_not_found(azurite: Azurite) -> None:
    store = _store(azurite.blob_endpoint, "no-such-container")
    with store, pytest.raises(StoreError) as info:
        store.delete("k.txt")
    assert (info.value.code, info.value.provider_code) == ("bucket_not_found", "ContainerNotFound")


def test_closed_port_is_endpoint_unreachable(container: str) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}/{AZURITE_ACCOUNT_NAME}"
    err = _put_error(_store(endpoint, container))
    assert err.code == "endpoint_unreachable"


def test_verify_closed_port_is_endpoint_unreachable_at_put(container: str) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}/{AZURITE_ACCOUNT_NAME}"
    with pytest.raises(VerificationFailed) as info:
        verify(parse_destination(_params(endpoint, container)), timeout=10)
    assert (info.value.step, info.value.code) == ("put", "endpoint_unreachable")


def test_silent_server_is_timeout(container: str) -> None:
    with socket.socket() as listener:  # accepts connections (kernel backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}/{AZURITE_ACCOUNT_NAME}"
        err = _put_error(_store(endpoint, container, StoreOptions(timeout=0.3, retries=0)))
    assert err.code == "timeout"


def test_https_to_plain_http_port_is_tls_error(azurite: Azurite, container: str) -> None:
    endpoint = f"https://127.0.0.1:{azurite.port}/{AZURITE_ACCOUNT_NAME}"
    err = _put_error(_store(endpoint, container))
    assert err.code == "tls_error"


# --- error codes azurite cannot produce: a loopback stub answering like Azure -------------


class _StubAzure(ThreadingHTTPServer):
    """Answers every request with one status and ``x-ms-error-code``; counts requests."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _StubHandler)
        self.status = 500
        self.code = "InternalError"
        self.message = "boom"
        self.requests = 0

    def answer(self, status: int, code: str, message: str = "stub") -> None:
        self.status, self.code, self.message, self.requests = status, code, message, 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{AZURITE_ACCOUNT_NAME}"


class _StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _StubAzure

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.requests += 1
        body = (
            '<?xml version="1.0" encoding="utf-8"?><Error>'
            f"<Code>{self.server.code}</Code><Message>{self.server.message}</Message></Error>"
        ).encode()
        self.send_response(self.server.status)
        self.send_header("x-ms-error-code", self.server.code)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PUT = do_DELETE = do_GET = do_HEAD = _answer


@pytest.fixture(scope="module")
def stub() -> Iterator[_StubAzure]:
    server = _StubAzure()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize(
    ("status", "code", "message", "expected", "transient"),
    [
        (
            403,
            "AuthenticationFailed",
            "Server failed to authenticate the request.",
            "invalid_credentials",
            False,
        ),
        (
            403,
            "AuthorizationFailure",
            "Server failed to authenticate the request.",
            "invalid_credentials",
            False,
        ),
        (
            403,
            "AuthorizationFailure",
            "This request is not authorized to perform this operation.",
            "access_denied",
            False,
        ),
        (403, "AuthorizationPermissionMismatch", "denied-detail", "access_denied", False),
        (403, "InsufficientAccountPermissions", "denied-detail", "access_denied", False),
        (403, "KeyBasedAuthenticationNotPermitted", "denied-detail", "access_denied", False),
        (404, "ContainerNotFound", "gone-detail", "bucket_not_found", False),
        (409, "LeaseIdMissing", "leased-detail", "provider_error", False),
        # transient: throttling and server-side failures...
        (503, "ServerBusy", "busy-detail", "provider_error", True),
        (503, "ServerBusy", "Ingress is over the account limit.", "provider_error", True),
        (500, "OperationTimedOut", "slow-detail", "provider_error", True),
        (500, "InternalError", "broken-detail", "provider_error", True),
        # ...and a body that arrived corrupted, though its status is a 400
        (400, "Md5Mismatch", "md5-detail", "provider_error", True),
        # 5xx answers no retry can fix (azurite's for what it does not implement)
        (501, "APINotImplemented", "not-here-detail", "provider_error", False),
        (501, "NotImplemented", "not-here-detail", "provider_error", False),
    ],
)
def test_azure_error_codes(
    stub: _StubAzure, status: int, code: str, message: str, expected: str, transient: bool
) -> None:
    stub.answer(status, code, message)
    err = _put_error(_store(stub.endpoint, "results"))
    assert (err.code, err.provider_code, err.status) == (expected, code, status)
    assert err.transient is transient
    assert message not in err.message
    assert stub.requests == 1


def test_dropped_connection_is_transient(azurite: Azurite, container: str) -> None:
    # The proxy reads each request's body, then closes the connection without answering.
    with FaultyProxy(azurite.base_url, drop=1.0) as faulty:
        endpoint = f"{faulty.endpoint}/{AZURITE_ACCOUNT_NAME}"
        err = _put_error(_store(endpoint, container))
        assert faulty.faults["drop"] == 1
    assert (err.code, err.provider_code, err.status) == (
        "provider_error",
        "ServiceResponseError",
        None,
    )
    assert err.transient is True


def test_503_without_an_azure_code_is_transient_by_status(azurite: Azurite, container: str) -> None:
    with FaultyProxy(azurite.base_url, error=1.0) as faulty:
        err = _put_error(_store(f"{faulty.endpoint}/{AZURITE_ACCOUNT_NAME}", container))
    assert (err.code, err.status, err.transient) == ("provider_error", 503, True)


def test_permanent_errors_are_not_transient(azurite: Azurite, container: str) -> None:
    err = _put_error(_store(azurite.blob_endpoint, container, azure_account_key=WRONG_KEY))
    assert (err.status, err.transient) == (403, False)
    err = _put_error(_store(azurite.blob_endpoint, "no-such-container"))
    assert (err.code, err.status, err.transient) == ("bucket_not_found", 404, False)


def test_delete_blob_not_found_is_success(stub: _StubAzure) -> None:
    stub.answer(404, "BlobNotFound", "The specified blob does not exist.")
    with _store(stub.endpoint, "results") as store:
        store.delete("gone.txt")
    assert stub.requests == 1


@pytest.mark.parametrize("retries", [0, 1, 5])
def test_sdk_retries_exactly_options_retries(
    stub: _StubAzure, monkeypatch: pytest.MonkeyPatch, retries: int
) -> None:
    # No waiting between attempts in this test; the count is what matters. 5 > the SDK's
    # default per-kind budget (3), so a retry_total-only configuration would stop early.
    monkeypatch.setattr(ExponentialRetry, "get_backoff_time", lambda self, settings: 0)
    stub.answer(503, "ServerBusy", "busy")
    err = _put_error(_store(stub.endpoint, "results", StoreOptions(timeout=5, retries=retries)))
    assert err.code == "provider_error"
    assert stub.requests == 1 + retries


def test_connection_refused_retries_exactly(
    container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[str] = []
    real_send = requests.adapters.HTTPAdapter.send

    def counting_send(self: requests.adapters.HTTPAdapter, request: Any, **kw: Any) -> Any:
        attempts.append(request.method)
        return real_send(self, request, **kw)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", counting_send)
    monkeypatch.setattr(ExponentialRetry, "get_backoff_time", lambda self, settings: 0)
    endpoint = f"http://127.0.0.1:{free_port()}/{AZURITE_ACCOUNT_NAME}"
    err = _put_error(_store(endpoint, container, StoreOptions(timeout=5, retries=4)))
    assert err.code == "endpoint_unreachable"
    assert len(attempts) == 5


# --- logging: the key and the SharedKey signature never reach a log ------------------------


def test_debug_logs_never_contain_key_or_signature(
    azurite: Azurite,
    container: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signatures: list[str] = []
    real_send = requests.adapters.HTTPAdapter.send

    def capturing_send(self: requests.adapters.HTTPAdapter, request: Any, **kw: Any) -> Any:
        signatures.append(request.headers["Authorization"].rsplit(":", 1)[1])
        return real_send(self, request, **kw)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", capturing_send)
    caplog.set_level(logging.DEBUG)
    with _store(azurite.blob_endpoint, container) as store:
        store.put("logged/a.txt", io.BytesIO(b"hello"), size=5, content_type="text/plain")
        store.delete("logged/a.txt")
    bad = _store(azurite.blob_endpoint, container, azure_account_key=WRONG_KEY)
    with bad as store, pytest.raises(StoreError):
        store.put("logged/b.txt", io.BytesIO(b"hello"), size=5, content_type=None)
    assert len(signatures) == 3
    text = caplog.text + " ".join(str(r.args) for r in caplog.records)
    assert "Authorization" in text  # the SDK did log request headers...
    for secret in (AZURITE_ACCOUNT_KEY, WRONG_KEY, *signatures):
        assert secret not in text  # ...with the credential redacted


# --- uploads -------------------------------------------------------------------------------


def test_threshold_is_inclusive_and_blocks_are_part_size(
    azurite: Azurite,
    raw: ContainerClient,
    container: str,
    proxy: CountingProxy,
    proxied_endpoint: str,
) -> None:
    options = StoreOptions(multipart_threshold=256 * 1024, part_size=100 * 1024, timeout=10)
    below = os.urandom(options.multipart_threshold - 1)
    at = os.urandom(options.multipart_threshold)
    with _store(proxied_endpoint, container, options) as store:
        proxy.reset()
        store.put("thr/below.bin", io.BytesIO(below), size=len(below), content_type=None)
        assert [(r.method, r.query) for r in proxy.requests] == [("PUT", "")]
        proxy.reset()
        store.put("thr/at.bin", io.BytesIO(at), size=len(at), content_type=None)
        queries = sorted(r.query.split("&")[0] for r in proxy.requests)
        assert queries == ["comp=block"] * 3 + ["comp=blocklist"]
    assert _read(raw, "thr/below.bin") == below
    assert _read(raw, "thr/at.bin") == at
    blocks = raw.get_blob_client("thr/at.bin").get_block_list("committed")[0]
    assert [b.size for b in blocks] == [102400, 102400, 57344]


def test_unsized_small_stream_uses_blocks(
    raw: ContainerClient, container: str, proxy: CountingProxy, proxied_endpoint: str
) -> None:
    body = b"tiny"

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self._buf = io.BytesIO(body)

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            data = self._buf.read(len(b))
            b[: len(data)] = data
            return len(data)

    with _store(proxied_endpoint, container) as store:
        proxy.reset()
        store.put("unsized/tiny.txt", io.BufferedReader(Pipe()), size=None, content_type=None)
        assert sorted(r.query.split("&")[0] for r in proxy.requests) == [
            "comp=block",
            "comp=blocklist",
        ]
    assert _read(raw, "unsized/tiny.txt") == body


def test_unsized_file_stream_respects_position(
    raw: ContainerClient, container: str, azurite: Azurite, tmp_path: Path
) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"HEADER" + b"payload")
    with _store(azurite.blob_endpoint, container) as store, open(path, "rb") as f:
        f.seek(6)
        store.put("unsized/pos.bin", f, size=None, content_type=None)
    assert _read(raw, "unsized/pos.bin") == b"payload"


def test_content_type(raw: ContainerClient, container: str, azurite: Azurite) -> None:
    with _store(azurite.blob_endpoint, container) as store:
        store.put("ct/a.json", io.BytesIO(b"{}"), size=2, content_type="application/json")
        store.put("ct/b.bin", io.BytesIO(b"{}"), size=2, content_type=None)
    props = raw.get_blob_client("ct/a.json").get_blob_properties()
    assert props.content_settings.content_type == "application/json"
    props = raw.get_blob_client("ct/b.bin").get_blob_properties()
    assert props.content_settings.content_type == "application/octet-stream"


@pytest.mark.slow
def test_64_mib_round_trip_in_blocks(
    azurite: Azurite, raw: ContainerClient, container: str, tmp_path: Path
) -> None:
    path = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(64):
            chunk = os.urandom(MiB)
            digest.update(chunk)
            f.write(chunk)
    options = StoreOptions(multipart_threshold=8 * MiB, part_size=8 * MiB, timeout=60)
    tracemalloc.start()
    try:
        with _store(azurite.blob_endpoint, container, options) as store:
            store.put("big/64mib.bin", path, size=64 * MiB, content_type=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # At most 4 blocks in flight (each may be copied once on its way out), never the file.
    assert peak < 40 * MiB, f"peak {peak / MiB:.1f} MiB"

    blob = raw.get_blob_client("big/64mib.bin")
    assert [b.size for b in blob.get_block_list("committed")[0]] == [8 * MiB] * 8
    back = hashlib.sha256()
    for chunk in blob.download_blob().chunks():
        back.update(chunk)
    assert back.hexdigest() == digest.hexdigest()


# --- content encoding and metadata -----------------------------------------------------------


def test_encoding_and_metadata_round_trip_keep_name_case(
    raw: ContainerClient, container: str, azurite: Azurite
) -> None:
    with _store(azurite.blob_endpoint, container) as store:
        store.put(
            "meta/a.csv.gz",
            io.BytesIO(b"x"),
            size=1,
            content_type="text/csv",
            content_encoding="gzip",
            metadata={"Origin": "run 7", "_batch_2": "", "rows": "1"},
        )
    props = raw.get_blob_client("meta/a.csv.gz").get_blob_properties()
    assert props.content_settings.content_encoding == "gzip"
    assert dict(props.metadata) == {"Origin": "run 7", "_batch_2": "", "rows": "1"}


def test_azurite_itself_refuses_a_non_identifier_name(raw: ContainerClient) -> None:
    # What the plugin checks first is what the service refuses.
    with pytest.raises(HttpResponseError) as info:
        raw.upload_blob("meta/raw.txt", b"x", overwrite=True, metadata={"my-key": "v"})
    assert info.value.error_code == "InvalidMetadata"


@pytest.mark.parametrize(
    ("encoding", "metadata", "fragment"),
    [
        (None, {"my-key": "v"}, "C# identifiers"),
        (None, {"9lives": "v"}, "C# identifiers"),
        (None, {"a b": "v"}, "C# identifiers"),
        (None, {"": "v"}, "C# identifiers"),
        (None, {"Origin": "a", "ORIGIN": "b"}, "differ only in case"),
        (None, {"city": "Köln"}, "printable ASCII"),
        (None, {"note": "trailing "}, "printable ASCII"),
        (None, {"note": "line\nbreak"}, "printable ASCII"),
        (None, {"big": "x" * (8 * 1024)}, "at most 8192"),
        ("gzip\r\nx-ms-meta-injected: 1", None, "content_encoding"),
        (" gzip", None, "content_encoding"),
    ],
)
def test_bad_encoding_or_metadata_is_refused_before_sending(
    stub: _StubAzure, encoding: str | None, metadata: dict[str, str] | None, fragment: str
) -> None:
    stub.answer(201, "", "")
    with _store(stub.endpoint, "results") as store, pytest.raises(StoreError) as info:
        store.put(
            "k.txt",
            io.BytesIO(b"x"),
            size=1,
            content_type=None,
            content_encoding=encoding,
            metadata=metadata,
        )
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.code, err.provider_code, err.transient) == (
        "provider_error",
        "InvalidMetadata",
        False,
    )
    assert fragment in err.message
    assert stub.requests == 0


# --- byte progress -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "requests_expected"),
    [(20 * MiB, ["comp=block"] * 3 + ["comp=blocklist"]), (5 * MiB, [""])],
)
def test_progress_adds_up_and_moves_at_least_every_percent(
    container: str,
    proxy: CountingProxy,
    proxied_endpoint: str,
    raw: ContainerClient,
    tmp_path: Path,
    size: int,
    requests_expected: list[str],
) -> None:
    # 20 MiB: three 8 MiB-or-less blocks sent by up to 4 SDK threads; 5 MiB: one Put Blob.
    path = tmp_path / "progress.bin"
    path.write_bytes(os.urandom(size))
    events: list[int] = []
    lock = threading.Lock()

    def record(n: int) -> None:
        with lock:
            events.append(n)

    assert parse_destination(_fields()).destination_type.reports_progress is True
    with _store(proxied_endpoint, container, StoreOptions(timeout=30)) as store:
        proxy.reset()
        with reporting_progress(record):
            store.put("progress/f.bin", path, size=size, content_type=None)
    assert sorted(r.query.split("&")[0] for r in proxy.requests) == requests_expected
    assert sum(events) == size
    assert max(events) <= min(8 * MiB, size // 100)
    assert _read(raw, "progress/f.bin") == path.read_bytes()


def test_progress_outside_a_delivery_is_harmless(azurite: Azurite, container: str) -> None:
    with _store(azurite.blob_endpoint, container) as store:
        store.put("progress/quiet.txt", io.BytesIO(b"quiet"), size=5, content_type=None)


# --- azure_sas_token (least privilege) and azure_access_tier -------------------------------


def _container_sas(container: str, *, expired: bool = False, **permissions: bool) -> str:
    """A container SAS signed by the SDK with azurite's account key."""
    from datetime import UTC, datetime, timedelta

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    now = datetime.now(UTC)
    return generate_container_sas(
        AZURITE_ACCOUNT_NAME,
        container,
        account_key=AZURITE_ACCOUNT_KEY,
        permission=ContainerSasPermissions(**permissions),
        start=now - timedelta(hours=2),
        expiry=now - timedelta(hours=1) if expired else now + timedelta(hours=1),
    )


def _sas_params(endpoint: str, container: str, sas: str, **overrides: object) -> dict[str, object]:
    params = _params(endpoint, container, azure_sas_token=sas, **overrides)
    del params["azure_account_key"]
    return params


class TestAzureSasConformance(TestAzureConformance):
    """The same suite with a container SAS of create + write + delete only (sp=cwd)."""

    @pytest.fixture
    def destination(self, proxied_endpoint: str, container: str) -> Destination:
        sas = _container_sas(container, create=True, write=True, delete=True)
        return parse_destination(_sas_params(proxied_endpoint, container, sas))

    @pytest.fixture
    def bad_credentials_destination(self, proxied_endpoint: str, container: str) -> Destination:
        sas = _container_sas(container, create=True, write=True, delete=True)
        forged = sas.replace("sig=", "sig=AAAA")
        return parse_destination(_sas_params(proxied_endpoint, container, forged))

    @pytest.fixture
    def missing_bucket_destination(self, proxied_endpoint: str) -> Destination:
        sas = _container_sas("no-such-container", create=True, write=True, delete=True)
        return parse_destination(_sas_params(proxied_endpoint, "no-such-container", sas))


def test_sas_cwd_verifies_and_delivers(
    azurite: Azurite, container: str, raw: ContainerClient
) -> None:
    from destinations import ResultFile, ResultSet, deliver

    sas = _container_sas(container, create=True, write=True, delete=True)
    destination = parse_destination(_sas_params(azurite.blob_endpoint, container, sas))
    verify(destination, timeout=30)
    files = [ResultFile(f"f{i}.csv", stream=io.BytesIO(b"a,b\n1,2\n")) for i in range(3)]
    report = deliver(ResultSet("c", "C", "rs", files), [destination])
    assert report.ok, report[0].error
    assert [_read(raw, k) for k in report[0].keys] == [b"a,b\n1,2\n"] * 3


def test_read_only_sas_fails_access_denied_at_put(azurite: Azurite, container: str) -> None:
    sas = _container_sas(container, read=True, list=True)
    destination = parse_destination(_sas_params(azurite.blob_endpoint, container, sas))
    with pytest.raises(VerificationFailed) as info:
        verify(destination, timeout=30)
    assert (info.value.step, info.value.code) == ("put", "access_denied")
    assert "azure_sas_token" in info.value.message and "sp=cwd" in info.value.message
    assert sas not in f"{info.value} {info.value!r} {info.value.error!r}"


def test_sas_without_delete_fails_at_delete(azurite: Azurite, container: str) -> None:
    sas = _container_sas(container, create=True, write=True)
    destination = parse_destination(_sas_params(azurite.blob_endpoint, container, sas))
    with pytest.raises(VerificationFailed) as info:
        verify(destination, timeout=30)
    assert (info.value.step, info.value.code) == ("delete", "access_denied")
    assert info.value.probe_left is True


def test_expired_sas_fails_clearly(azurite: Azurite, container: str) -> None:
    sas = _container_sas(container, expired=True, create=True, write=True, delete=True)
    destination = parse_destination(_sas_params(azurite.blob_endpoint, container, sas))
    with pytest.raises(VerificationFailed) as info:
        verify(destination, timeout=30)
    assert info.value.step == "put"
    assert info.value.code in ("invalid_credentials", "access_denied")
    assert "azure_sas_token" in info.value.message
    text = f"{info.value} {info.value!r} {info.value.error!r}"
    assert sas not in text and sas.split("sig=")[1].split("&")[0] not in text


def test_sas_token_is_secret_and_checked(container: str) -> None:
    sas = _container_sas(container, create=True, write=True, delete=True)
    destination = parse_destination(_sas_params("https://a.example", container, "?" + sas))
    assert destination.settings.azure_sas_token.get_secret_value() == sas  # type: ignore[attr-defined]
    text = f"{destination!r} {destination} {destination.to_params()}"
    assert sas not in text and "sig=" not in text
    for bad, fragment in (("sp=r&se=x", "missing sv, sig"), ("https://a/b?" + sas, "not a URL")):
        errors = _errors(_fields(azure_account_key="", azure_sas_token=bad))
        assert list(errors) == ["azure_sas_token"] and fragment in errors["azure_sas_token"]
        assert bad not in str(errors)
    both = _errors(_fields(azure_sas_token=sas))
    assert set(both) == {"azure_account_key", "azure_sas_token"}


def test_access_tier_on_probe_and_data_puts(
    azurite: Azurite, container: str, raw: ContainerClient
) -> None:
    """x-ms-access-tier on Put Blob and on Put Block List (never on Put Block); azurite
    stores the tier, read back through the raw SDK."""
    from tests.emulators.recording_proxy import RecordingProxy

    with RecordingProxy(azurite.base_url) as proxy:
        endpoint = f"{proxy.endpoint}/{AZURITE_ACCOUNT_NAME}"
        destination = parse_destination(_params(endpoint, container, azure_access_tier="Cool"))
        verify(destination, timeout=30)
        options = StoreOptions(multipart_threshold=1 * MiB, part_size=1 * MiB, timeout=30.0)
        with open_store(destination, options) as store:
            store.put("tier/small.txt", io.BytesIO(b"s"), size=1, content_type=None)
            big = b"b" * (3 * MiB)
            store.put("tier/big.bin", io.BytesIO(big), size=len(big), content_type=None)
        puts = proxy.sent("PUT")
        whole = [e for e in puts if "comp=block" not in e.query]  # Put Blob
        lists = [e for e in puts if "comp=blocklist" in e.query]
        blocks = [e for e in puts if "comp=block&" in e.query or e.query.endswith("comp=block")]
        assert len(whole) == 2 and len(lists) == 1 and blocks
        assert all(e.headers.get("x-ms-access-tier") == "Cool" for e in whole + lists)
        assert all("x-ms-access-tier" not in e.headers for e in blocks)
    for key in ("tier/small.txt", "tier/big.bin"):
        assert raw.get_blob_client(key).get_blob_properties().blob_tier == "Cool"


def test_access_tier_field() -> None:
    assert _settings(_fields(azure_access_tier="Archive")).azure_access_tier == "Archive"
    assert _settings(_fields(azure_access_tier="")).azure_access_tier is None
    assert list(_errors(_fields(azure_access_tier="Premium"))) == ["azure_access_tier"]
    from destinations_azure import AzureFields

    props = AzureFields.model_json_schema()["properties"]
    enum = next(o["enum"] for o in props["azure_access_tier"]["anyOf"] if "enum" in o)
    assert enum == ["Hot", "Cool", "Cold", "Archive"]
    assert props["azure_sas_token"]["description"]
