"""The ``sftp`` type: a directory on an SFTP server, through asyncssh.

Security rests on the host key: ``sftp_host_key`` is required (a host key line or a
``SHA256:`` fingerprint) and a server presenting any other key is refused during key
exchange, before any credential is sent (code ``host_key_mismatch``). There is no
trust-on-first-use and no switch to accept any key. The connection goes through core's
endpoint guard: ``sftp_host`` is resolved once, every address is checked, and the socket
connects only to a checked address; asyncssh runs over that socket.

Uploads: the file is written to a temporary name in its target directory
(``.<random>.destinations-tmp``, created exclusively) and renamed over the final name with
``posix-rename@openssh.com`` when the server offers it (plain SFTP rename after removing the
old file otherwise), so a reader never sees half a file. Missing directories under
``sftp_root`` are created (deepest first); ``sftp_root`` itself must exist. The source is
streamed in chunks, several in flight; a failed upload removes its temporary file (after the
next connect, if the connection was lost). SFTP keeps no object metadata: ``content_type``,
``content_encoding`` and ``metadata`` are accepted and not stored; the bytes are stored as
given.

Connections: one SSH connection per store, opened on the first call and reopened after it
is lost; :data:`~destinations_sftp._store.CHANNELS_PER_CONNECTION` SFTP channels on it; at
most ``StoreOptions.max_connections`` puts at once. ``StoreOptions.timeout`` bounds the
connect, the login and every SFTP request. asyncssh retries nothing; core owns retries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from destinations.plugin import DestinationType, Store, StoreOptions, hookimpl

from ._fields import HostKey, SftpFields, parse_host_keys

if TYPE_CHECKING:
    from ._store import (
        CHANNELS_PER_CONNECTION as CHANNELS_PER_CONNECTION,
        SftpStore,
        map_error as map_error,
    )

__all__ = [
    "HostKey",
    "SftpFields",
    "SftpStore",
    "destinations_register_types",
    "parse_host_keys",
]

# Names that live with the store: importing them imports asyncssh, so only on first use.
_STORE_NAMES = frozenset({"CHANNELS_PER_CONNECTION", "SftpStore", "map_error"})


def __getattr__(name: str) -> Any:
    if name in _STORE_NAMES:
        from . import _store

        return getattr(_store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_sftp(fields: SftpFields, options: StoreOptions) -> Store:
    from ._store import SftpStore

    return SftpStore(fields, options)


@hookimpl
def destinations_register_types(register: Callable[[DestinationType], None]) -> None:
    register(
        DestinationType(
            name="sftp",
            fields=SftpFields,
            open_store=open_sftp,
            prefix_field="sftp_path_prefix",
            description="A directory on an SFTP (SSH) server, pinned to its host key.",
            reports_progress=True,
        )
    )
