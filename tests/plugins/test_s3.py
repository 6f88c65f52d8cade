"""destinations-s3 (types ``s3`` and ``s3compatible``) against moto with auth switched on,
through the counting proxy; a loopback stub for what moto cannot do (region redirects, 5xx,
silent servers)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

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
from destinations_s3 import S3ProtocolStore
from tests.emulators.fixtures import MotoHandle
from tests.emulators.servers import (
    CountingProxy,
    ProxyCounter,
    free_port,
    s3_key_lister,
    s3_object_reader,
)
from tests.plugins._http_stub import Reply, StubRequest, StubServer, s3_error


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The endpoints here are loopback: the operator switch core's endpoint guard honours.
    monkeypatch.setenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", "1")
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)


def _new_bucket(moto: MotoHandle, region: str = "us-east-1") -> str:
    name = f"dest-s3-{uuid.uuid4().hex[:12]}"
    moto.create_bucket(name, region)
    return name


def _s3(moto: MotoHandle, bucket: str, **overrides: object) -> dict[str, object]:
    params: dict[str, object] = {
        "name": "s3 test",
        "enabled": True,
        "type": "s3",
        "s3_access_key_id": moto.access_key_id,
        "s3_secret_access_key": moto.secret_access_key,
        "s3_bucket_name": bucket,
        "s3_path_prefix": "conformance/%COLLECTION_ID%",
    }
    params.update(overrides)
    return params


def _s3compatible(
    moto: MotoHandle, bucket: str, endpoint: str, **overrides: object
) -> dict[str, object]:
    params = _s3(moto, bucket, type="s3compatible", s3_endpoint=endpoint)
    params.update(overrides)
    return params


@pytest.fixture(scope="module")
def proxy(moto_server: MotoHandle) -> Iterator[CountingProxy]:
    with CountingProxy(moto_server.endpoint) as p:
        yield p


@pytest.fixture(scope="module")
def raw(moto_server: MotoHandle) -> Any:
    """An independent boto3 client straight at moto (not through the proxy or the store)."""
    client = moto_server.s3_client()
    yield client
    client.close()


class _MotoConformance(StoreConformance):
    """Shared fixtures; subclasses say which type and region."""

    region = "us-east-1"

    @pytest.fixture(scope="class")
    @classmethod
    def bucket(cls, moto_server: MotoHandle) -> str:
        return _new_bucket(moto_server, cls.region)

    def params(self, moto: MotoHandle, bucket: str, proxy: CountingProxy) -> dict[str, object]:
        raise NotImplementedError

    @pytest.fixture
    def destination(
        self, moto_server: MotoHandle, bucket: str, proxy: CountingProxy
    ) -> Destination:
        return parse_destination(self.params(moto_server, bucket, proxy))

    @pytest.fixture
    def bad_credentials_destination(
        self, moto_server: MotoHandle, bucket: str, proxy: CountingProxy
    ) -> Destination:
        params = self.params(moto_server, bucket, proxy)
        params["s3_secret_access_key"] = "wrong" + moto_server.secret_access_key[5:]
        return parse_destination(params)

    @pytest.fixture
    def missing_bucket_destination(
        self, moto_server: MotoHandle, proxy: CountingProxy
    ) -> Destination:
        return parse_destination(self.params(moto_server, "no-such-bucket-here", proxy))

    @pytest.fixture
    def read_object(self, raw: Any, bucket: str) -> Callable[[str], bytes | None]:
        return s3_object_reader(raw, bucket)

    @pytest.fixture
    def list_keys(self, raw: Any, bucket: str) -> Callable[[str], list[str]]:
        return s3_key_lister(raw, bucket)

    @pytest.fixture
    def request_counter(self, proxy: CountingProxy) -> ProxyCounter:
        return proxy.counter()

    @pytest.fixture
    def read_object_meta(self, raw: Any, bucket: str) -> Callable[[str], ObjectMeta | None]:
        return s3_meta_reader(raw, bucket)


def s3_meta_reader(raw: Any, bucket: str) -> Callable[[str], ObjectMeta | None]:
    """``key -> ObjectMeta | None`` from a HeadObject of a raw boto3 client."""
    from botocore.exceptions import ClientError

    def read(key: str) -> ObjectMeta | None:
        try:
            head = raw.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        return {
            "content_type": head.get("ContentType"),
            "content_encoding": head.get("ContentEncoding"),
            "metadata": dict(head.get("Metadata") or {}),
        }

    return read


class TestS3Conformance(_MotoConformance):
    """type=s3 reaches moto the way an operator would point it anywhere: AWS_ENDPOINT_URL_S3."""

    @pytest.fixture(autouse=True)
    def _endpoint_env(self, monkeypatch: pytest.MonkeyPatch, proxy: CountingProxy) -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)

    def params(self, moto: MotoHandle, bucket: str, proxy: CountingProxy) -> dict[str, object]:
        return _s3(moto, bucket)


class TestS3CompatibleConformance(_MotoConformance):
    def params(self, moto: MotoHandle, bucket: str, proxy: CountingProxy) -> dict[str, object]:
        return _s3compatible(moto, bucket, proxy.endpoint)  # s3_region defaults to "auto"


class TestS3CompatibleEuWest1Conformance(_MotoConformance):
    region = "eu-west-1"

    def params(self, moto: MotoHandle, bucket: str, proxy: CountingProxy) -> dict[str, object]:
        return _s3compatible(moto, bucket, proxy.endpoint, s3_region="eu-west-1")


# --- field validation ---------------------------------------------------------------------

_BASE = {
    "name": "n",
    "enabled": True,
    "s3_access_key_id": "AKIAEXAMPLEKEY0001",
    "s3_secret_access_key": "s3cr3t/Example+Secret",
}


def _errors(params: dict[str, object]) -> dict[str, str]:
    with pytest.raises(InvalidDestination) as info:
        parse_destination(params)
    text = f"{info.value} {info.value!r}"
    assert "s3cr3t" not in text
    return info.value.errors


@pytest.mark.parametrize(
    ("bucket", "fragment"),
    [
        ("ab", "3 to 63"),
        ("a" * 64, "3 to 63"),
        ("My-Bucket", "lowercase"),
        ("my_bucket", "'_'"),
        ("-bucket", "start and end"),
        ("bucket.", "start and end"),
        ("my..bucket", "adjacent dots"),
        ("192.168.10.1", "IP address"),
        ("xn--bucket", "xn--"),
        ("sthree-bucket", "sthree-"),
        ("bucket-s3alias", "-s3alias"),
        ("bucket--ol-s3", "--ol-s3"),
        ("my-bucket--use1-az4--x-s3", "directory bucket"),
        ("   ", "required"),
    ],
)
def test_s3_bucket_naming_rules(bucket: str, fragment: str) -> None:
    errors = _errors({**_BASE, "type": "s3", "s3_bucket_name": bucket})
    assert list(errors) == ["s3_bucket_name"]
    assert fragment in errors["s3_bucket_name"]


@pytest.mark.parametrize("bucket", ["abc", "a" * 63, "my.bucket.name", "logs-2026", "0bucket9"])
def test_s3_bucket_names_accepted(bucket: str) -> None:
    dest = parse_destination({**_BASE, "type": "s3", "s3_bucket_name": bucket})
    assert dest.settings.s3_bucket_name == bucket  # type: ignore[attr-defined]


@pytest.mark.parametrize("bucket", ["My_Bucket", "under_score", "a-b.c", "UPPER"])
def test_s3compatible_is_lenient_about_bucket_names(bucket: str) -> None:
    parse_destination(
        {
            **_BASE,
            "type": "s3compatible",
            "s3_bucket_name": bucket,
            "s3_endpoint": "https://s3.example.com",
        }
    )


@pytest.mark.parametrize("bucket", ["ab", "x" * 64, "has space", "a/b", "ünï"])
def test_s3compatible_bucket_rules(bucket: str) -> None:
    errors = _errors(
        {
            **_BASE,
            "type": "s3compatible",
            "s3_bucket_name": bucket,
            "s3_endpoint": "https://s3.example.com",
        }
    )
    assert list(errors) == ["s3_bucket_name"]


def test_required_fields_are_named() -> None:
    errors = _errors({"name": "n", "enabled": True, "type": "s3compatible"})
    assert set(errors) == {
        "s3_access_key_id",
        "s3_secret_access_key",
        "s3_bucket_name",
        "s3_endpoint",
    }
    assert all(msg == "required" for msg in errors.values())
    errors = _errors({**_BASE, "type": "s3", "s3_bucket_name": "abc", "s3_secret_access_key": ""})
    assert errors == {"s3_secret_access_key": "required"}


@pytest.mark.parametrize(
    ("endpoint", "fragment"),
    [
        ("s3.example.com", "https://"),
        ("ftp://s3.example.com", "https://"),
        ("https://user:pw@s3.example.com", "no user name"),
        ("https://s3.example.com?x=1", "query"),
        ("https://", "host name"),
        ("https://s3.example.com:99999", "port"),
        ("https://bad_host!/", "host name"),
    ],
)
def test_s3_endpoint_must_be_a_url(endpoint: str, fragment: str) -> None:
    errors = _errors(
        {**_BASE, "type": "s3compatible", "s3_bucket_name": "abc", "s3_endpoint": endpoint}
    )
    assert list(errors) == ["s3_endpoint"]
    assert fragment in errors["s3_endpoint"]
    assert "pw@" not in errors["s3_endpoint"]


def test_s3compatible_region_default_and_rules() -> None:
    params = {
        **_BASE,
        "type": "s3compatible",
        "s3_bucket_name": "abc",
        "s3_endpoint": "https://s3.example.com/",
    }
    dest = parse_destination(params)
    assert dest.settings.s3_region == "auto"  # type: ignore[attr-defined]
    assert dest.settings.s3_endpoint == "https://s3.example.com"  # type: ignore[attr-defined]
    for bad in ("eu west", "-eu", "eu_west_1", "1234"):
        assert list(_errors({**params, "s3_region": bad})) == ["s3_region"]
    # s3 has no region or endpoint field: its region is found from the bucket
    assert set(
        _errors(
            {
                **_BASE,
                "type": "s3",
                "s3_bucket_name": "abc",
                "s3_region": "x",
                "s3_endpoint": "https://x.example",
            }
        )
    ) == {"s3_region", "s3_endpoint"}


def test_secret_never_in_repr_or_errors() -> None:
    secret = "s3cr3t with spaces"
    params = {**_BASE, "type": "s3", "s3_bucket_name": "abc", "s3_secret_access_key": secret}
    with pytest.raises(InvalidDestination) as info:
        parse_destination(params)
    assert secret not in f"{info.value!r} {info.value.errors}"
    dest = parse_destination({**params, "s3_secret_access_key": "ok-secret-value"})
    assert "ok-secret-value" not in f"{dest!r} {dest.to_params()}"


def test_two_types_from_one_module() -> None:
    eps = {ep.name: ep.value for ep in entry_points(group="destinations")}
    assert eps["s3"] == eps["s3compatible"] == "destinations_s3"
    dest = parse_destination({**_BASE, "type": "s3", "s3_bucket_name": "abc"})
    dtype = dest.destination_type
    assert dtype.masked_fields == ("s3_access_key_id",)
    assert dtype.secret_fields == {"s3_secret_access_key"}
    assert dtype.prefix_field == "s3_path_prefix"


def test_core_and_listing_types_do_not_import_boto3() -> None:
    code = (
        "import sys, destinations; destinations.available_types();"
        "print('boto3' in sys.modules, 'destinations_s3' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --- behaviour against moto -----------------------------------------------------------------


@pytest.fixture(scope="module")
def bucket(moto_server: MotoHandle) -> str:
    return _new_bucket(moto_server)


def _fail(dest: Destination) -> VerificationFailed:
    with pytest.raises(VerificationFailed) as info:
        verify(dest, timeout=30)
    text = f"{info.value} {info.value!r} {info.value.message}"
    for name in ("s3_secret_access_key",):
        secret = dest.to_params(reveal_secrets=True).get(name)
        assert not secret or str(secret) not in text
    return info.value


def test_unknown_access_key_is_invalid_credentials(
    moto_server: MotoHandle, bucket: str, proxy: CountingProxy
) -> None:
    failure = _fail(
        parse_destination(
            _s3compatible(
                moto_server, bucket, proxy.endpoint, s3_access_key_id="AKIANOSUCHKEY0000000"
            )
        )
    )
    assert (failure.step, failure.code, failure.provider_code) == (
        "put",
        "invalid_credentials",
        "InvalidAccessKeyId",
    )


def test_wrong_secret_names_the_fields(
    moto_server: MotoHandle, bucket: str, proxy: CountingProxy
) -> None:
    failure = _fail(
        parse_destination(
            _s3compatible(moto_server, bucket, proxy.endpoint, s3_secret_access_key="x" * 40)
        )
    )
    assert failure.code == "invalid_credentials"
    assert failure.provider_code == "SignatureDoesNotMatch"
    assert "s3_access_key_id" in failure.message and "s3_secret_access_key" in failure.message


def test_bucket_policy_deny_is_access_denied(moto_server: MotoHandle, raw: Any) -> None:
    name = _new_bucket(moto_server)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": f"arn:aws:s3:::{name}/*",
            }
        ],
    }
    raw.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))
    failure = _fail(parse_destination(_s3compatible(moto_server, name, moto_server.endpoint)))
    assert (failure.step, failure.code) == ("put", "access_denied")


def test_closed_port_is_endpoint_unreachable(moto_server: MotoHandle) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    failure = _fail(parse_destination(_s3compatible(moto_server, "some-bucket", endpoint)))
    assert (failure.step, failure.code) == ("put", "endpoint_unreachable")
    assert "s3_endpoint" in failure.message


def test_tls_to_a_plain_http_server_is_tls_error(moto_server: MotoHandle) -> None:
    endpoint = moto_server.endpoint.replace("http://", "https://")
    failure = _fail(parse_destination(_s3compatible(moto_server, "some-bucket", endpoint)))
    assert (failure.step, failure.code) == ("put", "tls_error")


def test_silent_server_is_timeout(moto_server: MotoHandle) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepts connections (kernel backlog), never answers
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        dest = parse_destination(_s3compatible(moto_server, "some-bucket", endpoint))
        store = open_store(dest, StoreOptions(timeout=0.3))
        with store, pytest.raises(StoreError) as info:
            # delete: a put would first wait botocore's fixed 1 s for "100 Continue"
            store.delete("k")
    assert info.value.code == "timeout"
    assert info.value.provider_code == "ReadTimeoutError"


def test_environment_credentials_and_profiles_do_not_override_the_destination(
    moto_server: MotoHandle, bucket: str, proxy: CountingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENTKEY00")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "environment-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "environment-token")
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    verify(parse_destination(_s3(moto_server, bucket)), timeout=30)
    verify(parse_destination(_s3compatible(moto_server, bucket, proxy.endpoint)), timeout=30)


def test_s3compatible_ignores_aws_endpoint_variables(
    moto_server: MotoHandle, bucket: str, proxy: CountingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    proxy.reset()
    verify(parse_destination(_s3compatible(moto_server, bucket, proxy.endpoint)), timeout=30)
    assert proxy.count == 2


def test_s3_reads_the_global_endpoint_variable(
    moto_server: MotoHandle, bucket: str, proxy: CountingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    proxy.reset()
    verify(parse_destination(_s3(moto_server, bucket)), timeout=30)
    assert [r.method for r in proxy.requests] == ["PUT", "DELETE"]


def _opened(moto: MotoHandle, bucket: str, endpoint: str, **options: Any) -> Any:
    dest = parse_destination(_s3compatible(moto, bucket, endpoint))
    return open_store(dest, StoreOptions(**options))


def test_options_reach_the_client(
    moto_server: MotoHandle, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the boto3 engine's configuration (the native one's: tests/plugins/test_s3_native.py)
    monkeypatch.setenv("DESTINATIONS_S3_ENGINE", "boto3")
    with _opened(
        moto_server, bucket, moto_server.endpoint, timeout=7.5, retries=3, max_connections=4
    ) as store:
        config = store._client.meta.config
        assert (config.connect_timeout, config.read_timeout) == (7.5, 7.5)
        assert config.retries == {"total_max_attempts": 4, "mode": "standard"}
        assert config.max_pool_connections == 4
        assert config.s3 == {"addressing_style": "path"}
        assert config.request_checksum_calculation == "when_required"
        assert config.response_checksum_validation == "when_required"


@pytest.mark.parametrize(("retries", "attempts"), [(0, 1), (1, 2)])
def test_retries_are_exactly_what_core_allows(retries: int, attempts: int) -> None:
    with StubServer(lambda r: s3_error(503, "SlowDown")) as stub:
        store = S3ProtocolStore(
            bucket="abc",
            access_key_id="AKIA0000",
            secret_access_key="secret",
            endpoint_url=stub.endpoint,
            region="auto",
            addressing_style="path",
            options=StoreOptions(retries=retries),
        )
        with store, pytest.raises(StoreError) as info:
            store.put("k", io.BytesIO(b"x"), size=1, content_type=None)
        assert len(stub.requests) == attempts
    assert (info.value.code, info.value.provider_code) == ("provider_error", "SlowDown")


def test_s3compatible_sends_no_checksum_headers_and_uses_path_style() -> None:
    with StubServer(lambda r: (200, {}, b"")) as stub:
        host_endpoint = stub.endpoint.replace("127.0.0.1", "localhost")
        dest = parse_destination(
            {**_BASE, "type": "s3compatible", "s3_bucket_name": "abc", "s3_endpoint": host_endpoint}
        )
        with open_store(dest) as store:
            store.put("dir/k.txt", io.BytesIO(b"hello"), size=5, content_type="text/plain")
        (request,) = stub.requests
    assert request.path == "/abc/dir/k.txt"
    assert not [h for h in request.headers if "checksum" in h]
    assert request.headers["content-type"] == "text/plain"
    assert request.signing_region == "auto"


def test_threshold_boundary(
    moto_server: MotoHandle,
    bucket: str,
    proxy: CountingProxy,
    read_back: Callable[[str], bytes | None],
) -> None:
    threshold = 5 * MiB
    with _opened(
        moto_server, bucket, proxy.endpoint, multipart_threshold=threshold, part_size=5 * MiB
    ) as store:
        below = os.urandom(threshold - 1)
        proxy.reset()
        store.put("t/below.bin", io.BytesIO(below), size=len(below), content_type=None)
        assert [(r.method, r.query) for r in proxy.requests] == [("PUT", "")]
        at = os.urandom(threshold)
        proxy.reset()
        store.put("t/at.bin", io.BytesIO(at), size=len(at), content_type=None)
        assert [r.method for r in proxy.requests] == ["POST", "PUT", "POST"]  # create/part/complete
        small = b"unsized but small"
        proxy.reset()
        store.put("t/unsized.bin", io.BytesIO(small), size=None, content_type=None)
        assert [r.method for r in proxy.requests] == ["PUT"]
    assert read_back("t/below.bin") == below
    assert read_back("t/at.bin") == at
    assert read_back("t/unsized.bin") == small


@pytest.fixture
def read_back(raw: Any, bucket: str) -> Callable[[str], bytes | None]:
    return s3_object_reader(raw, bucket)


def test_size_mismatch_writes_nothing(
    moto_server: MotoHandle, bucket: str, read_back: Callable[[str], bytes | None]
) -> None:
    with _opened(moto_server, bucket, moto_server.endpoint) as store:
        for announced in (3, 10):
            with pytest.raises(StoreError) as info:
                store.put("t/mismatch", io.BytesIO(b"12345"), size=announced, content_type=None)
            assert info.value.provider_code == "IncompleteBody"
    assert read_back("t/mismatch") is None


def test_store_is_reusable_by_other_plugins(
    moto_server: MotoHandle, bucket: str, read_back: Callable[[str], bytes | None]
) -> None:
    store = S3ProtocolStore(
        bucket=bucket,
        access_key_id=moto_server.access_key_id,
        secret_access_key=moto_server.secret_access_key,
        endpoint_url=moto_server.endpoint,
        region="auto",
        addressing_style="path",
        checksums="when_required",
        options=StoreOptions(),
    )
    with store:
        store.put("reuse/k", io.BytesIO(b"reused"), size=6, content_type=None)
        store.delete("reuse/k")
        store.delete("reuse/k")


# --- wrong region -----------------------------------------------------------------------------


def _regional(bucket_region: str, reveal: bool) -> Callable[[StubRequest], Reply]:
    """A stub S3 whose bucket lives in ``bucket_region``; requests signed for another region
    get the redirect AWS answers, with or without the region in it."""

    def answer(request: StubRequest) -> Reply:
        if request.signing_region != bucket_region:
            if not reveal:
                return s3_error(301, "PermanentRedirect", Endpoint="s3.amazonaws.com")
            if request.method == "HEAD":
                return 301, {"x-amz-bucket-region": bucket_region}, b""
            return s3_error(400, "AuthorizationHeaderMalformed", Region=bucket_region)
        return (204, {}, b"") if request.method == "DELETE" else (200, {}, b"")

    return answer


def _aws_dest(bucket: str) -> Destination:
    return parse_destination({**_BASE, "type": "s3", "s3_bucket_name": bucket})


def test_s3_follows_the_bucket_to_its_region_then_goes_there_directly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with StubServer(_regional("eu-west-1", reveal=True)) as stub:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", stub.endpoint)
        dest = _aws_dest(f"eu-bucket-{uuid.uuid4().hex[:8]}")
        verify(dest, timeout=30)
        first = [(r.method, r.signing_region) for r in stub.requests]
        assert first == [("PUT", "us-east-1"), ("PUT", "eu-west-1"), ("DELETE", "eu-west-1")]
        stub.reset()
        verify(dest, timeout=30)  # a new store: the learned region costs no extra request
        assert [(r.method, r.signing_region) for r in stub.requests] == [
            ("PUT", "eu-west-1"),
            ("DELETE", "eu-west-1"),
        ]


def test_s3_unknown_region_is_wrong_region(monkeypatch: pytest.MonkeyPatch) -> None:
    with StubServer(_regional("ap-south-1", reveal=False)) as stub:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", stub.endpoint)
        failure = _fail(_aws_dest(f"far-bucket-{uuid.uuid4().hex[:8]}"))
        # botocore asks HeadBucket once; the store stops it from asking again and again
        assert [r.method for r in stub.requests] == ["PUT", "HEAD"]
    assert (failure.step, failure.code, failure.provider_code) == (
        "put",
        "wrong_region",
        "PermanentRedirect",
    )
    assert "did not say which region" in failure.message


def test_s3compatible_wrong_region_names_the_region() -> None:
    def always_redirect(request: StubRequest) -> Reply:
        return s3_error(301, "PermanentRedirect", Region="eu-central-1")

    with StubServer(always_redirect) as stub:
        failure = _fail(
            parse_destination(
                {
                    **_BASE,
                    "type": "s3compatible",
                    "s3_bucket_name": "abc",
                    "s3_endpoint": stub.endpoint,
                    "s3_region": "us-east-1",
                }
            )
        )
    assert failure.code == "wrong_region"
    assert "'eu-central-1'" in failure.message and "s3_region" in failure.message


def test_s3compatible_missing_key_on_delete_is_success() -> None:
    with StubServer(lambda r: s3_error(404, "NoSuchKey")) as stub:
        dest = parse_destination(
            {**_BASE, "type": "s3compatible", "s3_bucket_name": "abc", "s3_endpoint": stub.endpoint}
        )
        with open_store(dest) as store:
            store.delete("gone")


# --- large upload -------------------------------------------------------------------------------


@pytest.mark.slow
def test_64_mib_multipart_round_trip_with_flat_memory(
    moto_server: MotoHandle, bucket: str, raw: Any, tmp_path: Path
) -> None:
    path = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(64):
            block = os.urandom(MiB)
            digest.update(block)
            out.write(block)
    size = path.stat().st_size
    options = StoreOptions(multipart_threshold=8 * MiB, part_size=8 * MiB, max_connections=4)
    dest = parse_destination(_s3compatible(moto_server, bucket, moto_server.endpoint))
    tracemalloc.start()
    try:
        with open_store(dest, options) as store:
            store.put("big/64mib.bin", path, size=size, content_type="application/octet-stream")
            engine = getattr(store, "engine", "boto3")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # boto3 reads a part when a slot is free; the native engine's 1 MiB reads stay with
    # obstore until their part is sent: its 32 MiB budget of parts in flight, plus the part
    # being filled
    limit = 24 * MiB if engine == "boto3" else 40 * MiB
    assert peak < limit, f"peak traced memory {peak / MiB:.1f} MiB ({engine})"
    back = hashlib.sha256()
    body = raw.get_object(Bucket=bucket, Key="big/64mib.bin")["Body"]
    for chunk in body.iter_chunks(MiB):
        back.update(chunk)
    assert back.hexdigest() == digest.hexdigest()
    parts = raw.head_object(Bucket=bucket, Key="big/64mib.bin").get("PartsCount")
    assert parts in (None, 8)  # moto reports PartsCount only with PartNumber queries
    assert threading.active_count() < 50


# --- byte progress --------------------------------------------------------------------------


def _progress_events(store: Any, key: str, source: Any, size: int | None) -> list[int]:
    events: list[int] = []
    lock = threading.Lock()

    def record(nbytes: int) -> None:
        with lock:
            events.append(nbytes)

    with reporting_progress(record):
        store.put(key, source, size=size, content_type="application/octet-stream")
    return events


@pytest.mark.parametrize("kind", ["path", "stream", "small"])
def test_progress_adds_up_and_comes_often(
    moto_server: MotoHandle,
    bucket: str,
    tmp_path: Path,
    read_back: Callable[[str], bytes | None],
    kind: str,
) -> None:
    size = 20 * MiB if kind != "small" else 5 * MiB
    body = os.urandom(size)
    path = tmp_path / "p.bin"
    path.write_bytes(body)
    source: Any = path if kind == "path" else io.BytesIO(body)
    options = StoreOptions(multipart_threshold=8 * MiB, part_size=8 * MiB, max_connections=4)
    for params in (
        _s3compatible(moto_server, bucket, moto_server.endpoint),  # checksums when required
        _s3(moto_server, bucket),  # default checksums: a body read for them is not progress
    ):
        dest = parse_destination(params)
        with pytest.MonkeyPatch.context() as env:
            env.setenv("AWS_ENDPOINT_URL_S3", moto_server.endpoint)
            with open_store(dest, options) as store:
                source = path if kind == "path" else io.BytesIO(body)
                events = _progress_events(store, f"progress/{kind}.bin", source, size)
        assert sum(events) == size, params["type"]
        assert all(n > 0 for n in events)
        assert max(events) <= min(8 * MiB, size // 100), (params["type"], sorted(set(events)))
        assert read_back(f"progress/{kind}.bin") == body


def test_reports_progress_is_declared() -> None:
    from destinations import get_type

    assert get_type("s3").reports_progress and get_type("s3compatible").reports_progress


# --- content encoding and metadata on the wire ------------------------------------------------


def test_encoding_and_metadata_headers_on_the_wire() -> None:
    with StubServer(lambda r: (200, {}, b"")) as stub:
        dest = parse_destination(
            {**_BASE, "type": "s3compatible", "s3_bucket_name": "abc", "s3_endpoint": stub.endpoint}
        )
        with open_store(dest) as store:
            store.put(
                "k.csv.gz",
                io.BytesIO(b"x"),
                size=1,
                content_type="text/csv",
                content_encoding="gzip",
                metadata={"origin": "conformance", "Result-Set": "rs 1"},
            )
            store.put("plain", io.BytesIO(b"y"), size=1, content_type=None)
        first, second = stub.requests
    assert first.headers["content-encoding"] == "gzip"
    assert first.headers["x-amz-meta-origin"] == "conformance"
    assert first.headers["x-amz-meta-result-set"] == "rs 1"
    assert "content-encoding" not in second.headers
    assert not [h for h in second.headers if h.startswith("x-amz-meta-")]


# --- transient or not: the plugin's word ---------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "transient"),
    [
        (503, "SlowDown", True),
        (400, "RequestTimeout", True),
        (500, "InternalError", True),
        (400, "BadDigest", True),
        (503, "SomethingNew", True),  # no code known: the status decides (generic rule)
        (400, "InvalidArgument", False),
        (403, "AccessDenied", False),
        (404, "NoSuchBucket", False),
    ],
)
def test_error_mapper_sets_status_and_transient(status: int, code: str, transient: bool) -> None:
    with StubServer(lambda r: s3_error(status, code)) as stub:
        store = S3ProtocolStore(
            bucket="abc",
            access_key_id="AKIA0000",
            secret_access_key="secret",
            endpoint_url=stub.endpoint,
            region="auto",
            addressing_style="path",
            options=StoreOptions(),
        )
        with store, pytest.raises(StoreError) as info:
            store.put("k", io.BytesIO(b"x"), size=1, content_type=None)
    assert (info.value.status, info.value.provider_code) == (status, code)
    assert info.value.transient is transient


def test_dropped_connection_is_transient_endpoint_unreachable() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]

        def drop() -> None:
            conn, _ = listener.accept()
            conn.recv(65536)
            conn.close()  # no answer at all

        thread = threading.Thread(target=drop, daemon=True)
        thread.start()
        store = S3ProtocolStore(
            bucket="abc",
            access_key_id="AKIA0000",
            secret_access_key="secret",
            endpoint_url=f"http://127.0.0.1:{port}",
            region="auto",
            addressing_style="path",
            options=StoreOptions(timeout=5),
        )
        with store, pytest.raises(StoreError) as info:
            store.delete("k")
        thread.join(5)
    assert info.value.code == "endpoint_unreachable"
    assert info.value.transient is True


def test_stream_giving_more_than_announced_is_refused(
    moto_server: MotoHandle, bucket: str, read_back: Callable[[str], bytes | None]
) -> None:
    options = StoreOptions(multipart_threshold=5 * MiB, part_size=5 * MiB)
    with _opened(moto_server, bucket, moto_server.endpoint, **vars_of(options)) as store:
        for announced in (6 * MiB, 6 * MiB + 2):
            with pytest.raises(StoreError) as info:
                body = io.BytesIO(os.urandom(6 * MiB + 1))
                store.put("t/over", body, size=announced, content_type=None)
            assert info.value.provider_code == "IncompleteBody"
            assert info.value.transient is False
    assert read_back("t/over") is None


def vars_of(options: StoreOptions) -> dict[str, Any]:
    return {name: getattr(options, name) for name in options.__dataclass_fields__}
