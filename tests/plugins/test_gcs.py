"""destinations-gcs: the HMAC path against moto with auth on (the same SigV4 protocol as
Google's XML API, region ``auto``), and the service-account path against gcp-storage-emulator
(JSON API), both through the counting proxy.

The emulator checks no credentials, so the service-account test brings its own loopback OAuth
token endpoint (the key file's ``token_uri`` points at it). That endpoint does what Google's
does with the JWT the client signs: it checks the signature against the public key registered
for ``client_email`` and answers ``invalid_grant`` on a mismatch. A key file with the right
email but another private key is therefore rejected there, the way Google rejects a deleted
or forged key. What the emulator then receives as a bearer token is not checked by anyone.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core.exceptions import NotFound

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
from destinations_gcs._json_api import GcsJsonStore, chunk_size_for
from destinations_s3 import S3ProtocolStore
from tests.emulators.fixtures import MotoHandle
from tests.emulators.gcs_auth import (
    CLIENT_EMAIL,
    TokenServer,
    new_key,
    service_account_json,
)
from tests.emulators.servers import (
    CountingProxy,
    GcsEmulator,
    ProxyCounter,
    free_port,
    s3_key_lister,
    s3_object_reader,
)
from tests.plugins._http_stub import Reply, StubRequest, StubServer
from tests.plugins.test_s3 import s3_meta_reader


@pytest.fixture(autouse=True)
def _loopback_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", "1")
    for name in (
        "STORAGE_EMULATOR_HOST",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
    ):
        monkeypatch.delenv(name, raising=False)


# --- a loopback OAuth token endpoint ----------------------------------------------------------


@pytest.fixture(scope="module")
def token_server() -> Iterator[TokenServer]:
    server = TokenServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def service_account(token_server: TokenServer) -> str:
    key = new_key()
    token_server.public_keys[CLIENT_EMAIL] = key.public_key()
    return service_account_json(key, f"{token_server.url}/token")


@pytest.fixture(scope="module")
def forged_service_account(token_server: TokenServer) -> str:
    """The registered email, but a private key Google never saw."""
    key = new_key()
    return service_account_json(key, f"{token_server.url}/token")


# --- the HMAC path: moto, SigV4, region auto --------------------------------------------------


@pytest.fixture(scope="module")
def moto_proxy(moto_server: MotoHandle) -> Iterator[CountingProxy]:
    with CountingProxy(moto_server.endpoint) as p:
        yield p


@pytest.fixture(scope="module")
def hmac_bucket(moto_server: MotoHandle) -> str:
    name = f"dest-gcs-{uuid.uuid4().hex[:12]}"
    moto_server.create_bucket(name)
    return name


@pytest.fixture(scope="module")
def moto_raw(moto_server: MotoHandle) -> Iterator[Any]:
    client = moto_server.s3_client()
    yield client
    client.close()


def _hmac(moto: MotoHandle, bucket: str, endpoint: str, **overrides: object) -> dict[str, object]:
    params: dict[str, object] = {
        "name": "gcs hmac",
        "enabled": True,
        "type": "gcs",
        "gcs_access_key": moto.access_key_id,
        "gcs_secret_key": moto.secret_access_key,
        "gcs_bucket_name": bucket,
        "gcs_path_prefix": "conformance/%COLLECTION_ID%",
        "gcs_endpoint": endpoint,
    }
    params.update(overrides)
    return params


class TestGcsHmacConformance(StoreConformance):
    @pytest.fixture
    def destination(
        self, moto_server: MotoHandle, hmac_bucket: str, moto_proxy: CountingProxy
    ) -> Destination:
        return parse_destination(_hmac(moto_server, hmac_bucket, moto_proxy.endpoint))

    @pytest.fixture
    def bad_credentials_destination(
        self, moto_server: MotoHandle, hmac_bucket: str, moto_proxy: CountingProxy
    ) -> Destination:
        return parse_destination(
            _hmac(moto_server, hmac_bucket, moto_proxy.endpoint, gcs_secret_key="w" * 40)
        )

    @pytest.fixture
    def missing_bucket_destination(
        self, moto_server: MotoHandle, moto_proxy: CountingProxy
    ) -> Destination:
        return parse_destination(_hmac(moto_server, "no-such-gcs-bucket", moto_proxy.endpoint))

    @pytest.fixture
    def read_object(self, moto_raw: Any, hmac_bucket: str) -> Callable[[str], bytes | None]:
        reader: Callable[[str], bytes | None] = s3_object_reader(moto_raw, hmac_bucket)
        return reader

    @pytest.fixture
    def list_keys(self, moto_raw: Any, hmac_bucket: str) -> Callable[[str], list[str]]:
        lister: Callable[[str], list[str]] = s3_key_lister(moto_raw, hmac_bucket)
        return lister

    @pytest.fixture
    def read_object_meta(
        self, moto_raw: Any, hmac_bucket: str
    ) -> Callable[[str], ObjectMeta | None]:
        return s3_meta_reader(moto_raw, hmac_bucket)

    @pytest.fixture
    def request_counter(self, moto_proxy: CountingProxy) -> ProxyCounter:
        return moto_proxy.counter()


def test_hmac_path_is_the_s3_store_configured_for_google(
    moto_server: MotoHandle, hmac_bucket: str
) -> None:
    with open_store(parse_destination(_hmac(moto_server, hmac_bucket, moto_server.endpoint))) as st:
        assert isinstance(st, S3ProtocolStore)
        config = st._client.meta.config
        assert st.region == "auto" and config.s3 == {"addressing_style": "path"}
        assert config.request_checksum_calculation == "when_required"
        assert config.response_checksum_validation == "when_required"
    dest = parse_destination(_hmac(moto_server, hmac_bucket, "", gcs_endpoint=None))
    with open_store(dest) as st:
        assert st._client.meta.endpoint_url == "https://storage.googleapis.com"


def test_hmac_unknown_access_key_is_invalid_credentials(
    moto_server: MotoHandle, hmac_bucket: str, moto_proxy: CountingProxy
) -> None:
    params = _hmac(
        moto_server,
        hmac_bucket,
        moto_proxy.endpoint,
        gcs_access_key="GOOG1ENOSUCHKEY0000000000000000",
    )
    with pytest.raises(VerificationFailed) as info:
        verify(parse_destination(params), timeout=30)
    assert (info.value.code, info.value.provider_code) == (
        "invalid_credentials",
        "InvalidAccessKeyId",
    )
    assert "gcs_access_key" in info.value.message and "gcs_secret_key" in info.value.message


def test_hmac_closed_port_is_endpoint_unreachable(moto_server: MotoHandle) -> None:
    params = _hmac(moto_server, "some-bucket", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(VerificationFailed) as info:
        verify(parse_destination(params), timeout=30)
    assert info.value.code == "endpoint_unreachable"
    assert "gcs_endpoint" in info.value.message


# --- the service-account path: gcp-storage-emulator, JSON API ----------------------------------


@pytest.fixture(scope="module")
def gcs_proxy(gcs_emulator: GcsEmulator) -> Iterator[CountingProxy]:
    with CountingProxy(gcs_emulator.endpoint) as p:
        yield p


@pytest.fixture(scope="module")
def sa_bucket(gcs_emulator: GcsEmulator) -> str:
    name = f"dest-gcs-{uuid.uuid4().hex[:12]}"
    gcs_emulator.create_bucket(name)
    return name


@pytest.fixture(scope="module")
def gcs_raw(gcs_emulator: GcsEmulator, sa_bucket: str) -> Iterator[Any]:
    client = gcs_emulator.client()
    yield client.bucket(sa_bucket)
    client.close()


def _sa(key_json: str, bucket: str, endpoint: str, **overrides: object) -> dict[str, object]:
    params: dict[str, object] = {
        "name": "gcs service account",
        "enabled": True,
        "type": "gcs",
        "gcs_service_account_json": key_json,
        "gcs_bucket_name": bucket,
        "gcs_path_prefix": "conformance/%COLLECTION_ID%",
        "gcs_endpoint": endpoint,
    }
    params.update(overrides)
    return params


def _gcs_read(raw_bucket: Any) -> Callable[[str], bytes | None]:
    def read(key: str) -> bytes | None:
        try:
            data: bytes = raw_bucket.blob(key).download_as_bytes()
        except NotFound:
            return None
        return data

    return read


def _gcs_meta(raw_bucket: Any) -> Callable[[str], ObjectMeta | None]:
    """``key -> ObjectMeta | None`` from the object's resource (JSON API, raw client)."""

    def read(key: str) -> ObjectMeta | None:
        blob = raw_bucket.get_blob(key)
        if blob is None:
            return None
        return {
            "content_type": blob.content_type,
            "content_encoding": blob.content_encoding,
            "metadata": dict(blob.metadata or {}),
        }

    return read


class TestGcsServiceAccountConformance(StoreConformance):
    @pytest.fixture
    def destination(
        self, service_account: str, sa_bucket: str, gcs_proxy: CountingProxy
    ) -> Destination:
        return parse_destination(_sa(service_account, sa_bucket, gcs_proxy.endpoint))

    @pytest.fixture
    def bad_credentials_destination(
        self, forged_service_account: str, sa_bucket: str, gcs_proxy: CountingProxy
    ) -> Destination:
        return parse_destination(_sa(forged_service_account, sa_bucket, gcs_proxy.endpoint))

    @pytest.fixture
    def missing_bucket_destination(
        self, service_account: str, gcs_proxy: CountingProxy
    ) -> Destination:
        return parse_destination(_sa(service_account, "no-such-gcs-bucket", gcs_proxy.endpoint))

    @pytest.fixture
    def read_object(self, gcs_raw: Any) -> Callable[[str], bytes | None]:
        return _gcs_read(gcs_raw)

    @pytest.fixture
    def list_keys(self, gcs_raw: Any) -> Callable[[str], list[str]]:
        return lambda prefix: [b.name for b in gcs_raw.client.list_blobs(gcs_raw, prefix=prefix)]

    @pytest.fixture
    def read_object_meta(self, gcs_raw: Any) -> Callable[[str], ObjectMeta | None]:
        return _gcs_meta(gcs_raw)

    @pytest.fixture
    def request_counter(self, gcs_proxy: CountingProxy) -> ProxyCounter:
        return gcs_proxy.counter()


def test_one_token_per_key_and_no_bucket_metadata_request(
    service_account: str, sa_bucket: str, gcs_proxy: CountingProxy, token_server: TokenServer
) -> None:
    dest = parse_destination(_sa(service_account, sa_bucket, gcs_proxy.endpoint))
    verify(dest, timeout=30)
    issued = len(token_server.issued)
    gcs_proxy.reset()
    for _ in range(3):
        verify(dest, timeout=30)
    time.sleep(0.3)  # google-cloud-storage's bucket-metadata fetch would run in the background
    assert [r.method for r in gcs_proxy.requests] == ["POST", "DELETE"] * 3
    assert len(token_server.issued) == issued  # the token is reused across stores


def test_threshold_boundary_and_resumable_chunks(
    service_account: str, sa_bucket: str, gcs_proxy: CountingProxy, gcs_raw: Any
) -> None:
    read = _gcs_read(gcs_raw)
    options = StoreOptions(multipart_threshold=1 * MiB, part_size=300 * 1024)
    dest = parse_destination(_sa(service_account, sa_bucket, gcs_proxy.endpoint))
    with open_store(dest, options) as store:
        below = os.urandom(MiB - 1)
        gcs_proxy.reset()
        store.put("t/below.bin", io.BytesIO(below), size=len(below), content_type=None)
        assert [(r.method, r.query) for r in gcs_proxy.requests] == [
            ("POST", "uploadType=multipart")
        ]
        at = os.urandom(MiB)
        gcs_proxy.reset()
        store.put("t/at.bin", io.BytesIO(at), size=len(at), content_type=None)
        methods = [r.method for r in gcs_proxy.requests]
        # 300 KiB rounds up to 512 KiB chunks: initiate + 2 chunks (+ the empty final one)
        assert methods[0] == "POST" and "uploadType=resumable" in gcs_proxy.requests[0].query
        assert methods[1:3] == ["PUT", "PUT"]
    assert read("t/below.bin") == below
    assert read("t/at.bin") == at


def test_chunk_size_is_rounded_to_256_kib() -> None:
    assert chunk_size_for(1) == 256 * 1024
    assert chunk_size_for(256 * 1024) == 256 * 1024
    assert chunk_size_for(300 * 1024) == 512 * 1024
    assert chunk_size_for(8 * MiB) == 8 * MiB


def test_stream_read_from_its_position(
    service_account: str, sa_bucket: str, gcs_proxy: CountingProxy, gcs_raw: Any
) -> None:
    stream = io.BytesIO(b"HEADER" + os.urandom(MiB))
    stream.seek(6)
    expected = stream.getvalue()[6:]
    dest = parse_destination(_sa(service_account, sa_bucket, gcs_proxy.endpoint))
    with open_store(dest, StoreOptions(multipart_threshold=MiB // 2, part_size=256 * 1024)) as st:
        st.put("t/positioned.bin", stream, size=None, content_type="application/octet-stream")
    assert _gcs_read(gcs_raw)("t/positioned.bin") == expected


def test_unreachable_token_endpoint(sa_bucket: str, gcs_proxy: CountingProxy) -> None:
    key = new_key()
    key_json = service_account_json(key, f"http://127.0.0.1:{free_port()}/token")
    with pytest.raises(VerificationFailed) as info:
        verify(parse_destination(_sa(key_json, sa_bucket, gcs_proxy.endpoint)), timeout=30)
    assert (info.value.step, info.value.code) == ("put", "endpoint_unreachable")
    assert "token" in info.value.message


def test_sa_closed_port_is_endpoint_unreachable(service_account: str) -> None:
    params = _sa(service_account, "some-bucket", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(VerificationFailed) as info:
        verify(parse_destination(params), timeout=30)
    assert info.value.code == "endpoint_unreachable"
    assert "gcs_endpoint" in info.value.message


def _json_error(status: int, reason: str) -> Callable[[StubRequest], Reply]:
    body = json.dumps(
        {
            "error": {
                "code": status,
                "message": f"stub {reason}",
                "errors": [{"reason": reason, "message": "stub"}],
            }
        }
    ).encode()
    return lambda request: (status, {"Content-Type": "application/json"}, body)


@pytest.mark.parametrize(
    ("status", "reason", "code"),
    [
        (401, "required", "invalid_credentials"),
        (403, "forbidden", "access_denied"),
        (404, "notFound", "bucket_not_found"),
        (400, "invalid", "provider_error"),
    ],
)
def test_json_api_status_mapping(service_account: str, status: int, reason: str, code: str) -> None:
    with StubServer(_json_error(status, reason)) as stub:
        store = GcsJsonStore(
            bucket="abc",
            service_account_json=service_account,
            endpoint=stub.endpoint,
            options=StoreOptions(),
        )
        with store, pytest.raises(StoreError) as info:
            store.put("k", io.BytesIO(b"x"), size=1, content_type=None)
    assert (info.value.code, info.value.provider_code) == (code, reason)


def test_json_api_not_found_on_delete_is_success(service_account: str) -> None:
    with StubServer(_json_error(404, "notFound")) as stub:
        store = GcsJsonStore(
            bucket="abc",
            service_account_json=service_account,
            endpoint=stub.endpoint,
            options=StoreOptions(),
        )
        with store:
            store.delete("gone")


@pytest.mark.parametrize(("retries", "attempts"), [(0, 1), (1, 2)])
def test_json_api_retries_are_exactly_what_core_allows(
    service_account: str, retries: int, attempts: int
) -> None:
    with StubServer(_json_error(503, "backendError")) as stub:
        store = GcsJsonStore(
            bucket="abc",
            service_account_json=service_account,
            endpoint=stub.endpoint,
            options=StoreOptions(retries=retries),
        )
        with store, pytest.raises(StoreError) as info:
            store.delete("k")
        assert len(stub.requests) == attempts
    assert info.value.code == "provider_error"


def test_imports_only_what_the_path_needs() -> None:
    code = (
        "import sys, destinations_gcs;"
        "print('boto3' in sys.modules, 'google.cloud.storage' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --- field validation ---------------------------------------------------------------------------

_HMAC = {"gcs_access_key": "GOOG1EXAMPLEACCESSID", "gcs_secret_key": "hmacS3cretValue/abc+def"}


def _errors(params: dict[str, object]) -> dict[str, str]:
    with pytest.raises(InvalidDestination) as info:
        parse_destination({"name": "n", "enabled": True, "type": "gcs", **params})
    text = f"{info.value} {info.value!r}"
    assert "hmacS3cretValue" not in text and "PRIVATE KEY" not in text
    return info.value.errors


@pytest.mark.parametrize(
    ("bucket", "fragment"),
    [
        ("ab", "3 to 63"),
        ("a" * 64, "3 to 63"),
        ("a." + "b" * 221, "222"),
        ("a." + "b" * 64 + ".c", "dot-separated"),
        ("My-Bucket", "lowercase"),
        ("-bucket", "start and end"),
        ("bucket_", "start and end"),
        ("192.168.5.4", "IP address"),
        ("goog-bucket", "goog"),
        ("my-google-bucket", "google"),
        ("my-g00gle-bucket", "google"),
    ],
)
def test_gcs_bucket_naming_rules(bucket: str, fragment: str) -> None:
    errors = _errors({**_HMAC, "gcs_bucket_name": bucket})
    assert list(errors) == ["gcs_bucket_name"]
    assert fragment in errors["gcs_bucket_name"]


@pytest.mark.parametrize("bucket", ["abc", "my_bucket-1", "a.b.c", "x" * 63, "a." + "b" * 63])
def test_gcs_bucket_names_accepted(bucket: str) -> None:
    parse_destination(
        {"name": "n", "enabled": True, "type": "gcs", **_HMAC, "gcs_bucket_name": bucket}
    )


def test_exactly_one_way_to_authenticate(service_account: str) -> None:
    errors = _errors({"gcs_bucket_name": "abc"})
    assert set(errors) == {"gcs_access_key", "gcs_secret_key"}
    assert "gcs_service_account_json" in errors["gcs_access_key"]
    assert _errors({"gcs_bucket_name": "abc", "gcs_access_key": "GOOG1E"}) == {
        "gcs_secret_key": "required with gcs_access_key"
    }
    assert _errors({"gcs_bucket_name": "abc", "gcs_secret_key": "s"}) == {
        "gcs_access_key": "required with gcs_secret_key"
    }
    errors = _errors(
        {"gcs_bucket_name": "abc", **_HMAC, "gcs_service_account_json": service_account}
    )
    assert set(errors) == {"gcs_service_account_json", "gcs_access_key", "gcs_secret_key"}
    # empty form fields count as absent
    dest = parse_destination(
        {
            "name": "n",
            "enabled": True,
            "type": "gcs",
            "gcs_bucket_name": "abc",
            "gcs_access_key": "",
            "gcs_secret_key": " ",
            "gcs_service_account_json": service_account,
        }
    )
    assert dest.settings.uses_hmac is False  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("key_json", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"type": "authorized_user", "private_key": "x"}), "service_account"),
        (json.dumps({"type": "service_account", "client_email": "a@b"}), "private_key"),
        (
            json.dumps(
                {
                    "type": "service_account",
                    "client_email": "a@b",
                    "token_uri": "u",
                    "private_key": "hmacS3cretValue",
                }
            ),
            "PEM",
        ),
    ],
)
def test_service_account_json_shape(key_json: str, fragment: str) -> None:
    errors = _errors({"gcs_bucket_name": "abc", "gcs_service_account_json": key_json})
    assert list(errors) == ["gcs_service_account_json"]
    assert fragment in errors["gcs_service_account_json"]


@pytest.mark.parametrize(
    "endpoint",
    [
        "storage.googleapis.com",
        "https://u:p@x.example",
        "https://x.example/path",
        "https://x.example?q=1",
        "ftp://x.example",
    ],
)
def test_gcs_endpoint_must_be_a_url(endpoint: str) -> None:
    assert list(_errors({**_HMAC, "gcs_bucket_name": "abc", "gcs_endpoint": endpoint})) == [
        "gcs_endpoint"
    ]


def test_gcs_type_metadata(service_account: str) -> None:
    dest = parse_destination(
        {"name": "n", "enabled": True, "type": "gcs", **_HMAC, "gcs_bucket_name": "abc"}
    )
    dtype = dest.destination_type
    assert dtype.secret_fields == {"gcs_secret_key", "gcs_service_account_json"}
    assert dtype.masked_fields == ("gcs_access_key",)
    assert dtype.endpoint_fields == ("gcs_endpoint",)
    sa_dest = parse_destination(_sa(service_account, "abc", "https://x.example"))
    text = f"{sa_dest!r} {sa_dest.to_params()}"
    assert "PRIVATE KEY" not in text and "hmacS3cretValue" not in f"{dest!r}"


# --- large upload -------------------------------------------------------------------------------


@pytest.mark.slow
def test_64_mib_resumable_round_trip(
    service_account: str, sa_bucket: str, gcs_emulator: GcsEmulator, gcs_raw: Any, tmp_path: Path
) -> None:
    path = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(64):
            block = os.urandom(MiB)
            digest.update(block)
            out.write(block)
    dest = parse_destination(_sa(service_account, sa_bucket, gcs_emulator.endpoint))
    options = StoreOptions(multipart_threshold=8 * MiB, part_size=8 * MiB)
    with open_store(dest, options) as store:
        store.put("big/64mib.bin", path, size=path.stat().st_size, content_type=None)
    back = hashlib.sha256()
    with gcs_raw.blob("big/64mib.bin").open("rb", chunk_size=4 * MiB) as reader:
        while chunk := reader.read(MiB):
            back.update(chunk)
    assert back.hexdigest() == digest.hexdigest()


# --- transient or not, and byte progress ------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "transient"),
    [
        (429, "rateLimitExceeded", True),
        (403, "userRateLimitExceeded", True),  # a rate limit, not a denial
        (503, "backendError", True),
        (500, "internalError", True),
        (502, "somethingNew", True),  # by status (core's generic rule)
        (400, "invalid", False),
        (403, "forbidden", False),
    ],
)
def test_json_api_sets_status_and_transient(
    service_account: str, status: int, reason: str, transient: bool
) -> None:
    with StubServer(_json_error(status, reason)) as stub:
        store = GcsJsonStore(
            bucket="abc",
            service_account_json=service_account,
            endpoint=stub.endpoint,
            options=StoreOptions(),
        )
        with store, pytest.raises(StoreError) as info:
            store.put("k", io.BytesIO(b"x"), size=1, content_type=None)
    assert (info.value.status, info.value.provider_code) == (status, reason)
    assert info.value.transient is transient
    if reason == "userRateLimitExceeded":
        assert info.value.code == "provider_error"


def _progress_events(store: Any, key: str, source: Any, size: int | None) -> list[int]:
    events: list[int] = []

    with reporting_progress(events.append):
        store.put(key, source, size=size, content_type="application/octet-stream")
    return events


@pytest.mark.parametrize(
    ("kind", "size"),
    [("path", 20 * MiB), ("stream", 20 * MiB), ("unsized", 20 * MiB), ("small", 3 * MiB)],
)
def test_service_account_progress_adds_up_and_comes_often(
    service_account: str,
    sa_bucket: str,
    gcs_emulator: GcsEmulator,
    gcs_raw: Any,
    tmp_path: Path,
    kind: str,
    size: int,
) -> None:
    body = os.urandom(size)
    path = tmp_path / "p.bin"
    path.write_bytes(body)
    source: Any = path if kind == "path" else io.BytesIO(body)
    options = StoreOptions(multipart_threshold=8 * MiB, part_size=8 * MiB)
    dest = parse_destination(_sa(service_account, sa_bucket, gcs_emulator.endpoint))
    with open_store(dest, options) as store:
        events = _progress_events(
            store, f"progress/{kind}.bin", source, None if kind == "unsized" else size
        )
    assert sum(events) == size
    assert all(n > 0 for n in events)
    step = min(8 * MiB, size // 100) if kind != "unsized" else 256 * 1024
    assert max(events) <= step, (max(events), step)
    assert _gcs_read(gcs_raw)(f"progress/{kind}.bin") == body


def test_hmac_progress_adds_up_and_comes_often(
    moto_server: MotoHandle, hmac_bucket: str, moto_raw: Any, tmp_path: Path
) -> None:
    size = 20 * MiB
    body = os.urandom(size)
    path = tmp_path / "p.bin"
    path.write_bytes(body)
    options = StoreOptions(multipart_threshold=8 * MiB, part_size=8 * MiB)
    dest = parse_destination(_hmac(moto_server, hmac_bucket, moto_server.endpoint))
    with open_store(dest, options) as store:
        events = _progress_events(store, "progress/hmac.bin", path, size)
    assert sum(events) == size
    assert max(events) <= size // 100
    assert s3_object_reader(moto_raw, hmac_bucket)("progress/hmac.bin") == body


def test_gcs_declares_progress() -> None:
    from destinations import get_type

    assert get_type("gcs").reports_progress


# --- CMEK and storage class (gcs_kms_key_name, gcs_storage_class) ---------------------------

KMS_KEY = "projects/dest-test/locations/europe-west1/keyRings/ring-1/cryptoKeys/key-1"
_GOOG_HEADERS = {"x-goog-encryption-kms-key-name", "x-goog-storage-class"}
_OPTION_OPTIONS = StoreOptions(multipart_threshold=5 * MiB, part_size=5 * MiB, timeout=30.0)


def _put_and_multipart(destination: Destination) -> None:
    verify(destination, timeout=30)  # the probe
    with open_store(destination, _OPTION_OPTIONS) as store:
        store.put("opts/small.txt", io.BytesIO(b"small"), size=5, content_type="text/plain")
        big = b"g" * (6 * MiB)
        store.put("opts/big.bin", io.BytesIO(big), size=len(big), content_type=None)


def test_hmac_sends_kms_key_and_storage_class_on_probe_and_data_puts(
    moto_server: MotoHandle, hmac_bucket: str
) -> None:
    """moto ignores x-goog-* headers: the recording proxy checks what was sent (and signed)."""
    from tests.emulators.recording_proxy import RecordingProxy

    with RecordingProxy(moto_server.endpoint) as proxy:
        params = _hmac(
            moto_server,
            hmac_bucket,
            proxy.endpoint,
            gcs_kms_key_name=KMS_KEY,
            gcs_storage_class="NEARLINE",
        )
        _put_and_multipart(parse_destination(params))
        carrying = [e for e in proxy.sent("PUT") if "partNumber" not in e.query]
        carrying += proxy.sent("POST", query_has="uploads")
        assert len(carrying) == 3  # probe PutObject, small PutObject, CreateMultipartUpload
        for exchange in carrying:
            sent = {k: v for k, v in exchange.headers.items() if k in _GOOG_HEADERS}
            assert sent == {
                "x-goog-encryption-kms-key-name": KMS_KEY,
                "x-goog-storage-class": "NEARLINE",
            }
            signed = exchange.headers["authorization"].split("SignedHeaders=")[1]
            assert "x-goog-storage-class" in signed and "x-goog-encryption-kms-key-name" in signed
        parts = [e for e in proxy.sent("PUT") if "partNumber" in e.query]
        assert parts and all(not (_GOOG_HEADERS & set(e.headers)) for e in parts)
        proxy.reset()
        verify(parse_destination(_hmac(moto_server, hmac_bucket, proxy.endpoint)), timeout=30)
        (probe,) = proxy.sent("PUT")
        assert not (_GOOG_HEADERS & set(probe.headers))


def test_json_api_sends_kms_key_and_storage_class_on_probe_and_data_puts(
    service_account: str, sa_bucket: str, gcs_emulator: GcsEmulator, gcs_raw: Any
) -> None:
    """The JSON API carries the key as the upload's kmsKeyName parameter and the class in the
    object resource; the emulator stores the class (read back) but not the key (checked on
    the wire)."""
    from tests.emulators.recording_proxy import RecordingProxy

    with RecordingProxy(gcs_emulator.endpoint) as proxy:
        params = _sa(
            service_account,
            sa_bucket,
            proxy.endpoint,
            gcs_kms_key_name=KMS_KEY,
            gcs_storage_class="COLDLINE",
        )
        _put_and_multipart(parse_destination(params))
        starts = [e for e in proxy.sent("POST") if "uploadType=" in e.query]
        # probe and small file: one multipart request each; the big file: a resumable start
        assert sorted(
            q.split("uploadType=")[1].split("&")[0] for q in (e.query for e in starts)
        ) == [
            "multipart",
            "multipart",
            "resumable",
        ]
        for exchange in starts:
            assert f"kmsKeyName={KMS_KEY.replace('/', '%2F')}" in exchange.query
            assert exchange.body is not None and b'"storageClass": "COLDLINE"' in exchange.body
    for key in ("opts/small.txt", "opts/big.bin"):
        blob = gcs_raw.get_blob(key)
        assert blob is not None and blob.storage_class == "COLDLINE"


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("gcs_kms_key_name", "my-key", "Cloud KMS key name"),
        ("gcs_kms_key_name", KMS_KEY + "/cryptoKeyVersions/1", "without /cryptoKeyVersions/"),
        ("gcs_storage_class", "GLACIER", ""),
    ],
)
def test_option_field_rules(field: str, value: str, fragment: str) -> None:
    params = {
        "name": "n",
        "enabled": True,
        "type": "gcs",
        "gcs_access_key": "GOOG1EXAMPLEKEY",
        "gcs_secret_key": "secret-value-1",
        "gcs_bucket_name": "abc",
        field: value,
    }
    with pytest.raises(InvalidDestination) as info:
        parse_destination(params)
    assert list(info.value.errors) == [field]
    assert fragment in info.value.errors[field]
    blank = parse_destination({**params, field: ""})
    assert getattr(blank.settings, field) is None


def test_option_fields_in_the_schema() -> None:
    from destinations_gcs import GcsFields

    props = GcsFields.model_json_schema()["properties"]
    assert props["gcs_kms_key_name"]["description"]
    enum = next(o["enum"] for o in props["gcs_storage_class"]["anyOf"] if "enum" in o)
    assert enum == ["STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"]
