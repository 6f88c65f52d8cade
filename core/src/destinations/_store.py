"""The storage primitives every plugin implements, and the options core opens stores with."""

from __future__ import annotations

import abc
import contextlib
import io
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO, Self, TypeAlias

__all__ = [
    "MiB",
    "Source",
    "Store",
    "StoreOptions",
    "open_source",
    "read_exactly",
    "read_file_exactly",
    "source_size",
]

MiB = 1024 * 1024

#: What ``Store.put`` uploads: a filesystem path, or a binary stream read from its position.
Source: TypeAlias = "str | os.PathLike[str] | BinaryIO"


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """How core wants a store to behave; every plugin honours every field.

    ``timeout``: seconds for connecting and for each read, per request.
    ``multipart_threshold``: at or above this many bytes (or when the size is unknown), upload
    in parts/blocks/resumable chunks of ``part_size``, so memory stays flat.
    ``retries``: how many times the SDK itself may retry a transient failure. Core owns the
    retry policy, so verification uses 0; say so in your plugin if the SDK cannot be told.
    ``max_connections``: connection pool size; one store is reused across calls.
    """

    timeout: float = 30.0
    multipart_threshold: int = 8 * MiB
    part_size: int = 8 * MiB
    retries: int = 0
    max_connections: int = 10


class Store(abc.ABC):
    """An open connection to one destination's bucket/container/directory.

    Exactly two primitives; verification, delivery and retries are core's, built on them.
    Errors are raised as :class:`~destinations.StoreError` with one of core's codes.
    """

    @abc.abstractmethod
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
        """Write ``source`` to ``key``, replacing any object there.

        ``source`` is a path or a binary stream; it is never read whole into memory. From
        ``StoreOptions.multipart_threshold`` on (or with ``size=None``), upload in parts.

        ``content_type`` and ``content_encoding`` are stored as the object's Content-Type
        and Content-Encoding; ``metadata`` (``str -> str``) as user metadata
        (``x-amz-meta-*``, ``x-goog-meta-*``, ``x-ms-meta-*``, ``x-oss-meta-*``). Say in
        your plugin's README how they are stored and what limits apply.

        Report bytes as they are sent through :func:`destinations.plugin.upload_progress`
        (and set ``DestinationType.reports_progress``), or let core count what you read.
        Raise :class:`~destinations.StoreError`; set its ``transient`` when you know
        whether another attempt may succeed.
        """

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete ``key``. Deleting a key that does not exist is not an error."""

    def close(self) -> None:  # noqa: B027 - optional hook, deliberately empty
        """Release connections. Optional; the default does nothing."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def open_source(source: Source) -> Iterator[BinaryIO]:
    """Yield a binary stream for ``source``; a path is opened (and closed) here."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            yield f
    else:
        yield source


def source_size(source: Source) -> int | None:
    """Bytes left to read from ``source``, or None when a stream cannot tell."""
    if isinstance(source, (str, os.PathLike)):
        return os.stat(source).st_size
    try:
        if not source.seekable():
            return None
        pos = source.tell()
        end = source.seek(0, io.SEEK_END)
        source.seek(pos)
        return end - pos
    except (OSError, ValueError, AttributeError):
        return None


def read_exactly(stream: BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes for a single-request upload and check the source has no more.

    For sizes below the multipart threshold only (so bounded in memory). Raises
    :class:`~destinations.StoreError` (``IncompleteBody``) when the source gives fewer or more
    bytes than announced, before anything is written.
    """
    chunks: list[bytes] = []
    got = 0
    while got <= size:
        chunk = stream.read(size + 1 - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    if got != size:
        raise _incomplete_body(got, size)
    return b"".join(chunks)


_READ_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


def read_file_exactly(path: str | os.PathLike[str], size: int) -> bytes:
    """:func:`read_exactly` for a regular file given by its path: one ``os.read`` of
    ``size + 1`` bytes on a plain descriptor (a regular file reads short only at its end),
    about 4 µs for 10 KiB here against 15 µs through ``open()`` and :func:`read_exactly`,
    which matters when a delivery has thousands of small files."""
    fd = os.open(path, _READ_FLAGS)
    try:
        data = os.read(fd, size + 1)
        while len(data) < size:  # short before the end only past what one read may give
            more = os.read(fd, size + 1 - len(data))
            if not more:
                break
            data += more
    finally:
        os.close(fd)
    if len(data) != size:
        raise _incomplete_body(len(data), size)
    return data


def _incomplete_body(got: int, size: int) -> Exception:
    from ._errors import StoreError

    more = "more than" if got > size else f"only {got} of"
    return StoreError(
        "provider_error",
        f"the source gave {more} the {size} bytes announced; nothing was written",
        provider_code="IncompleteBody",
    )
