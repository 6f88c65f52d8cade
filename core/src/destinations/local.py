"""The ``local`` type: a directory on this machine (the embedded default, no cloud account).

Registered through core's own entry point, exactly as a third-party plugin is. Writes are
atomic: data goes to a hidden temporary file beside the target, then ``os.replace`` moves it
into place, so a reader never sees half a file. (No fsync: a crash may lose a just-written
file, but never leaves a partial one under the final name.)

A directory has no object metadata: ``content_type``, ``content_encoding`` and ``metadata``
given to ``put`` are accepted and not stored (the file's bytes are written exactly as given,
so a compressed file stays compressed on disk).
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .plugin import (
    DestinationType,
    InvalidDestination,
    Source,
    Store,
    StoreError,
    StoreOptions,
    hookimpl,
    open_source,
    upload_progress,
)

__all__ = ["LocalFields", "LocalStore", "destinations_register_types"]

_CHUNK = 1024 * 1024


class LocalFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    local_directory: str = Field(
        description="An existing directory on the server to write into (inside the "
        "operator's local root when the HTTP API serves it)."
    )
    local_path_prefix: str = Field(
        "",
        description="Path template under local_directory, e.g. exports/%COLLECTION_ID%/%DATE%.",
    )

    @field_validator("local_directory")
    @classmethod
    def _must_exist(cls, value: str) -> str:
        if not value:
            raise InvalidDestination({"local_directory": "required"})
        path = Path(value).expanduser()
        if not path.is_dir():
            raise InvalidDestination(
                {"local_directory": f"{value!r} is not an existing directory; create it first"}
            )
        return str(path.resolve())


class LocalStore(Store):
    """Objects are files under ``local_directory``; key segments are directories."""

    def __init__(self, fields: LocalFields, options: StoreOptions) -> None:
        self.root = Path(fields.local_directory)
        self.options = options

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StoreError(
                "provider_error", f"invalid object key {key!r}", provider_code="InvalidKey"
            )
        return self.root.joinpath(*parts)

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise StoreError(
                "bucket_not_found",
                f"directory {str(self.root)!r} no longer exists; recreate it or update "
                "local_directory",
            )

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
        target = self._path(key)
        self._check_root()
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        progress = upload_progress()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open_source(source) as src, open(tmp, "wb") as out:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    progress(len(chunk))
                written = out.tell()
            if size is not None and written != size:
                raise StoreError(
                    "provider_error",
                    f"source gave {written} bytes, {size} expected; nothing was written",
                    provider_code="IncompleteBody",
                )
            os.replace(tmp, target)
        except OSError as exc:
            raise _map_os_error(exc, self.root) from exc
        finally:
            tmp.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        path = self._path(key)
        self._check_root()
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise _map_os_error(exc, self.root) from exc


def _map_os_error(exc: OSError, root: Path) -> StoreError:
    name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    if isinstance(exc, PermissionError):
        return StoreError(
            "access_denied",
            f"no permission to write under {str(root)!r}; give this service's user write "
            "access to it",
            provider_code=name,
        )
    return StoreError(
        "provider_error", f"{exc.strerror or exc} under {str(root)!r}", provider_code=name
    )


@hookimpl
def destinations_register_types(register: Callable[[DestinationType], None]) -> None:
    register(
        DestinationType(
            name="local",
            fields=LocalFields,
            open_store=LocalStore,
            prefix_field="local_path_prefix",
            description="A directory on the machine running the service.",
            reports_progress=True,
        )
    )
