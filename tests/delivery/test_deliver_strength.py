"""Delivery's retry, manifest and shaping paths as DESIGN.md documents them, pinned where the
mutation run found no test that tells right from wrong: retry notes and counts, a stream that
cannot be rewound, the put keywords, the manifest's entries and its own failures, part names,
and what shaping tells the log. The store is an in-process recording plugin (registered like
an embedder's own type) whose failures each test scripts; the local type is the real one."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict

import destinations
from destinations import ResultFile, ResultSet, RetryPolicy, StoreError, deliver, parse_destination
from destinations._manifest import ManifestEntry, manifest_body
from destinations.plugin import DestinationType, Source, Store, StoreOptions, open_source

NOW = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
FAST = RetryPolicy(attempts=3, initial=0, maximum=0)


class FlakyFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    flaky_path_prefix: str = ""
    flaky_transient: int = 0  # the first N puts of every key fail transiently
    flaky_permanent: str = ""  # puts of keys ending with this fail permanently
    flaky_close_raises: bool = False


class FlakyStore(Store):
    objects: ClassVar[dict[str, bytes]] = {}
    puts: ClassVar[list[dict[str, Any]]] = []
    closed: ClassVar[int] = 0
    lock = threading.Lock()

    def __init__(self, fields: FlakyFields, options: StoreOptions) -> None:
        self.fields = fields

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
        with open_source(source) as f:
            data = f.read()
        with self.lock:
            tries = sum(p["key"] == key for p in FlakyStore.puts)
            FlakyStore.puts.append(
                {"key": key, "size": size, "content_type": content_type,
                 "content_encoding": content_encoding, "metadata": metadata}
            )
        if self.fields.flaky_permanent and key.endswith(self.fields.flaky_permanent):
            raise StoreError("access_denied", f"no writing {key}", provider_code="Denied")
        if tries < self.fields.flaky_transient:
            raise StoreError("provider_error", "busy, try again", status=503)
        with self.lock:
            FlakyStore.objects[key] = data

    def delete(self, key: str) -> None:
        with self.lock:
            FlakyStore.objects.pop(key, None)

    def close(self) -> None:
        with self.lock:
            FlakyStore.closed += 1
        if self.fields.flaky_close_raises:
            raise OSError("close failed")


@destinations.hookimpl
def destinations_register_types(register: Callable[[DestinationType], None]) -> None:
    register(
        DestinationType(
            name="flaky",
            fields=FlakyFields,
            open_store=FlakyStore,
            prefix_field="flaky_path_prefix",
            description="test-only: scripted failures",
        )
    )


@pytest.fixture(autouse=True)
def flaky() -> type[FlakyStore]:
    destinations.register_plugin(sys.modules[__name__], name="tests.deliver_strength")
    FlakyStore.objects.clear()
    FlakyStore.puts.clear()
    FlakyStore.closed = 0
    return FlakyStore


def flaky_dest(**fields: Any) -> destinations.Destination:
    return parse_destination({"name": "flaky one", "enabled": True, "type": "flaky", **fields})


def texts(status: destinations.DestinationStatus) -> list[str]:
    return [e.text for e in status.log]


def result_set(*files: ResultFile) -> ResultSet:
    return ResultSet("c-1", "Coll", "rs-9", list(files))


# -- retries ----------------------------------------------------------------------------------

def test_each_retry_is_noted_with_its_attempt_number_and_the_whole_file_arrives() -> None:
    rs = result_set(ResultFile("a.csv", stream=io.BytesIO(b"x,y\n1,2\n")))
    (status,) = deliver(rs, [flaky_dest(flaky_transient=2)], now=NOW, retry=FAST)
    assert status.status == "success" and status.error is None
    assert FlakyStore.objects == {"a.csv": b"x,y\n1,2\n"}
    notes = [t for t in texts(status) if t.startswith("put 'a.csv' failed")]
    assert notes == [
        "put 'a.csv' failed (provider_error): busy, try again; attempt 2 of 3 in 0.00 s",
        "put 'a.csv' failed (provider_error): busy, try again; attempt 3 of 3 in 0.00 s",
    ]


def test_retries_run_out_and_the_transient_error_is_reported() -> None:
    rs = result_set(ResultFile("a.csv", stream=io.BytesIO(b"1\n")))
    (status,) = deliver(rs, [flaky_dest(flaky_transient=9)], now=NOW, retry=FAST)
    assert status.status == "failed"
    assert [p["key"] for p in FlakyStore.puts] == ["a.csv"] * 3
    error = status.error
    assert error is not None
    assert (error.code, error.step, error.key, error.transient, error.status) == (
        "provider_error", "put", "a.csv", True, 503,
    )
    assert FlakyStore.closed == 1


def test_a_stream_that_cannot_be_rewound_is_not_retried_and_the_log_says_why() -> None:
    class Pipe(io.RawIOBase):
        """A read-only stream without seek, like a pipe."""

        def __init__(self) -> None:
            self.data = io.BytesIO(b"once only")

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            return self.data.readinto(b)

    rs = result_set(ResultFile("s.bin", stream=Pipe()))  # type: ignore[arg-type]
    (status,) = deliver(rs, [flaky_dest(flaky_transient=1)], now=NOW, retry=FAST)
    assert status.status == "failed"
    assert (
        "put 's.bin' failed with a transient error, but its stream cannot be rewound, so "
        "it was not retried" in texts(status)
    )
    assert len(FlakyStore.puts) == 1


def test_a_permanent_failure_is_not_retried_and_the_remaining_files_are_not_attempted() -> None:
    rs = result_set(
        ResultFile("a.csv", stream=io.BytesIO(b"1\n")),
        ResultFile("b.csv", stream=io.BytesIO(b"2\n")),
    )
    (status,) = deliver(rs, [flaky_dest(flaky_permanent="a.csv")], now=NOW, retry=FAST,
                        concurrency=1)
    assert [p["key"] for p in FlakyStore.puts] == ["a.csv"]
    assert status.error is not None and status.error.provider_code == "Denied"
    assert status.error.transient is False and status.error.status is None
    assert "failed at put of 'a.csv' (access_denied, Denied): no writing a.csv" in texts(status)
    assert "1 file(s) not attempted after the failure" in texts(status)


# -- put keywords -----------------------------------------------------------------------------

def test_put_is_given_content_encoding_and_metadata_only_when_the_file_has_them() -> None:
    rs = result_set(
        ResultFile("plain.json", stream=io.BytesIO(b"{}")),
        ResultFile("z.json", stream=io.BytesIO(gzip.compress(b"{}")), content_encoding="gzip",
                   metadata={"origin": "unit"}),
    )
    deliver(rs, [flaky_dest()], now=NOW)
    by_key = {p["key"]: p for p in FlakyStore.puts}
    assert by_key["plain.json"] == {"key": "plain.json", "size": 2,
                                    "content_type": "application/json",
                                    "content_encoding": None, "metadata": None}
    assert by_key["z.json"]["content_encoding"] == "gzip"
    assert by_key["z.json"]["metadata"] == {"origin": "unit"}


# -- manifest ---------------------------------------------------------------------------------

def test_the_manifest_lists_plain_compressed_and_split_objects(tmp_path: Path) -> None:
    lines = b"".join(b'{"n": %d}\n' % i for i in range(5))
    (tmp_path / "rows.jsonl").write_bytes(lines)
    rs = result_set(
        ResultFile("rows.jsonl", tmp_path / "rows.jsonl"),
        ResultFile("b.bin", stream=io.BytesIO(b"\x00\x01")),
    )
    split = flaky_dest(manifest=True, max_file_records=2, flaky_path_prefix="out")
    (status,) = deliver(rs, [split], now=NOW)
    assert status.status == "success"
    assert status.manifest_key == "out/manifest-rs-9.json" == status.keys[-1]
    assert FlakyStore.puts[-1]["key"] == "out/manifest-rs-9.json"
    assert FlakyStore.puts[-1]["content_type"] == "application/json"
    manifest = json.loads(FlakyStore.objects["out/manifest-rs-9.json"])
    assert manifest["created_at"] == "2026-03-04T05:06:07.890Z"
    assert manifest["result_set_id"] == "rs-9"
    files = manifest["files"]
    keys = ["out/rows-00001.jsonl", "out/rows-00002.jsonl", "out/rows-00003.jsonl", "out/b.bin"]
    assert [f["key"] for f in files] == keys
    assert [f.get("part") for f in files] == [1, 2, 3, None]
    assert [f.get("records") for f in files] == [2, 2, 1, None]
    assert "compression" not in files[0]
    for f in files:
        body = FlakyStore.objects[f["key"]]
        assert f["size"] == len(body) and f["sha256"] == hashlib.sha256(body).hexdigest()
        assert f["source"] == ("b.bin" if f["key"].endswith(".bin") else "rows.jsonl")
    assert b"".join(FlakyStore.objects[k] for k in keys[:3]) == lines
    assert "wrote manifest 'out/manifest-rs-9.json' (4 file(s))" in texts(status)
    assert "split 'rows.jsonl' into 3 part(s), 5 record(s)" in texts(status)
    assert status.bytes == sum(f["size"] for f in files)


def test_compressed_objects_are_named_and_listed_with_their_codec() -> None:
    rs = result_set(ResultFile("a.csv", stream=io.BytesIO(b"x\n" * 100)))
    (status,) = deliver(rs, [flaky_dest(manifest=True, compression="gzip")], now=NOW)
    assert status.keys == ("a.csv.gz", "manifest-rs-9.json")
    stored = FlakyStore.objects["a.csv.gz"]
    assert gzip.decompress(stored) == b"x\n" * 100
    (entry,) = json.loads(FlakyStore.objects["manifest-rs-9.json"])["files"]
    assert entry == {"key": "a.csv.gz", "size": len(stored),
                     "sha256": hashlib.sha256(stored).hexdigest(), "content_type": "text/csv",
                     "source": "a.csv", "compression": "gzip"}
    assert status.bytes == len(stored)


def test_compressed_puts_are_retried_from_the_start() -> None:
    rs = result_set(ResultFile("a.csv", stream=io.BytesIO(b"y\n" * 50)))
    (status,) = deliver(rs, [flaky_dest(compression="zstd", flaky_transient=1)], now=NOW,
                        retry=FAST)
    assert status.status == "success" and status.keys == ("a.csv.zst",)
    assert [p["key"] for p in FlakyStore.puts] == ["a.csv.zst"] * 2
    assert FlakyStore.puts[0]["size"] is None  # compressed: unsized upload
    import zstandard

    assert zstandard.ZstdDecompressor().decompressobj().decompress(
        FlakyStore.objects["a.csv.zst"]) == b"y\n" * 50
    assert any("attempt 2 of 3" in t for t in texts(status))


def test_split_parts_use_the_file_name_template_when_it_has_part(tmp_path: Path) -> None:
    rs = result_set(ResultFile("r.csv", stream=io.BytesIO(b"h\n1\n2\n3\n")))
    d = flaky_dest(max_file_records=2, file_name_template="%PART%_%FILE_NAME%%FILE_EXT%",
                   compression="gzip")
    (status,) = deliver(rs, [d], now=NOW)
    assert status.keys == ("00001_r.csv.gz", "00002_r.csv.gz")
    assert [gzip.decompress(FlakyStore.objects[k]) for k in status.keys] == [
        b"h\n1\n2\n", b"h\n3\n"]


def test_a_failed_part_keeps_the_parts_before_it_and_names_its_key() -> None:
    rs = result_set(ResultFile("r.jsonl", stream=io.BytesIO(b"1\n2\n3\n4\n")))
    d = flaky_dest(max_file_records=1, flaky_permanent="-00003.jsonl", manifest=True)
    (status,) = deliver(rs, [d], now=NOW)
    assert status.status == "failed"
    assert status.keys == ("r-00001.jsonl", "r-00002.jsonl")
    assert status.bytes == 4
    assert status.error is not None and status.error.key == "r-00003.jsonl"
    assert status.manifest_key is None
    assert "no manifest: not every file was delivered" in texts(status)
    assert "manifest-rs-9.json" not in FlakyStore.objects


def test_a_failed_manifest_put_fails_the_destination_at_the_manifest_step() -> None:
    rs = result_set(ResultFile("a.csv", stream=io.BytesIO(b"1\n")))
    (status,) = deliver(rs, [flaky_dest(manifest=True, flaky_permanent="manifest-rs-9.json")],
                        now=NOW, retry=FAST)
    assert status.status == "failed" and status.manifest_key is None
    assert status.keys == ("a.csv",)
    assert status.error is not None
    assert (status.error.step, status.error.key) == ("manifest", "manifest-rs-9.json")


def test_a_store_that_fails_to_close_still_reports_success(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rs = result_set(ResultFile("a.csv", stream=io.BytesIO(b"1\n")))
    with caplog.at_level("WARNING", logger="destinations.deliver"):
        (status,) = deliver(rs, [flaky_dest(flaky_close_raises=True)], now=NOW)
    assert status.status == "success" and FlakyStore.closed == 1
    assert "destination 'flaky one': closing its store raised OSError" in caplog.text


def test_the_summary_counts_files_objects_and_bytes() -> None:
    rs = result_set(
        ResultFile("a.csv", stream=io.BytesIO(b"12345")),
        ResultFile("b.csv", stream=io.BytesIO(b"678")),
    )
    (status,) = deliver(rs, [flaky_dest(manifest=True)], now=NOW)
    (summary,) = [t for t in texts(status) if t.startswith("delivered ")]
    assert summary.startswith("delivered 2 file(s) as 3 object(s), 8 bytes in ")
    assert status.bytes == 8


# -- shaping notes ----------------------------------------------------------------------------

def test_a_file_already_encoded_is_not_compressed_again() -> None:
    body = gzip.compress(b"x")
    rs = result_set(ResultFile("a.json", stream=io.BytesIO(body), content_encoding="gzip"))
    (status,) = deliver(rs, [flaky_dest(compression="zstd")], now=NOW)
    assert status.keys == ("a.json",) and FlakyStore.objects["a.json"] == body
    assert "'a.json' is not compressed again: it already has content encoding 'gzip'" in texts(
        status)


def test_identity_encoding_is_still_compressed() -> None:
    rs = result_set(ResultFile("a.json", stream=io.BytesIO(b"{}"), content_encoding="identity"))
    (status,) = deliver(rs, [flaky_dest(compression="gzip")], now=NOW)
    assert status.keys == ("a.json.gz",)


def test_a_file_that_cannot_be_split_is_sent_whole_and_the_log_says_so() -> None:
    rs = result_set(ResultFile("blob.bin", stream=io.BytesIO(b"\x00" * 10)))
    (status,) = deliver(rs, [flaky_dest(max_file_bytes=4)], now=NOW)
    assert status.keys == ("blob.bin",)
    assert (
        "'blob.bin' is not split: only JSON Lines (.jsonl, .ndjson) and CSV files are split "
        "at record boundaries" in texts(status)
    )


# -- the manifest document ----------------------------------------------------------------------

def test_manifest_entries_carry_shaping_fields_only_when_shaped() -> None:
    plain = ManifestEntry("k", 3, "ab", "text/csv", source="k.csv")
    assert plain.to_dict() == {"key": "k", "size": 3, "sha256": "ab", "content_type": "text/csv",
                               "source": "k.csv"}
    part = ManifestEntry("p", 1, "cd", None, source="s", records=7, part=2, compression="zstd")
    assert part.to_dict() == {"key": "p", "size": 1, "sha256": "cd", "content_type": None,
                              "source": "s", "compression": "zstd", "part": 2, "records": 7}


def test_the_manifest_document_is_indented_utf8_json() -> None:
    rs = ResultSet("c\u00e9", "Caf\u00e9", "r1", [])
    body = manifest_body(rs, NOW, [ManifestEntry("k\u00e9", None, "00", None)])
    text = body.decode("utf-8")
    assert "Caf\u00e9" in text and "\\u00e9" not in text
    assert text.startswith('{\n  "result_set_id": "r1"')
    assert json.loads(text) == {
        "result_set_id": "r1", "collection_id": "c\u00e9", "collection_name": "Caf\u00e9",
        "created_at": "2026-03-04T05:06:07.890Z",
        "files": [{"key": "k\u00e9", "size": None, "sha256": "00", "content_type": None,
                   "source": None}],
    }
