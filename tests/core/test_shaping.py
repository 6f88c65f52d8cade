"""Delivery shaping's building blocks: formats, limits and errors, the output real tools read,
the gzip fallback, the GIL, and memory on a 256 MiB file.

The properties (concatenation, limits, counts, round trips) are in
tests/property/test_shaping_properties.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import zstandard

from destinations._shaping import (
    MAX_HEADER,
    SUFFIXES,
    CompressedReader,
    CompressionUnavailable,
    PartNotConsumed,
    StreamNotFinished,
    compression_backends,
    record_format,
    split_records,
)
from tests.gil import longest_stall

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


def _jsonl(count: int, *, blank_every: int = 0, final_newline: bool = True) -> bytes:
    lines = []
    for i in range(count):
        if blank_every and i % blank_every == 0:
            lines.append(b"")
        else:
            lines.append(
                json.dumps({"id": i, "name": f"item {i}", "tags": ["a", "b"][: i % 3]}).encode()
            )
    data = b"\n".join(lines) + b"\n"
    return data if final_newline else data[:-1]


# -- which files are split ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content_type", "encoding", "expected"),
    [
        ("a.jsonl", None, None, "jsonl"),
        ("a.NDJSON", None, None, "jsonl"),
        ("a.csv", None, None, "csv"),
        ("A.CSV", "application/octet-stream", None, "csv"),  # a generic type: the name decides
        ("a.json", "application/x-ndjson", None, "jsonl"),  # the content type decides
        ("a.txt", "application/x-ndjson; charset=utf-8", None, "jsonl"),
        ("a.txt", "Text/CSV; header=present", None, "csv"),
        ("a.csv", "application/x-ndjson", None, "jsonl"),  # a record type wins over the name
        ("a.jsonl", "application/json", None, "jsonl"),
        ("a.json", None, None, None),
        ("a.jsonl.gz", None, None, None),  # last extension: compressed bytes are not records
        ("a.jsonl", "application/x-ndjson", "gzip", None),  # already encoded: not split
        ("a.csv", None, "identity", "csv"),
        ("jsonl", None, None, None),  # no extension
        ("a.parquet", "application/vnd.apache.parquet", None, None),
    ],
)
def test_record_format(name, content_type, encoding, expected):
    assert record_format(name, content_type, encoding) == expected


# -- splitting: what a consumer sees ----------------------------------------------------------


def test_max_records_gives_exactly_what_split_l_gives(tmp_path):
    data = _jsonl(25_003, blank_every=97, final_newline=False)
    (tmp_path / "in.jsonl").write_bytes(data)
    subprocess.run(["split", "-l", "1000", "in.jsonl", "x-"], cwd=tmp_path, check=True)
    theirs = [p.read_bytes() for p in sorted(tmp_path.glob("x-*"))]
    ours = []
    for part in split_records(io.BytesIO(data), "jsonl", max_records=1000, chunk_size=4096):
        ours.append(part.read())
        assert part.records == (1000 if part.number < 26 else 3)
    assert ours == theirs
    assert len(ours) == 26


def test_csv_parts_repeat_the_header_and_keep_crlf_and_quoted_newlines():
    data = b'id,text\r\n1,"two\r\nlines"\r\n2,"say ""hi"""\r\n3,plain\r\n4,"x\ny"'
    parts = [(p.read(), p.records) for p in split_records(io.BytesIO(data), "csv", max_records=2)]
    assert parts == [
        (b'id,text\r\n1,"two\r\nlines"\r\n2,"say ""hi"""\r\n', 2),
        (b'id,text\r\n3,plain\r\n4,"x\ny"', 2),
    ]


def test_a_record_larger_than_max_bytes_is_a_part_of_its_own():
    big = b"x" * 5000 + b"\n"
    data = b"a\n" + big + b"b\nc\n"
    split = split_records(io.BytesIO(data), "jsonl", max_bytes=100, chunk_size=64)
    parts = [(p.read(), p.records, p.size) for p in split]
    assert parts == [(b"a\n", 1, 2), (big, 1, 5001), (b"b\nc\n", 2, 4)]


def test_parts_must_be_consumed_in_order():
    data = _jsonl(10)
    parts = split_records(io.BytesIO(data), "jsonl", max_records=4)
    first = next(parts)
    first.read(5)
    with pytest.raises(PartNotConsumed, match=r"part 1 was not read to its end before part 2"):
        next(parts)


def test_a_part_read_to_its_last_byte_is_closed_without_a_final_empty_read():
    data = b"a\nb\nc\n"
    parts = split_records(io.BytesIO(data), "jsonl", max_bytes=4)
    first = next(parts)
    assert first.read(4) == b"a\nb\n"  # a consumer that stops at the bytes it expected
    second = next(parts)
    assert first.done and first.records == 2 and first.source_end == 4
    assert second.read() == b"c\n"
    assert list(parts) == []


def test_figures_exist_only_at_the_end():
    part = next(split_records(io.BytesIO(b"a\nb\n"), "jsonl"))
    part.read(1)
    with pytest.raises(StreamNotFinished, match="part 1 was not read to its end"):
        _ = part.sha256
    assert part.read() == b"\nb\n"
    assert part.sha256 == hashlib.sha256(b"a\nb\n").hexdigest()
    reader = CompressedReader(io.BytesIO(b"abc"), "gzip")
    with pytest.raises(StreamNotFinished, match="gzip stream was not read to its end"):
        _ = reader.sha256
    no_digest = next(split_records(io.BytesIO(b"a\n"), "jsonl", digest=False))
    no_digest.read()
    with pytest.raises(ValueError, match="digest=False"):
        _ = no_digest.sha256


def test_readinto_and_closed_streams():
    part = next(split_records(io.BytesIO(b"hello\nworld\n"), "jsonl"))
    buf = bytearray(8)
    assert part.readinto(buf) == 8 and bytes(buf) == b"hello\nwo"
    assert part.readinto(buf) == 4 and bytes(buf[:4]) == b"rld\n"
    assert part.readinto(buf) == 0
    part.close()
    with pytest.raises(ValueError, match="closed part 1"):
        part.read(1)
    # An io.BufferedReader over a stage works as over any raw stream.
    text = io.BufferedReader(CompressedReader(io.BytesIO(b"x" * 10_000), "zstd")).read()
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(text)).read() == b"x" * 10_000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_records": 0}, "max_records must be a positive integer or None, not 0"),
        ({"max_bytes": -1}, "max_bytes must be a positive integer or None, not -1"),
        ({"max_records": True}, "max_records must be a positive integer or None, not True"),
        ({"chunk_size": 0}, "chunk_size must be at least 1, not 0"),
        ({"lookahead": 0}, "lookahead must be at least 1, not 0"),
    ],
)
def test_bad_split_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        split_records(io.BytesIO(b""), "jsonl", **kwargs)


def test_bad_format_codec_and_backend_are_named():
    with pytest.raises(ValueError, match="unknown record format 'xml'"):
        split_records(io.BytesIO(b""), "xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown compression 'lzma': expected one of \['gzip'"):
        CompressedReader(io.BytesIO(b""), "lzma")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown backend 'zstandard' for gzip"):
        CompressedReader(io.BytesIO(b""), "gzip", backend="zstandard")
    with pytest.raises(ValueError, match="non-blocking streams are not supported"):
        CompressedReader(_NoneReader(), "gzip").read()


class _NoneReader(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, buffer):  # a non-blocking stream with nothing ready
        return None


def test_a_csv_header_longer_than_the_cap_is_refused():
    data = b"h" * (MAX_HEADER + 1) + b"\n1\n"
    with pytest.raises(
        ValueError, match=f"CSV header \\(first record\\) is longer than {MAX_HEADER}"
    ):
        split_records(io.BytesIO(data), "csv", max_records=1)


# -- compression: real tools read it -----------------------------------------------------------


@pytest.mark.parametrize("backend", ["isal", "zlib"])
def test_gzip_output_is_read_by_gzip_and_python(tmp_path, backend):
    data = _jsonl(20_000)
    reader = CompressedReader(io.BytesIO(data), "gzip", backend=backend, chunk_size=10_000)
    blob = reader.read()
    path = tmp_path / f"a.jsonl{SUFFIXES['gzip']}"
    path.write_bytes(blob)
    assert (
        subprocess.run(["gzip", "-dc", str(path)], capture_output=True, check=True).stdout == data
    )
    assert subprocess.run(["gzip", "-t", str(path)], check=False).returncode == 0
    assert gzip.decompress(blob) == data
    assert (reader.bytes_in, reader.size) == (len(data), len(blob))
    assert len(blob) < len(data) / 3
    # No name, zero mtime: the same input gives the same bytes.
    assert blob[4:8] == b"\0\0\0\0" and not blob[3] & 0x08
    assert CompressedReader(io.BytesIO(data), "gzip", backend=backend).read() == blob


def test_zstd_output_is_read_by_zstd_and_zstandard(tmp_path):
    data = _jsonl(20_000)
    reader = CompressedReader(io.BytesIO(data), "zstd", chunk_size=10_000)
    blob = reader.read()
    path = tmp_path / f"a.jsonl{SUFFIXES['zstd']}"
    path.write_bytes(blob)
    zstd = shutil.which("zstd")
    assert zstd, "the zstd command line tool (Debian package zstd) is needed by this test"
    assert subprocess.run([zstd, "-dc", str(path)], capture_output=True, check=True).stdout == data
    assert subprocess.run([zstd, "-t", "-q", str(path)], check=False).returncode == 0
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read() == data
    assert reader.sha256 == hashlib.sha256(blob).hexdigest()


def test_gzip_falls_back_to_zlib_when_isal_cannot_be_imported(monkeypatch):
    assert compression_backends("gzip")[0] == "isal"  # installed here: the default
    monkeypatch.setitem(sys.modules, "isal", None)
    monkeypatch.setitem(sys.modules, "isal.isal_zlib", None)
    assert compression_backends("gzip") == ("zlib",)
    reader = CompressedReader(io.BytesIO(b"abc\n" * 1000), "gzip")
    assert (reader.backend, reader.level) == ("zlib", 6)
    assert gzip.decompress(reader.read()) == b"abc\n" * 1000
    with pytest.raises(CompressionUnavailable, match="backend 'isal' is not installed"):
        CompressedReader(io.BytesIO(b""), "gzip", backend="isal")


def test_zstd_without_zstandard_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "zstandard", None)
    assert compression_backends("zstd") == ()
    with pytest.raises(
        CompressionUnavailable, match="zstd compression needs the 'zstandard' package"
    ):
        CompressedReader(io.BytesIO(b""), "zstd")


class _Repeat(io.RawIOBase):
    """``block`` ``times`` over, without holding more than the block."""

    def __init__(self, block: bytes, times: int) -> None:
        self.block, self.left = block, times

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        if not self.left:
            return b""
        self.left -= 1
        return self.block


@pytest.mark.parametrize(
    ("codec", "backend"), [("gzip", "isal"), ("gzip", "zlib"), ("zstd", "zstandard")]
)
def test_compression_releases_the_gil(codec, backend):
    """While another thread compresses 16 MiB chunks, a pure-Python loop here keeps running:
    its longest stall is a small part of the call (under a quarter). A control that holds the GIL
    (``bytes.count``) stalls it for most of its call, which shows the measure works."""
    block = (_jsonl(40_000) * 9)[: 16 * MiB]
    times = 1 if backend == "zlib" else 8  # zlib -6 is ~10x slower: calls of similar length

    def compress() -> None:
        source = _Repeat(block, times)
        CompressedReader(source, codec, backend=backend, chunk_size=len(block)).read()

    # The control: one C call that holds the GIL, long enough (8 x 16 MiB) that thread start-up
    # and scheduling are a small part of it on a busy machine.
    big = block * 8
    control_stall, control_duration = longest_stall(lambda: big.count(b'"i'))
    assert control_stall > 0.5 * control_duration, (control_stall, control_duration)
    # A call that held the GIL would stall the loop for all of it, every time; a busy machine
    # can also stall it (descheduling), so the best of three tries is what counts.
    tries = []
    for _ in range(3):
        stall, duration = longest_stall(compress)
        tries.append((round(stall, 3), round(duration, 3)))
        if stall < 0.25 * duration:
            break
    else:
        raise AssertionError(f"the loop stalled for most of every call: {tries}")


# -- memory ----------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import hashlib, io, json, sys
    from destinations._shaping import CompressedReader, split_records

    MiB = 1024 * 1024
    TOTAL = 256 * MiB

    class Generated(io.RawIOBase):
        '''TOTAL bytes of JSON Lines, made on the fly from one 1 MiB block of records.'''
        def __init__(self, block):
            self.block, self.pos = memoryview(block), 0
        def readable(self):
            return True
        def readinto(self, buf):
            n = min(len(buf), TOTAL - self.pos, len(self.block) - self.pos % len(self.block))
            start = self.pos % len(self.block)
            memoryview(buf).cast("B")[:n] = self.block[start : start + n]
            self.pos += n
            return n

    lines, size = [], 0
    while size < MiB - 300:
        line = json.dumps({"id": len(lines), "title": "x" * (len(lines) % 200)}).encode() + b"\\n"
        lines.append(line)
        size += len(line)
    lines.append(b" " * (MiB - size - 1) + b"\\n")
    block = b"".join(lines)
    assert len(block) == MiB
    per_block = len(lines)

    def status(field):  # MiB, from the kernel's accounting of this process
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise LookupError(field)

    def reset_peak():  # the high-water mark (VmHWM) starts again from the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return status("VmRSS")

    mode = sys.argv[1]
    sink = hashlib.sha256()
    base = reset_peak()
    if mode == "gzip+split":
        parts = records = bytes_in = 0
        for part in split_records(Generated(block), "jsonl", max_records=100_000, digest=False):
            reader = CompressedReader(part, "gzip")
            while chunk := reader.read(8 * MiB):  # what a multipart upload reads
                sink.update(chunk)
            parts += 1
            records += part.records
            bytes_in += reader.bytes_in
        assert bytes_in == TOTAL, bytes_in
        assert records == per_block * 256, (records, per_block)
        assert parts == -(-records // 100_000), parts
    else:  # one 64 MiB record, then small ones, with a byte limit: the look-ahead is bounded
        class OneBig(io.RawIOBase):
            # 1 MiB of records, one 64 MiB record, 8 MiB of records; made as it is read.
            def __init__(self):
                self.head, self.left, self.tail = 1, 64, 8
            def readable(self):
                return True
            def readinto(self, buf):
                assert len(buf) >= MiB
                if self.head:
                    self.head -= 1
                    piece = block
                elif self.left:
                    self.left -= 1
                    piece = zzz if self.left else zzz_end
                elif self.tail:
                    self.tail -= 1
                    piece = block
                else:
                    return 0
                memoryview(buf).cast("B")[:MiB] = piece
                return MiB
        zzz, zzz_end = b"z" * MiB, b"z" * (MiB - 1) + b"\\n"
        source = OneBig()
        base = reset_peak()
        sizes = []
        for part in split_records(source, "jsonl", max_bytes=128 * MiB):
            while chunk := part.read(8 * MiB):
                sink.update(chunk)
            sizes.append(part.size)
        # The big record does not fit the look-ahead: it starts part 2, streamed through.
        assert sizes == [MiB, 72 * MiB], sizes
    print(json.dumps({"growth_mib": status("VmHWM") - base, "base_mib": base}))
    """
)


@pytest.mark.parametrize("mode", ["gzip+split", "one huge record"])
def test_memory_stays_flat(mode):
    """256 MiB of JSON Lines split into 100,000-record parts, each gzipped and read in 8 MiB
    pieces; and a 64 MiB record under a 128 MiB byte limit, read in 8 MiB pieces: peak RSS
    (the kernel's high-water mark, reset at the start) grows well under 64 MiB."""
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, timeout=120,
        cwd=ROOT, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    seconds = time.monotonic() - started
    print(f"{mode}: peak RSS growth {result['growth_mib']:.1f} MiB in {seconds:.1f} s")
    # gzip+split holds a chunk, the compressor's output and the 8 MiB read; one huge record
    # adds the look-ahead (up to 4 MiB + a chunk, briefly twice) and pieces of the 8 MiB read.
    assert result["growth_mib"] < (16 if mode == "gzip+split" else 48), result
