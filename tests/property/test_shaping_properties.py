"""Properties of delivery shaping: splitting at record boundaries and streaming compression.

Every split is checked against an independent, byte-by-byte oracle (``_records``) that cuts
the same bytes into records the obvious way; small chunk sizes, small look-aheads and odd
read sizes put buffer edges everywhere a record can be.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import zstandard
from hypothesis import example, given, note, settings, strategies as st

from destinations._shaping import (
    CHUNK,
    LOOKAHEAD,
    CompressedReader,
    Part,
    RecordFormat,
    compression_backends,
    split_records,
)
from tests.strategies import csv_documents, jsonl_documents, record_bytes

EXAMPLES = settings(max_examples=1000)

max_records_s = st.one_of(st.none(), st.integers(1, 6))
max_bytes_s = st.one_of(st.none(), st.integers(1, 120))
chunk_sizes = st.one_of(st.integers(1, 48), st.just(CHUNK))
lookaheads = st.one_of(st.integers(1, 48), st.just(LOOKAHEAD))
#: How a consumer reads: fixed sizes in turn (a small one cuts records anywhere), -1 = all.
read_plans = st.one_of(st.just([-1]), st.lists(st.integers(1, 40), min_size=1, max_size=4))


def _records(data: bytes, fmt: RecordFormat) -> list[bytes]:
    """The oracle: the records of ``data``, one by one (CSV: the header is the first)."""
    if fmt == "jsonl":
        return re.findall(rb"[^\n]*\n|[^\n]+\Z", data)
    out, start, quoted = [], 0, False
    for i, byte in enumerate(data):
        if byte == ord('"'):
            quoted = not quoted
        elif byte == ord("\n") and not quoted:
            out.append(data[start : i + 1])
            start = i + 1
    if start < len(data):
        out.append(data[start:])
    return out


@dataclass
class Got:
    data: bytes
    records: int
    size: int
    sha256: str
    start: int
    end: int | None
    header: bytes


def _split(
    data: bytes,
    fmt: RecordFormat,
    *,
    max_records: int | None = None,
    max_bytes: int | None = None,
    chunk: int = CHUNK,
    lookahead: int = LOOKAHEAD,
    plan: list[int] | None = None,
    resume: bool = False,
) -> list[Got]:
    """The parts of ``data``; with ``resume``, cut as delivery cuts a rewindable source:
    each part by a splitter of its own started at the part's first record."""
    parts = []
    for part, offset in _parts_of(data, fmt, max_records, max_bytes, chunk, lookahead, resume):
        pieces = []
        for n in itertools.cycle(plan or [-1]):
            piece = part.read(n)
            if not piece:
                break
            pieces.append(piece)
            if n < 0:
                assert not part.read(1)
                break
        assert part.done
        end = None if part.source_end is None else offset + part.source_end
        parts.append(
            Got(b"".join(pieces), part.records, part.size, part.sha256,
                offset + part.source_start, end, part.header)
        )  # fmt: skip
    return parts


def _parts_of(
    data: bytes,
    fmt: RecordFormat,
    max_records: int | None,
    max_bytes: int | None,
    chunk: int,
    lookahead: int,
    resume: bool,
) -> Iterator[tuple[Part, int]]:
    limits = {"max_records": max_records, "max_bytes": max_bytes}
    sizes = {"chunk_size": chunk, "lookahead": lookahead}
    if not resume:
        for part in split_records(io.BytesIO(data), fmt, **limits, **sizes):
            yield part, 0
        return
    start, number, header = 0, 1, None
    while number == 1 or start < len(data):
        source = io.BytesIO(data[start:])
        part = next(
            split_records(source, fmt, **limits, **sizes, header=header, first=number)
        )
        assert part.number == number
        yield part, start  # read to its end by the caller before the next is cut
        assert part.source_end is not None
        start, number, header = start + part.source_end, number + 1, part.header


def _check(
    data: bytes,
    fmt: RecordFormat,
    max_records: int | None,
    max_bytes: int | None,
    chunk: int,
    lookahead: int,
    plan: list[int],
    resume: bool = False,
) -> list[Got]:
    parts = _split(
        data, fmt, max_records=max_records, max_bytes=max_bytes, chunk=chunk,
        lookahead=lookahead, plan=plan, resume=resume,
    )  # fmt: skip
    note(f"parts={[p.data for p in parts]!r}")
    records = _records(data, fmt)
    header = records.pop(0) if fmt == "csv" and records else b""
    assert parts, "at least one part, always"
    # Concatenation gives back the original; every part after the first repeats the header.
    assert all(p.data.startswith(header) for p in parts)
    assert parts[0].data + b"".join(p.data[len(header) :] for p in parts[1:]) == data
    # Record counts add up, and each part holds exactly the records the oracle finds in it.
    assert sum(p.records for p in parts) == len(records)
    assert [p.records for p in parts] == [
        max(len(_records(p.data, fmt)) - (fmt == "csv"), 0) for p in parts
    ]
    # Only the first part may be empty of records (an empty file, a header alone).
    assert all(p.records >= 1 for p in parts[1:])
    # The figures a part reports are the bytes it gave; its range re-reads it from the source.
    for p in parts:
        assert p.size == len(p.data)
        assert p.sha256 == hashlib.sha256(p.data).hexdigest()
        assert p.end is not None
        assert p.header == header
        assert p.header + data[p.start : p.end] == p.data
    # No part exceeds a limit unless it is a single (oversize) record.
    for p in parts:
        if max_records is not None:
            assert p.records <= max_records
        if max_bytes is not None and p.records > 1:
            assert p.size <= max_bytes
    # Parts are as full as allowed: one ends early only when the next record would not fit,
    # or is longer than the look-ahead.
    done = 0
    for p, q in itertools.pairwise(parts):
        done += p.records
        nxt = records[done]
        assert nxt == q.data[len(header) :][: len(nxt)]
        assert (
            (max_records is not None and p.records == max_records)
            or (max_bytes is not None and p.size + len(nxt) > max_bytes)
            or len(nxt) > lookahead
        ), f"part {parts.index(p) + 1} ended before {nxt!r} for no reason"
    return parts


@EXAMPLES
@given(
    jsonl_documents() | record_bytes, max_records_s, max_bytes_s, chunk_sizes, lookaheads,
    read_plans, st.booleans(),
)  # fmt: skip
@example(b"", 1, 1, CHUNK, LOOKAHEAD, [-1], False)  # empty file: one empty part
@example(b"", 1, 1, CHUNK, LOOKAHEAD, [-1], True)
@example(b"a\nb\nc", 2, None, 1, 1, [1], True)  # no final line end
@example(b"aa\nbb\ncc\n", None, 6, 4, 8, [-1], False)  # two records exactly at the limit
@example(b"aa\nbb\ncc\n", None, 5, 4, 8, [-1], True)  # one byte under: one record a part
@example(b"aaaaaa\nb\n", None, 5, 2, 8, [3], True)  # a record over the limit: its own part
@example(b"\n\n \n\r\n", 2, None, 3, 8, [-1], False)  # blank lines are records
@example(b"a\r\nb\r\n", 1, None, CHUNK, LOOKAHEAD, [-1], True)  # CRLF stays in the record
def test_jsonl_splits_back_to_the_original(
    data, max_records, max_bytes, chunk, lookahead, plan, resume
):
    _check(data, "jsonl", max_records, max_bytes, chunk, lookahead, plan, resume)


@EXAMPLES
@given(
    record_bytes, max_records_s, max_bytes_s, chunk_sizes, lookaheads, read_plans,
    st.booleans(),
)  # fmt: skip
@example(b"", 1, 1, CHUNK, LOOKAHEAD, [-1], False)  # empty file: one empty part
@example(b"h1,h2\n", 1, 3, 1, 1, [-1], True)  # header only: one part holding it
@example(b"h1,h2", 1, None, 2, 4, [1], True)  # header only, no line end
@example(b"h\n1\n2", 1, None, 1, 1, [-1], True)  # no final line end
@example(b'h\r\n"a\r\nb",1\r\n"c""d",2\r\n', 1, None, 3, 4, [2], True)  # quoted CRLF, ""
@example(b"h\nab\ncd\n", None, 8, 4, 8, [-1], False)  # header + two records: at the limit
@example(b"h\nab\ncd\n", None, 7, 4, 8, [-1], True)  # one byte over: one record a part
@example(b'h\n"never closed\n1\n', 1, None, 4, 4, [-1], True)  # unclosed quote: one record
def test_csv_splits_back_to_the_original(
    data, max_records, max_bytes, chunk, lookahead, plan, resume
):
    _check(data, "csv", max_records, max_bytes, chunk, lookahead, plan, resume)


@EXAMPLES
@given(
    csv_documents(), max_records_s, max_bytes_s, chunk_sizes, lookaheads, read_plans,
    st.booleans(),
)  # fmt: skip
@example((b"a,b\r\n", 0), 1, 10, CHUNK, LOOKAHEAD, [-1], True)  # header only
@example((b'a\r\n"x\r\ny"\r\n"q""r"\r\n', 2), 1, None, 1, 1, [1], True)  # quoted CRLF, ""
@example((b"a\n\n\n", 2), 1, None, CHUNK, LOOKAHEAD, [-1], False)  # blank rows are records
def test_csv_records_are_what_the_csv_module_reads(
    doc, max_records, max_bytes, chunk, lookahead, plan, resume
):
    data, expected = doc
    parts = _check(data, "csv", max_records, max_bytes, chunk, lookahead, plan, resume)
    assert sum(p.records for p in parts) == expected
    # Every part is a CSV file of its own: the header, then whole rows.
    import csv

    header = next(csv.reader(io.StringIO(data.decode(), newline="")), None)
    for p in parts:
        rows = list(csv.reader(io.StringIO(p.data.decode("utf-8"), newline="")))
        if header is not None:
            assert rows[0] == header
        assert len(rows) - (header is not None) == p.records


def _decompress(codec: str, blob: bytes) -> bytes:
    if codec == "gzip":
        return gzip.decompress(blob)
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)) as reader:
        return reader.read()


CODECS = [("gzip", b) for b in compression_backends("gzip")] + [
    ("zstd", b) for b in compression_backends("zstd")
]


@EXAMPLES
@given(
    st.one_of(st.binary(max_size=4000), jsonl_documents(), record_bytes),
    st.sampled_from(CODECS),
    st.one_of(st.integers(1, 64), st.just(CHUNK)),
    read_plans,
)
@example(b"", ("gzip", "isal"), CHUNK, [-1])  # empty input is still a valid member / frame
@example(b"", ("gzip", "zlib"), 1, [1])
@example(b"", ("zstd", "zstandard"), CHUNK, [-1])
@example(b"x" * 100_000, ("zstd", "zstandard"), 7, [3, 4096])
def test_compression_round_trips(data, codec_backend, chunk, plan):
    codec, backend = codec_backend
    reader = CompressedReader(io.BytesIO(data), codec, backend=backend, chunk_size=chunk)
    pieces = []
    for n in itertools.cycle(plan):
        piece = reader.read(n)
        if not piece:
            break
        pieces.append(piece)
        if n > 0:
            assert len(piece) == n or not reader.read(1)  # never a short read before the end
    blob = b"".join(pieces)
    assert reader.done
    assert _decompress(codec, blob) == data
    assert reader.bytes_in == len(data)
    assert reader.size == len(blob)
    assert reader.sha256 == hashlib.sha256(blob).hexdigest()
    if codec == "gzip":
        assert zlib.decompress(blob, 16 + 15) == data  # one member, nothing after it


@EXAMPLES
@given(jsonl_documents(), st.integers(1, 4), st.sampled_from(CODECS))
def test_split_then_compressed_parts_decompress_to_each_part(data, max_records, codec_backend):
    codec, backend = codec_backend
    plain = _split(data, "jsonl", max_records=max_records)
    rebuilt = []
    for part in split_records(io.BytesIO(data), "jsonl", max_records=max_records, digest=False):
        reader = CompressedReader(part, codec, backend=backend, chunk_size=16)
        rebuilt.append(_decompress(codec, reader.read()))
        assert reader.bytes_in == part.size
    assert rebuilt == [p.data for p in plain]


# -- the byte counter: StringZilla's SIMD count where installed, else bytes.count ------------


def test_the_simd_counter_is_used_where_stringzilla_is_installed() -> None:
    import stringzilla

    from destinations import _shaping

    assert _shaping._count is stringzilla.count  # a tests requirement: the fast path runs


@EXAMPLES
@given(
    data=st.binary(max_size=300) | st.text('\n"a,\r', max_size=300).map(str.encode),
    needle=st.sampled_from([b"\n", b'"']),
    bounds=st.tuples(st.integers(0, 310), st.integers(0, 310)),
)
def test_the_simd_counter_counts_as_bytes_count(
    data: bytes, needle: bytes, bounds: tuple[int, int]
) -> None:
    from destinations import _shaping

    start, stop = min(bounds[0], len(data)), min(max(bounds), len(data))
    assert _shaping._count(data, needle, start, stop) == data.count(needle, start, stop)
    assert _shaping._count_bytes(data, needle, start, stop) == data.count(needle, start, stop)


@settings(max_examples=300)
@given(
    case=st.tuples(st.just("jsonl"), jsonl_documents())
    | csv_documents().map(lambda made: ("csv", made[0])),
    limit=st.integers(1, 6),
    chunk=chunk_sizes,
)
def test_splitting_with_bytes_count_gives_the_same_parts(
    case: tuple[RecordFormat, bytes], limit: int, chunk: int
) -> None:
    """Where StringZilla has no wheel, ``bytes.count`` serves: the same parts, byte for byte."""
    from destinations import _shaping

    fmt, doc = case

    def parts() -> list[tuple[bytes, int]]:
        got = []
        for part in split_records(io.BytesIO(doc), fmt, max_records=limit, chunk_size=chunk):
            got.append((part.read(), part.records))
        return got

    fast = parts()
    saved = _shaping._count
    _shaping._count = _shaping._count_bytes
    try:
        assert parts() == fast
    finally:
        _shaping._count = saved


#: Line lengths for long documents: empty lines, short ones, some over a counting block.
line_lengths = st.lists(
    st.one_of(st.integers(0, 3), st.integers(4, 400), st.integers(60_000, 140_000)),
    min_size=1,
    max_size=400,
)


def _document(lengths: list[int]) -> bytes:
    return b"".join(b"x" * n + b"\n" for n in lengths)


@settings(max_examples=1000)
@given(lengths=line_lengths, cut=st.tuples(st.integers(0, 10**9), st.integers(0, 10**9)))
@example([0] * 200, (0, 0))  # only line ends: the blocks halve down to the last few
@example([3] * 1000, (5, 7))  # the n-th end in the first block
@example([200] * 1500, (0, 1000))  # whole blocks skipped before the one holding the end
@example([100_000, 0, 0] + [1] * 70, (0, 50))  # a long line, then the end past a block
def test_the_nth_line_end_is_the_one_find_would_reach(
    lengths: list[int], cut: tuple[int, int]
) -> None:
    """The boundary search (blocks counted, a block holding the end halved) lands where a
    loop of ``find`` does, for every n the range holds more than."""
    from destinations import _shaping

    buf = _document(lengths)
    start = cut[0] % len(buf)
    total = buf.count(b"\n", start)
    if total < 2:
        return
    n = 1 + cut[1] % (total - 1)
    i = start
    for _ in range(n):
        i = buf.find(b"\n", i) + 1
    assert _shaping._nth_line_end(buf, start, len(buf), n) == i


@settings(max_examples=1000)
@given(
    lengths=line_lengths,
    max_records=st.integers(64, 700),
    chunk=st.one_of(st.integers(4096, 300_000), st.just(CHUNK)),
    resume=st.booleans(),
)
@example([1] * 400, 64, CHUNK, False)  # the limit exactly where counting starts
@example([0] * 400, 199, 4096, True)  # empty records: many ends in one block
def test_long_jsonl_splits_back_to_the_original(
    lengths: list[int], max_records: int, chunk: int, resume: bool
) -> None:
    """Record limits of 64 and more: a part's end inside a chunk is found by counting blocks;
    the parts still give back the file, record for record."""
    _check(_document(lengths), "jsonl", max_records, None, chunk, LOOKAHEAD, [-1], resume)
