"""Delivery's sources: a fresh, rewound reader of one result file for every put attempt.

* A *path* is handed to the store by name (the SDK reads parts from disk); its sha256, for the
  manifest, is computed by reading the file once more (usually from the page cache).
* A *seekable* stream is shared: every upload (and every retry) reads it through its own
  :class:`StreamView` with its own position, each read a locked ``seek`` + ``read`` on the
  caller's stream.
* A *non-seekable* stream going to two or more destinations is first spooled once to an
  anonymous temporary file on disk, then shared like a seekable one; going to one
  destination it is streamed straight through once and is not retried (it cannot be rewound).
* :class:`ProgressReader` counts what a store reads, for types that do not report their own
  byte progress.
"""

from __future__ import annotations

import abc
import hashlib
import io
import os
import shutil
import tempfile
import threading
from typing import IO, TYPE_CHECKING, BinaryIO, cast

from ._errors import SourceUnreadable, StoreError
from ._progress import ProgressCallback
from ._records import ResultFile
from ._shaping import Part, RecordFormat, split_records
from ._store import Source, source_size

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "CHUNK",
    "CountingReader",
    "OnceStream",
    "PathFile",
    "Prepared",
    "ProgressReader",
    "SharedStream",
    "StreamView",
    "prepare",
]

CHUNK = 1024 * 1024


class _Digest:
    """sha256 of a byte range fed in reads that may repeat or rewind; complete only when
    every byte from 0 to the end was seen in order."""

    __slots__ = ("_hash", "upto")

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.upto = 0

    def feed(self, pos: int, data: bytes) -> None:
        end = pos + len(data)
        if pos <= self.upto < end:
            self._hash.update(memoryview(data)[self.upto - pos :])
            self.upto = end

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class Prepared(abc.ABC):
    """One result file ready for delivery to every destination."""

    rewindable = True
    size: int | None

    def __init__(self, file: ResultFile) -> None:
        self.file = file
        self._lock = threading.Lock()
        self._sha256: str | None = None

    @abc.abstractmethod
    def attempt(self) -> Source:
        """A source for one put attempt, positioned at the file's start."""

    def succeeded(self, source: Source) -> None:  # noqa: B027 - optional hook
        """Called after a put of ``source`` returned: keep its digest if it has one."""

    def sha256(self) -> str:
        with self._lock:
            if self._sha256 is None:
                self._sha256 = self._compute_sha256()
            return self._sha256

    @abc.abstractmethod
    def _compute_sha256(self) -> str:
        """The file's sha256, when no upload yielded it on the way."""

    def _offer(self, digest: _Digest, size: int | None) -> None:
        if size is not None and digest.upto == size:
            with self._lock:
                if self._sha256 is None:
                    self._sha256 = digest.hexdigest()

    def release(self) -> None:  # noqa: B027 - optional hook
        """Free what delivery created (temporary files); the caller's stream stays open."""


class PathFile(Prepared):
    def __init__(self, file: ResultFile, path: str) -> None:
        super().__init__(file)
        self.path = path
        try:
            self.size = os.stat(path).st_size
            if not os.access(path, os.R_OK):
                raise PermissionError(13, "Permission denied")
        except OSError as exc:
            raise SourceUnreadable(file.name, path, exc) from exc

    def attempt(self) -> Source:
        return self.path

    def _compute_sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest()


class SharedStream(Prepared):
    """A seekable stream shared by every upload; each gets its own :class:`StreamView`.

    The bytes are ``prefix`` followed by ``size - len(prefix)`` bytes of ``raw`` from
    ``start`` (a split part: its CSV header, then its records' range of the source).
    ``read_lock`` serialises the ``seek`` + ``read`` pairs on ``raw``; views of the same raw
    stream must share it. ``hashing``: whether uploads hash what they read on the way (for a
    manifest); without it :meth:`sha256` reads the bytes again when asked.
    """

    size: int

    def __init__(
        self,
        file: ResultFile,
        raw: IO[bytes],
        start: int,
        size: int,
        *,
        owned: bool = False,
        prefix: bytes = b"",
        read_lock: threading.Lock | None = None,
        hashing: bool = True,
    ) -> None:
        super().__init__(file)
        self.hashing = hashing
        self.raw = raw
        self.start = start
        self.size = size
        self.prefix = prefix
        self.read_lock = threading.Lock() if read_lock is None else read_lock
        self._owned = owned

    def attempt(self) -> Source:
        return cast(BinaryIO, StreamView(self))

    def succeeded(self, source: Source) -> None:
        if isinstance(source, StreamView) and source.digest is not None:
            self._offer(source.digest, self.size)

    def _compute_sha256(self) -> str:
        # No upload read the stream in order (e.g. parts read in parallel), or none hashed:
        # read it again.
        view = StreamView(self, hashing=True)
        while view.read(CHUNK):
            pass
        assert view.digest is not None
        return view.digest.hexdigest()

    def release(self) -> None:
        if self._owned:
            self.raw.close()


class PartSource(Prepared):
    """One part of a split file whose source can be read again (a path or a seekable
    stream), cut from its first record at ``start`` by a splitter of its own on every
    attempt: the split is deterministic from a part boundary, so a retry sends the same
    bytes. Uploads stream the part as it is cut (its size is not known before), so the
    source is read once, with no pass to find the parts first.

    ``header``: the CSV header read by part 1 (``None`` for part 1 itself). After a
    successful put, :attr:`last` is the part as sent: ``records``, ``size``, ``source_end``
    (from ``start``), ``header`` and, with ``hashing``, ``sha256``.
    """

    size = None

    def __init__(
        self,
        of: PathFile | SharedStream,
        fmt: RecordFormat,
        *,
        start: int,
        number: int,
        header: bytes | None,
        max_records: int | None,
        max_bytes: int | None,
        hashing: bool,
    ) -> None:
        super().__init__(of.file)
        self._of = of
        self._fmt: RecordFormat = fmt
        self.start = start
        self.number = number
        self._header = header
        self._limits = (max_records, max_bytes)
        self._hashing = hashing
        self._raw: IO[bytes] | None = None
        self.last: Part | None = None

    def attempt(self) -> Source:
        self.release()
        raw: IO[bytes]
        if isinstance(self._of, PathFile):
            raw = open(self._of.path, "rb", buffering=0)  # noqa: SIM115 - closed by release()
        else:
            raw = cast(IO[bytes], StreamView(self._of, hashing=False))
        self._raw = raw
        raw.seek(self.start)
        max_records, max_bytes = self._limits
        parts = split_records(
            raw,
            self._fmt,
            max_records=max_records,
            max_bytes=max_bytes,
            digest=self._hashing,
            header=self._header,
            first=self.number,
        )
        self.last = next(parts, None)
        if self.last is None:  # the file shrank since the delivery began
            raise StoreError(
                "provider_error",
                f"result file {self.file.name!r} ended at byte {self.start}, before the "
                f"{self._of.size} bytes it held when the delivery began; part {self.number} "
                "and later were not written",
                provider_code="IncompleteBody",
                transient=False,
            )
        return cast(BinaryIO, self.last)

    def _compute_sha256(self) -> str:
        if self.last is None or not self.last.done:
            raise RuntimeError(f"part {self.number} was not sent whole")
        return self.last.sha256

    def release(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            raw.close()


class ReaderBase(io.RawIOBase):
    """A raw reader whose subclasses define ``read``; ``readall`` and ``readinto`` follow."""

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


class StreamView(ReaderBase):
    """An independent, seekable window on a :class:`SharedStream` for one upload."""

    def __init__(self, shared: SharedStream, *, hashing: bool | None = None) -> None:
        super().__init__()
        self._shared = shared
        self._pos = 0
        hashing = shared.hashing if hashing is None else hashing
        self.digest = _Digest() if hashing else None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._shared.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def read(self, size: int | None = -1, /) -> bytes:
        left = self._shared.size - self._pos
        n = left if size is None or size < 0 else min(size, left)
        if n <= 0:
            return b""
        shared = self._shared
        prefix = shared.prefix
        head = prefix[self._pos : self._pos + n] if self._pos < len(prefix) else b""
        data = head
        if len(head) < n:  # never a short read: some SDKs read a body once, whole
            with shared.read_lock:
                shared.raw.seek(shared.start + self._pos + len(head) - len(prefix))
                rest = shared.raw.read(n - len(head))
            data = head + rest if head else rest
        if self.digest is not None:
            self.digest.feed(self._pos, data)
        self._pos += len(data)
        return data

    def close(self) -> None:  # the shared stream is not ours to close
        super().close()


class OnceStream(Prepared):
    """A non-seekable stream for a single destination: streamed through once, not retried."""

    rewindable = False

    def __init__(self, file: ResultFile, raw: BinaryIO) -> None:
        super().__init__(file)
        self.raw = raw
        self.size = None
        self._used = False

    def attempt(self) -> Source:
        if self._used:
            raise RuntimeError("a non-seekable stream can be uploaded only once")
        self._used = True
        return cast(BinaryIO, CountingReader(self.raw))

    def succeeded(self, source: Source) -> None:
        if isinstance(source, CountingReader):
            self.size = source.digest.upto
            self._offer(source.digest, self.size)

    def _compute_sha256(self) -> str:
        raise RuntimeError("the stream was not read to its end")


class CountingReader(ReaderBase):
    """Reads a non-seekable stream through, hashing and counting what passes."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self.digest = _Digest()

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        data = self._raw.read(-1 if size is None else size)
        self.digest.feed(self.digest.upto, data)
        return data


def prepare(file: ResultFile, destinations: int, *, hashing: bool = True) -> Prepared:
    """``file`` ready for ``destinations`` uploads; ``hashing``: whether a seekable stream's
    uploads hash it on the way (some destination wants a manifest)."""
    if file.path is not None:
        return PathFile(file, os.fspath(file.path))
    stream = file.stream
    assert stream is not None
    size = source_size(stream)
    if size is not None:
        return SharedStream(file, stream, stream.tell(), size, hashing=hashing)
    if destinations <= 1:
        return OnceStream(file, stream)
    # Spooled to disk (never memory) so every destination, and every retry, can read it.
    spool = tempfile.TemporaryFile(prefix="destinations-spool-")  # noqa: SIM115 - closed by release()
    try:
        shutil.copyfileobj(stream, spool, CHUNK)
        size = spool.tell()
    except BaseException:
        spool.close()
        raise
    return SharedStream(file, spool, 0, size, owned=True, hashing=hashing)


class ProgressReader(ReaderBase):
    """Reports every read of ``raw`` to ``callback`` (bytes read), for a store that does not
    report progress itself. Seekable when ``raw`` is, so SDKs can still rewind it."""

    def __init__(
        self, raw: BinaryIO, callback: ProgressCallback, *, owns_raw: bool = False
    ) -> None:
        super().__init__()
        self._raw = raw
        self._callback = callback
        self._owns_raw = owns_raw

    @classmethod
    def of(cls, source: Source, callback: ProgressCallback) -> BinaryIO:
        """``source`` (a path is opened here, and closed with the reader) as a counted
        stream."""
        if isinstance(source, (str, os.PathLike)):
            return cast(BinaryIO, cls(open(source, "rb"), callback, owns_raw=True))
        return cast(BinaryIO, cls(source, callback))

    def close(self) -> None:
        if self._owns_raw and not self.closed:
            self._raw.close()
        super().close()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._raw.seekable()

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        return self._raw.seek(offset, whence)

    def read(self, size: int | None = -1, /) -> bytes:
        data = self._raw.read(-1 if size is None else size)
        if data:
            self._callback(len(data))
        return data
