"""More of delivery's put, retry, manifest and shaping paths as DESIGN.md and the plugin
contract document them, pinned where a mutation run of _deliver.py found no test telling right
from wrong: byte progress (from the store or counted by core, per attempt, the final event),
part retries (``retry_part``) only for a rewindable source, the upload and retry metrics, the
observer hooks, a non-seekable stream split as it is read, a manifest that cannot be built,
the warnings' log level, and the status a run reports.

The stores are an in-process recording plugin (two types: one reports its own progress, one
does not) whose failures each test scripts; no network is involved."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel, ConfigDict

import destinations
from destinations import (
    DeliveryProgress,
    DestinationStatus,
    ResultFile,
    ResultSet,
    RetryPolicy,
    StoreError,
    deliver,
    parse_destination,
)
from destinations.plugin import (
    DestinationType,
    Source,
    Store,
    StoreOptions,
    open_source,
    retry_part,
    upload_progress,
)

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
FAST = RetryPolicy(attempts=3, initial=0, maximum=0)


class RecFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rec_prefix: str = ""
    rec_transient: int = 0  # the first N puts of every key fail transiently (before reading)
    rec_provider_code: str = ""  # ...with this provider code
    rec_part_failures: int = 0  # the first N retry_part calls of every key fail transiently
    rec_permanent: str = ""  # puts of keys ending with this fail permanently (after reading)
    rec_read: int = 100  # read (and report, for rec_progress) this many bytes at a time
    rec_report: bool = False  # report the bytes read through upload_progress
    rec_skim: bool = False  # read only the first byte of the body
    rec_close_raises: bool = False


class RecStore(Store):
    objects: ClassVar[dict[str, bytes]] = {}
    puts: ClassVar[list[str]] = []
    part_calls: ClassVar[list[str]] = []
    content_types: ClassVar[dict[str, str | None]] = {}
    opened: ClassVar[int] = 0
    lock = threading.Lock()

    def __init__(self, fields: RecFields, options: StoreOptions) -> None:
        self.fields = fields
        with self.lock:
            RecStore.opened += 1

    def put(
        self,
        key: str,
        source: Source,
        *,
        size: int | None,
        content_type: str | None,
        content_encoding: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        fields = self.fields
        progress = upload_progress()
        with self.lock:
            tries = RecStore.puts.count(key)
            RecStore.puts.append(key)
            RecStore.content_types[key] = content_type
        if tries < fields.rec_transient:
            raise StoreError("provider_error", "slow down", status=503,
                             provider_code=fields.rec_provider_code or None)
        chunks: list[bytes] = []
        with open_source(source) as f:
            if fields.rec_skim:
                chunks.append(f.read(1))
            else:
                while chunk := f.read(fields.rec_read):
                    chunks.append(chunk)
                    if fields.rec_report:
                        progress(len(chunk))
        data = b"".join(chunks)

        def send() -> None:
            with self.lock:
                calls = RecStore.part_calls.count(key)
                RecStore.part_calls.append(key)
            if calls < fields.rec_part_failures:
                raise StoreError("provider_error", "part lost", status=500)

        retry_part(send)
        if fields.rec_permanent and key.endswith(fields.rec_permanent):
            raise StoreError("access_denied", f"no writing {key}")
        with self.lock:
            RecStore.objects[key] = data

    def delete(self, key: str) -> None:
        with self.lock:
            RecStore.objects.pop(key, None)

    def close(self) -> None:
        if self.fields.rec_close_raises:
            raise OSError("close failed")


class Observed:
    """The observer hooks' calls (a plugin object, registered once)."""

    files: ClassVar[list[tuple[str, str, int]]] = []
    finished: ClassVar[list[tuple[str, str]]] = []

    @destinations.hookimpl
    def destinations_file_delivered(
        self, result_set: ResultSet, destination: destinations.Destination, key: str, size: int
    ) -> None:
        Observed.files.append((result_set.result_set_id, key, size))

    @destinations.hookimpl
    def destinations_delivery_finished(
        self, result_set: ResultSet, status: DestinationStatus
    ) -> None:
        Observed.finished.append((result_set.result_set_id, status.status))


OBSERVED = Observed()


@destinations.hookimpl
def destinations_register_types(register: Callable[[DestinationType], None]) -> None:
    for name, reports in (("rec", False), ("rec_progress", True)):
        register(
            DestinationType(
                name=name,
                fields=RecFields,
                open_store=RecStore,
                prefix_field="rec_prefix",
                description="test-only: recorded puts",
                reports_progress=reports,
            )
        )


@pytest.fixture(autouse=True)
def rec() -> None:
    destinations.register_plugin(sys.modules[__name__], name="tests.deliver_strength2")
    destinations.register_plugin(OBSERVED, name="tests.deliver_strength2.observed")
    RecStore.objects.clear()
    RecStore.puts.clear()
    RecStore.part_calls.clear()
    RecStore.content_types.clear()
    RecStore.opened = 0
    Observed.files.clear()
    Observed.finished.clear()


def dest(type_: str = "rec", **fields: Any) -> destinations.Destination:
    return parse_destination({"name": "rec one", "enabled": True, "type": type_, **fields})


def result_set(*files: ResultFile) -> ResultSet:
    return ResultSet("c-1", "Coll", "rs-9", list(files))


def texts(status: DestinationStatus) -> list[str]:
    return [e.text for e in status.log]


class Pipe(io.RawIOBase):
    """A read-only stream without seek, like a pipe; optionally failing on its first read."""

    def __init__(self, data: bytes, *, broken: bool = False) -> None:
        self.data = io.BytesIO(data)
        self.broken = broken

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.broken:
            raise OSError("the pipe broke")
        return self.data.readinto(b)


def run_with_progress(
    rs: ResultSet, d: destinations.Destination, **kwargs: Any
) -> tuple[DestinationStatus, list[DeliveryProgress]]:
    events: list[DeliveryProgress] = []
    lock = threading.Lock()

    def on_progress(event: DeliveryProgress) -> None:
        with lock:
            events.append(event)

    (status,) = deliver(rs, [d], now=NOW, on_progress=on_progress, **kwargs)
    return status, events


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- byte progress ----------------------------------------------------------------------------

def test_core_counts_the_bytes_a_store_reads_when_the_store_does_not_report_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 1000)
    status, events = run_with_progress(result_set(ResultFile("a.bin", path=path)), dest())
    assert status.status == "success"
    assert [(e.file_name, e.key, e.bytes_sent, e.bytes_total, e.attempt) for e in events] == [
        ("a.bin", "a.bin", n, 1000, 1) for n in range(100, 1001, 100)
    ]
    assert all(e.destination.name == "rec one" for e in events)
    # the counting reader opened the file and closed it again
    fds = os.listdir("/proc/self/fd")
    assert not any(
        os.path.realpath(f"/proc/self/fd/{fd}") == str(path.resolve()) for fd in fds
        if os.path.exists(f"/proc/self/fd/{fd}")
    )


def test_a_store_that_reports_progress_is_not_counted_twice() -> None:
    rs = result_set(ResultFile("a.bin", stream=io.BytesIO(b"y" * 1000)))
    status, events = run_with_progress(rs, dest("rec_progress", rec_report=True))
    assert status.status == "success" and RecStore.objects["a.bin"] == b"y" * 1000
    assert [e.bytes_sent for e in events] == list(range(100, 1001, 100))


def test_the_last_event_shows_the_whole_file_even_when_the_store_reported_less() -> None:
    rs = result_set(ResultFile("a.bin", stream=io.BytesIO(b"z" * 1000)))
    status, events = run_with_progress(rs, dest("rec_progress", rec_report=False))
    assert status.status == "success"
    assert [(e.bytes_sent, e.bytes_total) for e in events] == [(1000, 1000)]


def test_a_retried_put_reports_progress_with_its_attempt_number() -> None:
    rs = result_set(ResultFile("a.bin", stream=io.BytesIO(b"r" * 200)))
    status, events = run_with_progress(rs, dest(rec_transient=1), retry=FAST)
    assert status.status == "success"
    assert [(e.attempt, e.bytes_sent) for e in events] == [(2, 100), (2, 200)]


def test_compressed_progress_counts_the_files_own_bytes_as_they_are_read() -> None:
    size = 3 * 1024 * 1024 + 5
    rs = result_set(ResultFile("big.jsonl", stream=io.BytesIO(b"{}\n" * (size // 3) + b"ab")))
    total = (size // 3) * 3 + 2
    status, events = run_with_progress(
        rs, dest(compression="gzip", rec_read=1 << 20, rec_transient=1), retry=FAST
    )
    assert status.status == "success"
    assert gzip.decompress(RecStore.objects["big.jsonl.gz"]) == b"{}\n" * (size // 3) + b"ab"
    assert len(events) > 2
    assert all((e.key, e.bytes_total, e.attempt) == ("big.jsonl.gz", total, 2) for e in events)
    sent = [e.bytes_sent for e in events]
    assert sent == sorted(sent) and sent[-1] == total and sent[0] < total


# -- part retries -----------------------------------------------------------------------------

@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_a_store_retries_a_lost_part_alone_when_the_source_can_be_rewound(
    compression: str,
) -> None:
    rs = result_set(ResultFile("a.json", stream=io.BytesIO(b"{}")))
    d = dest(rec_part_failures=1, compression=compression)
    (status,) = deliver(rs, [d], now=NOW, retry=RetryPolicy(attempts=2, initial=0, maximum=0))
    assert status.status == "success"
    key = status.keys[0]
    assert RecStore.puts == [key] and RecStore.part_calls == [key, key]


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_no_part_is_retried_for_a_stream_that_cannot_be_rewound(compression: str) -> None:
    rs = result_set(ResultFile("a.json", stream=Pipe(b"{}")))  # type: ignore[arg-type]
    d = dest(rec_part_failures=1, compression=compression)
    (status,) = deliver(rs, [d], now=NOW, retry=FAST)
    assert status.status == "failed"
    assert len(RecStore.puts) == 1 and len(RecStore.part_calls) == 1
    assert status.error is not None and status.error.message == "part lost"


def test_a_policy_of_one_attempt_retries_no_part() -> None:
    rs = result_set(ResultFile("a.json", stream=io.BytesIO(b"{}")))
    (status,) = deliver(rs, [dest(rec_part_failures=1)], now=NOW,
                        retry=RetryPolicy(attempts=1, initial=0, maximum=0))
    assert status.status == "failed" and RecStore.part_calls == ["a.json"]


def test_a_compressed_stream_that_cannot_be_rewound_is_not_put_again() -> None:
    rs = result_set(ResultFile("a.json", stream=Pipe(b"{}")))  # type: ignore[arg-type]
    (status,) = deliver(rs, [dest(compression="gzip", rec_transient=1)], now=NOW, retry=FAST)
    assert RecStore.puts == ["a.json.gz"]
    assert status.error is not None
    assert (status.error.code, status.error.status, status.error.transient) == (
        "provider_error", 503, True)


# -- retry notes, levels and metrics -----------------------------------------------------------

@pytest.mark.parametrize(("compression", "key"), [("none", "a.csv"), ("gzip", "a.csv.gz")])
def test_a_retry_note_names_the_key_and_provider_code_at_warning_level(
    compression: str, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    rs = result_set(ResultFile("a.csv", stream=io.BytesIO(b"1\n")))
    d = dest(rec_transient=1, rec_provider_code="SlowDown", compression=compression)
    with caplog.at_level(logging.WARNING, logger="destinations.deliver"):
        (status,) = deliver(rs, [d], now=NOW, retry=FAST)
    note = f"put {key!r} failed (provider_error, SlowDown): slow down; attempt 2 of 3 in 0.00 s"
    assert note in texts(status)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"destination 'rec one': {note}"]


def test_the_not_rewound_note_is_a_warning_and_only_for_a_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rs = result_set(ResultFile("s.bin", stream=Pipe(b"once")))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="destinations.deliver"):
        deliver(rs, [dest(rec_transient=1)], now=NOW, retry=FAST)
    assert (
        "destination 'rec one': put 's.bin' failed with a transient error, but its stream "
        "cannot be rewound, so it was not retried"
    ) in [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # a rewindable file whose retries run out, and a stream failing permanently, get no such note
    rs = result_set(ResultFile("f.bin", stream=io.BytesIO(b"again")))
    (status,) = deliver(rs, [dest(rec_transient=9)], now=NOW, retry=FAST)
    assert status.status == "failed"
    assert not any("cannot be rewound" in t for t in texts(status))
    rs = result_set(ResultFile("p.bin", stream=Pipe(b"once")))  # type: ignore[arg-type]
    (status,) = deliver(rs, [dest(rec_permanent="p.bin")], now=NOW, retry=FAST)
    assert status.status == "failed"
    assert not any("cannot be rewound" in t for t in texts(status))


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_uploads_and_retries_are_counted_by_type_and_outcome(compression: str) -> None:
    before = {
        "ok": sample("destinations_upload_seconds_count", type="rec", outcome="success"),
        "error": sample("destinations_upload_seconds_count", type="rec", outcome="error"),
        "sum": sample("destinations_upload_seconds_sum", type="rec", outcome="success")
        + sample("destinations_upload_seconds_sum", type="rec", outcome="error"),
        "retries": sample("destinations_retries_total", type="rec", code="provider_error"),
    }
    rs = result_set(ResultFile("a.csv", stream=io.BytesIO(b"1\n")))
    # the put fails in the store after the body was read (a lost part, not retried alone)
    (status,) = deliver(rs, [dest(rec_part_failures=1, compression=compression)], now=NOW,
                        retry=RetryPolicy(attempts=1, initial=0, maximum=0))
    assert status.status == "failed"
    rs = result_set(ResultFile("b.csv", stream=io.BytesIO(b"2\n")))
    (status,) = deliver(rs, [dest(rec_transient=1, compression=compression)], now=NOW,
                        retry=FAST)
    assert status.status == "success"
    ok = sample("destinations_upload_seconds_count", type="rec", outcome="success")
    error = sample("destinations_upload_seconds_count", type="rec", outcome="error")
    seconds = sample("destinations_upload_seconds_sum", type="rec", outcome="success") + sample(
        "destinations_upload_seconds_sum", type="rec", outcome="error")
    assert (ok - before["ok"], error - before["error"]) == (1, 2)
    assert 0 <= seconds - before["sum"] < 30
    retries = sample("destinations_retries_total", type="rec", code="provider_error")
    assert retries - before["retries"] == 1


# -- hooks and the status -----------------------------------------------------------------------

def test_observers_hear_of_every_object_and_of_the_finished_delivery() -> None:
    rs = result_set(
        ResultFile("plain.bin", stream=io.BytesIO(b"123")),
        ResultFile("z.json", stream=io.BytesIO(b"{}"), content_type="application/json"),
    )
    gz = dest(compression="gzip")
    (status,) = deliver(rs, [gz], now=NOW, concurrency=1)
    assert status.status == "success"
    assert sorted(k for _, k, _ in Observed.files) == ["plain.bin.gz", "z.json.gz"]
    assert all(rid == "rs-9" for rid, _, _ in Observed.files)
    sizes = {k: s for _, k, s in Observed.files}
    assert sizes["z.json.gz"] == len(RecStore.objects["z.json.gz"])
    assert Observed.finished == [("rs-9", "success")]
    assert status.destination is gz
    assert 0 < status.seconds < 30


def test_a_file_on_disk_is_put_as_it_is_and_a_failing_close_is_logged_exactly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"on disk")
    rs = result_set(ResultFile("a.bin", path=path))
    with caplog.at_level(logging.WARNING, logger="destinations.deliver"):
        (status,) = deliver(rs, [dest(rec_close_raises=True)], now=NOW)
    assert status.status == "success" and RecStore.objects == {"a.bin": b"on disk"}
    assert [r.getMessage() for r in caplog.records] == [
        "destination 'rec one': closing its store raised OSError"]


def test_a_non_seekable_stream_counts_the_bytes_it_gave() -> None:
    rs = result_set(ResultFile("s.bin", stream=Pipe(b"four")))  # type: ignore[arg-type]
    (status,) = deliver(rs, [dest(manifest=True)], now=NOW)
    assert status.status == "success" and status.bytes == 4
    assert Observed.files == [("rs-9", "s.bin", 4)]
    (entry,) = json.loads(RecStore.objects["manifest-rs-9.json"])["files"]
    assert (entry["size"], entry["sha256"]) == (4, hashlib.sha256(b"four").hexdigest())


def test_an_empty_result_set_still_gets_its_manifest() -> None:
    (status,) = deliver(result_set(), [dest(manifest=True)], now=NOW)
    assert status.status == "success" and status.manifest_key == "manifest-rs-9.json"
    assert json.loads(RecStore.objects["manifest-rs-9.json"])["files"] == []
    assert RecStore.opened == 1


def test_part_keys_expand_every_token_of_the_file_name_template() -> None:
    rs = result_set(ResultFile("r.jsonl", stream=io.BytesIO(b"1\n2\n3\n")))
    d = dest(max_file_records=2,
             file_name_template="%COLLECTION_ID%_%COLLECTION_NAME%_%RESULT_SET_ID%_%DATE%_"
                                "%HOUR%_%PART%%FILE_EXT%")
    (status,) = deliver(rs, [d], now=NOW)
    assert status.keys == ("c-1_Coll_rs-9_2026_03_04_05_00001.jsonl",
                           "c-1_Coll_rs-9_2026_03_04_05_00002.jsonl")


# -- shaping ------------------------------------------------------------------------------------

def test_a_file_is_split_by_its_content_type_whatever_its_name() -> None:
    rs = result_set(ResultFile("rows.txt", stream=io.BytesIO(b"1\n2\n3\n"),
                               content_type="application/x-ndjson; charset=utf-8"))
    (status,) = deliver(rs, [dest(max_file_records=2)], now=NOW)
    assert status.keys == ("rows-00001.txt", "rows-00002.txt")


def test_a_file_with_a_content_encoding_is_not_split() -> None:
    body = gzip.compress(b"1\n2\n3\n")
    rs = result_set(ResultFile("rows.jsonl", stream=io.BytesIO(body), content_encoding="gzip"))
    (status,) = deliver(rs, [dest(max_file_records=2)], now=NOW)
    assert status.keys == ("rows.jsonl",) and RecStore.objects["rows.jsonl"] == body
    assert any("'rows.jsonl' is not split" in t for t in texts(status))


# -- a stream that cannot be rewound, split as it is read ---------------------------------------

@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_a_non_seekable_csv_is_split_by_records_with_its_header_and_listed(
    compression: str,
) -> None:
    rs = result_set(ResultFile("r.csv", stream=Pipe(b"h\n1\n2\n3\n"),  # type: ignore[arg-type]
                               metadata={"o": "p"}))
    d = dest(max_file_records=2, manifest=True, compression=compression, rec_prefix="out")
    (status,) = deliver(rs, [d], now=NOW)
    assert status.status == "success"
    suffix = ".gz" if compression == "gzip" else ""
    keys = (f"out/r-00001.csv{suffix}", f"out/r-00002.csv{suffix}", "out/manifest-rs-9.json")
    assert status.keys == keys

    def body(key: str) -> bytes:
        raw = RecStore.objects[key]
        return gzip.decompress(raw) if suffix else raw

    assert [body(k) for k in keys[:2]] == [b"h\n1\n2\n", b"h\n3\n"]
    files = json.loads(RecStore.objects["out/manifest-rs-9.json"])["files"]
    assert [(f["key"], f["size"], f["sha256"], f["records"], f["part"], f["source"])
            for f in files] == [
        (k, len(RecStore.objects[k]), hashlib.sha256(RecStore.objects[k]).hexdigest(), n, i,
         "r.csv")
        for i, (k, n) in enumerate(zip(keys[:2], (2, 1), strict=True), start=1)
    ]
    assert sorted(k for _, k, _ in Observed.files) == list(keys[:2])


def test_a_non_seekable_stream_is_split_by_bytes() -> None:
    rs = result_set(ResultFile("r.jsonl", stream=Pipe(b"11\n22\n33\n")))  # type: ignore[arg-type]
    (status,) = deliver(rs, [dest(max_file_bytes=6)], now=NOW)
    assert status.keys == ("r-00001.jsonl", "r-00002.jsonl")
    assert [RecStore.objects[k] for k in status.keys] == [b"11\n22\n", b"33\n"]


def test_a_failed_part_of_a_non_seekable_stream_keeps_the_parts_before_it() -> None:
    rs = result_set(ResultFile("r.jsonl", stream=Pipe(b"1\n2\n3\n")))  # type: ignore[arg-type]
    (status,) = deliver(rs, [dest(max_file_records=1, rec_permanent="-00002.jsonl")], now=NOW)
    assert status.status == "failed" and status.keys == ("r-00001.jsonl",)
    assert status.error is not None
    assert (status.error.code, status.error.key) == ("access_denied", "r-00002.jsonl")


def test_a_stream_that_breaks_while_its_first_part_is_read_names_that_part() -> None:
    rs = result_set(ResultFile("r.jsonl", stream=Pipe(b"", broken=True)))  # type: ignore[arg-type]
    (status,) = deliver(rs, [dest(max_file_records=1)], now=NOW)
    assert status.status == "failed" and status.keys == ()
    assert status.error is not None
    assert (status.error.step, status.error.key, status.error.provider_code) == (
        "put", "r-00001.jsonl", "OSError")


class Unreadable(io.BytesIO):
    """Seekable (its size is known) but every read fails."""

    def read(self, size: int | None = -1, /) -> bytes:
        raise OSError("the disk went away")


def test_a_seekable_file_that_cannot_be_read_fails_at_its_first_part() -> None:
    """Parts are cut as they are sent: a source that cannot be read fails the first part's
    put (as a stream that breaks does), and nothing is stored."""
    rs = result_set(ResultFile("r.jsonl", stream=Unreadable(b"1\n2\n")))
    (status,) = deliver(rs, [dest(max_file_records=1)], now=NOW)
    assert status.status == "failed" and status.keys == () and not RecStore.objects
    assert status.error is not None
    assert (status.error.step, status.error.key, status.error.provider_code) == (
        "put", "r-00001.jsonl", "OSError")


# -- the manifest -------------------------------------------------------------------------------

class ReadOnce(io.BytesIO):
    """Seekable, but gone after its first read (like an HTTP body that claims to seek)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.consumed = False

    def read(self, size: int | None = -1, /) -> bytes:
        if self.consumed:
            raise OSError("the body was already consumed")
        self.consumed = True
        return super().read(size)


def test_a_manifest_that_cannot_be_built_fails_the_destination_at_the_manifest_step() -> None:
    # the store reads only the first byte, so the file's sha256 must be read again: it is gone
    rs = result_set(ResultFile("a.bin", stream=ReadOnce(b"only once")))
    (status,) = deliver(rs, [dest(manifest=True, rec_skim=True, rec_read=1 << 20)], now=NOW)
    assert status.status == "failed" and status.manifest_key is None
    assert status.keys == ("a.bin",)
    assert status.error is not None
    assert (status.error.step, status.error.key, status.error.code) == (
        "manifest", "manifest-rs-9.json", "provider_error")
    assert status.error.provider_code == "OSError"
    assert "manifest-rs-9.json" not in RecStore.puts


def test_a_failed_manifest_put_is_reported_with_the_stores_error() -> None:
    rs = result_set(ResultFile("a.csv", stream=io.BytesIO(b"1\n")))
    (status,) = deliver(rs, [dest(manifest=True, rec_permanent="manifest-rs-9.json")], now=NOW)
    assert status.error is not None
    assert (status.error.step, status.error.code, status.error.message) == (
        "manifest", "access_denied", "no writing manifest-rs-9.json")


def test_the_manifest_is_put_as_json() -> None:
    rs = result_set(ResultFile("a.csv", stream=io.BytesIO(b"1\n"), content_type="text/csv"))
    deliver(rs, [dest(manifest=True)], now=NOW)
    assert RecStore.content_types == {"a.csv": "text/csv", "manifest-rs-9.json": "application/json"}


# -- a split source that shrinks while its parts are sent ----------------------------------------


def test_a_part_past_the_end_of_a_file_that_shrank_fails_without_writing_an_empty_object(
    tmp_path: Path,
) -> None:
    from destinations._records import ResultFile as Record
    from destinations._shaping import split_records
    from destinations._sources import PartSource, PathFile

    path = tmp_path / "r.jsonl"
    path.write_bytes(b"1\n2\n3\n")
    prepared = PathFile(Record("r.jsonl", path), str(path))
    # resumed exactly at the end, a split yields no part (parts after the first hold a record)
    with open(path, "rb") as f:
        f.seek(6)
        assert list(split_records(f, "jsonl", max_records=1, first=2, header=b"")) == []
    path.write_bytes(b"1\n")  # the file shrank after part 1 (2 bytes) was cut
    part = PartSource(
        prepared, "jsonl", start=4, number=3, header=b"", max_records=1, max_bytes=None,
        hashing=False,
    )  # fmt: skip
    with pytest.raises(destinations.StoreError) as info:
        part.attempt()
    part.release()
    assert info.value.provider_code == "IncompleteBody" and not info.value.transient
    assert "'r.jsonl' ended at byte 4, before the 6 bytes" in info.value.message
