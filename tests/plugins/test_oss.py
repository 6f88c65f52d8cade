"""destinations-oss against the loopback OSS double (tests/emulators/oss_double.py).

The double recomputes every request's V4 signature with oss2's own code, so a wrong secret,
an unknown key id or a client signing for another region is rejected as real OSS would.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import oss2  # type: ignore[import-untyped]
import oss2.exceptions  # type: ignore[import-untyped]
import pytest

import destinations
from destinations import (
    Destination,
    InvalidDestination,
    StoreError,
    StoreOptions,
    VerificationFailed,
    parse_destination,
    verify,
)
from destinations._progress import reporting_progress
from destinations.plugin import MiB
from destinations.testing import ObjectMeta, StoreConformance
from destinations_oss import (
    REGIONS,
    OssFields,
    OssStore,
    default_endpoint,
    map_error,
    signing_region,
)
from tests.delivery.faulty_proxy import FaultyProxy
from tests.emulators.fixtures import OSS_BUCKET, OSS_CREDENTIALS
from tests.emulators.oss_double import OssDouble, OssError
from tests.emulators.servers import CountingProxy, ProxyCounter

((ACCESS_KEY, SECRET_KEY),) = OSS_CREDENTIALS.items()
REGION_ID = "oss-cn-hangzhou"  # the double signs V4 for "cn-hangzhou"
WRONG_SECRET = "not-the-oss-secret-9f3c"


@pytest.fixture(scope="module", autouse=True)
def _allow_loopback_endpoints() -> Iterator[None]:
    # The OSS double lives on 127.0.0.1: the operator switch core's endpoint guard honours.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", "1")
        yield


def oss_params(endpoint: str | None, **overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "name": "OSS test",
        "type": "oss",
        "enabled": True,
        "oss_access_key": ACCESS_KEY,
        "oss_secret_key": SECRET_KEY,
        "oss_bucket_name": OSS_BUCKET,
        "oss_region_id": REGION_ID,
        "oss_path_prefix": "conformance/%COLLECTION_ID%",
    }
    if endpoint is not None:
        params["oss_endpoint"] = endpoint
    params.update(overrides)
    return params


def raw_bucket(double: OssDouble, bucket: str = OSS_BUCKET) -> Any:
    """An independent oss2 client straight at the double (not through the store under test)."""
    return oss2.Bucket(
        oss2.AuthV4(ACCESS_KEY, SECRET_KEY),
        double.endpoint,
        bucket,
        region=signing_region(REGION_ID),
    )


@pytest.fixture(scope="module")
def oss_proxy(oss_double: OssDouble) -> Iterator[CountingProxy]:
    with CountingProxy(oss_double.endpoint) as proxy:
        yield proxy


def read_meta(bucket: Any, key: str) -> ObjectMeta | None:
    """HeadObject through raw oss2, straight from the double."""
    try:
        headers = bucket.head_object(key).headers
    except oss2.exceptions.NotFound:
        return None
    return {
        "content_type": headers.get("Content-Type"),
        "content_encoding": headers.get("Content-Encoding"),
        "metadata": {
            k[len("x-oss-meta-") :]: v
            for k, v in headers.items()
            if k.lower().startswith("x-oss-meta-")
        },
    }


# --- the shared conformance suite ---------------------------------------------------------


class TestOssConformance(StoreConformance):
    @pytest.fixture
    def destination(self, oss_proxy: CountingProxy) -> Destination:
        return parse_destination(oss_params(oss_proxy.endpoint))

    @pytest.fixture
    def bad_credentials_destination(self, oss_proxy: CountingProxy) -> Destination:
        return parse_destination(oss_params(oss_proxy.endpoint, oss_secret_key=WRONG_SECRET))

    @pytest.fixture
    def missing_bucket_destination(self, oss_proxy: CountingProxy) -> Destination:
        return parse_destination(oss_params(oss_proxy.endpoint, oss_bucket_name="no-such-bkt"))

    @pytest.fixture
    def read_object(self, oss_double: OssDouble) -> Callable[[str], bytes | None]:
        bucket = raw_bucket(oss_double)

        def read(key: str) -> bytes | None:
            try:
                data: bytes = bucket.get_object(key).read()
            except oss2.exceptions.NoSuchKey:
                return None
            return data

        return read

    @pytest.fixture
    def list_keys(self, oss_double: OssDouble) -> Callable[[str], list[str]]:
        bucket = raw_bucket(oss_double)
        return lambda prefix: [o.key for o in oss2.ObjectIterator(bucket, prefix=prefix)]

    @pytest.fixture
    def request_counter(self, oss_proxy: CountingProxy) -> ProxyCounter:
        return oss_proxy.counter()

    @pytest.fixture
    def read_object_meta(self, oss_double: OssDouble) -> Callable[[str], ObjectMeta | None]:
        bucket = raw_bucket(oss_double)
        return lambda key: read_meta(bucket, key)


# --- fields -------------------------------------------------------------------------------


def field_errors(**overrides: Any) -> dict[str, str]:
    with pytest.raises(InvalidDestination) as info:
        parse_destination(oss_params(None, **overrides))
    return info.value.errors


def test_type_metadata() -> None:
    dtype = destinations.get_type("oss")
    assert "oss" in destinations.available_types()
    assert dtype.required_fields == (
        "oss_access_key",
        "oss_secret_key",
        "oss_bucket_name",
        "oss_region_id",
    )
    assert set(dtype.optional_fields) == {
        "oss_path_prefix",
        "oss_endpoint",
        "oss_server_side_encryption",
        "oss_kms_key_id",
        "oss_storage_class",
    }
    assert dtype.secret_fields == {"oss_secret_key"}
    assert dtype.masked_fields == ("oss_access_key",)
    assert dtype.endpoint_fields == ("oss_endpoint",)
    assert dtype.prefix_field == "oss_path_prefix"
    for info in dtype.fields.model_fields.values():
        assert info.description


def test_required_fields_are_named() -> None:
    params = oss_params(None)
    for name in ("oss_access_key", "oss_secret_key", "oss_bucket_name", "oss_region_id"):
        del params[name]
    with pytest.raises(InvalidDestination) as info:
        parse_destination(params)
    assert info.value.errors == {
        "oss_access_key": "required",
        "oss_secret_key": "required",
        "oss_bucket_name": "required",
        "oss_region_id": "required",
    }


@pytest.mark.parametrize("name", ["abc", "a" * 63, "my-bucket-01", "0bucket9"])
def test_valid_bucket_names(name: str) -> None:
    destination = parse_destination(oss_params(None, oss_bucket_name=name))
    assert destination.settings.oss_bucket_name == name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("ab", "3 to 63 characters"),
        ("a" * 64, "3 to 63 characters"),
        ("MyBucket", "lowercase letters, digits and hyphens"),
        ("my_bucket", "lowercase letters, digits and hyphens"),
        ("my.bucket", "lowercase letters, digits and hyphens"),
        ("-bucket", "start and end"),
        ("bucket-", "start and end"),
        ("", "required"),
    ],
)
def test_invalid_bucket_names(name: str, fragment: str) -> None:
    errors = field_errors(oss_bucket_name=name)
    assert list(errors) == ["oss_bucket_name"]
    assert fragment in errors["oss_bucket_name"]


def test_region_must_be_listed_and_error_lists_them() -> None:
    message = field_errors(oss_region_id="oss-mars-1")["oss_region_id"]
    assert "oss-mars-1" in message
    for region in REGIONS:
        assert region in message
    hint = field_errors(oss_region_id="cn-shanghai")["oss_region_id"]
    assert "use 'oss-cn-shanghai'" in hint


def test_region_list_is_the_seeds() -> None:
    assert len(REGIONS) == 23 and len(set(REGIONS)) == 23
    assert {"oss-cn-hangzhou", "oss-me-east-1", "oss-ap-southeast-5"} <= set(REGIONS)


def test_region_is_normalised() -> None:
    d = parse_destination(oss_params(None, oss_region_id=" OSS-CN-Beijing "))
    assert d.settings.oss_region_id == "oss-cn-beijing"
    assert signing_region("oss-cn-beijing") == "cn-beijing"
    assert default_endpoint("oss-cn-beijing") == "https://oss-cn-beijing.aliyuncs.com"


@pytest.mark.parametrize(
    "endpoint",
    [
        "ftp://oss.example.com",
        "oss-cn-hangzhou.aliyuncs.com",
        "https://",
        "https://h/a/path",
        "https://h?x=1",
        "https://h:99999",
    ],
)
def test_invalid_endpoints(endpoint: str) -> None:
    assert list(field_errors(oss_endpoint=endpoint)) == ["oss_endpoint"]


def test_endpoint_with_credentials_is_rejected_without_echo() -> None:
    errors = field_errors(oss_endpoint="https://user:hunter2pw@oss.example.com")
    assert "hunter2pw" not in str(errors)


def test_endpoint_is_normalised_and_empty_means_default() -> None:
    d = parse_destination(oss_params(None, oss_endpoint=" https://oss.example.com:8443/ "))
    assert d.settings.oss_endpoint == "https://oss.example.com:8443"
    assert parse_destination(oss_params(None, oss_endpoint="")).settings.oss_endpoint is None


def test_bad_secret_is_never_echoed() -> None:
    secret = "abc def\nsecret-value-77"
    errors = field_errors(oss_secret_key=secret, oss_bucket_name="X")
    assert set(errors) == {"oss_secret_key", "oss_bucket_name"}
    assert "secret-value-77" not in str(errors)


def test_unknown_and_foreign_fields_are_named() -> None:
    errors = field_errors(oss_colour="blue", local_directory="/tmp")
    assert set(errors) == {"oss_colour", "local_directory"}


def test_secret_not_in_repr() -> None:
    d = parse_destination(oss_params(None))
    assert SECRET_KEY not in f"{d!r} {d} {d.settings!r} {d.to_params()}"


def test_default_endpoint_and_v4_region_without_network() -> None:
    d = parse_destination(oss_params(None, oss_region_id="oss-eu-central-1"))
    with OssStore(d.settings, StoreOptions()) as store:  # type: ignore[arg-type]
        assert store.endpoint == "https://oss-eu-central-1.aliyuncs.com"
        assert store._bucket.region == "eu-central-1"
        assert isinstance(store._bucket.auth, oss2.AuthV4)


def test_options_reach_oss2() -> None:
    d = parse_destination(oss_params(None))
    options = StoreOptions(timeout=7.5, retries=2, max_connections=3)
    with OssStore(d.settings, options) as store:  # type: ignore[arg-type]
        assert store._bucket.timeout == 7.5
        adapter = store._session.session.get_adapter("https://x")
        assert adapter._pool_maxsize == 3
        retry = adapter.max_retries
        assert (retry.total, retry.connect, retry.read, retry.status) == (2, 2, False, 0)


# --- requests on the wire ------------------------------------------------------------------


class RecordingDouble(OssDouble):
    """Also records each request's Authorization scheme/scope, and can answer canned errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.auth_headers: list[str] = []
        self.canned: dict[str, tuple[int, str, str]] = {}
        self.fail_part: int | None = None

    def verify(self, method: str, bucket: str, key: str, params: Any, hdrs: Any) -> None:
        self.auth_headers.append(hdrs.get("authorization", ""))
        super().verify(method, bucket, key, params, hdrs)

    def handle(
        self, method: str, bucket: str, key: str, params: Any, hdrs: Any, body: bytes
    ) -> Any:
        if bucket in self.canned:
            raise OssError(*self.canned[bucket])
        if self.fail_part is not None and params.get("partNumber") == str(self.fail_part):
            raise OssError(500, "InternalError", "We encountered an internal error.")
        return super().handle(method, bucket, key, params, hdrs, body)


CANNED = {
    "wrong-endpoint": (
        403,
        "AccessDenied",
        "The bucket you are attempting to access must be "
        "addressed using the specified endpoint. Please send all future "
        "requests to this endpoint.",
    ),
    "moved-bucket": (
        301,
        "PermanentRedirect",
        "The bucket you are attempting to access must be addressed using the specified endpoint.",
    ),
    "denied-bucket": (403, "AccessDenied", "You have no right to access this object."),
    "broken-bucket": (500, "InternalError", "We encountered an internal error."),
    "skewed-bucket": (
        403,
        "RequestTimeTooSkewed",
        "The difference between the request time and the current time is too large.",
    ),
    "busy-bucket": (503, "ServiceUnavailable", "Thread pool is almost full, please retry later"),
    "qps-bucket": (503, "TotalQpsLimitExceeded", "Max total qps limit is exceeded"),
    "slow-body-bucket": (
        400,
        "RequestTimeout",
        "Your socket connection to the server was not read from or written to within the "
        "timeout period.",
    ),
    "unimplemented-bucket": (501, "NotImplemented", "The requested method is not implemented."),
}


@pytest.fixture
def recording() -> Iterator[RecordingDouble]:
    double = RecordingDouble(dict(OSS_CREDENTIALS), buckets=[OSS_BUCKET, *CANNED])
    double.canned = CANNED
    with double:
        yield double


def open_store(endpoint: str, options: StoreOptions | None = None, **overrides: Any) -> OssStore:
    d = parse_destination(oss_params(endpoint, **overrides))
    return OssStore(d.settings, options or StoreOptions())  # type: ignore[arg-type]


def test_requests_are_signed_v4_for_the_region(recording: RecordingDouble) -> None:
    verify(parse_destination(oss_params(recording.endpoint)), timeout=10)
    assert len(recording.auth_headers) == 2
    for auth in recording.auth_headers:
        assert auth.startswith(f"OSS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
        assert "/cn-hangzhou/oss/aliyun_v4_request" in auth
        assert SECRET_KEY not in auth


def test_small_put_is_one_request(recording: RecordingDouble) -> None:
    with open_store(recording.endpoint) as store:
        store.put("a/one.txt", io.BytesIO(b"hello"), size=5, content_type="text/plain")
        store.put(
            "a/pipe.txt", io.BufferedReader(io.BytesIO(b"piped")), size=None, content_type=None
        )
    assert [(m, p) for m, p, _ in recording.requests] == [
        ("PUT", f"/{OSS_BUCKET}/a/one.txt"),
        ("PUT", f"/{OSS_BUCKET}/a/pipe.txt"),
    ]
    assert recording.get(OSS_BUCKET, "a/pipe.txt") == b"piped"


def test_multipart_sequence_and_part_size(recording: RecordingDouble) -> None:
    options = StoreOptions(multipart_threshold=256 * 1024, part_size=200 * 1024)
    body = os.urandom(450 * 1024)
    with open_store(recording.endpoint, options) as store:
        store.put("big/x.bin", io.BytesIO(body), size=len(body), content_type=None)
    calls = [(m, sorted(parse_qs(q, keep_blank_values=True))) for m, _, q in recording.requests]
    assert calls == [("POST", ["uploads"])] + [("PUT", ["partNumber", "uploadId"])] * 3 + [
        ("POST", ["uploadId"])
    ]
    numbers = [parse_qs(q)["partNumber"] for m, _, q in recording.requests if m == "PUT"]
    assert numbers == [["1"], ["2"], ["3"]]
    assert recording.get(OSS_BUCKET, "big/x.bin") == body


def test_part_size_never_below_oss_minimum(recording: RecordingDouble) -> None:
    options = StoreOptions(multipart_threshold=1, part_size=1)
    body = os.urandom(150 * 1024)
    with open_store(recording.endpoint, options) as store:
        store.put("min/x.bin", io.BytesIO(body), size=len(body), content_type=None)
    parts = [q for m, _, q in recording.requests if m == "PUT"]
    assert len(parts) == 2  # 100 KiB + 50 KiB, not 150 K one-byte parts
    assert recording.get(OSS_BUCKET, "min/x.bin") == body


def test_failed_part_aborts_the_upload(recording: RecordingDouble) -> None:
    recording.fail_part = 2
    options = StoreOptions(multipart_threshold=100 * 1024, part_size=100 * 1024)
    body = os.urandom(250 * 1024)
    with open_store(recording.endpoint, options) as store, pytest.raises(StoreError) as info:
        store.put("fail/x.bin", io.BytesIO(body), size=len(body), content_type=None)
    assert (info.value.code, info.value.provider_code) == ("provider_error", "InternalError")
    method, _, query = recording.requests[-1]
    assert (method, list(parse_qs(query))) == ("DELETE", ["uploadId"])
    assert recording.get(OSS_BUCKET, "fail/x.bin") is None


def test_short_source_fails_fast_and_stores_nothing(recording: RecordingDouble) -> None:
    options = StoreOptions(timeout=5, multipart_threshold=100 * 1024, part_size=100 * 1024)
    with open_store(recording.endpoint, options) as store:
        started = time.monotonic()
        with pytest.raises(StoreError) as info:
            store.put("short.txt", io.BytesIO(b"12345"), size=10, content_type=None)
        assert time.monotonic() - started < 2
        with pytest.raises(StoreError) as info2:
            store.put("short-mp.bin", io.BytesIO(b"x" * 150_000), size=300_000, content_type=None)
    assert info.value.provider_code == info2.value.provider_code == "IncompleteBody"
    # The request is cut before its announced length is sent: nothing is stored.
    assert recording.get(OSS_BUCKET, "short.txt") is None
    method, _, query = recording.requests[-1]
    assert (method, list(parse_qs(query))) == ("DELETE", ["uploadId"])
    assert recording.get(OSS_BUCKET, "short-mp.bin") is None


def test_content_type_is_sent(recording: RecordingDouble) -> None:
    with open_store(recording.endpoint) as store:
        store.put("t.json", io.BytesIO(b"{}"), size=2, content_type="application/x-ndjson")
    meta = raw_bucket(recording).head_object("t.json")
    assert meta.content_type == "application/x-ndjson"


# --- error mapping --------------------------------------------------------------------------


def put_error(endpoint: str, options: StoreOptions | None = None, **overrides: Any) -> StoreError:
    with open_store(endpoint, options, **overrides) as store, pytest.raises(StoreError) as info:
        store.put("probe.txt", io.BytesIO(b"probe"), size=5, content_type="text/plain")
    text = f"{info.value} {info.value!r} {info.value.message}"
    assert SECRET_KEY not in text and WRONG_SECRET not in text
    return info.value


@pytest.mark.parametrize(
    ("bucket", "code", "provider_code", "status", "transient"),
    [
        ("wrong-endpoint", "wrong_region", "AccessDenied", 403, False),
        ("moved-bucket", "wrong_region", "PermanentRedirect", 301, False),
        ("denied-bucket", "access_denied", "AccessDenied", 403, False),
        ("broken-bucket", "provider_error", "InternalError", 500, True),
        ("skewed-bucket", "provider_error", "RequestTimeTooSkewed", 403, False),
        ("absent-bucket", "bucket_not_found", "NoSuchBucket", 404, False),
        ("busy-bucket", "provider_error", "ServiceUnavailable", 503, True),
        ("qps-bucket", "provider_error", "TotalQpsLimitExceeded", 503, True),
        # OSS answers a body that did not arrive in time with a 400: still worth retrying
        ("slow-body-bucket", "provider_error", "RequestTimeout", 400, True),
        # a 5xx no retry can fix
        ("unimplemented-bucket", "provider_error", "NotImplemented", 501, False),
    ],
)
def test_server_errors_map_to_codes(
    recording: RecordingDouble,
    bucket: str,
    code: str,
    provider_code: str,
    status: int,
    transient: bool,
) -> None:
    error = put_error(recording.endpoint, oss_bucket_name=bucket)
    assert (error.code, error.provider_code, error.status) == (code, provider_code, status)
    assert error.transient is transient
    assert "RequestId" not in error.message and "request-id" not in error.message


class CorruptingDouble(OssDouble):
    """Answers every write with a CRC-64 that is not the one of the bytes received, as OSS
    would for a body corrupted on the way."""

    def handle(
        self, method: str, bucket: str, key: str, params: Any, hdrs: Any, body: bytes
    ) -> Any:
        status, out, payload = super().handle(method, bucket, key, params, hdrs, body)
        if "x-oss-hash-crc64ecma" in out:
            out["x-oss-hash-crc64ecma"] = str((int(out["x-oss-hash-crc64ecma"]) + 1) % 2**64)
        return status, out, payload


def test_crc_mismatch_is_transient() -> None:
    with CorruptingDouble(dict(OSS_CREDENTIALS), buckets=[OSS_BUCKET]) as double:
        error = put_error(double.endpoint)
    assert (error.code, error.provider_code, error.transient) == (
        "provider_error",
        "InconsistentError",
        True,
    )


def test_dropped_connection_is_transient(oss_double: OssDouble) -> None:
    # The proxy reads each request's body, then closes the connection without answering.
    with FaultyProxy(oss_double.endpoint, drop=1.0) as faulty:
        error = put_error(faulty.endpoint)
        assert faulty.faults["drop"] == 1
    assert (error.code, error.status, error.transient) == ("endpoint_unreachable", None, True)


def test_503_from_a_gateway_is_transient(oss_double: OssDouble) -> None:
    # A 503 whose body is not OSS's (S3 SlowDown XML from the proxy): transient by status.
    with FaultyProxy(oss_double.endpoint, error=1.0) as faulty:
        error = put_error(faulty.endpoint)
    assert (error.code, error.status, error.transient) == ("provider_error", 503, True)


def test_short_source_is_permanent(oss_double: OssDouble) -> None:
    with open_store(oss_double.endpoint) as store, pytest.raises(StoreError) as info:
        store.put("short.txt", io.BytesIO(b"12345"), size=10, content_type=None)
    assert (info.value.provider_code, info.value.transient) == ("IncompleteBody", False)


def test_wrong_secret_and_unknown_key(oss_double: OssDouble) -> None:
    wrong = put_error(oss_double.endpoint, oss_secret_key=WRONG_SECRET)
    assert (wrong.code, wrong.provider_code) == ("invalid_credentials", "SignatureDoesNotMatch")
    unknown = put_error(oss_double.endpoint, oss_access_key="LTAI5tNobodyKnowsMe")
    assert (unknown.code, unknown.provider_code) == ("invalid_credentials", "InvalidAccessKeyId")


def test_wrong_secret_fails_verification_at_put(oss_double: OssDouble) -> None:
    d = parse_destination(oss_params(oss_double.endpoint, oss_secret_key=WRONG_SECRET))
    with pytest.raises(VerificationFailed) as info:
        verify(d, timeout=10)
    assert (info.value.step, info.value.code) == ("put", "invalid_credentials")


def test_signing_for_another_region_is_rejected(oss_double: OssDouble) -> None:
    # The double, like OSS, recomputes the V4 signature with its own region (cn-hangzhou).
    # It answers SignatureDoesNotMatch; real OSS answers an EC 0002-00000228 error, which
    # map_error turns into wrong_region (see test_region_error_codes_from_real_oss).
    error = put_error(oss_double.endpoint, oss_region_id="oss-cn-shanghai")
    assert error.code == "invalid_credentials"


def test_connection_refused_is_endpoint_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    error = put_error(f"http://127.0.0.1:{port}", StoreOptions(timeout=5, retries=1))
    assert (error.code, error.provider_code) == ("endpoint_unreachable", "ConnectionRefusedError")
    assert error.transient is True
    assert "127.0.0.1" in error.message


def test_silent_server_is_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepts via the backlog, never answers
        port = listener.getsockname()[1]
        started = time.monotonic()
        error = put_error(f"http://127.0.0.1:{port}", StoreOptions(timeout=0.3))
        assert time.monotonic() - started < 3
    assert (error.code, error.provider_code) == ("timeout", "ReadTimeout")


def test_https_to_a_plain_http_server_is_tls_error(oss_double: OssDouble) -> None:
    https = oss_double.endpoint.replace("http://", "https://")
    error = put_error(https, StoreOptions(timeout=5))
    assert error.code == "tls_error"


def test_delete_missing_key_and_delete_errors(oss_double: OssDouble) -> None:
    with open_store(oss_double.endpoint) as store:
        store.delete("never/there.txt")
    with (
        open_store(oss_double.endpoint, oss_secret_key=WRONG_SECRET) as store,
        pytest.raises(StoreError) as info,
    ):
        store.delete("x.txt")
    assert info.value.code == "invalid_credentials"


def _server_error(status: int, code: str, message: str, **extra: str) -> Any:
    details = {"Code": code, "Message": message, "RequestId": "5F0000RID", **extra}
    return oss2.exceptions.ServerError(status, {"x-oss-request-id": "5F0000RID"}, b"", details)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (
            _server_error(
                403,
                "SignatureDoesNotMatch",
                "Invalid signing region in Authorization header.",
                EC="0002-00000228",
            ),
            "wrong_region",
        ),
        (
            _server_error(
                400,
                "InvalidArgument",
                "Invalid signing region in Authorization header.",
                EC="0002-00000226",
            ),
            "wrong_region",
        ),
        (
            _server_error(
                403,
                "AccessDenied",
                "The bucket you are attempting to access must be "
                "addressed using the specified endpoint.",
                Endpoint="oss-cn-beijing.aliyuncs.com",
            ),
            "wrong_region",
        ),
        (_server_error(403, "InvalidAccessKeyId", "no such key"), "invalid_credentials"),
        (_server_error(404, "NoSuchBucket", "missing"), "bucket_not_found"),
        (_server_error(503, "", ""), "provider_error"),
    ],
)
def test_region_error_codes_from_real_oss(error: Any, code: str) -> None:
    mapped = map_error(error, bucket="b", region_id=REGION_ID, host="oss-cn-hangzhou.aliyuncs.com")
    assert mapped.code == code
    assert "5F0000RID" not in mapped.message
    if error.details.get("Endpoint"):
        assert "oss-cn-beijing.aliyuncs.com" in mapped.message
    if error.status == 503:
        assert mapped.provider_code == "HTTP503"


def test_through_the_counting_proxy_verification_is_two_requests(
    oss_proxy: CountingProxy,
) -> None:
    d = parse_destination(oss_params(oss_proxy.endpoint, oss_path_prefix="p/%DATE%/x"))
    verify(d, timeout=10)
    oss_proxy.reset()
    report = verify(d, timeout=10)
    assert [r.method for r in oss_proxy.requests] == ["PUT", "DELETE"]
    assert report.probe_key.startswith("p/destinations-verify-")


# --- 64 MiB through the multipart path ------------------------------------------------------


@pytest.mark.slow
def test_64_mib_multipart_round_trip(oss_double: OssDouble, tmp_path: Path) -> None:
    path, size, digest = tmp_path / "big.bin", 64 * MiB, hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(size // MiB):
            chunk = os.urandom(MiB)
            digest.update(chunk)
            out.write(chunk)
    options = replace(StoreOptions(), multipart_threshold=8 * MiB, part_size=8 * MiB)
    before = len(oss_double.requests)
    with open_store(oss_double.endpoint, options) as store:
        store.put("slow/big.bin", path, size=size, content_type="application/octet-stream")
    parts = [r for r in oss_double.requests[before:] if "partNumber=" in r[2]]
    assert len(parts) == 8
    readback = hashlib.sha256()
    stream = raw_bucket(oss_double).get_object("slow/big.bin")
    while chunk := stream.read(MiB):
        readback.update(chunk)
    assert readback.hexdigest() == digest.hexdigest()
    raw_bucket(oss_double).delete_object("slow/big.bin")


# --- content encoding and metadata -----------------------------------------------------------


def test_encoding_and_metadata_are_sent_as_oss_headers(recording: RecordingDouble) -> None:
    options = StoreOptions(multipart_threshold=100 * 1024, part_size=100 * 1024)
    body = os.urandom(150 * 1024)
    with open_store(recording.endpoint, options) as store:
        for key, data in (("m/one.gz", b"x"), ("m/parts.gz", body)):
            store.put(
                key,
                io.BytesIO(data),
                size=len(data),
                content_type="text/csv",
                content_encoding="gzip",
                metadata={"Origin": "run 7", "batch-2": ""},
            )
    for key in ("m/one.gz", "m/parts.gz"):
        assert read_meta(raw_bucket(recording), key) == {
            "content_type": "text/csv",
            "content_encoding": "gzip",
            "metadata": {"origin": "run 7", "batch-2": ""},
        }


@pytest.mark.parametrize(
    ("encoding", "metadata", "fragment"),
    [
        (None, {"my_key": "v"}, "letters, digits and hyphens"),
        (None, {"a b": "v"}, "letters, digits and hyphens"),
        (None, {"": "v"}, "letters, digits and hyphens"),
        (None, {"Origin": "a", "origin": "b"}, "differ only in case"),
        (None, {"city": "Köln"}, "printable ASCII"),
        (None, {"note": "trailing "}, "printable ASCII"),
        (None, {"big": "x" * (8 * 1024 - len("x-oss-meta-big"))}, "less than 8192"),
        ("gzip\r\nx-oss-meta-injected: 1", None, "content_encoding"),
    ],
)
def test_bad_encoding_or_metadata_is_refused_before_sending(
    recording: RecordingDouble, encoding: str | None, metadata: dict[str, str] | None, fragment: str
) -> None:
    with open_store(recording.endpoint) as store, pytest.raises(StoreError) as info:
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
    assert recording.requests == []


def test_metadata_just_under_the_limit_is_stored(recording: RecordingDouble) -> None:
    value = "x" * (8 * 1024 - 1 - len("x-oss-meta-big"))
    with open_store(recording.endpoint) as store:
        store.put("m/big.txt", io.BytesIO(b"x"), size=1, content_type=None, metadata={"big": value})
    meta = read_meta(raw_bucket(recording), "m/big.txt")
    assert meta is not None and meta["metadata"] == {"big": value}


# --- byte progress -------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "parts"), [(20 * MiB, 3), (5 * MiB, 0)])
def test_progress_adds_up_and_moves_at_least_every_percent(
    recording: RecordingDouble, tmp_path: Path, size: int, parts: int
) -> None:
    # 20 MiB: three parts of 8 MiB or less; 5 MiB: one PutObject.
    path = tmp_path / "progress.bin"
    path.write_bytes(os.urandom(size))
    events: list[int] = []
    assert destinations.get_type("oss").reports_progress is True
    with open_store(recording.endpoint) as store, reporting_progress(events.append):
        store.put("progress/f.bin", path, size=size, content_type=None)
    assert len([q for m, _, q in recording.requests if "partNumber=" in q]) == parts
    assert sum(events) == size
    assert max(events) <= min(8 * MiB, size // 100)
    assert recording.get(OSS_BUCKET, "progress/f.bin") == path.read_bytes()


def test_progress_counts_only_blob_data(recording: RecordingDouble) -> None:
    # The CompleteMultipartUpload XML is not counted: the sum is the file's size exactly.
    options = StoreOptions(multipart_threshold=100 * 1024, part_size=100 * 1024)
    body = os.urandom(250 * 1024)
    events: list[int] = []
    with open_store(recording.endpoint, options) as store, reporting_progress(events.append):
        store.put("progress/p.bin", io.BytesIO(body), size=None, content_type=None)
    assert sum(events) == len(body)
    assert max(events) <= 16 * 1024  # size unknown: urllib3's send chunk


def test_schema_region_is_an_enum_and_every_field_is_described() -> None:
    schema = destinations.get_type("oss").fields.model_json_schema()["properties"]
    assert schema["oss_region_id"]["enum"] == list(REGIONS)
    for name, prop in schema.items():
        assert prop.get("description"), name


# --- server-side encryption and storage class ---------------------------------------------

_OSS_OPTION_HEADERS = {
    "x-oss-server-side-encryption",
    "x-oss-server-side-encryption-key-id",
    "x-oss-storage-class",
}
_KMS_OPTIONS = {
    "oss_server_side_encryption": "KMS",
    "oss_kms_key_id": "9468da86-3509-4f8d-a61e-6eab1eac0000",
    "oss_storage_class": "IA",
}


class TestOssWithUploadOptionsConformance(TestOssConformance):
    """The suite again with SSE-KMS and a storage class set (the double checks the V4
    signature, which covers every x-oss-* header)."""

    @pytest.fixture
    def destination(self, oss_proxy: CountingProxy) -> Destination:
        return parse_destination(oss_params(oss_proxy.endpoint, **_KMS_OPTIONS))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            _KMS_OPTIONS,
            {
                "x-oss-server-side-encryption": "KMS",
                "x-oss-server-side-encryption-key-id": "9468da86-3509-4f8d-a61e-6eab1eac0000",
                "x-oss-storage-class": "IA",
            },
        ),
        (
            {"oss_server_side_encryption": "AES256", "oss_storage_class": "ColdArchive"},
            {"x-oss-server-side-encryption": "AES256", "x-oss-storage-class": "ColdArchive"},
        ),
        ({}, {}),
    ],
)
def test_upload_options_on_probe_and_data_puts(
    oss_double: OssDouble, fields: dict[str, str], expected: dict[str, str]
) -> None:
    """The double does not keep these headers: the recording proxy checks what was sent on
    the probe's PutObject, a data PutObject and InitiateMultipartUpload (not on parts)."""
    from tests.emulators.recording_proxy import RecordingProxy

    with RecordingProxy(oss_double.endpoint) as proxy:
        destination = parse_destination(oss_params(proxy.endpoint, **fields))
        verify(destination, timeout=30)
        options = StoreOptions(multipart_threshold=200 * 1024, part_size=100 * 1024)
        with open_store(proxy.endpoint, options, **fields) as store:
            store.put("opts/small.txt", io.BytesIO(b"s"), size=1, content_type=None)
            big = b"o" * (250 * 1024)
            store.put("opts/big.bin", io.BytesIO(big), size=len(big), content_type=None)
        carrying = [e for e in proxy.sent("PUT") if "partNumber" not in e.query]
        carrying += proxy.sent("POST", query_has="uploads")
        assert len(carrying) == 3
        for exchange in carrying:
            sent = {k: v for k, v in exchange.headers.items() if k in _OSS_OPTION_HEADERS}
            assert sent == expected, exchange.path
        parts = [e for e in proxy.sent("PUT") if "partNumber" in e.query]
        assert len(parts) == 3
        assert all(not (_OSS_OPTION_HEADERS & set(e.headers)) for e in parts)


def test_upload_option_fields() -> None:
    assert list(field_errors(oss_kms_key_id="k1")) == ["oss_kms_key_id"]
    assert list(field_errors(oss_server_side_encryption="SM4")) == ["oss_server_side_encryption"]
    assert list(field_errors(oss_storage_class="STANDARD_IA")) == ["oss_storage_class"]
    blank = parse_destination(
        oss_params(None, oss_server_side_encryption="", oss_kms_key_id="", oss_storage_class="")
    ).settings
    assert blank.oss_server_side_encryption is blank.oss_storage_class is None
    props = OssFields.model_json_schema()["properties"]
    enum = next(o["enum"] for o in props["oss_storage_class"]["anyOf"] if "enum" in o)
    assert enum == ["Standard", "IA", "Archive", "ColdArchive", "DeepColdArchive"]
    assert props["oss_kms_key_id"]["description"]
