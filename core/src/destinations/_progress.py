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
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

__all__ = ["ProgressCallback", "reporting_progress", "upload_progress"]

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
