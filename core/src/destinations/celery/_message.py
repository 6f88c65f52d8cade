"""The task message: a result set by reference, and opening those references on a worker.

A message is JSON and carries no file content and no secret::

    {"collection_id": "c-42", "collection_name": "Daily", "result_set_id": "42",
     "now": "2026-05-20T10:11:12.123456+00:00",
     "files": [{"name": "a.jsonl", "path": "/shared/rs42/a.jsonl",
                "content_type": "application/x-ndjson"},
               {"name": "b.csv", "url": "https://files.internal/rs42/b.csv",
                "content_type": "text/csv"}]}

``now`` is the delivery time chosen once at fan-out, so every task of a result set (and
every retry or redelivery of one) expands the same keys.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, final
from urllib.parse import urlsplit

from .._errors import StoreError
from .._records import ResultFile, ResultSet, guess_content_type

__all__ = ["FileRef", "ReferenceUnavailable", "ResultSetRef"]


class ReferenceUnavailable(Exception):
    """A file reference could not be opened on the worker. ``transient`` when another
    attempt may succeed (a 5xx, a timeout, a reset)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


@final
@dataclass(frozen=True, slots=True)
class FileRef:
    """One file by reference: an absolute ``path`` on storage every worker mounts, or an
    ``http(s)`` ``url`` every worker can fetch (exactly one)."""

    name: str
    path: str | None = None
    url: str | None = None
    content_type: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a file reference needs a non-empty name")
        if (self.path is None) == (self.url is None):
            raise ValueError(f"file {self.name!r}: give exactly one of path or url")
        if self.path is not None and not os.path.isabs(self.path):
            raise ValueError(f"file {self.name!r}: the path must be absolute (workers resolve it)")
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"file {self.name!r}: the url must be http(s)://host/...")
            if parts.username is not None or parts.password is not None:
                # The message is readable by anyone who can read the broker.
                raise ValueError(f"file {self.name!r}: no credentials in the url")
        if self.content_type is None:
            object.__setattr__(self, "content_type", guess_content_type(self.name))

    def to_message(self) -> dict[str, str]:
        out = {"name": self.name}
        if self.path is not None:
            out["path"] = self.path
        else:
            assert self.url is not None
            out["url"] = self.url
        assert self.content_type is not None
        out["content_type"] = self.content_type
        return out


@final
@dataclass(frozen=True, slots=True)
class ResultSetRef:
    """A result set as a task message carries it (see the module docstring)."""

    collection_id: str
    collection_name: str
    result_set_id: str
    now: datetime
    files: Sequence[FileRef]

    def __post_init__(self) -> None:
        now = self.now.replace(tzinfo=UTC) if self.now.tzinfo is None else self.now
        object.__setattr__(self, "now", now.astimezone(UTC))
        object.__setattr__(self, "files", tuple(self.files))

    @classmethod
    def from_result_set(cls, result_set: ResultSet, now: datetime) -> ResultSetRef:
        """References to ``result_set``'s files, which must be paths (made absolute):
        a stream cannot reach another machine."""
        refs = []
        for f in result_set.files:
            if f.path is None:
                raise ValueError(
                    f"file {f.name!r} is a stream; scale-out delivery needs files on shared "
                    "storage (a path) or a URL (FileRef)"
                )
            refs.append(FileRef(f.name, path=os.path.abspath(f.path), content_type=f.content_type))
        return cls(
            result_set.collection_id,
            result_set.collection_name,
            result_set.result_set_id,
            now,
            refs,
        )

    def to_message(self) -> dict[str, Any]:
        return {
            "collection_id": self.collection_id,
            "collection_name": self.collection_name,
            "result_set_id": self.result_set_id,
            "now": self.now.isoformat(),
            "files": [f.to_message() for f in self.files],
        }

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> ResultSetRef:
        files = [
            FileRef(
                str(f["name"]),
                path=f.get("path"),
                url=f.get("url"),
                content_type=f.get("content_type"),
            )
            for f in message["files"]
        ]
        return cls(
            str(message["collection_id"]),
            str(message["collection_name"]),
            str(message["result_set_id"]),
            datetime.fromisoformat(str(message["now"])),
            files,
        )

    @contextmanager
    def open(
        self, *, shared_root: Path | None = None, timeout: float = 60.0
    ) -> Iterator[ResultSet]:
        """The result set with every file as a local path: paths as they are (inside
        ``shared_root`` when one is set), URLs streamed to temporary files that are removed
        on exit. Raises :class:`ReferenceUnavailable`."""
        with ExitStack() as stack:
            files: list[ResultFile] = []
            for ref in self.files:
                if ref.path is not None:
                    path = _checked_path(ref, shared_root)
                else:
                    assert ref.url is not None
                    spool = stack.enter_context(tempfile.TemporaryDirectory(prefix="dst-"))
                    path = os.path.join(spool, "file")
                    _fetch(ref.url, path, timeout, ref.name)
                files.append(ResultFile(ref.name, path, content_type=ref.content_type))
            yield ResultSet(self.collection_id, self.collection_name, self.result_set_id, files)


def _checked_path(ref: FileRef, shared_root: Path | None) -> str:
    assert ref.path is not None
    real = os.path.realpath(ref.path)
    if shared_root is not None and not Path(real).is_relative_to(shared_root):
        raise ReferenceUnavailable(
            f"file {ref.name!r}: its path is outside the workers' shared root", transient=False
        )
    if not os.path.isfile(real):
        raise ReferenceUnavailable(
            f"file {ref.name!r}: no such file on this worker's shared storage", transient=False
        )
    return real


def _fetch(url: str, path: str, timeout: float, name: str) -> None:
    """Stream ``url`` into ``path`` in chunks (never whole in memory), through the endpoint
    guard (https only, no private address unless the operator allows it), bounded by the
    ``DESTINATIONS_MAX_FETCH_BYTES`` setting and ``timeout`` seconds in all."""
    from .._fetch import fetch_to_file
    from .._settings import settings

    try:
        fetch_to_file(url, path, name=name, max_bytes=settings().max_fetch_bytes, timeout=timeout)
    except StoreError as exc:
        raise ReferenceUnavailable(exc.message, transient=exc.transient) from exc
