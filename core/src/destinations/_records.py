"""The records of `destinations`: a destination, a result set and its files, what a
delivery reports. A leaf module: it imports only errors and templates, so every behaviour
module (spec, verification, delivery, persistence, the API) can use the records without
importing each other.
"""

from __future__ import annotations

import dataclasses
import mimetypes
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Literal, final

from ._errors import ErrorCode
from ._template import (
    DEFAULT_FILE_NAME_TEMPLATE,
    FileNameTemplate,
    PathTemplate,
    sanitize_segment,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .plugin import DestinationType

__all__ = [
    "DeliveryError",
    "DeliveryProgress",
    "DeliveryReport",
    "Destination",
    "DestinationStatus",
    "LogEntry",
    "ProbeDeleteFailure",
    "ResultFile",
    "ResultSet",
    "Status",
    "Step",
    "guess_content_type",
    "iso_time",
]

ProbeDeleteFailure = Literal["fail", "warn"]
Compression = Literal["none", "gzip", "zstd"]
Status = Literal["success", "failed", "skipped"]
Step = Literal["key", "open", "put", "manifest"]

#: Set by :mod:`destinations._spec` when it is imported: how a destination is re-parsed
#: with changes (records import no behaviour module).
_update: Callable[[Destination, Mapping[str, object]], Destination] | None = None


@dataclass(frozen=True, slots=True)
class Destination:
    """A validated destination: common fields plus the type's own ``settings`` model.

    Build one with :func:`~destinations.parse_destination`. Secrets inside ``settings`` are
    ``SecretStr``, so the repr never shows them.
    """

    name: str
    type: str
    enabled: bool
    settings: BaseModel
    id: str | None = None
    manifest: bool = False
    probe_delete_failure: ProbeDeleteFailure = "fail"
    compression: Compression = "none"
    max_file_records: int | None = None
    max_file_bytes: int | None = None
    file_name_template: str = DEFAULT_FILE_NAME_TEMPLATE
    template: PathTemplate = field(default_factory=lambda: PathTemplate(""), compare=False)
    name_template: FileNameTemplate = field(
        default_factory=lambda: FileNameTemplate(DEFAULT_FILE_NAME_TEMPLATE),
        compare=False,
        repr=False,
    )
    type_info: DestinationType | None = field(default=None, compare=False, repr=False)

    @property
    def splits(self) -> bool:
        """Whether files of splittable kinds are cut into parts."""
        return self.max_file_records is not None or self.max_file_bytes is not None

    @property
    def destination_type(self) -> DestinationType:
        """The :class:`~destinations.plugin.DestinationType` this destination was parsed as."""
        if self.type_info is None:
            raise LookupError(
                f"destination {self.name!r} was not built by parse_destination, so its type "
                f"{self.type!r} is not attached; use destinations.get_type({self.type!r})"
            )
        return self.type_info

    def to_params(self, *, reveal_secrets: bool = False) -> dict[str, Any]:
        """The flat parameters this destination was parsed from.

        Secrets stay ``SecretStr`` unless ``reveal_secrets`` (for storage and SDK calls only).
        Round-trips: ``parse_destination(d.to_params(reveal_secrets=True)) == d``.
        """
        params: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in _NOT_PARAMS:
                continue
            value = getattr(self, f.name)
            if f.name == "id" and value is None:
                continue
            if f.name in _DEFAULTS and value == _DEFAULTS[f.name]:
                continue
            params[f.name] = value
        for key, value in self.settings:
            if reveal_secrets and hasattr(value, "get_secret_value"):
                value = value.get_secret_value()
            params[key] = value
        return params

    def updated(self, changes: Mapping[str, object]) -> Destination:
        """A new destination with ``changes`` applied (a partial update), validated again.

        Changing the type drops the old type's fields, so only the new type's apply.
        """
        assert _update is not None, "destinations._spec sets this when it is imported"
        return _update(self, changes)


_NOT_PARAMS: Final = frozenset({"settings", "template", "name_template", "type_info"})
#: Parameters left out of ``to_params`` while they hold their default (so a destination
#: stored before they existed reads back unchanged).
_DEFAULTS: Final[dict[str, object]] = {
    "compression": "none",
    "max_file_records": None,
    "max_file_bytes": None,
    "file_name_template": DEFAULT_FILE_NAME_TEMPLATE,
}


# -- the result set -----------------------------------------------------------------

_CONTENT_TYPES: Final[dict[str, str]] = {
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".ndjson": "application/x-ndjson",
    ".csv": "text/csv",
    ".zip": "application/zip",
    ".gz": "application/gzip",
    ".parquet": "application/vnd.apache.parquet",
}


def guess_content_type(name: str) -> str:
    """The content type for a file name: result-file types first, then :mod:`mimetypes`,
    else ``application/octet-stream``."""
    ext = os.path.splitext(name)[1].lower()
    known = _CONTENT_TYPES.get(ext)
    if known is not None:
        return known
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"


@final
@dataclass(frozen=True, slots=True)
class ResultFile:
    """One file of a result set: a ``path`` or a binary ``stream`` (exactly one).

    A stream is read from its current position and never closed here. ``content_type``
    defaults to a guess from ``name`` (``.json``, ``.jsonl``, ``.csv``, ``.zip``…);
    ``content_encoding`` and ``metadata`` (``str -> str``) are stored with the object where
    the storage type keeps them (see each plugin's README).
    """

    name: str
    path: str | os.PathLike[str] | None = None
    _: KW_ONLY
    stream: BinaryIO | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    metadata: Mapping[str, str] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a result file needs a non-empty name")
        if (self.path is None) == (self.stream is None):
            raise ValueError(f"result file {self.name!r}: give exactly one of path or stream")
        if self.content_type is None:
            object.__setattr__(self, "content_type", guess_content_type(self.name))
        if self.metadata is not None:
            object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))


@final
@dataclass(frozen=True, slots=True)
class ResultSet:
    """A completed result set: its collection, its id and its files.

    File names must stay distinct once sanitised as path segments (they share a prefix).
    """

    collection_id: str
    collection_name: str
    result_set_id: str
    files: Sequence[ResultFile]

    def __post_init__(self) -> None:
        files = tuple(self.files)
        seen: dict[str, str] = {}
        for f in files:
            if not isinstance(f, ResultFile):
                raise TypeError(f"files must be ResultFile objects, not {type(f).__name__}")
            segment = sanitize_segment(f.name)
            if segment in seen:
                raise ValueError(
                    f"result files {seen[segment]!r} and {f.name!r} would get the same key "
                    f"segment {segment!r}"
                )
            seen[segment] = f.name
        object.__setattr__(self, "files", files)

    @property
    def manifest_name(self) -> str:
        return f"manifest-{self.result_set_id}.json"


# -- the report ---------------------------------------------------------------------


def iso_time(moment: datetime) -> str:
    """``2026-11-27T20:57:48.123Z``: the time format of logs, manifests and the API."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@final
@dataclass(frozen=True, slots=True)
class LogEntry:
    """One line of a destination's delivery log (UTC)."""

    date_time: datetime
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"date_time": iso_time(self.date_time), "text": self.text}


@final
@dataclass(frozen=True, slots=True)
class DeliveryError:
    """Why a destination failed: ``step`` is ``key`` (a key could not be built), ``open``,
    ``put`` (a file) or ``manifest``; ``code`` is one of :data:`~destinations.CODES`;
    ``transient`` is the failure's :attr:`StoreError.transient <destinations.StoreError>`
    (another attempt later may succeed: what a scheduler such as the Celery task reads)."""

    code: ErrorCode
    step: Step
    message: str
    provider_code: str | None = None
    key: str | None = None
    transient: bool = False
    status: int | None = None


@final
@dataclass(frozen=True, slots=True)
class DestinationStatus:
    """One destination's outcome. ``keys`` are the object keys written, in result-set order
    (the manifest's last, when written); ``bytes`` counts the files' bytes, not the
    manifest's."""

    destination: Destination
    status: Status
    keys: tuple[str, ...] = ()
    bytes: int = 0
    seconds: float = 0.0
    log: tuple[LogEntry, ...] = ()
    error: DeliveryError | None = None
    manifest_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The seed's ``destination_status`` record: ``{status, log, keys, bytes, seconds}``."""
        return {
            "status": self.status,
            "log": [entry.to_dict() for entry in self.log],
            "keys": list(self.keys),
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }


@final
@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """Every destination's :class:`DestinationStatus`, in the order the destinations were
    given. ``ok`` is true when no destination failed (skipped ones do not count)."""

    result_set: ResultSet
    now: datetime
    statuses: tuple[DestinationStatus, ...]

    def __iter__(self) -> Iterator[DestinationStatus]:
        return iter(self.statuses)

    def __len__(self) -> int:
        return len(self.statuses)

    def __getitem__(self, index: int) -> DestinationStatus:
        return self.statuses[index]

    @property
    def ok(self) -> bool:
        return all(s.status != "failed" for s in self.statuses)


@final
@dataclass(frozen=True, slots=True)
class DeliveryProgress:
    """Bytes of one file sent so far to one destination (``deliver(on_progress=...)``).

    ``bytes_total`` is None when the size is unknown (a stream that cannot tell).
    ``attempt`` counts from 1: a retried put starts again from ``bytes_sent=0``.
    """

    destination: Destination
    file_name: str
    key: str
    bytes_sent: int
    bytes_total: int | None
    attempt: int = 1
