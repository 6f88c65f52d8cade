"""destinations-s3's production auth and upload options against moto with auth switched on:
STS AssumeRole with an external ID (moto checks the role's trust policy, its principal and the
sts:ExternalId condition, and the role's own policy on every S3 request), server-side
encryption, canned ACLs and storage classes read back through the raw SDK, and the exact
headers of the probe put and the data puts through a recording proxy.

Its own moto server: the IAM users and roles are created before auth is switched on (the
shared ``moto_server`` only has a user allowed ``s3:*``)."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from destinations import (
    Destination,
    InvalidDestination,
    ResultFile,
    ResultSet,
    StoreOptions,
    VerificationFailed,
    deliver,
    needs_verification,
    open_store,
    parse_destination,
    verify,
)
from destinations.plugin import MiB
from destinations.testing import ObjectMeta, StoreConformance
from destinations_s3 import _assume
from tests.emulators.recording_proxy import RecordedExchange, RecordingProxy
from tests.emulators.servers import (
    MOTO_BOOTSTRAP_KEY,
    MOTO_BOOTSTRAP_SECRET,
    MotoServer,
    ProxyCounter,
    _iam_client,
    s3_client,
    s3_key_lister,
    s3_object_reader,
)

EXTERNAL_ID = "dest-ext-7f3a9c"
OPTIONS = StoreOptions(multipart_threshold=5 * MiB, part_size=5 * MiB, timeout=30.0)
ALLOW_PUT_DELETE = ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]


@dataclass(frozen=True)
class World:
    """moto with auth on, and the IAM principals of the least-privilege setup."""

    server: MotoServer
    bucket: str
    role_arn: str  # trust: only `assumer`, only with EXTERNAL_ID; may put/delete in `bucket`
    open_role_arn: str  # trust: `assumer`, no external ID condition
    assumer: tuple[str, str]  # may only sts:AssumeRole on the two roles
    stranger: tuple[str, str]  # no permission at all
    admin: tuple[str, str]  # s3:* (the raw reader)

    def raw(self) -> Any:
        return s3_client(self.server.endpoint, *self.admin)


def _policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    server = MotoServer()
    try:
        server.start()
    except Exception as exc:
        server.stop()
        pytest.fail(f"moto_server could not start: {exc}", pytrace=False)
    try:
        bucket = f"dest-role-{uuid.uuid4().hex[:10]}"
        iam = _iam_client(server.endpoint, MOTO_BOOTSTRAP_KEY, MOTO_BOOTSTRAP_SECRET)
        raw = s3_client(server.endpoint, MOTO_BOOTSTRAP_KEY, MOTO_BOOTSTRAP_SECRET)
        raw.create_bucket(Bucket=bucket)
        raw.close()
        keys = {}
        for user in ("assumer", "stranger"):
            iam.create_user(UserName=user)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
        assumer_arn = iam.get_user(UserName="assumer")["User"]["Arn"]
        trust = {"Effect": "Allow", "Principal": {"AWS": assumer_arn}, "Action": "sts:AssumeRole"}
        objects = [f"arn:aws:s3:::{bucket}/*", "arn:aws:s3:::no-such-bucket-here/*"]
        arns = {}
        for name, condition in (
            ("destinations-writer", {"StringEquals": {"sts:ExternalId": EXTERNAL_ID}}),
            ("destinations-open-writer", None),
        ):
            statement = dict(trust, Condition=condition) if condition else trust
            arns[name] = iam.create_role(
                RoleName=name, AssumeRolePolicyDocument=_policy(statement)
            )["Role"]["Arn"]
            iam.put_role_policy(
                RoleName=name,
                PolicyName="write-objects",
                PolicyDocument=_policy(
                    {
                        "Effect": "Allow",
                        "Action": [*ALLOW_PUT_DELETE, "s3:PutObjectAcl"],
                        "Resource": objects,
                    }
                ),
            )
        iam.put_user_policy(
            UserName="assumer",
            PolicyName="assume-only",
            PolicyDocument=_policy(
                {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": list(arns.values())}
            ),
        )
        iam.close()
        admin = server.enable_auth()  # from here on every request is checked
        yield World(
            server,
            bucket,
            arns["destinations-writer"],
            arns["destinations-open-writer"],
            keys["assumer"],
            keys["stranger"],
            admin,
        )
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3_proxy(world: World) -> Iterator[RecordingProxy]:
    with RecordingProxy(world.server.endpoint) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def sts_proxy(world: World) -> Iterator[RecordingProxy]:
    with RecordingProxy(world.server.endpoint) as proxy:
        yield proxy


@pytest.fixture(autouse=True)
def _env(
    monkeypatch: pytest.MonkeyPatch, s3_proxy: RecordingProxy, sts_proxy: RecordingProxy
) -> Iterator[None]:
    """type=s3 reaches S3 and STS the way an operator points it anywhere: boto3's
    AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL_STS (two proxies, so STS calls count apart)."""
    monkeypatch.setenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", "1")
    for name in (
        "AWS_ENDPOINT_URL",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "DESTINATIONS_ALLOW_DEFAULT_CREDENTIALS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_proxy.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts_proxy.endpoint)
    _assume.forget_assumed_roles()
    s3_proxy.reset()
    sts_proxy.reset()
    yield
    _assume.forget_assumed_roles()


def _role_params(world: World, **overrides: object) -> dict[str, object]:
    params: dict[str, object] = {
        "name": "role test",
        "enabled": True,
        "type": "s3",
        "s3_access_key_id": world.assumer[0],
        "s3_secret_access_key": world.assumer[1],
        "s3_role_arn": world.role_arn,
        "s3_external_id": EXTERNAL_ID,
        "s3_bucket_name": world.bucket,
        "s3_path_prefix": f"role-{uuid.uuid4().hex[:8]}/%COLLECTION_ID%",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def _assume_calls(sts_proxy: RecordingProxy) -> list[RecordedExchange]:
    return [e for e in sts_proxy.sent("POST") if e.form().get("Action") == "AssumeRole"]


def _meta_reader(raw: Any, bucket: str) -> Callable[[str], ObjectMeta | None]:
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


# --- every auth mode runs the shared conformance suite -----------------------------------


class _RoleConformance(StoreConformance):
    def params(self, world: World) -> dict[str, object]:
        raise NotImplementedError

    @pytest.fixture
    def destination(self, world: World) -> Destination:
        return parse_destination(self.params(world))

    @pytest.fixture
    def bad_credentials_destination(self, world: World) -> Destination:
        params = self.params(world)
        params["s3_secret_access_key"] = "wrong" + world.assumer[1][5:]
        return parse_destination(params)

    @pytest.fixture
    def missing_bucket_destination(self, world: World) -> Destination:
        return parse_destination({**self.params(world), "s3_bucket_name": "no-such-bucket-here"})

    @pytest.fixture
    def raw(self, world: World) -> Iterator[Any]:
        client = world.raw()
        yield client
        client.close()

    @pytest.fixture
    def read_object(self, raw: Any, world: World) -> Callable[[str], bytes | None]:
        return s3_object_reader(raw, world.bucket)

    @pytest.fixture
    def list_keys(self, raw: Any, world: World) -> Callable[[str], list[str]]:
        return s3_key_lister(raw, world.bucket)

    @pytest.fixture
    def request_counter(self, s3_proxy: RecordingProxy) -> ProxyCounter:
        return s3_proxy.counter()  # storage only: STS goes through its own proxy

    @pytest.fixture
    def read_object_meta(self, raw: Any, world: World) -> Callable[[str], ObjectMeta | None]:
        return _meta_reader(raw, world.bucket)


class TestAssumedRoleConformance(_RoleConformance):
    """Key pair allowed only sts:AssumeRole + role + external ID."""

    def params(self, world: World) -> dict[str, object]:
        return _role_params(world)


class TestAssumedRoleWithUploadOptionsConformance(_RoleConformance):
    """The same, with every upload option set (the role may s3:PutObjectAcl)."""

    def params(self, world: World) -> dict[str, object]:
        return _role_params(
            world,
            s3_server_side_encryption="aws:kms",
            s3_kms_key_id="alias/destinations",
            s3_acl="bucket-owner-full-control",
            s3_storage_class="STANDARD_IA",
        )


# --- AssumeRole -------------------------------------------------------------------------


def test_verification_and_delivery_succeed_only_through_the_role(
    world: World, sts_proxy: RecordingProxy, s3_proxy: RecordingProxy
) -> None:
    params = _role_params(world)
    destination = parse_destination(params)
    verify(destination, timeout=30)
    files = [ResultFile(f"part-{i}.jsonl", stream=io.BytesIO(b'{"n": %d}\n' % i)) for i in range(5)]
    result_set = ResultSet("coll-1", "Collection", "rs-1", files)
    report = deliver(result_set, [destination], options=OPTIONS)
    assert report.ok, report[0].error
    assert len(report[0].keys) == 5
    raw = world.raw()
    try:
        for key in report[0].keys:
            assert raw.get_object(Bucket=world.bucket, Key=key)["Body"].read().startswith(b'{"n"')
    finally:
        raw.close()

    # The same key pair without the role: it may not write at all.
    without_role = {k: v for k, v in params.items() if k not in ("s3_role_arn", "s3_external_id")}
    with pytest.raises(VerificationFailed) as info:
        verify(parse_destination(without_role), timeout=30)
    assert (info.value.step, info.value.code) == ("put", "access_denied")
    assert info.value.error.provider_code == "AccessDenied"
    failed = deliver(result_set, [parse_destination(without_role)], options=OPTIONS)
    assert failed[0].status == "failed"
    assert failed[0].error is not None and failed[0].error.code == "access_denied"


def test_assume_role_request_carries_role_external_id_and_session_name(
    world: World, sts_proxy: RecordingProxy
) -> None:
    verify(parse_destination(_role_params(world)), timeout=30)
    (call,) = _assume_calls(sts_proxy)
    form = call.form()
    assert form["RoleArn"] == world.role_arn
    assert form["ExternalId"] == EXTERNAL_ID
    assert form["DurationSeconds"] == str(_assume.DURATION_SECONDS)
    session = form["RoleSessionName"]
    assert session.startswith(f"destinations-{world.bucket}-") and len(session) <= 64
    assert call.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=")
    assert world.assumer[0] in call.headers["authorization"]  # signed with the base pair


def test_missing_external_id_is_not_sent(world: World, sts_proxy: RecordingProxy) -> None:
    """moto 5.2 evaluates a StringEquals condition on an absent key as met (AWS denies), so
    only what is sent can be checked here: no ExternalId parameter at all."""
    destination = parse_destination(_role_params(world, s3_external_id=None))
    verify(destination, timeout=30)  # AWS would refuse this one: the condition is unmet
    (call,) = _assume_calls(sts_proxy)
    assert "ExternalId" not in call.form()


@pytest.mark.parametrize("external_id", ["not-the-right-one", "dest-ext-7f3a9C"])
def test_wrong_external_id_is_access_denied(
    world: World, sts_proxy: RecordingProxy, s3_proxy: RecordingProxy, external_id: str
) -> None:
    destination = parse_destination(_role_params(world, s3_external_id=external_id))
    with pytest.raises(VerificationFailed) as info:
        verify(destination, timeout=30)
    error = info.value.error
    assert (info.value.step, error.code) == ("put", "access_denied")
    assert error.provider_code == "AssumeRole.AccessDenied"
    assert world.role_arn in error.message and "s3_external_id" in error.message
    assert "trust policy" in error.message
    assert error.transient is False
    sent = [c.form().get("ExternalId") for c in _assume_calls(sts_proxy)]
    assert sent == [external_id]
    assert s3_proxy.requests == []  # nothing reached storage


def test_role_the_key_may_not_assume_is_access_denied(world: World) -> None:
    params = _role_params(world, s3_external_id=None)
    params["s3_access_key_id"], params["s3_secret_access_key"] = world.stranger
    with pytest.raises(VerificationFailed) as info:
        verify(parse_destination(params), timeout=30)
    assert info.value.code == "access_denied"
    assert info.value.error.provider_code == "AssumeRole.AccessDenied"


def test_wrong_base_secret_is_invalid_credentials_from_sts(world: World) -> None:
    params = _role_params(world, s3_secret_access_key="wrong" + world.assumer[1][5:])
    with pytest.raises(VerificationFailed) as info:
        verify(parse_destination(params), timeout=30)
    assert info.value.code == "invalid_credentials"
    assert info.value.error.provider_code == "AssumeRole.SignatureDoesNotMatch"
    assert "s3_secret_access_key" in info.value.message


def test_a_wrong_secret_never_reuses_another_destinations_session(world: World) -> None:
    good = _role_params(world)
    verify(parse_destination(good), timeout=30)
    bad = {**good, "s3_secret_access_key": "wrong" + world.assumer[1][5:]}
    with pytest.raises(VerificationFailed) as info:
        verify(parse_destination(bad), timeout=30)
    assert info.value.code == "invalid_credentials"


def test_sts_is_called_once_per_destination_per_validity_window(
    world: World, sts_proxy: RecordingProxy, s3_proxy: RecordingProxy
) -> None:
    destination = parse_destination(_role_params(world))
    verify(destination, timeout=30)
    verify(destination, timeout=30)
    files = [ResultFile(f"f{i}.csv", stream=io.BytesIO(b"a,b\n1,2\n")) for i in range(12)]
    report = deliver(ResultSet("c", "C", "rs", files), [destination], options=OPTIONS)
    assert report.ok
    # 2 verifications (put + delete each) + 12 files, each a single PutObject
    assert len(s3_proxy.sent("PUT")) == 2 + 12 and len(s3_proxy.sent("DELETE")) == 2
    assert len(_assume_calls(sts_proxy)) == 1
    # Another destination (another prefix) is another session.
    other = parse_destination(_role_params(world))
    verify(other, timeout=30)
    calls = _assume_calls(sts_proxy)
    assert len(calls) == 2
    assert calls[0].form()["RoleSessionName"] != calls[1].form()["RoleSessionName"]


def test_credentials_are_refreshed_near_expiry_during_a_long_delivery(
    world: World, sts_proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    destination = parse_destination(_role_params(world))
    real_now = _assume._now
    with open_store(destination, OPTIONS) as store:
        store.put("refresh/a", io.BytesIO(b"a"), size=1, content_type=None)
        store.put("refresh/b", io.BytesIO(b"b"), size=1, content_type=None)
        assert len(_assume_calls(sts_proxy)) == 1
        # 50 minutes later: the 1-hour session is inside botocore's refresh window.
        monkeypatch.setattr(_assume, "_now", lambda: real_now() + timedelta(minutes=50))
        store.put("refresh/c", io.BytesIO(b"c"), size=1, content_type=None)
        assert len(_assume_calls(sts_proxy)) == 2
        monkeypatch.setattr(_assume, "_now", real_now)
        store.put("refresh/d", io.BytesIO(b"d"), size=1, content_type=None)
        assert len(_assume_calls(sts_proxy)) == 2  # the fresh session is used again


def test_default_credentials_only_when_the_operator_allows_them(
    world: World, sts_proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = _role_params(world, s3_access_key_id=None, s3_secret_access_key=None)
    destination = parse_destination(params)  # valid: the role is set
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", world.assumer[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", world.assumer[1])
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    with pytest.raises(VerificationFailed) as info:
        verify(destination, timeout=30)
    assert (info.value.step, info.value.code) == ("put", "invalid_credentials")
    assert "DESTINATIONS_ALLOW_DEFAULT_CREDENTIALS" in info.value.message
    assert _assume_calls(sts_proxy) == []
    monkeypatch.setenv("DESTINATIONS_ALLOW_DEFAULT_CREDENTIALS", "1")
    verify(destination, timeout=30)
    (call,) = _assume_calls(sts_proxy)
    assert world.assumer[0] in call.headers["authorization"]


def test_no_role_and_no_keys_is_refused_at_save() -> None:
    with pytest.raises(InvalidDestination) as info:
        parse_destination({"name": "n", "enabled": True, "type": "s3", "s3_bucket_name": "abc"})
    assert set(info.value.errors) == {"s3_access_key_id", "s3_secret_access_key"}
    assert "s3_role_arn" in info.value.errors["s3_access_key_id"]


def test_open_role_without_external_id_works_and_sends_none(
    world: World, sts_proxy: RecordingProxy
) -> None:
    params = _role_params(world, s3_role_arn=world.open_role_arn, s3_external_id=None)
    verify(parse_destination(params), timeout=30)
    (call,) = _assume_calls(sts_proxy)
    assert "ExternalId" not in call.form()


def test_assumed_credentials_and_secrets_never_leak(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    destination = parse_destination(_role_params(world))
    with open_store(destination, OPTIONS) as store:
        store.put("leak/a", io.BytesIO(b"a"), size=1, content_type=None)
        texts = [repr(store), str(store.__dict__)]
    credentials = _assume.role_credentials(
        role_arn=world.role_arn,
        external_id=EXTERNAL_ID,
        access_key_id=world.assumer[0],
        secret_access_key=world.assumer[1],
        bucket=world.bucket,
        path_prefix=destination.settings.s3_path_prefix,  # type: ignore[attr-defined]
        options=OPTIONS,
        allow_default_credentials=False,
    )
    frozen = credentials.get_frozen_credentials()
    failures = []
    for bad in (
        _role_params(world, s3_external_id="wrong-one"),
        _role_params(world, s3_secret_access_key="wrong" + world.assumer[1][5:]),
    ):
        with pytest.raises(VerificationFailed) as info:
            verify(parse_destination(bad), timeout=30)
        failures.append(f"{info.value} {info.value!r} {info.value.error!r}")
    text = "\n".join([caplog.text, *texts, *failures, repr(destination), str(destination)])
    for secret in (world.assumer[1], frozen.secret_key, frozen.token):
        assert secret and secret not in text
    assert "AssumeRole" in text  # the failures were logged/raised, and are readable


# --- encryption, ACL, storage class ------------------------------------------------------


def _options_destination(world: World, **fields: object) -> Destination:
    return parse_destination(_role_params(world, **fields))


def _put_calls(proxy: RecordingProxy) -> list[RecordedExchange]:
    """PutObject and CreateMultipartUpload requests (what carries the object's settings)."""
    puts = [e for e in proxy.sent("PUT") if "partNumber" not in e.query]
    return puts + proxy.sent("POST", query_has="uploads")


@pytest.mark.parametrize(
    ("fields", "headers", "head"),
    [
        (
            {"s3_server_side_encryption": "AES256", "s3_storage_class": "INTELLIGENT_TIERING"},
            {
                "x-amz-server-side-encryption": "AES256",
                "x-amz-storage-class": "INTELLIGENT_TIERING",
            },
            {"ServerSideEncryption": "AES256", "StorageClass": "INTELLIGENT_TIERING"},
        ),
        (
            {
                "s3_server_side_encryption": "aws:kms",
                "s3_kms_key_id": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab",
                "s3_storage_class": "GLACIER_IR",
                "s3_acl": "bucket-owner-full-control",
            },
            {
                "x-amz-server-side-encryption": "aws:kms",
                "x-amz-server-side-encryption-aws-kms-key-id": (
                    "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab"
                ),
                "x-amz-storage-class": "GLACIER_IR",
                "x-amz-acl": "bucket-owner-full-control",
            },
            {
                "ServerSideEncryption": "aws:kms",
                "SSEKMSKeyId": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab",
                "StorageClass": "GLACIER_IR",
            },
        ),
    ],
)
def test_upload_options_on_probe_and_data_puts(
    world: World,
    s3_proxy: RecordingProxy,
    fields: dict[str, object],
    headers: dict[str, str],
    head: dict[str, str],
) -> None:
    destination = _options_destination(world, **fields)
    verify(destination, timeout=30)
    probe = _put_calls(s3_proxy)
    assert len(probe) == 1
    files = [
        ResultFile("small.csv", stream=io.BytesIO(b"a\n1\n")),
        ResultFile("big.bin", stream=io.BytesIO(b"x" * (6 * MiB))),
    ]
    s3_proxy.reset()
    report = deliver(ResultSet("c", "C", "rs", files), [destination], options=OPTIONS)
    assert report.ok, report[0].error
    data = _put_calls(s3_proxy)
    assert len(data) == 2  # one PutObject, one CreateMultipartUpload
    assert any("uploads" in e.query for e in data)
    for exchange in probe + data:
        sent = {k: v for k, v in exchange.headers.items() if k in _OPTION_HEADERS}
        assert sent == headers, exchange.path
        assert all(h in exchange.headers["authorization"] for h in headers)  # signed
    parts = [e for e in s3_proxy.sent("PUT") if "partNumber" in e.query]
    assert parts and all(not (_OPTION_HEADERS & set(e.headers)) for e in parts)
    raw = world.raw()
    try:
        for key in report[0].keys:
            found = raw.head_object(Bucket=world.bucket, Key=key)
            assert {k: found.get(k) for k in head} == head
            if "s3_acl" in fields:
                grants = raw.get_object_acl(Bucket=world.bucket, Key=key)["Grants"]
                assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]
    finally:
        raw.close()


_OPTION_HEADERS = {
    "x-amz-server-side-encryption",
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-acl",
    "x-amz-storage-class",
}


def test_public_read_acl_is_applied(world: World) -> None:
    destination = _options_destination(world, s3_acl="public-read")
    with open_store(destination, OPTIONS) as store:
        store.put("acl/public.txt", io.BytesIO(b"hi"), size=2, content_type="text/plain")
    raw = world.raw()
    try:
        grants = raw.get_object_acl(Bucket=world.bucket, Key="acl/public.txt")["Grants"]
    finally:
        raw.close()
    assert {
        (g["Grantee"].get("URI", "owner").rsplit("/", 1)[-1], g["Permission"]) for g in grants
    } == {("owner", "FULL_CONTROL"), ("AllUsers", "READ")}


def test_no_options_sends_no_option_headers(world: World, s3_proxy: RecordingProxy) -> None:
    verify(_options_destination(world), timeout=30)
    (put,) = _put_calls(s3_proxy)
    assert not (_OPTION_HEADERS & set(put.headers))


def test_s3compatible_acl_and_storage_class(world: World, s3_proxy: RecordingProxy) -> None:
    params = {
        "name": "compat",
        "enabled": True,
        "type": "s3compatible",
        "s3_endpoint": s3_proxy.endpoint,
        "s3_region": "us-east-1",
        "s3_access_key_id": world.admin[0],
        "s3_secret_access_key": world.admin[1],
        "s3_bucket_name": world.bucket,
        "s3_path_prefix": "compat/",
        "s3_acl": "public-read",
        "s3_storage_class": "STANDARD_IA",
    }
    destination = parse_destination(params)
    verify(destination, timeout=30)
    with open_store(destination, OPTIONS) as store:
        store.put("compat/x.txt", io.BytesIO(b"x"), size=1, content_type="text/plain")
    puts = _put_calls(s3_proxy)
    assert len(puts) == 2
    for put in puts:
        assert put.headers["x-amz-acl"] == "public-read"
        assert put.headers["x-amz-storage-class"] == "STANDARD_IA"
        assert "x-amz-server-side-encryption" not in put.headers
    raw = world.raw()
    try:
        assert raw.head_object(Bucket=world.bucket, Key="compat/x.txt")["StorageClass"] == (
            "STANDARD_IA"
        )
        grants = raw.get_object_acl(Bucket=world.bucket, Key="compat/x.txt")["Grants"]
        assert any(g["Grantee"].get("URI", "").endswith("AllUsers") for g in grants)
    finally:
        raw.close()
    # s3compatible has no SSE or role fields
    with pytest.raises(InvalidDestination) as info:
        parse_destination({**params, "s3_server_side_encryption": "AES256", "s3_role_arn": "x"})
    assert set(info.value.errors) == {"s3_server_side_encryption", "s3_role_arn"}


# --- the fields ---------------------------------------------------------------------------

_BASE = {
    "name": "n",
    "enabled": True,
    "type": "s3",
    "s3_access_key_id": "AKIAEXAMPLEKEY0001",
    "s3_secret_access_key": "s3cr3t/Example+Secret",
    "s3_bucket_name": "abc",
}


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [
        ({"s3_role_arn": "arn:aws:iam::12345:role/x"}, "s3_role_arn", "12-digit"),
        ({"s3_role_arn": "arn:aws:s3:::bucket"}, "s3_role_arn", "IAM role ARN"),
        ({"s3_role_arn": "arn:aws-cn:iam::123456789012:role/x"}, "s3_role_arn", "IAM role"),
        ({"s3_external_id": "abc"}, "s3_external_id", "s3_role_arn"),
        (
            {"s3_role_arn": "arn:aws:iam::123456789012:role/x", "s3_external_id": "a b"},
            "s3_external_id",
            "2 to 1224",
        ),
        ({"s3_kms_key_id": "alias/k"}, "s3_kms_key_id", "aws:kms"),
        (
            {"s3_server_side_encryption": "AES256", "s3_kms_key_id": "alias/k"},
            "s3_kms_key_id",
            "aws:kms",
        ),
        ({"s3_server_side_encryption": "aws:kms:dsse"}, "s3_server_side_encryption", ""),
        ({"s3_acl": "everyone"}, "s3_acl", ""),
        ({"s3_storage_class": "EXPRESS_ONEZONE"}, "s3_storage_class", ""),
        ({"s3_access_key_id": None}, "s3_access_key_id", "required"),
    ],
)
def test_field_rules(fields: dict[str, object], field: str, fragment: str) -> None:
    params = {k: v for k, v in {**_BASE, **fields}.items() if v is not None}
    with pytest.raises(InvalidDestination) as info:
        parse_destination(params)
    assert list(info.value.errors) == [field]
    assert fragment in info.value.errors[field]
    assert "s3cr3t" not in f"{info.value} {info.value!r}"


def test_blank_optional_fields_are_unset_and_a_role_alone_is_valid() -> None:
    blank = {
        f: ""
        for f in (
            "s3_role_arn",
            "s3_external_id",
            "s3_server_side_encryption",
            "s3_kms_key_id",
            "s3_acl",
            "s3_storage_class",
        )
    }
    settings = parse_destination({**_BASE, **blank}).settings
    assert all(getattr(settings, f) is None for f in blank)
    role_only = parse_destination(
        {
            "name": "n",
            "enabled": True,
            "type": "s3",
            "s3_bucket_name": "abc",
            "s3_role_arn": " arn:aws:iam::123456789012:role/team/destinations-writer ",
            "s3_external_id": "ext-1",
        }
    )
    assert role_only.settings.s3_role_arn == (  # type: ignore[attr-defined]
        "arn:aws:iam::123456789012:role/team/destinations-writer"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("s3_server_side_encryption", "AES256"),
        ("s3_acl", "bucket-owner-full-control"),
        ("s3_storage_class", "STANDARD_IA"),
        ("s3_role_arn", "arn:aws:iam::123456789012:role/x"),
    ],
)
def test_changing_an_option_re_verifies(field: str, value: str) -> None:
    old = parse_destination(_BASE)
    new = parse_destination({**_BASE, field: value})
    assert needs_verification(old, new)
    assert not needs_verification(new, parse_destination({**_BASE, field: value, "name": "r"}))


def test_fields_in_the_schema_with_their_enums() -> None:
    from destinations_s3 import S3CompatibleFields, S3Fields

    schema = S3Fields.model_json_schema()["properties"]
    for name in (
        "s3_role_arn",
        "s3_external_id",
        "s3_server_side_encryption",
        "s3_kms_key_id",
        "s3_acl",
        "s3_storage_class",
    ):
        assert schema[name]["description"], name

    def enum(prop: dict[str, Any]) -> list[str]:
        return next(o["enum"] for o in prop["anyOf"] if "enum" in o)

    assert enum(schema["s3_server_side_encryption"]) == ["AES256", "aws:kms"]
    assert "bucket-owner-full-control" in enum(schema["s3_acl"])
    assert {"STANDARD", "STANDARD_IA", "INTELLIGENT_TIERING", "GLACIER_IR"} <= set(
        enum(schema["s3_storage_class"])
    )
    compat = S3CompatibleFields.model_json_schema()["properties"]
    assert {"s3_acl", "s3_storage_class"} <= set(compat)
    assert not {"s3_role_arn", "s3_server_side_encryption", "s3_kms_key_id"} & set(compat)
