"""Byte progress measured where bytes leave: a request body that reports each chunk once
the HTTP client has written it to the socket (pure Python, no SDK).

Why not oss2's ``progress_callback``: it is called as oss2's adapters *read* each chunk
(before it is sent), in the chunks urllib3 asks for (16 KiB), so below 1.6 MiB a file gets
fewer events than core's requirement of one at least every 8 MiB or 1 % of the file,
whichever is smaller. Counting here, the chunks are 1 % of the file at most, and a chunk is
reported only once it has been written.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Final, Protocol

__all__ = ["MAX_CHUNK", "ByteCounter", "CountingBody", "current_counter", "sending_with"]

#: Largest chunk handed to the socket at once while counting (urllib3 asks for 16 KiB).
MAX_CHUNK: Final = 64 * 1024


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class ByteCounter:
    """One put's progress: reports sent bytes to ``report`` in chunks of at most ``step``
    bytes (1 % of the file, at most :data:`MAX_CHUNK`, at least 1)."""

    def __init__(self, report: Callable[[int], None], size: int | None) -> None:
        self.report = report
        self.step = MAX_CHUNK if size is None else max(1, min(MAX_CHUNK, size // 100))

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


#: The counter of the put running in this context (set around its PUT requests, read by the
#: adapter that writes their bodies).
_current: ContextVar[ByteCounter | None] = ContextVar("destinations_oss_counter", default=None)


def current_counter() -> ByteCounter | None:
    return _current.get()


@contextlib.contextmanager
def sending_with(counter: ByteCounter | None) -> Iterator[None]:
    """Make ``counter`` the current one for the requests sent within the block."""
    token = _current.set(counter)
    try:
        yield
    finally:
        _current.reset(token)
