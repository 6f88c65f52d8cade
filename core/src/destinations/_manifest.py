"""The manifest: ``manifest-<result_set_id>.json``, written last, listing what arrived.

Opt-in per destination (``manifest=true``). Written strictly after every file's put has
returned, and only when every file of the destination succeeded; it lists every object
actually written: its key, stored size, the sha256 of the stored bytes, content type, the
result file it came from (``source``), and — when delivery shaped it — its ``compression``
and, for a part of a split file, its ``part`` number and ``records``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._records import ResultSet, iso_time

__all__ = ["ManifestEntry", "manifest_body"]


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One object the manifest lists."""

    key: str
    size: int | None
    sha256: str
    content_type: str | None
    source: str | None = None
    records: int | None = None
    part: int | None = None
    compression: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "size": self.size,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "source": self.source,
        }
        if self.compression is not None:
            out["compression"] = self.compression
        if self.part is not None:
            out["part"] = self.part
            out["records"] = self.records
        return out


def manifest_body(result_set: ResultSet, now: datetime, entries: Sequence[ManifestEntry]) -> bytes:
    """The manifest's JSON document (UTF-8)."""
    return json.dumps(
        {
            "result_set_id": result_set.result_set_id,
            "collection_id": result_set.collection_id,
            "collection_name": result_set.collection_name,
            "created_at": iso_time(now),
            "files": [e.to_dict() for e in entries],
        },
        indent=2,
        ensure_ascii=False,
    ).encode()
