"""Delivery shaping against every real server: gzip and zstd objects decompress to the
original, JSON Lines and CSV split at record boundaries, names follow the file-name template,
the manifest lists exactly what is stored, and a failed part is sent again alone."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from destinations import ResultFile, ResultSet, RetryPolicy, deliver
from tests.delivery.conftest import (
    OPTIONS,
    Target,
    local_destination,
    local_reader,
    s3_reader,
    s3compatible,
)
from tests.delivery.faulty_proxy import FaultyProxy
from tests.emulators.fixtures import MotoHandle

JSONL = b"".join(json.dumps({"id": i, "name": f"n\u00e9{i}"}).encode() + b"\n" for i in range(250))
CSV = b"sku,note\r\n" + b"".join(
    b'%d,"line one\r\nline ""two"", %d"\r\n' % (i, i) for i in range(120)
)
OTHER = b"\x00binary, not split\x01" * 100


def _files(tmp_path: Path) -> ResultSet:
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    files = []
    for name, body in (("items.jsonl", JSONL), ("prices.csv", CSV), ("blob.bin", OTHER)):
        (folder / name).write_bytes(body)
        files.append(ResultFile(name, folder / name))
    return ResultSet("c-7", "Shaped", "rs-shape", files)


def _decompress(codec: str, data: bytes) -> bytes:
    if codec == "gzip":
        return gzip.decompress(data)
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


@pytest.mark.parametrize(("codec", "suffix"), [("gzip", ".gz"), ("zstd", ".zst")])
def test_compressed_objects_decompress_to_the_original_on_every_type(
    tmp_path: Path, every_type: Callable[..., list[Target]], codec: str, suffix: str
) -> None:
    targets = every_type(compression=codec, manifest=True)
    rs = _files(tmp_path)
    report = deliver(rs, [d for d, _ in targets], options=OPTIONS)
    assert report.ok, [s.error for s in report]
    originals = {"items.jsonl": JSONL, "prices.csv": CSV, "blob.bin": OTHER}
    for status, (destination, read) in zip(report, targets, strict=True):
        *keys, manifest_key = status.keys
        assert [k.rsplit("/", 1)[1] for k in keys] == [n + suffix for n in originals]
        stored = {k: read(k) for k in keys}
        for key, name in zip(keys, originals, strict=True):
            assert _decompress(codec, stored[key]) == originals[name], (destination.type, key)
        manifest = json.loads(read(manifest_key))
        assert [f["key"] for f in manifest["files"]] == keys
        for entry in manifest["files"]:
            body = stored[entry["key"]]
            assert entry["size"] == len(body)
            assert entry["sha256"] == hashlib.sha256(body).hexdigest()
            assert entry["compression"] == codec
            assert entry["key"].endswith(entry["source"] + suffix)
        assert status.bytes == sum(len(b) for b in stored.values())


def test_compressed_objects_keep_their_type_and_get_no_content_encoding(
    tmp_path: Path, every_type: Callable[..., list[Target]], moto_raw: Any, moto_bucket: str
) -> None:
    targets = every_type(compression="gzip")
    s3 = next(d for d, _ in targets if d.type == "s3")
    report = deliver(_files(tmp_path), [s3], options=OPTIONS)
    assert report.ok
    head = moto_raw.head_object(Bucket=moto_bucket, Key=report[0].keys[0])
    assert head["ContentType"] == "application/x-ndjson"
    assert "ContentEncoding" not in head  # HTTP clients must not decompress it silently


def _rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode(), newline="")))


def test_split_parts_on_every_type_add_up_to_the_original(
    tmp_path: Path, every_type: Callable[..., list[Target]]
) -> None:
    targets = every_type(max_file_records=100, manifest=True)
    report = deliver(_files(tmp_path), [d for d, _ in targets], options=OPTIONS)
    assert report.ok, [s.error for s in report]
    for status, (destination, read) in zip(report, targets, strict=True):
        *keys, manifest_key = status.keys
        names = [k.rsplit("/", 1)[1] for k in keys]
        assert names == [
            "items-00001.jsonl", "items-00002.jsonl", "items-00003.jsonl",
            "prices-00001.csv", "prices-00002.csv",
            "blob.bin",
        ], destination.type  # fmt: skip
        jsonl = [read(k) for k in keys[:3]]
        assert b"".join(jsonl) == JSONL
        assert [p.count(b"\n") for p in jsonl] == [100, 100, 50]
        csv_parts = [read(k) for k in keys[3:5]]
        header = b"sku,note\r\n"
        assert all(p.startswith(header) for p in csv_parts)
        assert header + b"".join(p[len(header) :] for p in csv_parts) == CSV
        assert [len(_rows(p)) - 1 for p in csv_parts] == [100, 20]  # quoted newlines are data
        assert read(keys[5]) == OTHER
        manifest = json.loads(read(manifest_key))
        records = [(f["source"], f.get("part"), f.get("records")) for f in manifest["files"]]
        assert records == [
            ("items.jsonl", 1, 100), ("items.jsonl", 2, 100), ("items.jsonl", 3, 50),
            ("prices.csv", 1, 100), ("prices.csv", 2, 20),
            ("blob.bin", None, None),
        ]  # fmt: skip
        log = " ".join(entry.text for entry in status.log)
        assert "'blob.bin' is not split" in log


def test_split_by_bytes_and_compressed_with_a_file_name_template(tmp_path: Path) -> None:
    out = tmp_path / "out"
    dest = local_destination(
        out,
        local_path_prefix="x",
        compression="zstd",
        max_file_bytes=4096,
        file_name_template="%RESULT_SET_ID%/%FILE_NAME%.part%PART%%FILE_EXT%",
        manifest=True,
    )
    report = deliver(_files(tmp_path), [dest])
    assert report.ok, report[0].error
    read = local_reader(out)
    *keys, manifest_key = report[0].keys
    jsonl_keys = [k for k in keys if "/items.part" in k]
    assert jsonl_keys[0] == "x/rs-shape/items.part00001.jsonl.zst"
    parts = [_decompress("zstd", read(k)) for k in jsonl_keys]
    assert b"".join(parts) == JSONL
    assert all(len(p) <= 4096 for p in parts)
    # a file not split still follows the template (no part number)
    assert "x/rs-shape/blob.part.bin.zst" in keys
    assert json.loads(read(manifest_key))["files"][0]["key"] == jsonl_keys[0]


def test_a_record_larger_than_max_file_bytes_is_a_part_of_its_own(tmp_path: Path) -> None:
    big = b'{"blob": "' + b"x" * 10_000 + b'"}\n'
    body = b'{"a": 1}\n' + big + b'{"b": 2}\n'
    (tmp_path / "r.jsonl").write_bytes(body)
    out = tmp_path / "out"
    dest = local_destination(out, local_path_prefix="", max_file_bytes=1000)
    report = deliver(
        ResultSet("c", "n", "r", [ResultFile("r.jsonl", tmp_path / "r.jsonl")]), [dest]
    )
    assert report.ok
    parts = [(out / k).read_bytes() for k in report[0].keys]
    assert parts == [b'{"a": 1}\n', big, b'{"b": 2}\n']


def test_shaping_fields_need_no_verification() -> None:
    from destinations import needs_verification, parse_destination

    base = parse_destination(
        {"name": "n", "enabled": True, "type": "local", "local_directory": "."}
    )
    for change in (
        {"compression": "gzip"},
        {"max_file_records": 10},
        {"max_file_bytes": 1000},
        {"file_name_template": "%FILE_NAME%-%PART%%FILE_EXT%"},
    ):
        assert not needs_verification(base, base.updated(change)), change


def test_a_failed_part_is_sent_again_alone(
    tmp_path: Path, moto_server: MotoHandle, moto_bucket: str, moto_raw: Any
) -> None:
    rs = ResultSet("c", "n", "rs-parts", [_files(tmp_path).files[0]])  # items.jsonl
    retry = RetryPolicy(attempts=6, initial=0.01, maximum=0.02)
    with FaultyProxy(moto_server.endpoint, seed=7, error=0.35) as proxy:
        dest = s3compatible(
            moto_server, moto_bucket, proxy.endpoint, s3_path_prefix="parts", max_file_records=25
        )
        (status,) = deliver(rs, [dest], options=OPTIONS, retry=retry, concurrency=1)
        puts = [r for r in proxy.requests if r.method == "PUT"]
        faults = proxy.faults["error"]
    assert status.status == "success", status.error
    assert len(status.keys) == 10  # 250 records in parts of 25
    assert faults >= 2
    # each part was sent once, plus once more per failure of its own: nothing else resent
    assert len(puts) == len(status.keys) + faults
    per_key: dict[str, int] = {}
    for request in puts:
        key = request.path.split("/", 2)[2]  # /bucket/key
        per_key[key] = per_key.get(key, 0) + 1
    assert sorted(per_key) == sorted(status.keys)
    assert any(n > 1 for n in per_key.values()) and any(n == 1 for n in per_key.values())
    read = s3_reader(moto_raw, moto_bucket)
    assert b"".join(read(k) for k in status.keys) == JSONL


class _Pipe(io.RawIOBase):
    """A non-seekable stream, like a socket."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(min(len(buffer), 7000))
        buffer[: len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("kind", ["path", "seekable stream", "non-seekable stream"])
def test_every_kind_of_source_splits_into_the_same_parts(tmp_path: Path, kind: str) -> None:
    source: dict[str, Any]
    if kind == "path":
        (tmp_path / "p.csv").write_bytes(CSV)
        source = {"path": tmp_path / "p.csv"}
    elif kind == "seekable stream":
        stream = io.BytesIO(b"junk before" + CSV)
        stream.seek(len(b"junk before"))  # read from the stream's position
        source = {"stream": stream}
    else:
        source = {"stream": io.BufferedReader(_Pipe(CSV))}
    out = tmp_path / "out"
    dest = local_destination(out, local_path_prefix="", max_file_records=50, manifest=True)
    rs = ResultSet(
        "c", "n", "r", [ResultFile("p.csv", source.get("path"), stream=source.get("stream"))]
    )
    (status,) = deliver(rs, [dest])
    assert status.status == "success", status.error
    *keys, manifest_key = status.keys
    parts = [(out / k).read_bytes() for k in keys]
    header = b"sku,note\r\n"
    assert [k for k in keys] == ["p-00001.csv", "p-00002.csv", "p-00003.csv"]
    assert header + b"".join(p[len(header) :] for p in parts) == CSV
    manifest = json.loads((out / manifest_key).read_text())
    assert [f["sha256"] for f in manifest["files"]] == [
        hashlib.sha256(p).hexdigest() for p in parts
    ]
    assert [f["records"] for f in manifest["files"]] == [50, 50, 20]
