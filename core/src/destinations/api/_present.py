"""Presentation: a stored row as the API shows it (never a secret, masked identifiers,
``local_directory`` relative to the server's local root, UTC times)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import InvalidDestination, PluginLoadError, get_type
from ..plugin import DestinationType

__all__ = ["LOCAL", "LOCAL_DIRECTORY", "Presenter"]

LOCAL = "local"
LOCAL_DIRECTORY = "local_directory"


class Presenter:
    """Turns rows (the :data:`~destinations.persistence.PRESENTED_COLUMNS` by name) into
    response dicts. ``local_root``: the server's root for ``local`` destinations, if any."""

    def __init__(self, local_root: Path | None) -> None:
        self.local_root = local_root
        #: type name -> (its DestinationType, masked fields, secret fields).
        self._field_sets: dict[str, tuple[DestinationType, frozenset[str], frozenset[str]]] = {}

    def _fields_of(self, type_name: str) -> tuple[frozenset[str], frozenset[str]]:
        """A type's masked and secret field names (empty if it cannot be loaded now)."""
        try:
            dtype = get_type(type_name)
        except (InvalidDestination, PluginLoadError):
            return frozenset(), frozenset()  # not cached: the plugin may load later
        cached = self._field_sets.get(type_name)
        if cached is None or cached[0] is not dtype:
            cached = (dtype, frozenset(dtype.masked_fields), dtype.secret_fields)
            self._field_sets[type_name] = cached
        return cached[1], cached[2]

    def present(self, row: Mapping[Any, Any], account_id: int | None = None) -> dict[str, Any]:
        """A destination as the API shows it: never a secret, masked ids, UTC times,
        ``local_directory`` relative to the account's subtree of the local root.
        ``row``: the :data:`~destinations.persistence.PRESENTED_COLUMNS` by name."""
        type_name = row["type"]
        masked, secret = self._fields_of(type_name)
        root = self.local_root if type_name == LOCAL else None
        out: dict[str, Any] = {
            "id": row["id"],
            "name": row["name"],
            "type": type_name,
            "enabled": row["enabled"],
        }
        for key, value in row["params"].items():
            if key in secret:
                continue
            if key in masked and isinstance(value, str):
                value = _mask(value)
            if key == LOCAL_DIRECTORY and root and isinstance(value, str):
                value = _shown_directory(value, root, account_id)
            out[key] = value
        out["created_at"] = _iso(row["created_at"])
        out["updated_at"] = _iso(row["updated_at"])
        out["last_verified_at"] = _iso(row["last_verified_at"])
        return out


def _mask(value: str) -> str:
    return "****" + value[-4:] if len(value) > 4 else "****"


def _shown_directory(value: str, root: Path, account_id: int | None) -> str:
    """Relative to the account's subtree; a destination saved before accounts had subtrees
    shows as ``../`` + its place in the shared root. Never an absolute server path."""
    if account_id is not None:
        mine = _relative_to(value, root / str(account_id))
        if mine is not None:
            return mine
        shared = _relative_to(value, root)
        return "." if shared is None else ("../" + shared if shared != "." else "..")
    shown = _relative_to(value, root)
    return "." if shown is None else shown


def _relative_to(value: str, root: Path) -> str | None:
    # Plain string work: both sides are real, absolute paths (resolved when saved), and this
    # runs for every local row of every listing.
    base = str(root)
    if value == base:
        return "."
    if value.startswith(base.rstrip(os.sep) + os.sep):
        return value[len(base.rstrip(os.sep)) + 1 :]
    return None


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
