"""Resumable multipart: a transient failure of one part re-sends only that part (and the
completion call), counted in bytes on the wire by the fault-injecting proxy.

Every plugin whose service has parts. Through ``retry_part``: ``oss`` (the OSS double),
``azure`` (azurite; shared key and container SAS), the S3 protocol's boto3 engine
(``s3compatible`` on moto with ``DESTINATIONS_S3_ENGINE=boto3``, ``gcs`` with HMAC keys on
moto). With the SDK retrying each part itself under core's part policy
(``part_retry_policy``): the native ``s3compatible`` engine (obstore, on moto) and ``gcs``
with a service-account key (google-cloud-storage's resumable chunks, on the GCS emulator)."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from destinations import (
    Destination,
    ResultFile,
    ResultSet,
    RetryPolicy,
    StoreOptions,
    deliver,
    open_store,
    parse_destination,
)
from destinations.plugin import MiB
from tests.delivery.conftest import (
    TEMPLATE,
    azure_reader,
    oss_destination,
    oss_reader,
    s3_reader,
    s3compatible,
)
from tests.delivery.faulty_proxy import FaultyProxy
from tests.emulators.fixtures import MotoHandle
from tests.emulators.oss_double import OssDouble
from tests.emulators.servers import (
    AZURITE_ACCOUNT_KEY,
    AZURITE_ACCOUNT_NAME,
    Azurite,
    RecordedRequest,
)

SIZE = 64 * MiB + 12345
PART = 8 * MiB
OPTIONS = StoreOptions(timeout=20.0, multipart_threshold=PART, part_size=PART)
RETRY = RetryPolicy(attempts=4, initial=0.01, maximum=0.02)


def _resent_alone(label: str, status: Any, sent: int, stored: bytes, data: bytes) -> None:
    """The file arrived whole, with at most two parts more than its size on the wire (the
    part sent again and the completion request), and was never sent again whole."""
    assert SIZE < sent <= SIZE + 2 * PART, f"{sent - SIZE} bytes sent beyond the file"
    print(f"\n{label}: {sent} bytes on the wire for {SIZE}: +{sent - SIZE}")
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
    assert not any("; attempt" in e.text for e in status.log)  # the object was not resent


class _FailOnce:
    """Fail the first request for part ``number`` of a multipart upload, once."""

    def __init__(self, number: int) -> None:
        self.marker = f"partNumber={number}"
        self.failed = False
        self.lock = threading.Lock()

    def __call__(self, method: str, path: str, query: str) -> bool:
        with self.lock:
            if method == "PUT" and self.marker in query.split("&") and not self.failed:
                self.failed = True
                return True
            return False


def test_oss_resends_only_the_failed_part(tmp_path: Path, oss_double: OssDouble) -> None:
    data = os.urandom(SIZE)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    rs = ResultSet("c", "n", "rs-resume", [ResultFile("big.bin", path)])
    with FaultyProxy(oss_double.endpoint, error_when=_FailOnce(3)) as proxy:
        dest = oss_destination(oss_double, oss_endpoint=proxy.endpoint, oss_path_prefix="resume")
        (status,) = deliver(rs, [dest], options=OPTIONS, retry=RETRY)
        sent = proxy.bytes_in
        parts = [r for r in proxy.requests if "partNumber=" in r.query]
        faults = proxy.faults["error"]
    assert status.status == "success", status.error
    assert faults == 1
    assert len(parts) == -(-SIZE // PART) + 1  # every part once, part 3 twice
    _resent_alone("oss", status, sent, oss_reader(oss_double)(status.keys[0]), data)


def test_a_part_that_keeps_failing_fails_the_file_without_resending_it_whole(
    tmp_path: Path, oss_double: OssDouble
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(3 * PART))

    def part_two(method: str, path: str, query: str) -> bool:
        return method == "PUT" and "partNumber=2" in query.split("&")

    rs = ResultSet("c", "n", "rs-spent", [ResultFile("big.bin", path)])
    with FaultyProxy(oss_double.endpoint, error_when=part_two) as proxy:
        dest = oss_destination(oss_double, oss_endpoint=proxy.endpoint, oss_path_prefix="spent")
        (status,) = deliver(rs, [dest], options=OPTIONS, retry=RETRY)
        parts = [r.query for r in proxy.requests if "partNumber=" in r.query]
    assert status.status == "failed"
    assert status.error is not None and status.error.transient
    # part 1 once, part 2 `attempts` times, nothing after: the file was not sent again whole
    assert len(parts) == 1 + RETRY.attempts


def test_verification_makes_one_attempt_per_part(oss_double: OssDouble) -> None:
    """Outside a delivery there is no retry policy: retry_part calls once."""
    from destinations.plugin import StoreError, retry_part

    calls = []

    def flaky() -> None:
        calls.append(1)
        raise StoreError("provider_error", "busy", status=503)

    try:
        retry_part(flaky)
    except StoreError as exc:
        assert exc.transient
    assert calls == [1]


# -- azure (azurite): Put Block through retry_part --------------------------------------------


def _is_put_block(method: str, query: str) -> bool:
    return method == "PUT" and parse_qs(query).get("comp") == ["block"]


def _block_id(query: str) -> str:
    return parse_qs(query)["blockid"][0]


class _FailBlock:
    """Fail the ``nth`` Put Block request (block ids are random, so by arrival), once; with
    ``always``, every later request for that block too."""

    def __init__(self, nth: int, *, always: bool = False) -> None:
        self.nth, self.always = nth, always
        self.seen = 0
        self.block_id: str | None = None
        self.lock = threading.Lock()

    def __call__(self, method: str, path: str, query: str) -> bool:
        if not _is_put_block(method, query):
            return False
        with self.lock:
            self.seen += 1
            if self.seen == self.nth:
                self.block_id = _block_id(query)
                return True
            return self.always and _block_id(query) == self.block_id


def _azure(azurite: Azurite, container: str, endpoint: str, auth: str) -> Destination:
    params: dict[str, Any] = {
        "name": f"azure ({auth}) through the faulty proxy",
        "enabled": True,
        "type": "azure",
        "azure_account_name": AZURITE_ACCOUNT_NAME,
        "azure_container_name": container,
        "azure_endpoint": endpoint,
        "azure_path_prefix": TEMPLATE,
    }
    if auth == "sas":
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        now = datetime.now(UTC)
        params["azure_sas_token"] = generate_container_sas(
            AZURITE_ACCOUNT_NAME,
            container,
            account_key=AZURITE_ACCOUNT_KEY,
            permission=ContainerSasPermissions(create=True, write=True, delete=True),
            start=now - timedelta(minutes=5),
            expiry=now + timedelta(hours=1),
        )
    else:
        params["azure_account_key"] = AZURITE_ACCOUNT_KEY
    return parse_destination(params)


def _big_file(tmp_path: Path, size: int = SIZE) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize("auth", ["key", "sas"])
def test_azure_resends_only_the_failed_block(
    tmp_path: Path, azurite: Azurite, azure_container: str, auth: str
) -> None:
    path, data = _big_file(tmp_path)
    rs = ResultSet("c", "n", f"rs-azure-resume-{auth}", [ResultFile("big.bin", path)])
    fail = _FailBlock(3)
    with FaultyProxy(azurite.base_url, error_when=fail) as proxy:
        dest = _azure(azurite, azure_container, f"{proxy.endpoint}/{AZURITE_ACCOUNT_NAME}", auth)
        (status,) = deliver(rs, [dest], options=OPTIONS, retry=RETRY)
        sent = proxy.bytes_in
        blocks = Counter(
            _block_id(r.query) for r in proxy.requests if _is_put_block(r.method, r.query)
        )
        lists = [r for r in proxy.requests if parse_qs(r.query).get("comp") == ["blocklist"]]
        faults = proxy.faults["error"]
    assert status.status == "success", status.error
    assert faults == 1 and fail.block_id is not None
    assert len(blocks) == -(-SIZE // PART)  # one id per block
    assert blocks[fail.block_id] == 2 and sum(blocks.values()) == len(blocks) + 1
    assert len(lists) == 1  # one Put Block List
    _resent_alone(
        f"azure ({auth})",
        status,
        sent,
        azure_reader(azurite, azure_container)(status.keys[0]),
        data,
    )


def test_azure_block_that_keeps_failing_fails_the_file_without_resending_it_whole(
    tmp_path: Path, azurite: Azurite, azure_container: str
) -> None:
    path, _ = _big_file(tmp_path, 6 * PART)
    fail = _FailBlock(2, always=True)
    rs = ResultSet("c", "n", "rs-azure-spent", [ResultFile("big.bin", path)])
    with FaultyProxy(azurite.base_url, error_when=fail) as proxy:
        dest = _azure(azurite, azure_container, f"{proxy.endpoint}/{AZURITE_ACCOUNT_NAME}", "key")
        (status,) = deliver(rs, [dest], options=OPTIONS, retry=RETRY)
        blocks = Counter(
            _block_id(r.query) for r in proxy.requests if _is_put_block(r.method, r.query)
        )
        lists = [r for r in proxy.requests if parse_qs(r.query).get("comp") == ["blocklist"]]
    assert status.status == "failed"
    assert status.error is not None and status.error.transient
    assert fail.block_id is not None and blocks[fail.block_id] == RETRY.attempts
    # every other block at most once (those in flight finish, none starts again), no commit
    assert all(n == 1 for block, n in blocks.items() if block != fail.block_id)
    assert len(blocks) <= 6 and not lists


# -- the S3 protocol, boto3 engine (moto): UploadPart through retry_part ----------------------


@pytest.fixture
def boto3_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESTINATIONS_S3_ENGINE", "boto3")


def _s3compatible(moto: MotoHandle, bucket: str, endpoint: str, prefix: str) -> Destination:
    return s3compatible(moto, bucket, endpoint, s3_path_prefix=prefix)


def _gcs_hmac(moto: MotoHandle, bucket: str, endpoint: str, prefix: str) -> Destination:
    return parse_destination(
        {
            "name": "gcs hmac on moto",
            "enabled": True,
            "type": "gcs",
            "gcs_access_key": moto.access_key_id,
            "gcs_secret_key": moto.secret_access_key,
            "gcs_bucket_name": bucket,
            "gcs_endpoint": endpoint,
            "gcs_path_prefix": prefix,
        }
    )


S3_PROTOCOL: dict[str, Callable[[MotoHandle, str, str, str], Destination]] = {
    "s3compatible-boto3": _s3compatible,
    "gcs-hmac": _gcs_hmac,
}


def _part_number(query: str) -> int | None:
    numbers = parse_qs(query).get("partNumber")
    return int(numbers[0]) if numbers else None


_Requests = list[RecordedRequest]


def _s3_multipart_requests(
    proxy: FaultyProxy,
) -> tuple[Counter[int | None], _Requests, _Requests, _Requests]:
    """What the proxy saw of S3 multipart uploads: UploadPart requests by part number, then
    the CreateMultipartUpload, CompleteMultipartUpload and AbortMultipartUpload requests."""
    requests = proxy.requests
    parts = Counter(_part_number(r.query) for r in requests if _part_number(r.query))
    creates = [r for r in requests if r.method == "POST" and "uploads" in r.query]
    completes = [r for r in requests if r.method == "POST" and "uploadId=" in r.query]
    aborts = [r for r in requests if r.method == "DELETE" and "uploadId=" in r.query]
    return parts, creates, completes, aborts


@pytest.mark.parametrize("kind", list(S3_PROTOCOL))
def test_s3_protocol_resends_only_the_failed_part(
    tmp_path: Path,
    moto_server: MotoHandle,
    moto_bucket: str,
    moto_raw: Any,
    boto3_engine: None,
    kind: str,
) -> None:
    path, data = _big_file(tmp_path)
    rs = ResultSet("c", "n", f"rs-{kind}-resume", [ResultFile("big.bin", path)])
    with FaultyProxy(moto_server.endpoint, error_when=_FailOnce(3)) as proxy:
        dest = S3_PROTOCOL[kind](moto_server, moto_bucket, proxy.endpoint, f"resume/{kind}")
        with open_store(dest, OPTIONS) as store:
            assert type(store).__name__ == "S3ProtocolStore"  # the boto3 engine
        proxy.reset()
        (status,) = deliver(rs, [dest], options=OPTIONS, retry=RETRY)
        sent = proxy.bytes_in
        parts = Counter(_part_number(r.query) for r in proxy.requests if _part_number(r.query))
        completes = [r for r in proxy.requests if r.method == "POST" and "uploadId=" in r.query]
        faults = proxy.faults["error"]
    assert status.status == "success", status.error
    assert faults == 1
    assert sorted(parts) == list(range(1, -(-SIZE // PART) + 1))
    assert parts[3] == 2 and all(n == 1 for number, n in parts.items() if number != 3)
    assert len(completes) == 1
    _resent_alone(kind, status, sent, s3_reader(moto_raw, moto_bucket)(status.keys[0]), data)


@pytest.mark.parametrize("kind", list(S3_PROTOCOL))
def test_s3_protocol_part_that_keeps_failing_fails_the_file_and_aborts(
    tmp_path: Path,
    moto_server: MotoHandle,
    moto_bucket: str,
    moto_raw: Any,
    boto3_engine: None,
    kind: str,
) -> None:
    path, _ = _big_file(tmp_path, 6 * PART)

    def part_two(method: str, path: str, query: str) -> bool:
        return method == "PUT" and _part_number(query) == 2

    rs = ResultSet("c", "n", f"rs-{kind}-spent", [ResultFile("big.bin", path)])
    with FaultyProxy(moto_server.endpoint, error_when=part_two) as proxy:
        dest = S3_PROTOCOL[kind](moto_server, moto_bucket, proxy.endpoint, f"spent/{kind}")
        (status,) = deliver(rs, [dest], options=OPTIONS, retry=RETRY)
        parts, creates, completes, aborts = _s3_multipart_requests(proxy)
    assert status.status == "failed"
    assert status.error is not None and status.error.transient
    assert parts[2] == RETRY.attempts
    # every other part at most once (those in flight finish, none starts again)
    assert all(n == 1 for number, n in parts.items() if number != 2)
    assert len(creates) == 1 and not completes and len(aborts) == 1
    pending = moto_raw.list_multipart_uploads(Bucket=moto_bucket, Prefix=f"spent/{kind}")
    assert not pending.get("Uploads")  # aborted: no parts left behind


# -- byte progress: a re-sent part is not counted twice ---------------------------------------


def _progress_with_one_failure(store: Any, path: Path) -> list[int]:
    from destinations._progress import reporting_progress
    from destinations._retry import retrying_parts

    events: list[int] = []
    lock = threading.Lock()

    def record(n: int) -> None:
        with lock:
            events.append(n)

    with reporting_progress(record), retrying_parts(RETRY):
        store.put("progress/big.bin", path, size=path.stat().st_size, content_type=None)
    return events


def test_azure_progress_adds_up_when_a_block_is_resent(
    tmp_path: Path, azurite: Azurite, azure_container: str
) -> None:
    path, _ = _big_file(tmp_path, 3 * PART + 1)
    with FaultyProxy(azurite.base_url, error_when=_FailBlock(2)) as proxy:
        endpoint = f"{proxy.endpoint}/{AZURITE_ACCOUNT_NAME}"
        with open_store(_azure(azurite, azure_container, endpoint, "key"), OPTIONS) as store:
            events = _progress_with_one_failure(store, path)
        faults = proxy.faults["error"]
    assert faults == 1
    assert sum(events) == path.stat().st_size


@pytest.mark.parametrize("kind", list(S3_PROTOCOL))
def test_s3_protocol_progress_adds_up_when_a_part_is_resent(
    tmp_path: Path, moto_server: MotoHandle, moto_bucket: str, boto3_engine: None, kind: str
) -> None:
    path, _ = _big_file(tmp_path, 3 * PART + 1)
    with FaultyProxy(moto_server.endpoint, error_when=_FailOnce(2)) as proxy:
        dest = S3_PROTOCOL[kind](moto_server, moto_bucket, proxy.endpoint, f"progress/{kind}")
        with open_store(dest, OPTIONS) as store:
            events = _progress_with_one_failure(store, path)
        faults = proxy.faults["error"]
    assert faults == 1
    assert sum(events) == path.stat().st_size


# -- the S3 protocol, native engine (obstore on moto): parts retried by obstore -------------
# obstore drives the parts in Rust; within a delivery its per-request retry is configured from
# core's part policy, so a failed part is sent again alone and the completion follows.


@pytest.fixture
def native_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DESTINATIONS_S3_ENGINE", raising=False)
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)  # would pick boto3 for s3compatible


def _native(moto: MotoHandle, bucket: str, endpoint: str, prefix: str) -> Destination:
    dest = _s3compatible(moto, bucket, endpoint, prefix)
    with open_store(dest, OPTIONS) as store:
        assert type(store).__name__ == "NativeS3Store"
    return dest


def test_native_engine_resends_only_the_failed_part(
    tmp_path: Path, moto_server: MotoHandle, moto_bucket: str, moto_raw: Any, native_engine: None
) -> None:
    path, data = _big_file(tmp_path)
    rs = ResultSet("c", "n", "rs-native-resume", [ResultFile("big.bin", path)])
    with FaultyProxy(moto_server.endpoint, error_when=_FailOnce(3)) as proxy:
        dest = _native(moto_server, moto_bucket, proxy.endpoint, "resume/native")
        proxy.reset()
        (status,) = deliver(rs, [dest], options=OPTIONS, retry=RETRY)
        sent = proxy.bytes_in
        parts, creates, completes, _ = _s3_multipart_requests(proxy)
        faults = proxy.faults["error"]
    assert status.status == "success", status.error
    assert faults == 1
    assert sorted(parts) == list(range(1, -(-SIZE // PART) + 1))
    assert parts[3] == 2 and all(n == 1 for number, n in parts.items() if number != 3)
    assert len(creates) == 1 and len(completes) == 1
    _resent_alone("native", status, sent, s3_reader(moto_raw, moto_bucket)(status.keys[0]), data)


def test_native_engine_part_that_keeps_failing_fails_the_file_and_aborts(
    tmp_path: Path, moto_server: MotoHandle, moto_bucket: str, moto_raw: Any, native_engine: None
) -> None:
    path, _ = _big_file(tmp_path, 6 * PART)

    def part_two(method: str, path: str, query: str) -> bool:
        return method == "PUT" and _part_number(query) == 2

    rs = ResultSet("c", "n", "rs-native-spent", [ResultFile("big.bin", path)])
    with FaultyProxy(moto_server.endpoint, error_when=part_two) as proxy:
        dest = _native(moto_server, moto_bucket, proxy.endpoint, "spent/native")
        proxy.reset()
        (status,) = deliver(rs, [dest], options=OPTIONS, retry=RETRY)
        parts, creates, completes, aborts = _s3_multipart_requests(proxy)
    assert status.status == "failed"
    assert status.error is not None and status.error.transient
    assert parts[2] == RETRY.attempts
    assert all(n == 1 for number, n in parts.items() if number != 2)  # none started again
    # the abort is retried like any request of the upload, until it is answered
    assert len(creates) == 1 and not completes and aborts and aborts[-1].status == 204
    pending = moto_raw.list_multipart_uploads(Bucket=moto_bucket, Prefix="spent/native")
    assert not pending.get("Uploads")  # aborted: no parts left behind


def test_native_engine_outside_a_delivery_makes_one_attempt_per_part(
    tmp_path: Path, moto_server: MotoHandle, moto_bucket: str, native_engine: None
) -> None:
    """Verification and direct puts have no part policy: a failed part fails the put once,
    and the error stays retryable for whoever called (core's whole-put retry)."""
    from destinations._retry import is_transient
    from destinations.plugin import StoreError

    path, _ = _big_file(tmp_path, 3 * PART)
    with FaultyProxy(moto_server.endpoint, error_when=_FailOnce(2)) as proxy:
        dest = _native(moto_server, moto_bucket, proxy.endpoint, "once/native")
        proxy.reset()
        with open_store(dest, OPTIONS) as store, pytest.raises(StoreError) as info:
            store.put("once/native/big.bin", path, size=3 * PART, content_type=None)
        parts = Counter(_part_number(r.query) for r in proxy.requests if _part_number(r.query))
    assert parts[2] == 1
    assert info.value.transient and is_transient(info.value)


def test_native_engine_progress_adds_up_when_a_part_is_resent(
    tmp_path: Path, moto_server: MotoHandle, moto_bucket: str, native_engine: None
) -> None:
    path, _ = _big_file(tmp_path, 3 * PART + 1)
    with FaultyProxy(moto_server.endpoint, error_when=_FailOnce(2)) as proxy:
        dest = _native(moto_server, moto_bucket, proxy.endpoint, "progress/native")
        with open_store(dest, OPTIONS) as store:
            events = _progress_with_one_failure(store, path)
        faults = proxy.faults["error"]
    assert faults == 1
    assert sum(events) == path.stat().st_size


# -- gcs with a service-account key (gcp-storage-emulator): resumable chunks -----------------
# google-cloud-storage retries each request of a resumable upload itself, configured from
# core's part policy: a failed chunk is sent again alone (from the chunk it holds in memory,
# same Content-Range), the session is not started again. The proxy fails a chunk *before*
# forwarding it (it reads the whole chunk, answers 503 and forwards nothing), so the emulator
# has persisted exactly what it had before that chunk. It could not stand in for a chunk cut
# off part-way: it keeps the partial bytes and then refuses the re-sent chunk (HTTP 400,
# "Invalid Content-Range start") where GCS ignores re-sent bytes it already persisted.


@pytest.fixture(scope="module")
def gcs_sa_json() -> Any:
    from tests.emulators.gcs_auth import CLIENT_EMAIL, TokenServer, new_key, service_account_json

    server = TokenServer()
    key = new_key()
    server.public_keys[CLIENT_EMAIL] = key.public_key()
    yield service_account_json(key, f"{server.url}/token")
    server.stop()


@pytest.fixture(scope="module")
def gcs_sa_bucket(gcs_emulator: Any) -> str:
    import uuid

    name = f"dest-resume-{uuid.uuid4().hex[:10]}"
    gcs_emulator.create_bucket(name)
    return name


@pytest.fixture
def gcs_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)


def _gcs_sa(key_json: str, bucket: str, endpoint: str, prefix: str) -> Destination:
    return parse_destination(
        {
            "name": "gcs service account through the faulty proxy",
            "enabled": True,
            "type": "gcs",
            "gcs_service_account_json": key_json,
            "gcs_bucket_name": bucket,
            "gcs_endpoint": endpoint,
            "gcs_path_prefix": prefix,
        }
    )


def _gcs_read(gcs_emulator: Any, bucket: str, key: str) -> bytes:
    client = gcs_emulator.client()
    try:
        data: bytes = client.bucket(bucket).blob(key).download_as_bytes()
    finally:
        client.close()
    return data


def _is_chunk(method: str, query: str) -> bool:
    """A request carrying a resumable session's bytes (PUT to the session URL)."""
    return method == "PUT" and "upload_id" in parse_qs(query)


def _is_session_start(method: str, query: str) -> bool:
    return method == "POST" and parse_qs(query).get("uploadType") == ["resumable"]


class _FailChunk:
    """Fail the chunk requests of a resumable upload that arrive ``nth`` (1 = the first);
    with ``always``, every one after the last of them too (chunks go one after another:
    those are that chunk again)."""

    def __init__(self, *nth: int, always: bool = False) -> None:
        self.nth, self.always = frozenset(nth), always
        self.seen = 0
        self.lock = threading.Lock()

    def __call__(self, method: str, path: str, query: str) -> bool:
        if not _is_chunk(method, query):
            return False
        with self.lock:
            self.seen += 1
            return self.seen in self.nth or (self.always and self.seen > max(self.nth))


def test_gcs_service_account_resends_only_the_failed_chunk(
    tmp_path: Path, gcs_emulator: Any, gcs_sa_json: str, gcs_sa_bucket: str, gcs_env: None
) -> None:
    path, data = _big_file(tmp_path)
    chunks = -(-SIZE // PART)
    assert chunks >= 3
    rs = ResultSet("c", "n", "rs-gcs-resume", [ResultFile("big.bin", path)])
    with FaultyProxy(gcs_emulator.endpoint, error_when=_FailChunk(3)) as proxy:
        dest = _gcs_sa(gcs_sa_json, gcs_sa_bucket, proxy.endpoint, "resume/gcs")
        (status,) = deliver(rs, [dest], options=OPTIONS, retry=RETRY)
        sent = proxy.bytes_in
        puts = [r for r in proxy.requests if _is_chunk(r.method, r.query)]
        starts = [r for r in proxy.requests if _is_session_start(r.method, r.query)]
        faults = proxy.faults["error"]
    assert status.status == "success", status.error
    assert faults == 1
    assert len(starts) == 1  # one session: the object was not started again
    assert len(puts) == chunks + 1  # every chunk once, the third twice
    assert [r.status for r in puts].count(503) == 1 and puts[2].status == 503
    _resent_alone(
        "gcs (service account)",
        status,
        sent,
        _gcs_read(gcs_emulator, gcs_sa_bucket, status.keys[0]),
        data,
    )


def test_gcs_service_account_chunk_that_keeps_failing_fails_the_file_without_resending_it(
    tmp_path: Path, gcs_emulator: Any, gcs_sa_json: str, gcs_sa_bucket: str, gcs_env: None
) -> None:
    path, _ = _big_file(tmp_path, 3 * PART)
    rs = ResultSet("c", "n", "rs-gcs-spent", [ResultFile("big.bin", path)])
    with FaultyProxy(gcs_emulator.endpoint, error_when=_FailChunk(2, always=True)) as proxy:
        dest = _gcs_sa(gcs_sa_json, gcs_sa_bucket, proxy.endpoint, "spent/gcs")
        (status,) = deliver(rs, [dest], options=OPTIONS, retry=RETRY)
        puts = [r for r in proxy.requests if _is_chunk(r.method, r.query)]
        starts = [r for r in proxy.requests if _is_session_start(r.method, r.query)]
    assert status.status == "failed"
    assert status.error is not None and status.error.transient
    assert status.error.status == 503
    # chunk 1 once, chunk 2 `attempts` times, then nothing: no new session, no whole resend
    assert [r.status for r in puts] == [308] + [503] * RETRY.attempts
    assert len(starts) == 1
    assert not any("; attempt" in e.text for e in status.log)


def test_gcs_service_account_each_chunk_has_attempts_of_its_own(
    tmp_path: Path, gcs_emulator: Any, gcs_sa_json: str, gcs_sa_bucket: str, gcs_env: None
) -> None:
    """Chunks 2 and 3 each fail ``attempts - 1`` times: both still go through (one budget
    for the whole upload would have run out on chunk 3)."""
    path, data = _big_file(tmp_path, 4 * PART)
    retries = RETRY.attempts - 1
    failing = [*range(2, 2 + retries), *range(3 + retries, 3 + 2 * retries)]
    rs = ResultSet("c", "n", "rs-gcs-budget", [ResultFile("big.bin", path)])
    with FaultyProxy(gcs_emulator.endpoint, error_when=_FailChunk(*failing)) as proxy:
        dest = _gcs_sa(gcs_sa_json, gcs_sa_bucket, proxy.endpoint, "budget/gcs")
        (status,) = deliver(rs, [dest], options=OPTIONS, retry=RETRY)
        puts = [r.status for r in proxy.requests if _is_chunk(r.method, r.query)]
        starts = [r for r in proxy.requests if _is_session_start(r.method, r.query)]
    assert status.status == "success", status.error
    assert puts == [308, *[503] * retries, 308, *[503] * retries, 308, 200]
    assert len(starts) == 1
    assert _gcs_read(gcs_emulator, gcs_sa_bucket, status.keys[0]) == data


def test_gcs_service_account_outside_a_delivery_makes_one_attempt_per_chunk(
    tmp_path: Path, gcs_emulator: Any, gcs_sa_json: str, gcs_sa_bucket: str, gcs_env: None
) -> None:
    """Verification and direct puts have no part policy (and ``retries`` is 0): a failed
    chunk fails the put at once, and the error stays retryable for whoever called."""
    from destinations._retry import is_transient
    from destinations.plugin import StoreError

    path, _ = _big_file(tmp_path, 3 * PART)
    with FaultyProxy(gcs_emulator.endpoint, error_when=_FailChunk(2)) as proxy:
        dest = _gcs_sa(gcs_sa_json, gcs_sa_bucket, proxy.endpoint, "once/gcs")
        with open_store(dest, OPTIONS) as store, pytest.raises(StoreError) as info:
            store.put("once/gcs/big.bin", path, size=3 * PART, content_type=None)
        puts = [r.status for r in proxy.requests if _is_chunk(r.method, r.query)]
    assert puts == [308, 503]
    assert info.value.transient and is_transient(info.value)


@pytest.mark.parametrize("sized", [True, False], ids=["size-known", "size-unknown"])
def test_gcs_service_account_progress_adds_up_when_a_chunk_is_resent(
    tmp_path: Path,
    gcs_emulator: Any,
    gcs_sa_json: str,
    gcs_sa_bucket: str,
    gcs_env: None,
    sized: bool,
) -> None:
    from destinations._progress import reporting_progress
    from destinations._retry import retrying_parts

    size = 3 * PART + 1
    path, data = _big_file(tmp_path, size)
    events: list[int] = []
    lock = threading.Lock()

    def record(n: int) -> None:
        with lock:
            events.append(n)

    key = f"progress/gcs/{'sized' if sized else 'unsized'}.bin"
    with FaultyProxy(gcs_emulator.endpoint, error_when=_FailChunk(2)) as proxy:
        dest = _gcs_sa(gcs_sa_json, gcs_sa_bucket, proxy.endpoint, "progress/gcs")
        with (
            open_store(dest, OPTIONS) as store,
            reporting_progress(record),
            retrying_parts(RETRY),
            path.open("rb") as stream,
        ):
            store.put(key, stream, size=size if sized else None, content_type=None)
        puts = [r.status for r in proxy.requests if _is_chunk(r.method, r.query)]
        faults = proxy.faults["error"]
    assert faults == 1 and puts.count(503) == 1
    assert all(n > 0 for n in events)  # never backwards
    assert sum(events) == size  # the re-sent chunk counted once
    assert _gcs_read(gcs_emulator, gcs_sa_bucket, key) == data


def test_gcs_service_account_checksum_mismatch_is_left_to_a_whole_resend(
    tmp_path: Path, gcs_sa_json: str, gcs_env: None
) -> None:
    """A crc32c mismatch on the final chunk means the object was finalized with the wrong
    bytes: that chunk is not sent again (it cannot mend it), the library deletes the object,
    and the error is left retryable so delivery sends the whole object again. A loopback stub
    answers, since the emulator computes checksums right."""
    import json
    import re

    from destinations._retry import is_transient, retrying_parts
    from destinations.plugin import StoreError
    from tests.plugins._http_stub import Reply, StubRequest, StubServer

    quantum = 256 * 1024
    size = 3 * quantum + 1
    path, _ = _big_file(tmp_path, size)
    where: list[str] = []

    def answer(request: StubRequest) -> Reply:
        if request.method == "POST":
            location = f"{where[0]}/upload/storage/v1/b/abc/o?uploadType=resumable&upload_id=u"
            return 200, {"Location": location}, b""
        if request.method == "DELETE":
            return 204, {}, b""
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", request.headers["content-range"])
        assert match is not None
        end, total = int(match.group(2)), match.group(3)
        if total == "*" or end + 1 < int(total):
            return 308, {"Range": f"bytes=0-{end}"}, b""
        resource = {"name": "k", "bucket": "abc", "size": total, "crc32c": "AAAAAA=="}
        return 200, {"Content-Type": "application/json"}, json.dumps(resource).encode()

    options = StoreOptions(timeout=10.0, multipart_threshold=quantum, part_size=quantum)
    with StubServer(answer) as stub:
        where.append(stub.endpoint)
        dest = _gcs_sa(gcs_sa_json, "abc", stub.endpoint, "crc")
        with (
            open_store(dest, options) as store,
            retrying_parts(RETRY),
            pytest.raises(StoreError) as info,
        ):
            store.put("crc/big.bin", path, size=size, content_type=None)
        methods = [r.method for r in stub.requests]
    assert methods == ["POST", "PUT", "PUT", "PUT", "PUT", "DELETE"]  # the last chunk once
    assert info.value.transient and is_transient(info.value)  # not spent: a whole resend
