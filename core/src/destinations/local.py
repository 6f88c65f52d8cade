"""The ``local`` type: a directory on this machine (the embedded default, no cloud account).

Registered through core's own entry point, exactly as a third-party plugin is.

Writes stay inside ``local_directory``: every directory below it (from the path prefix and
the key) is opened relative to its parent's file descriptor without following symbolic
links, and created the same way, so a symbolic link inside the directory (``evil ->
/outside`` with ``local_path_prefix=evil/x``) is refused (``access_denied``) instead of
followed, at save (the prefix's literal part), at verification and at every delivery.

Writes are atomic: data goes to a hidden temporary file in the target's directory
(``.NAME.<32 hex>.part``), then is renamed into place within that directory, so a reader
never sees half a file. (No fsync: a crash may lose a just-written file, but never leaves a
partial one under the final name.) A writer killed mid-file leaves its temporary file; the
next write into that directory removes temporary files of exactly that naming older than
:data:`STALE_TEMP_AGE` seconds (an hour: no live write takes that long between two chunks
without failing first).

A directory has no object metadata: ``content_type``, ``content_encoding`` and ``metadata``
given to ``put`` are accepted and not stored (the file's bytes are written exactly as given,
so a compressed file stays compressed on disk).

Error messages name the rule that was broken, never a server path.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._errors import InvalidTemplate
from ._template import PathTemplate
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

__all__ = [
    "STALE_TEMP_AGE",
    "LocalFields",
    "LocalStore",
    "confined_to",
    "destinations_register_types",
]

_CHUNK = 1024 * 1024


def _chunk_for(size: int | None) -> int:
    """Copy in 1 MiB chunks, smaller for files under 200 MiB (at least 4 KiB): progress is
    reported per chunk, and a bar should move at least every 1 % of a file."""
    if size is None:
        return _CHUNK
    return min(_CHUNK, max(4096, size // 200))

#: Temporary files of this naming older than this many seconds are removed by the next
#: write into their directory.
STALE_TEMP_AGE: Final = 3600.0
#: How often one process scans a directory for stale temporary files, at most.
_SCAN_INTERVAL: Final = 600.0
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{32}\.part", re.DOTALL)
_NAME_MAX: Final = 255  # bytes, when the file system does not say

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_OUTSIDE_ROOT = "must be a directory inside this server's local root (give a path relative to it)"
_NOT_A_DIRECTORY = "is not an existing directory; create it first"
_SYMLINK = (
    "leads through a symbolic link inside local_directory; symbolic links are not followed "
    "(a destination writes only inside its own directory)"
)
_NOT_A_DIR_INSIDE = "leads through a file that is not a directory inside local_directory"


def _too_long(limit: int = _NAME_MAX) -> str:
    return f"has a path component longer than the file system allows (at most {limit} bytes)"


_ROOT: ContextVar[Path | None] = ContextVar("destinations_local_root", default=None)


@contextmanager
def confined_to(root: str | os.PathLike[str] | None) -> Iterator[None]:
    """Within the block, ``local`` destinations parsed in this context must lie inside
    ``root`` (the operator's local root): a relative ``local_directory`` is relative to it,
    ``~`` is not expanded, and a directory outside it is refused with one message whether
    or not it exists (nothing outside the root is disclosed). ``None``: no confinement."""
    token = _ROOT.set(None if root is None else Path(os.path.realpath(root)))
    try:
        yield
    finally:
        _ROOT.reset(token)


def _invalid(field: str, message: str) -> InvalidDestination:
    return InvalidDestination({field: message})


def _resolve_directory(value: str) -> str:
    """``value`` as an absolute, symlink-free path to an existing directory, or an
    :class:`InvalidDestination` that names the rule (never the path)."""
    field = "local_directory"
    if "\0" in value:
        raise _invalid(field, "must not contain NUL characters")
    try:
        os.fsencode(value)
    except UnicodeError:
        raise _invalid(field, "is not a valid path (it cannot be encoded)") from None
    root = _ROOT.get()
    # Under a root, an absolute value replaces the root (and is then refused), and "~" is a
    # plain name: the server's home directory is not the tenant's.
    candidate = Path(value).expanduser() if root is None else root / value
    if any(len(os.fsencode(part)) > _NAME_MAX for part in candidate.parts):
        raise _invalid(field, _too_long())
    resolved = Path(os.path.realpath(candidate))
    if root is not None and not resolved.is_relative_to(root):
        raise _invalid(field, _OUTSIDE_ROOT)  # before any existence check
    try:
        is_dir = stat.S_ISDIR(os.stat(resolved).st_mode)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise _invalid(field, "is longer than the file system allows") from None
        is_dir = False
    if not is_dir:
        raise _invalid(field, _NOT_A_DIRECTORY)
    return str(resolved)


def _literal_segments(prefix: str) -> list[str]:
    """The complete directory names a prefix starts with, whatever its tokens expand to."""
    try:
        template = PathTemplate(prefix)
    except InvalidTemplate:
        return []  # reported by parse_destination, with its position
    segments = template.literal_prefix.split("/")
    if template.tokens:
        segments = segments[:-1]  # a token may complete the last one
    return [s for s in segments if s]


def _check_prefix(directory: str, prefix: str) -> None:
    """Save-time check of the prefix's literal directories: short enough, and no symbolic
    link among those that already exist."""
    field = "local_path_prefix"
    segments = _literal_segments(prefix)
    limit = _name_max(directory)
    if any(len(os.fsencode(s)) > limit for s in segments):
        raise _invalid(field, _too_long(limit))
    current = Path(directory)
    for segment in segments:
        current = current / segment
        try:
            mode = os.lstat(current).st_mode
        except OSError:
            return  # created at the first write
        if stat.S_ISLNK(mode):
            raise _invalid(field, _SYMLINK)
        if not stat.S_ISDIR(mode):
            return  # the first write fails, saying so


def _name_max(directory: str) -> int:
    try:
        return min(os.pathconf(directory, "PC_NAME_MAX"), _NAME_MAX)
    except (OSError, ValueError):
        return _NAME_MAX


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
        return _resolve_directory(value)

    @model_validator(mode="after")
    def _prefix_stays_inside(self) -> LocalFields:
        _check_prefix(self.local_directory, self.local_path_prefix)
        return self


class LocalStore(Store):
    """Objects are files under ``local_directory``; key segments are directories."""

    def __init__(self, fields: LocalFields, options: StoreOptions) -> None:
        self.root = Path(fields.local_directory)
        self.options = options

    @staticmethod
    def _parts(key: str) -> list[str]:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StoreError(
                "provider_error", f"invalid object key {key!r}", provider_code="InvalidKey"
            )
        if any("\0" in p for p in parts):
            raise StoreError(
                "provider_error",
                "invalid object key: NUL characters are not allowed",
                provider_code="InvalidKey",
            )
        return parts

    def _open_root(self) -> int:
        try:
            return os.open(self.root, _DIR_FLAGS)
        except OSError as exc:
            if os.path.islink(self.root):
                raise StoreError(
                    "access_denied",
                    "local_directory has become a symbolic link since it was saved; symbolic "
                    "links are not followed (save the destination again)",
                    provider_code="SymbolicLink",
                ) from exc
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                raise StoreError(
                    "bucket_not_found",
                    "local_directory no longer exists (or is no longer a directory); "
                    "recreate it or update local_directory",
                    provider_code=errno.errorcode.get(exc.errno or 0),
                ) from exc
            raise _map_os_error(exc) from exc

    def _walk(self, parts: list[str], *, create: bool) -> int | None:
        """An fd of the directory ``parts`` names below the root (created if ``create``),
        or ``None`` if it does not exist and ``create`` is false."""
        current = self._open_root()
        try:
            for part in parts:
                child = _open_child(current, part, create=create)
                os.close(current)
                current = -1
                if child is None:
                    return None
                current = child
        except BaseException:
            if current >= 0:
                os.close(current)
            raise
        return current

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
        *dirs, name = self._parts(key)
        progress = upload_progress()
        directory = self._walk(dirs, create=True)
        assert directory is not None
        tmp = _temp_name(name)
        created = False
        try:
            _remove_stale_temps(directory)
            with open_source(source) as src:
                fd = os.open(tmp, _TEMP_FLAGS, 0o666, dir_fd=directory)
                created = True
                chunk_size = _chunk_for(size)
                with os.fdopen(fd, "wb") as out:
                    while chunk := src.read(chunk_size):
                        out.write(chunk)
                        progress(len(chunk))
                    written = out.tell()
            if size is not None and written != size:
                raise StoreError(
                    "provider_error",
                    f"source gave {written} bytes, {size} expected; nothing was written",
                    provider_code="IncompleteBody",
                )
            os.replace(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)
            created = False
        except StoreError:
            raise
        except OSError as exc:
            raise _map_os_error(exc) from exc
        finally:
            if created:
                _unlink_quietly(tmp, directory)
            os.close(directory)

    def delete(self, key: str) -> None:
        *dirs, name = self._parts(key)
        directory = self._walk(dirs, create=False)
        if directory is None:
            return  # nothing there to delete
        try:
            with suppress(FileNotFoundError):
                os.unlink(name, dir_fd=directory)  # removes a symbolic link, never its target
        except OSError as exc:
            raise _map_os_error(exc) from exc
        finally:
            os.close(directory)


def _temp_name(name: str) -> str:
    """``.NAME.<32 hex>.part``, NAME shortened (whole characters) to fit in a file name."""
    room = _NAME_MAX - len(".." + "0" * 32 + ".part")
    short = os.fsencode(name)[:room].decode("utf-8", "ignore") or "_"
    return f".{short}.{uuid.uuid4().hex}.part"


def _open_child(parent: int, name: str, *, create: bool) -> int | None:
    """Open directory ``name`` in ``parent`` without following a symbolic link, creating it
    first if ``create``; ``None`` if it does not exist and not ``create``."""
    for _ in range(3):  # a concurrent writer may create it between our two calls
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                return None
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                raise _not_a_directory(parent, name) from exc
            raise _map_os_error(exc) from exc
        try:
            os.mkdir(name, 0o777, dir_fd=parent)  # does not follow a symbolic link either
        except FileExistsError:
            continue  # someone else created it (or it is a dangling link): open it again
        except OSError as exc:
            raise _map_os_error(exc) from exc
    raise _not_a_directory(parent, name)


def _not_a_directory(parent: int, name: str) -> StoreError:
    try:
        is_link = stat.S_ISLNK(os.lstat(name, dir_fd=parent).st_mode)
    except OSError:
        is_link = False
    if is_link:
        return StoreError(
            "access_denied", f"the object key {_SYMLINK}", provider_code="SymbolicLink"
        )
    return StoreError(
        "provider_error", f"the object key {_NOT_A_DIR_INSIDE}", provider_code="ENOTDIR"
    )


# Directories (device, inode) this process scanned for stale temporary files, and when.
_scanned: dict[tuple[int, int], float] = {}


def _remove_stale_temps(directory: int) -> None:
    """Remove this store's temporary files older than :data:`STALE_TEMP_AGE` from
    ``directory`` (at most once per :data:`_SCAN_INTERVAL` per directory and process).
    Only regular files whose whole name matches the temporary naming are touched."""
    info = os.fstat(directory)
    now = time.monotonic()
    ident = (info.st_dev, info.st_ino)
    last = _scanned.get(ident)
    if last is not None and now - last < _SCAN_INTERVAL:
        return
    if len(_scanned) > 4096:
        _scanned.clear()
    _scanned[ident] = now
    cutoff = time.time() - STALE_TEMP_AGE
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if not _TEMP_NAME.fullmatch(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                    _unlink_quietly(entry.name, directory)
    except OSError:
        return  # best effort: the write itself goes on


def _unlink_quietly(name: str, directory: int) -> None:
    with suppress(OSError):
        os.unlink(name, dir_fd=directory)


def _map_os_error(exc: OSError) -> StoreError:
    """An OS error as a StoreError that names the rule, never a server path."""
    code = exc.errno or 0
    name = errno.errorcode.get(code, type(exc).__name__)
    if isinstance(exc, PermissionError):
        return StoreError(
            "access_denied",
            "no permission to write in local_directory; give this service's user write "
            "access to it",
            provider_code=name,
        )
    if code == errno.ENAMETOOLONG:
        message = f"a directory or file name in the object key {_too_long()}"
    elif code == errno.ENOSPC:
        message = "no space left on the device holding local_directory"
    elif code == errno.EISDIR:
        message = "the object key names an existing directory inside local_directory"
    else:
        message = f"{os.strerror(code) if code else type(exc).__name__} in local_directory"
    return StoreError("provider_error", message, provider_code=name)


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
