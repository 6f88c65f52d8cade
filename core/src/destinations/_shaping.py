"""Delivery shaping: streaming compression and splitting at record boundaries.

Pure building blocks, no I/O of their own beyond reading the source they are given: every
stage is a readable binary stream that pulls from its source chunk by chunk, so memory stays
flat whatever the size of the file. Stages compose: ``split_records`` yields parts,
each part can be fed to a ``CompressedReader``.

Compression
-----------
``CompressedReader(source, codec, *, backend=None, level=None, chunk_size=CHUNK)``
    A non-seekable ``io.RawIOBase`` whose bytes are ``source`` compressed as one ``.gz``
    member (``codec="gzip"``) or one ``.zst`` frame with a content checksum
    (``codec="zstd"``). ``read(n)`` returns ``n`` bytes unless the stream ends (never a
    short read, so SDKs that size multipart parts by what one read returns get full parts).
    Once it is read to its end: ``size`` (compressed bytes produced), ``bytes_in``
    (source bytes consumed) and ``sha256`` (hex digest of the compressed bytes, for the
    manifest); ``done`` tells whether the end was reached. ``size`` and ``bytes_in`` count
    as they go; ``sha256`` before the end raises ``StreamNotFinished``. The source is
    never closed here.

    The gzip output has no file name and a zero mtime, so the same input always gives the
    same bytes (and sha256) with a given backend and level.

``compression_backends(codec) -> tuple[str, ...]``
    The importable backends for ``codec``, fastest first; the first is what ``backend=None``
    uses. gzip: ``"isal"`` (python-isal's ``isal_zlib``, ISA-L's deflate, level 2 by
    default) then ``"zlib"`` (the standard library, level 6 by default, the fallback when
    isal is not installed). zstd: ``"zstandard"`` (level 3 by default); Python before 3.14
    has no zstd in its standard library, so zstd needs the ``zstandard`` package (a core
    dependency) and an explicit error names it when it is missing.

    Why isal: on a 256 MiB JSON Lines file (``benchmarks/bench_shaping.py``, 2 shared
    cores) isal level 2 compressed at 588 MiB/s (1.7 CPU s/GiB, ratio 4.14) against zlib
    level 6's 46 MiB/s (22.4 CPU s/GiB, ratio 5.23): 13x faster for a quarter more output.
    zlib-ng (same maintainers) was 64 MiB/s at level 6 and, at level 1, 500 MiB/s but with
    a 3.18 ratio (30 % more output than isal); isal level 1 is as fast as level 2 with a
    slightly worse ratio, level 3 is 1.6x slower for 3 % less output. python-isal is
    actively released, with wheels for Linux, macOS and Windows on x86-64 and ARM64 (the
    platforms the dependency is declared for; elsewhere zlib takes over).
    Every backend releases the GIL while it compresses a chunk (tests/core/test_shaping.py
    checks it against a GIL-holding control; the benchmark runs two threads at once), so
    compressing one file on a delivery worker thread does not stall the uploads of the
    others.

``SUFFIXES``: ``{"gzip": ".gz", "zstd": ".zst"}``, what the key gets appended.

Splitting
---------
``record_format(name, content_type=None, content_encoding=None) -> "jsonl" | "csv" | None``
    Whether a file is split, and how. A content type that names a record format decides
    (``application/x-ndjson``, ``application/ndjson``, ``application/jsonl``,
    ``application/x-jsonlines`` -> JSON Lines; ``text/csv``, ``application/csv`` -> CSV;
    parameters such as ``; charset=utf-8`` and case are ignored); any other content type
    leaves it to the name's last extension (``.jsonl``, ``.ndjson`` -> JSON Lines, ``.csv``
    -> CSV, any case). A file that already has a content encoding other than ``identity``
    (e.g. ``gzip``) is never split: its bytes are not records. ``None``: not split.

``split_records(source, fmt, *, max_records=None, max_bytes=None, chunk_size=CHUNK,
lookahead=LOOKAHEAD, digest=True) -> Iterator[Part]``
    The parts of ``source``, one after another. Each ``Part`` is a non-seekable
    ``io.RawIOBase`` reading straight from ``source``; the parts must be consumed in order:
    asking the iterator for part ``k + 1`` while part ``k`` still has bytes to give raises
    ``PartNotConsumed`` (a part whose remaining bytes are none is closed for you). At least
    one part is always yielded (an empty file gives one empty part; a CSV with only a
    header gives one part holding the header). Once a part is read to its end (``done``):
    ``records`` (records in it, not counting the CSV header), ``size`` (its bytes, header
    included, before any compression), ``sha256`` (of those bytes; only with
    ``digest=True``), ``source_start`` / ``source_end`` (the byte range of its records in
    the source, header excluded: with a seekable source, a part can be re-read for a retry
    as ``part.header + source[source_start:source_end]``; ``header`` is ``b""`` for JSON
    Lines). ``number`` is 1-based. ``read(n)``
    never returns short, like ``CompressedReader``. Pass ``digest=False`` when the part's
    own sha256 is not wanted (it is compressed, or the caller hashes what it stores).

    Cheapest use: read a part (or its ``CompressedReader``) ``chunk_size`` bytes or more at
    a time. Under a record limit alone, a chunk of the source that lies wholly inside the
    part is then handed on as it is, without a copy; the work left is counting its line
    ends (about as much CPU as ``split -l``). A CSV header longer than ``MAX_HEADER``
    (8 MiB) is refused with ``ValueError``.

Errors: ``StreamNotFinished`` (a figure asked for before the end), ``PartNotConsumed`` (parts
out of order), ``CompressionUnavailable`` (the codec's library is not installed),
``ValueError`` for bad arguments, naming the argument. A stage is read by one thread at a
time; every part of one split shares the source.

Record rules
------------
* JSON Lines: a record is a line ending at ``\\n`` (a ``\\r`` before it stays in the record);
  a final line without ``\\n`` is a record too. A blank line is a record of its own:
  counted, never dropped or merged, so counts match ``wc -l`` (plus a final unterminated
  line) and a ``max_records`` split gives exactly the parts ``split -l`` gives. The bytes
  are not parsed as JSON.
* CSV: a record ends at a ``\\n`` outside double quotes (RFC 4180: a quoted field may hold
  line breaks, and ``""`` inside it is an escaped quote). ``\\r\\n`` line ends are kept as they
  are; a lone ``\\r`` is not a line end. The first record is the header; every part repeats
  it byte for byte. A quote inside an unquoted field (not valid RFC 4180) opens a quoted
  section as far as splitting is concerned; an unclosed quote makes the rest of the file one
  record. Nothing is ever lost or cut: the parts still add up to the source.
* Limits: a part holds at most ``max_records`` records and at most ``max_bytes`` bytes
  (header included), except that a record is never cut: a part always holds at least one
  record, so a record larger than ``max_bytes`` (or a header plus one record) is a part on
  its own. To decide whether the next record still fits, the splitter must see its end
  within the part's remaining bytes; it looks at most ``lookahead`` bytes ahead (4 MiB by
  default), so a record longer than that starts a new part even when it would have fitted.
  Memory stays at a chunk or two plus what a read returns; only while looking ahead at a
  long record does it reach about twice ``chunk_size + lookahead``, whatever the records.
* Concatenating the parts, without the header that parts after the first start with,
  gives back the source exactly.
"""

from __future__ import annotations

import abc
import hashlib
import io
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final, Literal, Protocol, final, get_args

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "CHUNK",
    "LOOKAHEAD",
    "MAX_HEADER",
    "SUFFIXES",
    "Codec",
    "CompressedReader",
    "CompressionUnavailable",
    "Part",
    "PartNotConsumed",
    "RecordFormat",
    "StreamNotFinished",
    "compression_backends",
    "record_format",
    "split_records",
]

CHUNK: Final = 1024 * 1024
LOOKAHEAD: Final = 4 * 1024 * 1024
#: A CSV header is kept in memory to be repeated: one longer than this is refused.
MAX_HEADER: Final = 8 * 1024 * 1024

Codec = Literal["gzip", "zstd"]
RecordFormat = Literal["jsonl", "csv"]

SUFFIXES: Final[dict[str, str]] = {"gzip": ".gz", "zstd": ".zst"}


class ByteSource(Protocol):
    """What a stage reads from: anything with ``read(n)`` (files, streams, other stages)."""

    def read(self, size: int = -1, /) -> bytes | None: ...


class StreamNotFinished(RuntimeError):
    """A figure that exists only once the stream was read to its end was asked for early."""


class PartNotConsumed(RuntimeError):
    """The next part was asked for while the previous one still had bytes to give."""


class CompressionUnavailable(RuntimeError):
    """The codec or backend asked for cannot be imported here."""


def _read(source: ByteSource, size: int) -> bytes:
    data = source.read(size)
    if data is None:
        raise ValueError("the source returned None: non-blocking streams are not supported")
    return data


class _Stage(io.RawIOBase):
    """A readable, non-seekable stage: subclasses define ``_take``; reads are never short."""

    def __init__(self, digest: bool) -> None:
        super().__init__()
        self.size = 0
        self.done = False
        self._hash = hashlib.sha256() if digest else None
        self._what = "stream"

    @abc.abstractmethod
    def _take(self, n: int) -> bytes | memoryview:
        """Up to ``n`` (> 0) next bytes; empty only at the end (then ``done`` is set)."""

    def _next(self, n: int) -> bytes | memoryview:
        piece = self._take(n)
        if piece:
            self.size += len(piece)
            if self._hash is not None:
                self._hash.update(piece)
        return piece

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        if self.closed:
            raise ValueError(f"I/O operation on a closed {self._what}")
        if size is None or size < 0:
            return self.readall()
        pieces: list[bytes | memoryview] = []
        left = size
        while left > 0 and not self.done:
            piece = self._next(left)
            if not piece:
                break
            pieces.append(piece)
            left -= len(piece)
        if len(pieces) == 1 and isinstance(pieces[0], bytes):
            return pieces[0]
        return b"".join(pieces)

    def readall(self) -> bytes:
        pieces: list[bytes | memoryview] = []
        while not self.done:
            piece = self._next(CHUNK)
            if not piece:
                break
            pieces.append(piece)
        return b"".join(pieces)

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        if self.closed:
            raise ValueError(f"I/O operation on a closed {self._what}")
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view) and not self.done:
            piece = self._next(len(view) - filled)
            if not piece:
                break
            view[filled : filled + len(piece)] = piece
            filled += len(piece)
        return filled

    @property
    def sha256(self) -> str:
        """Hex sha256 of every byte this stream gave; only once it was read to its end."""
        if self._hash is None:
            raise ValueError(f"{self._what} was made with digest=False: it has no sha256")
        if not self.done:
            raise StreamNotFinished(f"{self._what} was not read to its end: no sha256 yet")
        return self._hash.hexdigest()


# -- compression -------------------------------------------------------------------------------


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self) -> bytes: ...


_DEFAULT_LEVEL: Final[dict[str, int]] = {"isal": 2, "zlib": 6, "zstandard": 3}
_BACKENDS: Final[dict[str, tuple[str, ...]]] = {"gzip": ("isal", "zlib"), "zstd": ("zstandard",)}
_GZIP_WBITS: Final = 16 + 15  # a gzip member (header and crc32/size trailer), 32 KiB window


def _importable(backend: str) -> bool:
    try:
        _factory(backend)
    except ImportError:
        return False
    return True


def _factory(backend: str) -> Callable[[int], _Compressor]:
    if backend == "isal":
        from isal import isal_zlib

        return lambda level: isal_zlib.compressobj(level, isal_zlib.DEFLATED, _GZIP_WBITS)
    if backend == "zlib":
        import zlib

        return lambda level: zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
    if backend == "zstandard":
        import zstandard

        def make(level: int) -> _Compressor:
            return zstandard.ZstdCompressor(level=level, write_checksum=True).compressobj()

        return make
    raise ValueError(f"unknown compression backend {backend!r}")  # pragma: no cover


def compression_backends(codec: Codec) -> tuple[str, ...]:
    """The backends for ``codec`` importable here, fastest first (see the module docs)."""
    if codec not in _BACKENDS:
        raise ValueError(f"unknown compression {codec!r}: expected one of {list(_BACKENDS)}")
    return tuple(b for b in _BACKENDS[codec] if _importable(b))


@final
class CompressedReader(_Stage):
    """``source`` compressed with ``codec``, as a readable stream (see the module docs)."""

    def __init__(
        self,
        source: ByteSource,
        codec: Codec,
        *,
        backend: str | None = None,
        level: int | None = None,
        chunk_size: int = CHUNK,
    ) -> None:
        super().__init__(digest=True)
        if codec not in _BACKENDS:
            raise ValueError(f"unknown compression {codec!r}: expected one of {list(_BACKENDS)}")
        if backend is None:
            available = compression_backends(codec)
            if not available:
                raise CompressionUnavailable(
                    f"{codec} compression needs the {_BACKENDS[codec][0]!r} package, "
                    "which is not installed"
                )
            backend = available[0]
        elif backend not in _BACKENDS[codec]:
            raise ValueError(
                f"unknown backend {backend!r} for {codec}: expected one of {list(_BACKENDS[codec])}"
            )
        try:
            factory = _factory(backend)
        except ImportError as exc:
            raise CompressionUnavailable(
                f"compression backend {backend!r} is not installed"
            ) from exc
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
        self.codec: Codec = codec
        self.backend = backend
        self.level = _DEFAULT_LEVEL[backend] if level is None else level
        self.bytes_in = 0
        self._what = f"{codec} stream"
        self._source = source
        self._chunk = chunk_size
        self._compressor = factory(self.level)
        self._pending: memoryview = memoryview(b"")
        self._flushed = False

    def _take(self, n: int) -> bytes | memoryview:
        while not self._pending:
            if self._flushed:
                self.done = True
                return b""
            data = _read(self._source, self._chunk)
            if data:
                self.bytes_in += len(data)
                out = self._compressor.compress(data)
            else:
                out = self._compressor.flush()
                self._flushed = True
            self._pending = memoryview(out)
        piece = self._pending[:n]
        self._pending = self._pending[len(piece) :]
        return piece


# -- splitting ---------------------------------------------------------------------------------

_NL: Final = b"\n"
_QUOTE: Final = b'"'
#: Below this many records wanted, find them one by one instead of counting the whole range.
_FIND_BELOW: Final = 64
#: A read at least this large that ends mid-chunk makes the next source read fit it.
_REALIGN: Final = 64 * 1024
#: Where a part ends inside a chunk, the chunk is counted in blocks of this size (halved as the
#: end gets near) before the last few line ends are found one by one.
_BLOCK: Final = 64 * 1024

_JSONL_TYPES: Final = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)
_CSV_TYPES: Final = frozenset({"text/csv", "application/csv"})
_EXTENSIONS: Final[dict[str, RecordFormat]] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


def record_format(
    name: str, content_type: str | None = None, content_encoding: str | None = None
) -> RecordFormat | None:
    """How a file is split: ``"jsonl"``, ``"csv"`` or ``None`` (not split)."""
    if content_encoding and content_encoding.strip().lower() not in ("", "identity"):
        return None
    if content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        if media in _JSONL_TYPES:
            return "jsonl"
        if media in _CSV_TYPES:
            return "csv"
    return _EXTENSIONS.get(os.path.splitext(name)[1].lower())


def _count_bytes(buf: bytes, needle: bytes, start: int, stop: int) -> int:
    return buf.count(needle, start, stop)


def _counter() -> Callable[[bytes, bytes, int, int], int]:
    """How a long range is searched for one byte: StringZilla's SIMD count where it is
    installed (about 5x faster than ``bytes.count`` here), else ``bytes.count``."""
    try:
        import stringzilla
    except ImportError:  # pragma: no cover - a platform without its wheel
        return _count_bytes
    count: Callable[[bytes, bytes, int, int], int] = stringzilla.count
    return count


#: ``_count(buf, needle, start, stop)``: how many ``needle`` bytes in ``buf[start:stop]``.
_count = _counter()


def _line_ends(buf: bytes, start: int, stop: int, limit: int) -> tuple[int, int]:
    """At most ``limit`` ``\\n`` in ``buf[start:stop]``: (how many, index after the last)."""
    if limit < _FIND_BELOW:
        count, end, i = 0, -1, start
        while count < limit:
            j = buf.find(_NL, i, stop)
            if j < 0:
                break
            count, end, i = count + 1, j + 1, j + 1
        return count, end
    count = _count(buf, _NL, start, stop)
    if count == 0:
        return 0, -1
    if count <= limit:
        return count, buf.rfind(_NL, start, stop) + 1
    return limit, _nth_line_end(buf, start, stop, limit)


def _nth_line_end(buf: bytes, start: int, stop: int, n: int) -> int:
    """The index after the ``n``-th ``\\n`` of ``buf[start:stop]``, which holds more than
    ``n``: whole blocks are counted and skipped, a block holding the end is halved, and the
    last few (fewer than ``_FIND_BELOW``, or a block of under 64 bytes) are found one by one."""
    i, block = start, _BLOCK
    while n >= _FIND_BELOW and block >= _FIND_BELOW:
        j = min(stop, i + block)
        count = _count(buf, _NL, i, j)
        if count < n:
            n, i = n - count, j
        else:
            block //= 2
    for _ in range(n):
        i = buf.find(_NL, i, stop) + 1
    return i


def _csv_ends(buf: bytes, start: int, stop: int, limit: int, parity: int) -> tuple[int, int]:
    """Like :func:`_line_ends`, counting only line ends outside double quotes; ``parity`` is
    1 when ``start`` is inside a quoted field."""
    if buf.find(_QUOTE, start, stop) < 0:
        return (0, -1) if parity else _line_ends(buf, start, stop, limit)
    count, end, i = 0, -1, start
    while count < limit:
        j = buf.find(_NL, i, stop)
        if j < 0:
            break
        parity ^= buf.count(_QUOTE, i, j) & 1
        i = j + 1
        if not parity:
            count, end = count + 1, i
    return count, end


@final
class Part(_Stage):
    """One part of a split file (see the module docs); made by :func:`split_records`."""

    def __init__(self, splitter: _Splitter, number: int, digest: bool) -> None:
        super().__init__(digest=digest)
        self.number = number
        self.records = 0
        self.source_start = splitter.offset
        self.source_end: int | None = None
        #: The CSV header this part starts with (``b""`` for JSON Lines).
        self.header: bytes = splitter.header
        self._what = f"part {number}"
        self._splitter = splitter
        self._header = memoryview(splitter.header)
        self._in_record = False  # the next byte continues a record already counted as started

    def _take(self, n: int) -> bytes | memoryview:
        if self.done:
            return b""
        if self._header:
            piece = self._header[:n]
            self._header = self._header[len(piece) :]
            return piece
        return self._splitter.take(self, n)


class _Splitter:
    """The shared reading state behind the parts of one file."""

    def __init__(
        self,
        source: ByteSource,
        fmt: RecordFormat,
        max_records: int | None,
        max_bytes: int | None,
        chunk_size: int,
        lookahead: int,
        header: bytes | None = None,
    ) -> None:
        self.source = source
        self.csv = fmt == "csv"
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.chunk = chunk_size
        self.lookahead = lookahead
        self.buf = b""
        self.pos = 0
        self.eof = False
        self.base = 0  # source offset of buf[0]
        self.parity = 0  # CSV: 1 while self.pos is inside a quoted field
        if header is not None:
            self.header = header  # read already: the source starts at a record boundary
        else:
            self.header = self._read_header() if self.csv else b""

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def fill(self, size: int | None = None) -> bool:
        """Read one more chunk, keeping what is not consumed yet; False at the end."""
        if self.eof:
            return False
        data = _read(self.source, size or self.chunk)
        if not data:
            self.eof = True
            return False
        if self.pos < len(self.buf):  # a record still undecided (look-ahead): keep it, one copy
            data = b"".join((memoryview(self.buf)[self.pos :], data))
        self.base += self.pos
        self.buf, self.pos = data, 0
        return True

    def exhausted(self) -> bool:
        return self.pos >= len(self.buf) and not self.fill()

    def ends(self, start: int, stop: int, limit: int, parity: int) -> tuple[int, int]:
        if self.csv:
            return _csv_ends(self.buf, start, stop, limit, parity)
        return _line_ends(self.buf, start, stop, limit)

    def _read_header(self) -> bytes:
        while True:
            count, end = self.ends(self.pos, len(self.buf), 1, 0)
            if count or len(self.buf) - self.pos > MAX_HEADER:
                break
            if not self.fill():
                end = len(self.buf)  # no line end: the whole file is its header
                break
        if end < 0 or end - self.pos > MAX_HEADER:
            raise ValueError(f"the CSV header (first record) is longer than {MAX_HEADER} bytes")
        header, self.pos = self.buf[self.pos : end], end
        self.parity = 0
        return header

    def _next_fits(self, part: Part) -> bool:
        """At a record boundary of a non-empty ``part``: does the next record go in it?"""
        if self.max_records is not None and part.records >= self.max_records:
            return False
        if self.max_bytes is None:
            return not self.exhausted()
        budget = self.max_bytes - part.size
        if budget <= 0:
            return False
        while True:
            if self.exhausted():
                return False
            have = len(self.buf) - self.pos
            stop = self.pos + min(budget, have)
            if self.ends(self.pos, stop, 1, 0)[0]:
                return True  # its line end is within the budget
            if have > budget or have > self.lookahead:
                return False  # longer than what is left, or than we look ahead
            if not self.fill():
                return True  # the final record, unterminated, within the budget

    def take(self, part: Part, n: int) -> bytes | memoryview:
        if self.pos >= len(self.buf):
            # Read what completes the caller's read (when it is not tiny), so that the next
            # read starts on a fresh chunk and can take it whole.
            self.fill(n if _REALIGN <= n < self.chunk else None)
        if self.pos == 0 and n >= len(self.buf) > 0 and self.max_bytes is None:
            whole = self._whole_buffer(part)
            if whole is not None:
                return whole
        while True:
            if part._in_record:
                return self._continue_record(part, n)
            if part.records == 0:
                if self.exhausted():
                    return self._finish(part)
                part._in_record = True  # a part's first record goes in whatever its size
                continue
            # Whole records at once, as many as the limits and n allow.
            if self.pos < len(self.buf):
                stop = len(self.buf)
                if self.max_bytes is not None:
                    stop = min(stop, self.pos + self.max_bytes - part.size)
                stop = min(stop, self.pos + n)
                limit = stop - self.pos
                if self.max_records is not None:
                    limit = min(limit, self.max_records - part.records)
                if limit > 0:
                    count, end = self.ends(self.pos, stop, limit, 0)
                    if count:
                        piece = memoryview(self.buf)[self.pos : end]
                        self.pos = end
                        part.records += count
                        return piece
            if not self._next_fits(part):
                return self._finish(part)
            part._in_record = True

    def _whole_buffer(self, part: Part) -> bytes | None:
        """The whole fresh buffer, as it is (no copy), when all of it belongs to ``part``:
        the common case of a record limit only, read a chunk at a time."""
        buf = self.buf
        start_parity = self.parity if part._in_record else 0
        count, end = self.ends(0, len(buf), len(buf), start_parity)
        tail = end != len(buf)  # a record starts here and ends in a later chunk
        if self.max_records is not None and part.records + count + tail > self.max_records:
            return None
        if self.csv:
            parity = 0 if count else start_parity
            self.parity = parity ^ (_count(buf, _QUOTE, end if count else 0, len(buf)) & 1)
        part.records += count
        part._in_record = tail
        self.pos = len(buf)
        return buf

    def _continue_record(self, part: Part, n: int) -> bytes | memoryview:
        """Bytes of the record in progress, up to its end (then it is counted)."""
        if self.pos >= len(self.buf) and not self.fill():
            part._in_record = False
            part.records += 1  # the final record, without a line end
            return self._finish(part)
        start = self.pos
        stop = min(len(self.buf), start + n)
        count, end = self.ends(start, stop, 1, self.parity)
        if count:
            self.pos = end
            self.parity = 0
            part._in_record = False
            part.records += 1
        else:
            self.pos = stop
            if self.csv:
                self.parity ^= _count(self.buf, _QUOTE, start, stop) & 1
        return memoryview(self.buf)[start : self.pos]

    def _finish(self, part: Part) -> bytes:
        part.done = True
        part.source_end = self.offset
        return b""

    def settle(self, part: Part) -> None:
        """Close ``part`` if it has nothing more to give; else it was not read to its end."""
        if part.done:
            return
        if not part._header and not part._in_record:
            if part.records == 0:
                if self.exhausted():
                    self._finish(part)
                    return
            elif not self._next_fits(part):
                self._finish(part)
                return
        raise PartNotConsumed(
            f"part {part.number} was not read to its end before part {part.number + 1} "
            "was asked for"
        )


def split_records(
    source: ByteSource,
    fmt: RecordFormat,
    *,
    max_records: int | None = None,
    max_bytes: int | None = None,
    chunk_size: int = CHUNK,
    lookahead: int = LOOKAHEAD,
    digest: bool = True,
    header: bytes | None = None,
    first: int = 1,
) -> Iterator[Part]:
    """The parts of ``source`` split at record boundaries (see the module docs).

    ``header`` and ``first`` resume a split at a part boundary: ``source`` then starts at
    the first record of part number ``first`` (``source_start``/``source_end`` count from
    there), and ``header`` is the CSV header read before (``b""`` for JSON Lines). Resumed
    at the end of the source, it yields no part (parts after the first always hold a
    record)."""
    if fmt not in get_args(RecordFormat):
        raise ValueError(f"unknown record format {fmt!r}: expected 'jsonl' or 'csv'")
    for label, value in (("max_records", max_records), ("max_bytes", max_bytes)):
        if value is not None and (isinstance(value, bool) or value < 1):
            raise ValueError(f"{label} must be a positive integer or None, not {value!r}")
    for label, value in (("chunk_size", chunk_size), ("lookahead", lookahead), ("first", first)):
        if value < 1:
            raise ValueError(f"{label} must be at least 1, not {value!r}")
    if header is not None and fmt == "jsonl" and header:
        raise ValueError("a JSON Lines file has no header: header must be b'' or None")
    splitter = _Splitter(source, fmt, max_records, max_bytes, chunk_size, lookahead, header)
    return _parts(splitter, digest, first)


def _parts(splitter: _Splitter, digest: bool, first: int = 1) -> Iterator[Part]:
    if first > 1 and splitter.exhausted():
        return
    part = Part(splitter, first, digest)
    yield part
    while True:
        splitter.settle(part)
        if splitter.exhausted():
            return
        part = Part(splitter, part.number + 1, digest)
        yield part
