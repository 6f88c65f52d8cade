"""Byte progress of one upload: what a plugin reports and what delivery turns into events.

A store reports bytes as they are sent by calling the callback :func:`upload_progress`
returns, with the number of bytes just sent (an increment, not a running total). Delivery
sets that callback around each ``Store.put`` for the calling thread's context; outside a
delivery it is a no-op. When the SDK calls back from its own threads (boto3's transfer
threads, azure's block workers), capture the callback at the start of ``put`` and hand it to
the SDK::

    def put(self, key, source, *, size, content_type, content_encoding=None, metadata=None):
        progress = upload_progress()
        self.client.upload_fileobj(..., Callback=progress)

A type that reports this way says so with ``DestinationType(reports_progress=True)``; for any
other type delivery counts the bytes the store reads from the source instead.

**Counting where bytes leave.** SDK progress callbacks are often coarser than core's promise
(an event at least every 8 MiB or 1 % of a file): azure-storage-blob calls its hook once per
block, oss2 as it *reads* 16 KiB chunks. For SDKs on ``requests``, :class:`ByteCounter` and
:class:`CountingBody` count a request body as the HTTP client writes it to the socket, in
chunks of at most 1 % of the file: set the counter with :func:`sending_with` around the
requests that carry the file, and have the plugin's transport or adapter wrap each body with
``current_counter().body(body)``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Final, Protocol

__all__ = [
    "MAX_BODY_CHUNK",
    "ByteCounter",
    "CountingBody",
    "ProgressCallback",
    "current_counter",
    "reporting_progress",
    "sending_with",
    "upload_progress",
]

#: Largest chunk a :class:`CountingBody` hands the HTTP client at once.
MAX_BODY_CHUNK: Final = 64 * 1024

#: Called with the number of bytes just sent.
ProgressCallback = Callable[[int], None]

_current: ContextVar[ProgressCallback | None] = ContextVar(
    "destinations_upload_progress", default=None
)


def _ignore(nbytes: int) -> None:
    """The callback outside a delivery: progress nobody asked for is dropped."""


def upload_progress() -> ProgressCallback:
    """The progress callback of the put running in this context (a no-op outside one)."""
    callback = _current.get()
    return _ignore if callback is None else callback


@contextlib.contextmanager
def reporting_progress(callback: ProgressCallback | None) -> Iterator[None]:
    """Make ``callback`` what :func:`upload_progress` returns within the block."""
    token = _current.set(callback)
    try:
        yield
    finally:
        _current.reset(token)


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class ByteCounter:
    """One put's progress: reports sent bytes to ``report`` in chunks of at most ``step``
    bytes (1 % of the file, at most :data:`MAX_BODY_CHUNK`, at least 1)."""

    def __init__(self, report: Callable[[int], None], size: int | None) -> None:
        self.report = report
        self.step = MAX_BODY_CHUNK if size is None else max(1, min(MAX_BODY_CHUNK, size // 100))

    def body(self, body: object) -> object:
        """``body`` as a counting stream, or as is when it is not blob data (text, None)."""
        if isinstance(body, bytes | bytearray | memoryview):
            return CountingBody(io.BytesIO(body), len(body), self)
        if not hasattr(body, "read"):
            return body
        # How requests sized it (its super_len): len(), else a ``len`` attribute (oss2's
        # adapters).
        length = len(body) if hasattr(body, "__len__") else getattr(body, "len", None)
        if not isinstance(length, int):
            return body
        return CountingBody(body, length, self)


class CountingBody:
    """A request body read in chunks of at most ``counter.step`` bytes. A chunk is reported
    when the next read asks for more: the HTTP client reads the next chunk only after it has
    written the previous one, and reads once more (getting ``b""``) after the last."""

    def __init__(self, stream: _Readable, length: int, counter: ByteCounter) -> None:
        self._stream = stream
        self._counter = counter
        self._pending = 0
        self.len = length  # the Content-Length requests already set from the original body

    def __len__(self) -> int:
        return self.len

    def read(self, size: int | None = -1, /) -> bytes:
        if self._pending:
            self._counter.report(self._pending)
            self._pending = 0
        step = self._counter.step
        want = step if size is None or size < 0 else max(1, min(size, step))
        data = self._stream.read(want)
        self._pending = len(data)
        return data


#: The counter of the requests being sent in this context (a plugin sets it around the
#: requests that carry the file's bytes; its HTTP adapter or transport wraps their bodies).
_counter: ContextVar[ByteCounter | None] = ContextVar("destinations_body_counter", default=None)


def current_counter() -> ByteCounter | None:
    """The :class:`ByteCounter` :func:`sending_with` set in this context, if any."""
    return _counter.get()


@contextlib.contextmanager
def sending_with(counter: ByteCounter | None) -> Iterator[None]:
    """Make ``counter`` the current one for the requests sent within the block."""
    token = _counter.set(counter)
    try:
        yield
    finally:
        _counter.reset(token)
