"""The ``sftp`` store: one asyncssh connection per store, driven from its own event-loop
thread, and the mapping of asyncssh/socket failures to :class:`StoreError`. Imported the
first time a store is opened."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import secrets
import threading
from collections import deque
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from typing import BinaryIO, Final, TypeVar

import asyncssh

from destinations.plugin import (
    MiB,
    ProgressCallback,
    Source,
    Store,
    StoreError,
    StoreOptions,
    classify_transport_error,
    find_refusal,
    guarded_create_connection,
    open_source,
    read_up_to,
    upload_progress,
)

from ._fields import HostKey, SftpFields

__all__ = ["CHANNELS_PER_CONNECTION", "SftpStore", "map_error"]

log = logging.getLogger("destinations.sftp")

T = TypeVar("T")

#: SFTP channels opened on the store's one SSH connection; puts are spread over them.
#: Measured in benchmarks/bench_sftp.py (1 vs 4 channels for 1,000 files of 10 KiB).
CHANNELS_PER_CONNECTION: Final = 4
#: Bytes of one file in flight (written but not acknowledged) at once.
WINDOW_BYTES: Final = 4 * MiB
MAX_CHUNK: Final = 1 * MiB
MIN_CHUNK: Final = 32 * 1024
#: Seconds a caller waits beyond a request's own bound, should the loop not answer at all.
_BACKSTOP_SECONDS: Final = 5.0
#: Seconds allowed for best-effort clean-up (closing a handle, removing a temporary file).
_CLEANUP_SECONDS: Final = 5.0

_RSA_ALGORITHMS: Final = ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")


class _MissingRoot(Exception):
    """sftp_root (or the login directory) does not exist, so nothing under it can be made."""


class _IncompleteSource(Exception):
    def __init__(self, got: int, expected: int, *, more: bool) -> None:
        super().__init__(got, expected)
        self.got, self.expected, self.more = got, expected, more


class _SourceFailed(Exception):
    """Reading the source raised ``error``; it is re-raised as it is, unmapped."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class _HostKeyCheck(asyncssh.SSHClient):
    """Accepts the server only if its host key's SHA256 fingerprint is one of ``keys``;
    asyncssh calls this during key exchange, before any authentication is sent."""

    def __init__(self, keys: Sequence[HostKey]) -> None:
        self.keys = keys
        self.presented: str | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.presented = key.get_fingerprint("sha256")
        return any(k.fingerprint == self.presented for k in self.keys)


def _host_key_algorithms(keys: Sequence[HostKey]) -> list[str]:
    """The key types ``sftp_host_key`` names first (so a server with several keys presents
    the pinned one), then every other plain type, so a server without such a key still
    shows which key it has. Never certificates: they are not what was pinned."""
    from asyncssh.public_key import get_default_public_key_algs

    algorithms: list[str] = []
    for key in keys:
        if key.algorithm is not None:
            for alg in _RSA_ALGORITHMS if key.algorithm == "ssh-rsa" else (key.algorithm,):
                if alg not in algorithms:
                    algorithms.append(alg)
    for default in get_default_public_key_algs():
        if default.decode() not in algorithms:
            algorithms.append(default.decode())
    return algorithms


def _chunk_size(size: int | None) -> int:
    """Progress is reported per chunk: at least every 1 % of a file (never below 32 KiB)."""
    if size is None:
        return MAX_CHUNK
    return max(MIN_CHUNK, min(MAX_CHUNK, size // 100))


class SftpStore(Store):
    """An SFTP directory tree on one SSH connection, opened on first use and reused.

    ``put`` writes ``<dir>/.<random>.destinations-tmp`` (created exclusively), then renames
    it over ``<dir>/<name>`` with ``posix-rename@openssh.com`` when the server offers it.
    Up to ``StoreOptions.max_connections`` puts run at once, spread over
    :data:`CHANNELS_PER_CONNECTION` SFTP channels of the connection.
    """

    def __init__(self, fields: SftpFields, options: StoreOptions) -> None:
        self.fields = fields
        self.options = options
        self.host = fields.sftp_host
        self.port = fields.sftp_port
        self.root = fields.sftp_root
        self._where = f"{fields.sftp_host}:{fields.sftp_port}"
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max(1, options.max_connections))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._checker: _HostKeyCheck | None = None
        self._channels: list[asyncssh.SFTPClient] = []
        self._busy: dict[int, int] = {}  # puts in flight per channel (by id)
        self._client_key: asyncssh.SSHKey | None = None
        self._posix_rename = True  # until the server says it has no such extension
        self._orphans: list[str] = []

    def __repr__(self) -> str:
        return f"<SftpStore {self.fields.sftp_username}@{self._where} root={self.root!r}>"

    # -- the two primitives -----------------------------------------------------------------
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
        # SFTP keeps bytes only: content_type, content_encoding and metadata are not stored.
        progress = upload_progress()
        parts = self._parts(key)
        with self._slots:
            try:
                with open_source(source) as stream:
                    self._upload(parts, stream, size, progress)
            except _SourceFailed as exc:
                raise exc.error from None  # the source's own error, not the server's
            except Exception as exc:
                raise self._error(exc, key) from exc

    def delete(self, key: str) -> None:
        path = self._path(self._parts(key))
        with self._slots:
            try:
                with self._channel() as sftp:
                    self._call(sftp.remove(path))
            except asyncssh.SFTPNoSuchFile:
                return
            except Exception as exc:
                raise self._error(exc, key) from exc

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            loop, self._loop = self._loop, None
            thread, self._thread = self._thread, None
            self._channels, self._busy = [], {}
        if loop is None:
            return
        if conn is not None:
            conn.close()
            future = asyncio.run_coroutine_threadsafe(conn.wait_closed(), loop)
            try:
                future.result(_CLEANUP_SECONDS)
            except Exception:  # closing is best effort; the loop goes either way
                future.cancel()
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(_CLEANUP_SECONDS)
        if not loop.is_running():
            loop.close()

    # -- paths --------------------------------------------------------------------------------
    def _parts(self, key: str) -> tuple[str, ...]:
        parts = tuple(p for p in key.split("/") if p)
        if not parts or any(p in (".", "..") for p in parts):
            raise StoreError(
                "provider_error",
                f"the file path {key[:200]!r} is empty or has a '.' or '..' segment; paths "
                "stay under sftp_root, so fix the path prefix or the file name",
                provider_code="InvalidPath",
                transient=False,
            )
        return parts

    def _path(self, parts: Sequence[str]) -> str:
        tail = "/".join(parts)
        if self.root is None:
            return tail or "."
        if not tail:
            return self.root
        return f"/{tail}" if self.root == "/" else f"{self.root}/{tail}"

    # -- the event loop and the connection ------------------------------------------------------
    def _call(self, awaitable: Awaitable[T], timeout: float | None = None) -> T:
        """Run ``awaitable`` on the store's loop, bounded by ``timeout`` (default the
        store's), and return its result in the calling thread."""
        assert self._loop is not None
        seconds = self.options.timeout if timeout is None else timeout
        future = asyncio.run_coroutine_threadsafe(_bounded(awaitable, seconds), self._loop)
        try:
            return future.result(seconds + _BACKSTOP_SECONDS)  # wait_for bounds it first
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def _submit(self, awaitable: Awaitable[T]) -> concurrent.futures.Future[T]:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(
            _bounded(awaitable, self.options.timeout), self._loop
        )

    def _ensure_loop(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=loop.run_forever, name=f"destinations-sftp-{self.host}", daemon=True
        )
        thread.start()
        self._loop, self._thread = loop, thread

    @contextlib.contextmanager
    def _channel(self) -> Iterator[asyncssh.SFTPClient]:
        """An SFTP channel of the (re)opened connection: an idle one, else a new one (up to
        :data:`CHANNELS_PER_CONNECTION`), else the least busy."""
        with self._lock:
            if self._conn is None or self._conn.is_closed():
                self._connect()
            conn = self._conn
            assert conn is not None
            idle = [c for c in self._channels if self._busy.get(id(c), 0) == 0]
            if idle:
                sftp = idle[0]
            elif len(self._channels) < CHANNELS_PER_CONNECTION:
                sftp = self._call(conn.start_sftp_client())
                self._channels.append(sftp)
            else:
                sftp = min(self._channels, key=lambda c: self._busy.get(id(c), 0))
            if self._orphans:
                self._remove_orphans(sftp)
            self._busy[id(sftp)] = self._busy.get(id(sftp), 0) + 1
        try:
            yield sftp
        except (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection, asyncssh.ConnectionLost):
            with self._lock:  # a dead channel (its sftp-server gone): open another next time
                if sftp in self._channels:
                    self._channels.remove(sftp)
            raise
        finally:
            with self._lock:
                if id(sftp) in self._busy:  # not reset by a reconnect meanwhile
                    self._busy[id(sftp)] -= 1

    def _connect(self) -> None:
        self._conn, self._channels, self._busy = None, [], {}
        self._ensure_loop()
        if self.fields.sftp_private_key is not None and self._client_key is None:
            passphrase = self.fields.sftp_private_key_passphrase
            self._client_key = asyncssh.import_private_key(
                self.fields.sftp_private_key.get_secret_value(),
                None if passphrase is None else passphrase.get_secret_value(),
            )
        # The guard resolves sftp_host once, checks every address and connects only to a
        # checked one; asyncssh then runs over that socket and never resolves the name itself.
        sock = guarded_create_connection(
            (self.host, self.port), self.options.timeout, label="sftp_host"
        )
        checker = _HostKeyCheck(self.fields.host_keys)
        self._checker = checker
        password = self.fields.sftp_password
        try:
            self._conn = self._call(
                asyncssh.connect(
                    self.host,
                    self.port,
                    sock=sock,
                    config=None,
                    client_factory=lambda: checker,
                    known_hosts=([], [], []),  # trust nothing but what the checker accepts
                    server_host_key_algs=_host_key_algorithms(checker.keys),
                    username=self.fields.sftp_username,
                    password=None if password is None else password.get_secret_value(),
                    client_keys=None if self._client_key is None else [self._client_key],
                    agent_path=None,
                    agent_forwarding=False,
                    gss_auth=False,
                    gss_kex=False,
                    password_auth=password is not None,
                    kbdint_auth=password is not None,
                    public_key_auth=self._client_key is not None,
                    login_timeout=self.options.timeout,
                    keepalive_interval=max(5.0, self.options.timeout),
                    keepalive_count_max=3,
                ),
                # login_timeout bounds kex + auth; this bound is only a backstop.
                timeout=self.options.timeout * 2,
            )
        except BaseException:
            sock.close()
            raise
        log.debug("connected to %s as %s", self._where, self.fields.sftp_username)

    def _remove_orphans(self, sftp: asyncssh.SFTPClient) -> None:
        """Remove temporary files a lost connection kept us from removing."""
        while self._orphans:
            path = self._orphans.pop()  # atomic: the loop thread may append meanwhile
            try:
                self._call(sftp.remove(path), _CLEANUP_SECONDS)
            except asyncssh.SFTPNoSuchFile:
                pass
            except Exception as exc:
                log.warning(
                    "could not remove the temporary file %r on %s (%s)",
                    path,
                    self._where,
                    type(exc).__name__,
                )

    # -- upload -------------------------------------------------------------------------------
    def _upload(
        self,
        parts: tuple[str, ...],
        stream: BinaryIO,
        size: int | None,
        progress: ProgressCallback,
    ) -> None:
        directory = parts[:-1]
        final = self._path(parts)
        temp = self._path((*directory, f".{secrets.token_hex(8)}.destinations-tmp"))
        if size is not None and size <= MIN_CHUNK:  # one chunk: one trip to the loop
            data = self._read_exactly(stream, size)
            with self._channel() as sftp:
                self._call(self._put_whole(sftp, directory, temp, final, data))
            progress(size)
            return
        with self._channel() as sftp:
            handle = self._call(self._open_temp(sftp, directory, temp))
            done = False
            try:
                self._send(handle, stream, size, progress)
                self._call(handle.close())
                self._call(self._rename(sftp, temp, final))
                done = True
            finally:
                if not done:
                    self._discard(sftp, handle, temp)

    @staticmethod
    def _read_exactly(stream: BinaryIO, size: int) -> bytes:
        try:
            data = read_up_to(stream, size)
            extra = stream.read(1) if len(data) == size else b""
        except Exception as exc:
            raise _SourceFailed(exc) from exc
        if len(data) < size or extra:
            raise _IncompleteSource(len(data) + len(extra), size, more=bool(extra))
        return data

    async def _put_whole(
        self,
        sftp: asyncssh.SFTPClient,
        directory: tuple[str, ...],
        temp: str,
        final: str,
        data: bytes,
    ) -> None:
        """A small file in one go: open, write, close, rename (clean-up on failure)."""
        handle = await self._open_temp(sftp, directory, temp)
        try:
            if data:
                await handle.write(data, 0)
            await handle.close()
            await self._rename(sftp, temp, final)
        except BaseException:
            await asyncio.shield(self._discard_async(sftp, handle, temp))
            raise

    async def _open_temp(
        self, sftp: asyncssh.SFTPClient, directory: tuple[str, ...], temp: str
    ) -> asyncssh.SFTPClientFile:
        try:
            return await sftp.open(temp, "xb")
        except asyncssh.SFTPNoSuchFile:
            await self._make_dirs(sftp, directory)
            return await sftp.open(temp, "xb")

    async def _make_dirs(self, sftp: asyncssh.SFTPClient, directory: tuple[str, ...]) -> None:
        """Create ``directory`` and any missing parent under the root, deepest first (so an
        existing parent costs nothing); never the root itself."""
        if not directory:
            raise _MissingRoot()
        path = self._path(directory)
        try:
            await sftp.mkdir(path)
        except asyncssh.SFTPNoSuchFile:
            await self._make_dirs(sftp, directory[:-1])
            with contextlib.suppress(asyncssh.SFTPFailure):  # made meanwhile by another put
                await sftp.mkdir(path)
        except asyncssh.SFTPFailure:
            pass  # it exists (OpenSSH answers FAILURE for EEXIST); the open that follows tells

    def _send(
        self,
        handle: asyncssh.SFTPClientFile,
        stream: BinaryIO,
        size: int | None,
        progress: ProgressCallback,
    ) -> None:
        """Stream the source in chunks; several chunks in flight, progress per acknowledged
        chunk, and no more than :data:`WINDOW_BYTES` held in memory."""
        chunk_size = _chunk_size(size)
        depth = max(2, WINDOW_BYTES // chunk_size)
        pending: deque[tuple[concurrent.futures.Future[int], int]] = deque()
        offset = 0
        try:
            while True:
                want = chunk_size if size is None else min(chunk_size, size - offset)
                try:
                    data = read_up_to(stream, want) if want else b""
                except Exception as exc:
                    raise _SourceFailed(exc) from exc
                if size is not None and len(data) < want:
                    raise _IncompleteSource(offset + len(data), size, more=False)
                if not data:
                    break
                pending.append((self._submit(handle.write(data, offset)), len(data)))
                offset += len(data)
                del data
                while len(pending) >= depth:
                    future, sent = pending.popleft()
                    future.result()
                    progress(sent)
            try:
                extra = stream.read(1) if size is not None else b""
            except Exception as exc:
                raise _SourceFailed(exc) from exc
            if extra and size is not None:
                raise _IncompleteSource(size + 1, size, more=True)
            while pending:
                future, sent = pending.popleft()
                future.result()
                progress(sent)
        finally:
            for future, _ in pending:
                future.cancel()

    async def _rename(self, sftp: asyncssh.SFTPClient, temp: str, final: str) -> None:
        if self._posix_rename:
            try:
                await sftp.posix_rename(temp, final)
                return
            except asyncssh.SFTPOpUnsupported:
                self._posix_rename = False
        # Plain SFTPv3 rename refuses to replace a file: remove it first. Not atomic: a
        # reader may briefly find no file (never a partial one).
        try:
            await sftp.rename(temp, final)
        except asyncssh.SFTPFailure:
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                await sftp.remove(final)
            await sftp.rename(temp, final)

    def _discard(
        self, sftp: asyncssh.SFTPClient, handle: asyncssh.SFTPClientFile, temp: str
    ) -> None:
        with contextlib.suppress(Exception):  # it records what it could not remove
            self._call(self._discard_async(sftp, handle, temp), 2 * _CLEANUP_SECONDS + 1)

    async def _discard_async(
        self, sftp: asyncssh.SFTPClient, handle: asyncssh.SFTPClientFile, temp: str
    ) -> None:
        """After a failed upload: close the handle and remove the temporary file; if the
        connection is gone, remember the file and remove it after the next connect."""
        with contextlib.suppress(Exception):  # the handle dies with the channel anyway
            await asyncio.wait_for(handle.close(), _CLEANUP_SECONDS)
        try:
            await asyncio.wait_for(sftp.remove(temp), _CLEANUP_SECONDS)
        except asyncssh.SFTPNoSuchFile:
            pass
        except Exception:
            # On the loop thread: never self._lock, which a caller may hold while it waits
            # for this loop. list.append is atomic.
            self._orphans.append(temp)

    # -- errors -------------------------------------------------------------------------------
    def _error(self, exc: BaseException, key: str) -> StoreError:
        return map_error(
            exc,
            fields=self.fields,
            presented=None if self._checker is None else self._checker.presented,
            directory=self._path(self._parts(key)[:-1]) if "/" in key.strip("/") else None,
            timeout=self.options.timeout,
        )


async def _bounded(awaitable: Awaitable[T], seconds: float) -> T:
    return await asyncio.wait_for(_as_coroutine(awaitable), seconds)


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _expected(keys: Sequence[HostKey]) -> str:
    return " or ".join(k.fingerprint for k in keys)


def map_error(
    exc: BaseException,
    *,
    fields: SftpFields,
    presented: str | None = None,
    directory: str | None = None,
    timeout: float | None = None,
) -> StoreError:
    """Map an asyncssh/socket failure to core's codes. Messages name fields and the server,
    never a secret, and never ``str(exc)`` (servers put whatever they like in reasons)."""
    if isinstance(exc, StoreError):
        return exc
    refusal = find_refusal(exc)
    if refusal is not None:
        return refusal
    where = f"{fields.sftp_host}:{fields.sftp_port}"
    root = fields.sftp_root or "the login directory"
    name = type(exc).__name__
    keys = fields.host_keys
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        got = presented or "a key that could not be checked (a host certificate?)"
        return StoreError(
            "host_key_mismatch",
            f"host key mismatch: expected {_expected(keys)}, got {got}; no credential was sent to "
            f"{where}. If the server's key really changed, put its new key in sftp_host_key",
            provider_code=name,
            transient=False,
        )
    if isinstance(exc, asyncssh.KeyExchangeFailed) and presented is None:
        types = ", ".join(sorted({k.algorithm for k in keys if k.algorithm}))
        return StoreError(
            "host_key_mismatch",
            f"host key mismatch: expected {_expected(keys)}, but {where} offers no "
            f"{types or 'matching'} host key (or no key exchange this client supports)",
            provider_code=name,
            transient=False,
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        used = " and ".join(
            n
            for n, v in (
                ("sftp_password", fields.sftp_password),
                ("sftp_private_key", fields.sftp_private_key),
            )
            if v is not None
        )
        return StoreError(
            "invalid_credentials",
            f"{where} refused the login of {fields.sftp_username!r} with {used}; check "
            "sftp_username and the credentials",
            provider_code=name,
            transient=False,
        )
    if isinstance(exc, asyncssh.KeyEncryptionError):
        return StoreError(
            "invalid_credentials",
            "sftp_private_key is encrypted and sftp_private_key_passphrase is missing or wrong",
            provider_code=name,
            transient=False,
        )
    if isinstance(exc, asyncssh.KeyImportError):
        return StoreError(
            "invalid_credentials",
            "sftp_private_key could not be read as a private key (unsupported format or "
            "damaged text); paste the key file again",
            provider_code=name,
            transient=False,
        )
    if isinstance(exc, _MissingRoot):
        return StoreError(
            "bucket_not_found",
            f"{root} does not exist on {where}; create it or fix sftp_root",
            provider_code="NoSuchDirectory",
            transient=False,
        )
    if isinstance(exc, _IncompleteSource):
        more = "more than" if exc.more else f"only {exc.got} of"
        return StoreError(
            "provider_error",
            f"the source gave {more} the {exc.expected} bytes announced; the file was not stored",
            provider_code="IncompleteBody",
            transient=False,
        )
    target = directory or root
    if isinstance(exc, asyncssh.SFTPPermissionDenied):
        return StoreError(
            "access_denied",
            f"{fields.sftp_username!r} may not write to {target} on {where}; grant write "
            "access to it (and its parents, if directories must be created)",
            provider_code=name,
            transient=False,
        )
    if isinstance(exc, asyncssh.SFTPNoSuchFile):
        return StoreError(
            "bucket_not_found",
            f"{target} does not exist on {where} and could not be created",
            provider_code=name,
            transient=False,
        )
    if isinstance(exc, asyncssh.SFTPNoSpaceOnFilesystem | asyncssh.SFTPQuotaExceeded):
        return StoreError(
            "provider_error",
            f"{where} has no space left (or the quota of {fields.sftp_username!r} is used up)",
            provider_code=name,
            transient=False,
        )
    if isinstance(
        exc,
        asyncssh.SFTPConnectionLost
        | asyncssh.SFTPNoConnection  # "Connection not open": the same loss, seen a step later
        | asyncssh.ConnectionLost
        | asyncssh.ChannelOpenError,
    ):
        return StoreError(
            "endpoint_unreachable",
            f"the connection to {where} was lost or refused a new channel; retry",
            provider_code=name,
            transient=True,
        )
    if isinstance(exc, asyncssh.SFTPError):
        return StoreError(
            "provider_error",
            f"{where} answered {name} (code {exc.code}) for a file under {target}",
            provider_code=name,
        )
    if isinstance(exc, TimeoutError):
        return StoreError(
            "timeout",
            f"{where} did not answer within {timeout:g} s; check that it is reachable from "
            "this server"
            if timeout is not None
            else f"{where} did not answer in time",
            provider_code=name,
            transient=True,
        )
    if isinstance(exc, asyncssh.DisconnectError):
        return StoreError(
            "endpoint_unreachable",
            f"{where} closed the SSH connection ({name}); retry, or check the server's limits",
            provider_code=name,
            transient=True,
        )
    classified = classify_transport_error(
        exc, host=where, check="sftp_host and sftp_port", timeout=timeout
    )
    if classified is not None:
        return classified
    return StoreError(
        "provider_error", f"the SFTP request to {where} failed ({name})", provider_code=name
    )
