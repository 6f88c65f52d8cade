"""destinations.deliver against the real servers: every type at once, failures, faults,
manifests, streams and observers."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

import destinations
from destinations import (
    DeliveryProgress,
    DeliveryReport,
    DestinationStatus,
    ResultFile,
    ResultSet,
    RetryPolicy,
    StoreError,
    deliver,
    hookimpl,
    is_transient,
)
from destinations.plugin import MiB, open_source
from tests.delivery.conftest import (
    OPTIONS,
    Payload,
    Target,
    azure_destination,
    local_destination,
    local_reader,
    make_payload,
    no_secret_in,
    s3_reader,
    s3compatible,
)
from tests.delivery.faulty_proxy import FaultyProxy
from tests.emulators.fixtures import MotoHandle
from tests.emulators.servers import Azurite, CountingProxy

FAST_RETRY = RetryPolicy(attempts=10, initial=0.02, maximum=0.2, deadline=30)


@pytest.fixture
def moto_proxy(moto_server: MotoHandle) -> Iterator[CountingProxy]:
    with CountingProxy(moto_server.endpoint) as proxy:
        yield proxy


def _statuses(report: DeliveryReport) -> list[str]:
    return [s.status for s in report]


def check_progress(
    events: list[DeliveryProgress], report: DeliveryReport, payload: Payload
) -> None:
    """Every file's progress reaches its size, never runs backwards within an attempt, and
    moves at least every 8 MiB or 1 % of the file (whichever is smaller) — for every type."""
    by_file: dict[tuple[int, str], list[DeliveryProgress]] = {}
    for event in events:
        by_file.setdefault((id(event.destination), event.key), []).append(event)
    for status in report:
        for key, (name, body) in zip(status.keys, payload.data.items(), strict=True):
            seen = by_file.get((id(status.destination), key))
            who = f"{status.destination.type} {name}"
            assert seen, f"no progress for {who}"
            assert seen[-1].bytes_sent == len(body) == seen[-1].bytes_total, who
            assert {e.file_name for e in seen} == {name}
            last = [e for e in seen if e.attempt == seen[-1].attempt]
            sent = [0] + [e.bytes_sent for e in last]
            assert sent == sorted(sent), f"{who} ran backwards"
            if len(body) >= 1 * MiB:
                step = min(8 * MiB, len(body) // 100)
                gaps = [b - a for a, b in itertools.pairwise(sent)]
                assert max(gaps) <= step, f"{who}: a {max(gaps)}-byte jump (at most {step})"


# -- every type at once ---------------------------------------------------------------------


def test_a_result_set_reaches_every_type_at_once(
    payload: Payload,
    every_type: Callable[..., list[Target]],
    moto_raw: Any,
    moto_bucket: str,
) -> None:
    targets = every_type()
    events: list[DeliveryProgress] = []
    report = deliver(
        payload.result_set, [d for d, _ in targets], options=OPTIONS, on_progress=events.append
    )

    assert _statuses(report) == ["success"] * len(targets), [s.error for s in report]
    check_progress(events, report, payload)
    names = list(payload.data)
    tails = set()
    for status, (destination, read) in zip(report, targets, strict=True):
        assert status.destination is destination
        assert len(status.keys) == len(names)
        assert status.bytes == sum(len(b) for b in payload.data.values())
        for key, name in zip(status.keys, names, strict=True):
            assert key.endswith("/" + name)
            assert read(key) == payload.data[name], (destination.type, key)
            # One `now` for the whole set: every key has the same date and hour.
            tails.add(key.split("deliveries/", 1)[1].rsplit("/", 1)[0])
    assert len(tails) == 1
    (tail,) = tails
    assert tail.startswith("Daily_Products/")  # the name is one segment
    head = moto_raw.head_object(Bucket=moto_bucket, Key=report[3].keys[1])
    assert head["ContentType"] == "application/x-ndjson"


# -- isolation, permanent errors, secrets ----------------------------------------------------


def test_bad_credentials_fail_alone_not_retried_and_nothing_secret_is_logged(
    tmp_path: Path,
    payload: Payload,
    moto_server: MotoHandle,
    moto_bucket: str,
    moto_proxy: CountingProxy,
    azurite: Azurite,
    azure_container: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "wrong-secret-" + "x" * 27
    good = local_destination(tmp_path / "local")
    bad = s3compatible(moto_server, moto_bucket, moto_proxy.endpoint, s3_secret_access_key=wrong)
    disabled = azure_destination(azurite, azure_container, enabled=False)
    caplog.set_level(logging.DEBUG)

    report = deliver(payload.result_set, [good, bad, disabled], options=OPTIONS, retry=FAST_RETRY)

    assert _statuses(report) == ["success", "failed", "skipped"]
    assert not report.ok
    failed = report[1]
    assert failed.error is not None
    assert (failed.error.code, failed.error.step) == ("invalid_credentials", "put")
    assert failed.error.provider_code == "SignatureDoesNotMatch"
    assert failed.keys == () and failed.bytes == 0
    assert report[2].keys == () and "disabled" in report[2].log[0].text
    # Permanent: no key was tried twice, and no more requests than files.
    paths = [r.path for r in moto_proxy.requests]
    assert 1 <= len(paths) <= len(payload.data)
    assert len(paths) == len(set(paths))
    for name, body in payload.data.items():
        assert (
            tmp_path / "local" / report[0].keys[0].rsplit("/", 1)[0] / name
        ).read_bytes() == body

    text = caplog.text + repr(report) + json.dumps([s.to_dict() for s in report])
    no_secret_in(text, wrong, moto_server.secret_access_key)


def test_transient_errors_are_retried_until_the_attempts_run_out(
    payload: Payload, moto_server: MotoHandle, moto_bucket: str
) -> None:
    small = ResultSet("c", "n", "r", [f for f in payload.result_set.files if f.name != "big.zip"])
    with FaultyProxy(moto_server.endpoint, error=1.0) as proxy:
        dest = s3compatible(moto_server, moto_bucket, proxy.endpoint)
        retry = RetryPolicy(attempts=3, initial=0.01, maximum=0.02)
        report = deliver(small, [dest], options=OPTIONS, retry=retry, concurrency=1)
        first = [r.path for r in proxy.requests if r.path.endswith("/orders.json")]
    (status,) = report
    assert status.status == "failed"
    assert status.error is not None
    assert (status.error.code, status.error.provider_code) == ("provider_error", "SlowDown")
    assert len(first) == 3  # exactly `attempts` tries of the first file
    assert sum("; attempt" in e.text for e in status.log) == 2


def test_every_file_arrives_through_503s_drops_and_slow_answers(
    tmp_path: Path, moto_server: MotoHandle, moto_bucket: str, moto_raw: Any
) -> None:
    payload = make_payload(tmp_path / "files")
    extra = {f"part-{i:02d}.jsonl": b'{"n": %d}\n' % i * (i + 1) for i in range(16)}
    files = list(payload.result_set.files)
    files += [ResultFile(name, stream=io.BytesIO(body)) for name, body in extra.items()]
    rs = ResultSet("c-1", "faults", "rs-faults", files)
    data = {**payload.data, **extra}
    options = OPTIONS.__class__(
        timeout=1.0, multipart_threshold=OPTIONS.multipart_threshold, part_size=OPTIONS.part_size
    )
    with FaultyProxy(
        moto_server.endpoint, seed=20261127, error=0.08, drop=0.05, slow=0.06, delay=1.3
    ) as proxy:
        dest = s3compatible(moto_server, moto_bucket, proxy.endpoint, s3_path_prefix="faults")
        report = deliver(rs, [dest], options=options, retry=replace(FAST_RETRY, attempts=14))
        faults = proxy.faults
    (status,) = report
    assert status.status == "success", status.error
    assert faults["error"] and faults["drop"] and faults["slow"], faults
    read = s3_reader(moto_raw, moto_bucket)
    for key, name in zip(status.keys, data, strict=True):
        assert read(key) == data[name]
    retried = [e.text for e in status.log if "; attempt" in e.text]
    assert retried
    assert any("SlowDown" in t for t in retried)
    assert any("endpoint_unreachable" in t or "timeout" in t for t in retried)


# -- manifest -------------------------------------------------------------------------------


def test_manifest_lists_every_file_and_is_written_last(
    tmp_path: Path,
    payload: Payload,
    moto_server: MotoHandle,
    moto_bucket: str,
    moto_raw: Any,
    moto_proxy: CountingProxy,
) -> None:
    s3 = s3compatible(
        moto_server, moto_bucket, moto_proxy.endpoint, manifest=True, s3_path_prefix="m/%DATE%"
    )
    local = local_destination(tmp_path / "local", manifest=True, local_path_prefix="m")
    now = datetime(2026, 11, 27, 13, 5, tzinfo=UTC)
    report = deliver(payload.result_set, [s3, local], options=OPTIONS, now=now)
    assert _statuses(report) == ["success", "success"]

    manifest_key = f"m/2026_11_27/manifest-{payload.result_set.result_set_id}.json"
    assert report[0].manifest_key == manifest_key == report[0].keys[-1]
    requests = moto_proxy.requests
    assert requests[-1].method == "PUT" and requests[-1].path.endswith(manifest_key)
    assert sum(r.path.endswith(".json") and "manifest" in r.path for r in requests) == 1

    manifest = json.loads(s3_reader(moto_raw, moto_bucket)(manifest_key))
    assert manifest["result_set_id"] == payload.result_set.result_set_id
    assert manifest["collection_id"] == "c-42"
    assert manifest["collection_name"] == "Daily/Products"
    assert manifest["created_at"] == "2026-11-27T13:05:00.000Z"
    expected_types = ["application/json", "application/x-ndjson", "text/csv", "application/zip"]
    assert [f["content_type"] for f in manifest["files"]] == expected_types
    for entry, (name, body) in zip(manifest["files"], payload.data.items(), strict=True):
        assert entry["key"] == f"m/2026_11_27/{name}"
        assert entry["size"] == len(body)
        assert entry["sha256"] == hashlib.sha256(body).hexdigest()

    root = tmp_path / "local" / "m"
    written = {p.name: p.stat().st_mtime_ns for p in root.iterdir()}
    last = written.pop(Path(report[1].keys[-1]).name)
    assert last >= max(written.values())


def test_no_manifest_when_a_file_failed(tmp_path: Path, payload: Payload) -> None:
    local = local_destination(tmp_path / "local", manifest=True, local_path_prefix="m")
    (tmp_path / "local" / "m" / "prices.csv").mkdir(parents=True)  # that put must fail
    (status,) = deliver(payload.result_set, [local], options=OPTIONS)
    assert status.status == "failed"
    assert status.error is not None
    assert status.error.key == "m/prices.csv"
    assert status.manifest_key is None
    assert not list((tmp_path / "local" / "m").glob("manifest-*"))
    assert any("no manifest" in e.text for e in status.log)


# -- streams --------------------------------------------------------------------------------


class _Pipe(io.RawIOBase):
    """A non-seekable stream."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(min(len(buffer), 65536))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_streams_go_to_several_destinations(
    tmp_path: Path, moto_server: MotoHandle, moto_bucket: str, moto_raw: Any
) -> None:
    seekable_body = b"skip" + b"seekable,row\n" * 50_000
    seekable = io.BytesIO(seekable_body)
    seekable.seek(4)  # read from its position
    piped_body = bytes(range(256)) * 30_000  # ~7.3 MiB, multipart on S3
    rs = ResultSet(
        "c",
        "n",
        "streams",
        [
            ResultFile("seekable.csv", stream=seekable),
            ResultFile("piped.bin", stream=_Pipe(piped_body)),  # type: ignore[arg-type]
        ],
    )
    dests = [
        local_destination(tmp_path / "a", manifest=True),
        local_destination(tmp_path / "b"),
        s3compatible(moto_server, moto_bucket, moto_server.endpoint, s3_path_prefix="streams"),
    ]
    report = deliver(rs, dests, options=OPTIONS)
    assert _statuses(report) == ["success"] * 3
    readers = [local_reader(tmp_path / "a"), local_reader(tmp_path / "b")]
    readers.append(s3_reader(moto_raw, moto_bucket))
    for status, read in zip(report, readers, strict=True):
        assert read(status.keys[0]) == seekable_body[4:]
        assert read(status.keys[1]) == piped_body
    manifest = json.loads(local_reader(tmp_path / "a")(report[0].keys[-1]))
    assert [f["sha256"] for f in manifest["files"]] == [
        hashlib.sha256(seekable_body[4:]).hexdigest(),
        hashlib.sha256(piped_body).hexdigest(),
    ]


def test_a_non_seekable_stream_to_one_destination_is_not_retried(
    moto_server: MotoHandle, moto_bucket: str
) -> None:
    rs = ResultSet("c", "n", "once", [ResultFile("p.bin", stream=_Pipe(b"x" * 1000))])  # type: ignore[arg-type]
    with FaultyProxy(moto_server.endpoint, error=1.0) as proxy:
        dest = s3compatible(moto_server, moto_bucket, proxy.endpoint)
        (status,) = deliver(rs, [dest], options=OPTIONS, retry=FAST_RETRY)
        attempts = [r for r in proxy.requests if r.path.endswith("/p.bin")]
    assert status.status == "failed"
    assert len(attempts) == 1
    assert any("not retried" in e.text for e in status.log)


# -- observers ------------------------------------------------------------------------------


class _Observer:
    def __init__(self) -> None:
        self.finished: list[DestinationStatus] = []
        self.files: list[tuple[str, int]] = []

    @hookimpl
    def destinations_delivery_finished(
        self, result_set: ResultSet, status: DestinationStatus
    ) -> None:
        self.finished.append(status)

    @hookimpl
    def destinations_file_delivered(self, key: str, size: int) -> None:
        self.files.append((key, size))


class _Broken:
    @hookimpl
    def destinations_delivery_finished(self, status: DestinationStatus) -> None:
        raise RuntimeError("observer secret-ish detail")


def test_observers_hear_once_per_destination_and_cannot_break_delivery(
    tmp_path: Path, payload: Payload, caplog: pytest.LogCaptureFixture
) -> None:
    ok = local_destination(tmp_path / "ok")
    failing = local_destination(tmp_path / "bad", local_path_prefix="p")
    (tmp_path / "bad" / "p" / "orders.json").mkdir(parents=True)
    off = local_destination(tmp_path / "off", enabled=False)
    observer, broken = _Observer(), _Broken()
    # Registered last, the broken observer is called first: the one after it still runs.
    destinations.register_plugin(observer)
    destinations.register_plugin(broken)
    try:
        report = deliver(payload.result_set, [ok, failing, off], options=OPTIONS, concurrency=1)
    finally:
        destinations.unregister_plugin(observer)
        destinations.unregister_plugin(broken)
    assert _statuses(report) == ["success", "failed", "skipped"]
    assert sorted(s.status for s in observer.finished) == ["failed", "skipped", "success"]
    assert {id(s) for s in observer.finished} == {id(s) for s in report}
    delivered = {k for s in report for k in s.keys}
    assert {k for k, _ in observer.files} == delivered
    assert "RuntimeError" in caplog.text
    assert "secret-ish" not in caplog.text


# -- units ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "flag", "transient"),
    [
        # the generic rule, which knows no provider
        ("timeout", None, None, True),
        ("endpoint_unreachable", None, None, True),
        ("provider_error", 503, None, True),
        ("provider_error", 500, None, True),
        ("provider_error", 599, None, True),
        ("provider_error", 429, None, True),
        ("provider_error", 408, None, True),
        ("provider_error", 404, None, False),
        ("provider_error", 499, None, False),
        ("provider_error", 600, None, False),
        ("provider_error", None, None, False),
        ("invalid_credentials", 403, None, False),
        ("access_denied", 403, None, False),
        ("bucket_not_found", 404, None, False),
        ("wrong_region", 301, None, False),
        ("tls_error", None, None, False),
        # the plugin's word wins both ways
        ("provider_error", 400, True, True),
        ("provider_error", None, True, True),
        ("provider_error", 503, False, False),
        ("timeout", None, False, False),
    ],
)
def test_transient_rule(code: Any, status: int | None, flag: bool | None, transient: bool) -> None:
    error = StoreError(code, "m", provider_code="AnyCode", status=status, transient=flag)
    assert error.transient is transient
    assert is_transient(error) is transient
    assert not is_transient(RuntimeError("x"))


def test_no_provider_error_code_appears_in_core() -> None:
    """Core knows no provider: every code a built-in plugin maps is the plugin's business."""
    import re

    core = Path(destinations.__file__).parent
    codes = re.compile(
        r"SlowDown|ServerBusy|rateLimitExceeded|InconsistentError|SignatureDoesNotMatch|"
        r"ThrottlingException|OperationTimedOut|backendError|BadDigest|NoSuchBucket"
    )
    found = [
        f"{path.relative_to(core)}:{n}"
        for path in core.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if codes.search(line)
    ]
    assert found == []


def test_result_file_and_set_validation(tmp_path: Path) -> None:
    assert ResultFile("a.json", "x").content_type == "application/json"
    assert ResultFile("a.JSONL", "x").content_type == "application/x-ndjson"
    assert ResultFile("a.csv", "x").content_type == "text/csv"
    assert ResultFile("a.zip", "x").content_type == "application/zip"
    assert ResultFile("a", "x").content_type == "application/octet-stream"
    assert ResultFile("a.csv", "x", content_type="text/plain").content_type == "text/plain"
    with pytest.raises(ValueError, match="exactly one"):
        ResultFile("a.csv")
    with pytest.raises(ValueError, match="exactly one"):
        ResultFile("a.csv", "x", stream=io.BytesIO())
    with pytest.raises(ValueError, match="same key"):
        ResultSet("c", "n", "r", [ResultFile("a/b", "x"), ResultFile("a_b", "y")])
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    rs = ResultSet("c", "n", "r", [ResultFile("manifest-r.json", stream=io.BytesIO(b"{}"))])
    with pytest.raises(ValueError, match="manifest"):
        deliver(rs, [local_destination(tmp_path, manifest=True)])


def test_naive_now_is_utc_and_an_empty_set_still_gets_its_manifest(tmp_path: Path) -> None:
    dest = local_destination(tmp_path, manifest=True, local_path_prefix="%DATE%/%HOUR%")
    report = deliver(ResultSet("c", "n", "r", []), [dest], now=datetime(2026, 1, 2, 3, 4))
    (status,) = report
    assert status.status == "success"
    assert status.keys == ("2026_01_02/03/manifest-r.json",)
    assert json.loads((tmp_path / status.keys[0]).read_text())["files"] == []
    assert report.now == datetime(2026, 1, 2, 3, 4, tzinfo=UTC)


# -- progress -------------------------------------------------------------------------------


class _ChunkyStore(destinations.Store):
    """A third party's store that reports no progress itself and reads 32 KiB at a time:
    delivery counts what it reads."""

    objects: ClassVar[dict[str, bytes]] = {}

    def __init__(self, fields: Any, options: destinations.StoreOptions) -> None:
        pass

    def put(self, key: str, source: Any, *, size: int | None, content_type: str | None) -> None:
        chunks = []
        with open_source(source) as stream:
            while chunk := stream.read(32 * 1024):
                chunks.append(chunk)
        self.objects[key] = b"".join(chunks)

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)


class _ChunkyPlugin:
    @destinations.hookimpl
    def destinations_register_types(self, register: Any) -> None:
        from pydantic import BaseModel, ConfigDict

        class ChunkyFields(BaseModel):
            model_config = ConfigDict(extra="forbid")
            chunky_path_prefix: str = ""

        register(
            destinations.DestinationType(
                name="chunky",
                fields=ChunkyFields,
                open_store=_ChunkyStore,
                prefix_field="chunky_path_prefix",
            )
        )


@pytest.fixture
def chunky() -> Iterator[None]:
    plugin = _ChunkyPlugin()
    destinations.register_plugin(plugin)
    yield
    destinations.unregister_plugin(plugin)
    assert "chunky" not in destinations.available_types()


@pytest.mark.usefixtures("chunky")
def test_progress_of_a_type_that_reports_none_is_counted_from_its_reads(tmp_path: Path) -> None:
    dest = destinations.parse_destination({"name": "c", "enabled": True, "type": "chunky"})
    body = bytes(range(256)) * (20 * 1024)  # 5 MiB
    path = tmp_path / "big.bin"
    path.write_bytes(body)
    events: list[DeliveryProgress] = []
    files = [ResultFile("big.bin", path), ResultFile("s.bin", stream=io.BytesIO(body))]
    report = deliver(ResultSet("c", "n", "r", files), [dest], on_progress=events.append)
    assert report.ok and _ChunkyStore.objects["big.bin"] == body == _ChunkyStore.objects["s.bin"]
    for name in ("big.bin", "s.bin"):
        sent = [0] + [e.bytes_sent for e in events if e.file_name == name]
        assert sent[-1] == len(body) and sent == sorted(sent)
        assert max(b - a for a, b in itertools.pairwise(sent)) <= len(body) // 100


def test_progress_is_per_call_concurrent_deliveries_never_see_each_other(tmp_path: Path) -> None:
    import threading

    body = b"x" * (3 * MiB)
    results: dict[str, list[DeliveryProgress]] = {"a": [], "b": []}

    def run(name: str) -> None:
        path = tmp_path / f"{name}.bin"
        path.write_bytes(body)
        dest = local_destination(tmp_path / f"out-{name}", name=name)
        rs = ResultSet("c", "n", name, [ResultFile(f"{name}.bin", path)])
        for _ in range(3):
            assert deliver(rs, [dest], on_progress=results[name].append).ok

    threads = [threading.Thread(target=run, args=(n,)) for n in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, events in results.items():
        assert events, name
        assert {e.destination.name for e in events} == {name}
        assert {e.file_name for e in events} == {f"{name}.bin"}


@pytest.mark.usefixtures("chunky")
def test_no_progress_handler_means_no_events_and_no_wrapping(tmp_path: Path) -> None:
    """Without on_progress the store gets the path itself (the SDK reads it by name)."""
    seen: list[Any] = []

    class Recording(_ChunkyStore):
        def put(self, key: str, source: Any, **kwargs: Any) -> None:
            seen.append(source)
            super().put(key, source, **kwargs)

    dest = destinations.parse_destination({"name": "c", "enabled": True, "type": "chunky"})
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    original = dest.destination_type.open_store
    object.__setattr__(dest.destination_type, "open_store", Recording)
    try:
        assert deliver(ResultSet("c", "n", "r", [ResultFile("f.bin", path)]), [dest]).ok
    finally:
        object.__setattr__(dest.destination_type, "open_store", original)
    assert seen == [str(path)]


def test_the_progress_meter_keeps_its_promise_when_a_short_increment_meets_a_full_one() -> None:
    """Blocks in flight report chunks of a whole step and a short last chunk; a short chunk
    followed by a full one must not make a gap over the step (seen with azure's blocks)."""
    from destinations._deliver import _Meter

    total = 6 * MiB + 123
    step = total // 100
    sent: list[int] = []
    meter = _Meter(lambda e: sent.append(e.bytes_sent), lambda n: _event(n, total), total)
    first_block = [step] * (5 * MiB // step) + [5 * MiB % step]
    second_block = [step] * ((total - 5 * MiB) // step) + [(total - 5 * MiB) % step]
    for n in first_block + second_block:
        meter(n)
    meter.done(total)
    assert sent[-1] == total and sent == sorted(sent)
    gaps = [b - a for a, b in itertools.pairwise([0, *sent])]
    assert max(gaps) <= step, max(gaps)


def _event(sent: int, total: int) -> DeliveryProgress:
    dest = destinations.parse_destination(
        {"name": "n", "enabled": True, "type": "local", "local_directory": "."}
    )
    return DeliveryProgress(dest, "f", "k", sent, total)
