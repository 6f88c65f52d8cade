"""Delivery: every file of a result set to every enabled destination given.

What :func:`deliver` guarantees (DESIGN.md "Delivery"):

* **One clock.** ``now`` is taken once per result set, so every key of every destination
  expands the same ``%DATE%``/``%HOUR%``. A key is the expanded prefix + ``/`` + the file
  name sanitised as one segment (:func:`~destinations.object_key`).
* **Isolation.** A disabled destination is ``skipped``. A destination that fails never
  stops the others; after its first failed file, its remaining files are not attempted.
* **Bounded concurrency.** One thread pool of ``concurrency`` workers runs every
  (destination, file) upload; each worker does one put at a time (a large put may still use
  the SDK's own part threads, up to ``StoreOptions.max_connections``). Each destination's
  store is opened once, reused for all its files and closed when its last file is done.
* **Streaming.** Paths are handed to the store by name (the SDK reads parts from disk);
  streams are read in chunks. No file is read whole into memory.
* **Streams sent to several destinations.** A caller's stream is read once per upload, so:
  a *seekable* stream is shared — every upload (and every retry) reads it through its own
  view with its own position, each read a locked ``seek`` + ``read`` on the caller's stream
  (the caller's stream position is left wherever the last read ended). A *non-seekable*
  stream going to two or more destinations is first spooled once to an anonymous temporary
  file on disk (hashed on the way), then shared like a seekable one. A non-seekable stream
  going to one destination is streamed straight through and is **not retried** (it cannot
  be rewound; the status log says so when that happens).
* **Retries.** Transient failures — :data:`TRANSIENT_CODES`, or ``provider_error`` with a
  provider code in :data:`TRANSIENT_PROVIDER_CODES` or an HTTP 408/429/5xx status (see
  :func:`is_transient`) — are retried with exponential backoff and full jitter
  (``tenacity``'s ``wait_random_exponential``), at most :attr:`RetryPolicy.attempts`
  attempts and never starting a wait that would end past :attr:`RetryPolicy.deadline`
  seconds after the first attempt. Everything else (invalid credentials, access denied,
  missing bucket, wrong region, TLS, blocked endpoint…) fails at once. Every retry rewinds
  the source: a path is reopened, a stream view starts again at the stream's original
  position. A failed multipart upload is retried whole (the SDKs abort the old one).
* **One retry layer.** Core owns the retry policy, so stores are opened with
  ``StoreOptions.retries=0`` (the default): the SDK makes one attempt per call. Passing
  ``options=StoreOptions(retries=n)`` *stacks* the layers — up to
  ``attempts * (n + 1)`` requests per file — which is allowed but rarely what you want.
* **Manifest** (opt-in, ``Destination.manifest``). When every file of a destination
  succeeded, ``manifest-<result_set_id>.json`` (sanitised like a file name) is written under
  the same prefix, strictly after every file's put has returned, listing each file's key,
  size, sha256 and content type. If any file failed there is no manifest. The sha256 of a
  stream is computed while it is uploaded (a view that read the whole stream in order
  yields it); if no upload read it in order (an SDK reading parts in parallel), the stream
  is read once more to hash it. A *path* is hashed by reading the file once more from disk
  (once per file, right after its upload, so usually from the page cache): handing paths to
  the SDK by name is what keeps large uploads fast and flat in memory.
* **Observers.** ``destinations_file_delivered`` and ``destinations_delivery_finished``
  (see :mod:`destinations.hookspecs`) are called through the plugin manager from worker
  threads; an observer that raises is logged (by exception type) and ignored.
* **No secrets in logs.** Log texts come from :class:`~destinations.StoreError` messages,
  which never carry secrets; any other exception is named by its type only.
"""

from __future__ import annotations

import abc
import hashlib
import io
import json
import logging
import mimetypes
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Final, Literal, cast, final

from ._errors import ErrorCode, StoreError
from ._plugins import host
from ._spec import Destination
from ._store import Source, Store, StoreOptions, source_size
from ._template import object_key, sanitize_segment
from ._verify import open_store

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "TRANSIENT_CODES",
    "TRANSIENT_PROVIDER_CODES",
    "DeliveryError",
    "DeliveryReport",
    "DestinationStatus",
    "LogEntry",
    "ResultFile",
    "ResultSet",
    "RetryPolicy",
    "deliver",
    "guess_content_type",
    "is_transient",
]

log = logging.getLogger("destinations.deliver")

Status = Literal["success", "failed", "skipped"]
Step = Literal["key", "open", "put", "manifest"]

#: Error codes that are always worth another attempt.
TRANSIENT_CODES: Final[frozenset[str]] = frozenset({"timeout", "endpoint_unreachable"})

#: Provider codes under ``provider_error`` that are worth another attempt: throttling,
#: server-side failures and dropped connections, as the plugins report them (S3/GCS XML
#: codes, Azure error codes, OSS codes or ``HTTP<status>``, exception type names for
#: connections cut mid-request, and corruption detected in transit).
TRANSIENT_PROVIDER_CODES: Final[frozenset[str]] = frozenset(
    {
        # throttling
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "RequestThrottled",
        "ServerBusy",
        "RequestLimitExceeded",
        "rateLimitExceeded",
        "userRateLimitExceeded",
        # the service failed, or timed out waiting for the body
        "InternalError",
        "InternalServerError",
        "ServiceUnavailable",
        "RequestTimeout",
        "OperationTimedOut",
        "backendError",
        # connections dropped mid-request (exception type names)
        "ServiceResponseError",
        "ConnectionError",
        "ConnectionResetError",
        "ProtocolError",
        "ChunkedEncodingError",
        "ResponseStreamingError",
        "IncompleteRead",
        # checksums that did not match what was sent: corrupted in transit
        "InconsistentError",
        "DataCorruption",
        "BadDigest",
    }
)
_TRANSIENT_STATUS = re.compile(r"(?:HTTP)?(?:5\d\d|429|408)")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth another attempt (the one definition core retries by)."""
    if not isinstance(exc, StoreError):
        return False
    if exc.code in TRANSIENT_CODES:
        return True
    if exc.code != "provider_error" or not exc.provider_code:
        return False
    code = exc.provider_code
    return code in TRANSIENT_PROVIDER_CODES or _TRANSIENT_STATUS.fullmatch(code) is not None


@final
@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient failures are retried, per put (each file and the manifest).

    ``attempts``: most attempts in all (1 = never retry). Waits are drawn uniformly from
    ``[0, min(maximum, initial * 2**n)]`` (exponential backoff, full jitter). No wait starts
    that would end more than ``deadline`` seconds after the first attempt began.
    """

    attempts: int = 5
    initial: float = 0.5
    maximum: float = 20.0
    deadline: float = 300.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.initial < 0 or self.maximum < 0 or self.deadline < 0:
            raise ValueError("initial, maximum and deadline must not be negative")


# -- the result set -----------------------------------------------------------------------

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
    defaults to a guess from ``name`` (``.json``, ``.jsonl``, ``.csv``, ``.zip``…).
    """

    name: str
    path: str | os.PathLike[str] | None = None
    _: KW_ONLY
    stream: BinaryIO | None = None
    content_type: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a result file needs a non-empty name")
        if (self.path is None) == (self.stream is None):
            raise ValueError(f"result file {self.name!r}: give exactly one of path or stream")
        if self.content_type is None:
            object.__setattr__(self, "content_type", guess_content_type(self.name))


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


# -- the report ---------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@final
@dataclass(frozen=True, slots=True)
class LogEntry:
    """One line of a destination's delivery log (UTC)."""

    date_time: datetime
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"date_time": _iso(self.date_time), "text": self.text}


@final
@dataclass(frozen=True, slots=True)
class DeliveryError:
    """Why a destination failed: ``step`` is ``key`` (a key could not be built), ``open``,
    ``put`` (a file) or ``manifest``; ``code`` is one of :data:`~destinations.CODES`."""

    code: ErrorCode
    step: Step
    message: str
    provider_code: str | None = None
    key: str | None = None


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


# -- sources: a fresh, rewound reader for every attempt -------------------------------------

_CHUNK = 1024 * 1024


class _Digest:
    """sha256 of a byte range fed in reads that may repeat or rewind; complete only when
    every byte from 0 to the end was seen in order."""

    __slots__ = ("_hash", "upto")

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.upto = 0

    def feed(self, pos: int, data: bytes) -> None:
        end = pos + len(data)
        if pos <= self.upto < end:
            self._hash.update(memoryview(data)[self.upto - pos :])
            self.upto = end

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class _Prepared(abc.ABC):
    """One result file ready for delivery to every destination."""

    rewindable = True
    size: int | None

    def __init__(self, file: ResultFile) -> None:
        self.file = file
        self._lock = threading.Lock()
        self._sha256: str | None = None

    @abc.abstractmethod
    def attempt(self) -> Source:
        """A source for one put attempt, positioned at the file's start."""

    def succeeded(self, source: Source) -> None:  # noqa: B027 - optional hook
        """Called after a put of ``source`` returned: keep its digest if it has one."""

    def sha256(self) -> str:
        with self._lock:
            if self._sha256 is None:
                self._sha256 = self._compute_sha256()
            return self._sha256

    @abc.abstractmethod
    def _compute_sha256(self) -> str:
        """The file's sha256, when no upload yielded it on the way."""

    def _offer(self, digest: _Digest, size: int | None) -> None:
        if size is not None and digest.upto == size:
            with self._lock:
                if self._sha256 is None:
                    self._sha256 = digest.hexdigest()

    def release(self) -> None:  # noqa: B027 - optional hook
        """Free what delivery created (temporary files); the caller's stream stays open."""


class _PathFile(_Prepared):
    def __init__(self, file: ResultFile, path: str) -> None:
        super().__init__(file)
        self.path = path
        self.size = os.stat(path).st_size

    def attempt(self) -> Source:
        return self.path

    def _compute_sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()


class _SharedStream(_Prepared):
    """A seekable stream shared by every upload; each gets its own :class:`_StreamView`."""

    size: int

    def __init__(
        self, file: ResultFile, raw: IO[bytes], start: int, size: int, *, owned: bool = False
    ) -> None:
        super().__init__(file)
        self.raw = raw
        self.start = start
        self.size = size
        self.read_lock = threading.Lock()
        self._owned = owned

    def attempt(self) -> Source:
        return cast(BinaryIO, _StreamView(self))

    def succeeded(self, source: Source) -> None:
        if isinstance(source, _StreamView):
            self._offer(source.digest, self.size)

    def _compute_sha256(self) -> str:
        # No upload read the stream in order (e.g. parts read in parallel): read it again.
        view = _StreamView(self)
        while view.read(_CHUNK):
            pass
        return view.digest.hexdigest()

    def release(self) -> None:
        if self._owned:
            self.raw.close()


class _ReaderBase(io.RawIOBase):
    """A raw reader whose subclasses define ``read``; ``readall`` and ``readinto`` follow."""

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


class _StreamView(_ReaderBase):
    """An independent, seekable window on a :class:`_SharedStream` for one upload."""

    def __init__(self, shared: _SharedStream) -> None:
        super().__init__()
        self._shared = shared
        self._pos = 0
        self.digest = _Digest()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._shared.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def read(self, size: int | None = -1, /) -> bytes:
        left = self._shared.size - self._pos
        n = left if size is None or size < 0 else min(size, left)
        if n <= 0:
            return b""
        shared = self._shared
        with shared.read_lock:
            shared.raw.seek(shared.start + self._pos)
            data = shared.raw.read(n)
        self.digest.feed(self._pos, data)
        self._pos += len(data)
        return data

    def close(self) -> None:  # the shared stream is not ours to close
        super().close()


class _OnceStream(_Prepared):
    """A non-seekable stream for a single destination: streamed through once, not retried."""

    rewindable = False

    def __init__(self, file: ResultFile, raw: BinaryIO) -> None:
        super().__init__(file)
        self.raw = raw
        self.size = None
        self._used = False

    def attempt(self) -> Source:
        if self._used:
            raise RuntimeError("a non-seekable stream can be uploaded only once")
        self._used = True
        return cast(BinaryIO, _CountingReader(self.raw))

    def succeeded(self, source: Source) -> None:
        if isinstance(source, _CountingReader):
            self.size = source.digest.upto
            self._offer(source.digest, self.size)

    def _compute_sha256(self) -> str:
        raise RuntimeError("the stream was not read to its end")


class _CountingReader(_ReaderBase):
    """Reads a non-seekable stream through, hashing and counting what passes."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self.digest = _Digest()

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        data = self._raw.read(-1 if size is None else size)
        self.digest.feed(self.digest.upto, data)
        return data


def _prepare(file: ResultFile, destinations: int) -> _Prepared:
    if file.path is not None:
        return _PathFile(file, os.fspath(file.path))
    stream = file.stream
    assert stream is not None
    size = source_size(stream)
    if size is not None:
        return _SharedStream(file, stream, stream.tell(), size)
    if destinations <= 1:
        return _OnceStream(file, stream)
    # Spooled to disk (never memory) so every destination, and every retry, can read it.
    spool = tempfile.TemporaryFile(prefix="destinations-spool-")  # noqa: SIM115 - closed by release()
    try:
        shutil.copyfileobj(stream, spool, _CHUNK)
        size = spool.tell()
    except BaseException:
        spool.close()
        raise
    return _SharedStream(file, spool, 0, size, owned=True)


# -- one destination's run ----------------------------------------------------------------


def _notify(hook_name: str, **kwargs: Any) -> None:
    try:
        getattr(host().pm.hook, hook_name)(**kwargs)
    except Exception as exc:
        # The type only: an observer's message may echo anything it saw.
        log.warning("an observer of %s raised %s; delivery goes on", hook_name, type(exc).__name__)


def _describe(exc: BaseException, destination: Destination) -> tuple[ErrorCode, str, str | None]:
    if isinstance(exc, StoreError):
        return exc.code, exc.message, exc.provider_code
    name = type(exc).__name__
    return "provider_error", f"the {destination.type} plugin raised an unexpected {name}", name


class _Run:
    """One destination's delivery while it is in progress (shared by worker threads)."""

    def __init__(
        self,
        delivery: _Delivery,
        destination: Destination,
        prefix: str,
        keys: list[str],
        manifest_key: str | None,
    ) -> None:
        self.delivery = delivery
        self.destination = destination
        self.prefix = prefix
        self.keys = keys
        self.manifest_key = manifest_key
        self.lock = threading.Lock()
        self.open_lock = threading.Lock()
        self.store: Store | None = None
        self.opened = False
        self.error: DeliveryError | None = None
        self.written: list[bool] = [False] * len(keys)
        self.remaining = len(keys)
        self.not_attempted = 0
        self.bytes = 0
        self.log: list[LogEntry] = []
        self.started = time.perf_counter()
        self.status: DestinationStatus | None = None

    def note(self, text: str, level: int = logging.INFO) -> None:
        entry = LogEntry(datetime.now(UTC), text)
        with self.lock:
            self.log.append(entry)
        if log.isEnabledFor(level):
            log.log(level, "destination %r: %s", self.destination.name, text)

    def fail(
        self,
        step: Step,
        exc: BaseException | None,
        *,
        key: str | None = None,
        error: DeliveryError | None = None,
    ) -> None:
        if error is None:
            assert exc is not None
            code, message, provider_code = _describe(exc, self.destination)
            error = DeliveryError(code, step, message, provider_code, key)
        with self.lock:
            first = self.error is None
            if first:
                self.error = error
        where = f" of {error.key!r}" if error.key else ""
        provider = f", {error.provider_code}" if error.provider_code else ""
        self.note(
            f"failed at {error.step}{where} ({error.code}{provider}): {error.message}",
            logging.WARNING,
        )

    def open(self) -> Store | None:
        """The destination's store, opened once by the first caller (the others wait for
        it); None when the destination has failed."""
        with self.open_lock:
            if not self.opened:
                self.opened = True
                self.started = time.perf_counter()
                try:
                    self.store = open_store(self.destination, self.delivery.options)
                except Exception as exc:
                    self.fail("open", exc)
            with self.lock:
                return self.store if self.error is None else None


class _Delivery:
    def __init__(
        self,
        result_set: ResultSet,
        now: datetime,
        options: StoreOptions,
        retry: RetryPolicy,
    ) -> None:
        self.result_set = result_set
        self.now = now
        self.options = options
        self.retry = retry
        self.files: list[_Prepared] = []

    # -- puts -------------------------------------------------------------------------------

    def put(
        self, run: _Run, store: Store, key: str, prepared: _Prepared, content_type: str | None
    ) -> None:
        """Put one object, retrying transient failures per the policy.

        The first attempt runs directly; only a transient failure builds the ``tenacity``
        loop, which takes the failure as its first attempt. The result is the same as
        running every attempt through tenacity, without its cost (a few tens of
        microseconds per file) on the common path where the first put succeeds.
        """
        policy = self.retry
        attempts = policy.attempts if prepared.rewindable else 1

        def put_once() -> None:
            source = prepared.attempt()
            store.put(key, source, size=prepared.size, content_type=content_type)
            prepared.succeeded(source)

        started = time.monotonic()
        try:
            put_once()
            return
        except Exception as exc:
            if attempts > 1 and is_transient(exc):
                first_failure: BaseException | None = exc
            else:
                if not prepared.rewindable and is_transient(exc):
                    run.note(
                        f"put {key!r} failed with a transient error, but its stream cannot be "
                        "rewound, so it was not retried",
                        logging.WARNING,
                    )
                raise

        from tenacity import (
            RetryCallState,
            Retrying,
            retry_if_exception,
            stop_after_attempt,
            stop_before_delay,
            wait_random_exponential,
        )

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            assert exc is not None
            code, message, provider_code = _describe(exc, run.destination)
            provider = f", {provider_code}" if provider_code else ""
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            run.note(
                f"put {key!r} failed ({code}{provider}): {message}; attempt "
                f"{state.attempt_number + 1} of {attempts} in {wait:.2f} s",
                logging.WARNING,
            )

        def attempt() -> None:
            nonlocal first_failure
            if first_failure is not None:  # the attempt already made, replayed for tenacity
                failure, first_failure = first_failure, None
                raise failure
            put_once()

        retrying = Retrying(
            stop=stop_after_attempt(attempts)
            | stop_before_delay(policy.deadline - (time.monotonic() - started)),
            wait=wait_random_exponential(multiplier=policy.initial, max=policy.maximum),
            retry=retry_if_exception(is_transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        retrying(attempt)

    # -- tasks ------------------------------------------------------------------------------

    def deliver_file(self, run: _Run, index: int) -> None:
        try:
            store = run.open()
            if store is None:
                with run.lock:
                    run.not_attempted += 1
                return
            prepared = self.files[index]
            key = run.keys[index]
            try:
                self.put(run, store, key, prepared, prepared.file.content_type)
            except Exception as exc:
                run.fail("put", exc, key=key)
                return
            size = prepared.size or 0
            with run.lock:
                run.written[index] = True
                run.bytes += size
            if log.isEnabledFor(logging.DEBUG):
                log.debug("destination %r: put %r (%d bytes)", run.destination.name, key, size)
            if run.destination.manifest and isinstance(prepared, _PathFile):
                prepared.sha256()  # while the file is likely still in the page cache
            _notify(
                "destinations_file_delivered",
                result_set=self.result_set,
                destination=run.destination,
                key=key,
                size=size,
            )
        finally:
            with run.lock:
                run.remaining -= 1
                last = run.remaining == 0
            if last:
                self.finish(run)

    def finish(self, run: _Run) -> None:
        """Write the manifest (if wanted and earned), close the store, report."""
        keys = [k for k, ok in zip(run.keys, run.written, strict=True) if ok]
        if run.not_attempted:
            run.note(f"{run.not_attempted} file(s) not attempted after the failure")
        manifest_written = None
        if run.manifest_key is not None:
            if run.error is None and run.store is None:
                run.open()  # an empty result set still gets its manifest
            if run.error is None and run.store is not None:
                if self.write_manifest(run, run.store, run.manifest_key):
                    manifest_written = run.manifest_key
                    keys.append(run.manifest_key)
            else:
                run.note("no manifest: not every file was delivered")
        if run.store is not None:
            try:
                run.store.close()
            except Exception as exc:
                log.warning(
                    "destination %r: closing its store raised %s",
                    run.destination.name,
                    type(exc).__name__,
                )
        seconds = time.perf_counter() - run.started
        if run.error is None:
            run.note(f"delivered {len(run.keys)} file(s), {run.bytes} bytes in {seconds:.2f} s")
        with run.lock:
            run.status = DestinationStatus(
                destination=run.destination,
                status="failed" if run.error is not None else "success",
                keys=tuple(keys),
                bytes=run.bytes,
                seconds=seconds,
                log=tuple(run.log),
                error=run.error,
                manifest_key=manifest_written,
            )
        _notify("destinations_delivery_finished", result_set=self.result_set, status=run.status)

    def write_manifest(self, run: _Run, store: Store, key: str) -> bool:
        rs = self.result_set
        try:
            entries = [
                {
                    "key": k,
                    "size": p.size,
                    "sha256": p.sha256(),
                    "content_type": p.file.content_type,
                }
                for k, p in zip(run.keys, self.files, strict=True)
            ]
        except Exception as exc:
            run.fail("manifest", exc, key=key)
            return False
        body = json.dumps(
            {
                "result_set_id": rs.result_set_id,
                "collection_id": rs.collection_id,
                "collection_name": rs.collection_name,
                "created_at": _iso(self.now),
                "files": entries,
            },
            indent=2,
            ensure_ascii=False,
        ).encode()
        buffer = io.BytesIO(body)
        file = ResultFile(rs.manifest_name, stream=buffer, content_type="application/json")
        manifest = _SharedStream(file, buffer, 0, len(body))
        try:
            self.put(run, store, key, manifest, "application/json")
        except Exception as exc:
            run.fail("manifest", exc, key=key)
            return False
        run.note(f"wrote manifest {key!r} ({len(entries)} file(s))")
        return True


def deliver(
    result_set: ResultSet,
    destinations: Sequence[Destination],
    *,
    now: datetime | None = None,
    concurrency: int = 8,
    options: StoreOptions | None = None,
    retry: RetryPolicy | None = None,
) -> DeliveryReport:
    """Upload every file of ``result_set`` to every enabled destination.

    ``now`` is the upload time used for every key (naive means UTC; default: the current
    time, taken once). ``concurrency`` bounds the puts in flight across all destinations and
    files. ``options`` are the stores' options (keep ``retries=0``: see the module
    docstring); ``retry`` the policy for transient failures.

    Returns a :class:`DeliveryReport` in the order ``destinations`` were given; it never
    raises for a destination's failure. Raises ``ValueError`` for bad arguments and
    ``OSError`` when a file's path cannot be read, before anything is uploaded.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    else:
        now = now.astimezone(UTC)
    delivery = _Delivery(result_set, now, options or StoreOptions(), retry or RetryPolicy())

    enabled = [d for d in destinations if d.enabled]
    manifest_segment = sanitize_segment(result_set.manifest_name)
    if any(d.manifest for d in enabled) and any(
        sanitize_segment(f.name) == manifest_segment for f in result_set.files
    ):
        raise ValueError(f"a result file is named like the manifest, {manifest_segment!r}")

    statuses: list[DestinationStatus | _Run] = []
    runs: list[_Run] = []
    try:
        delivery.files = [_prepare(f, len(enabled)) for f in result_set.files]
        total = sum(p.size or 0 for p in delivery.files)
        for destination in destinations:
            if not destination.enabled:
                skipped = DestinationStatus(
                    destination,
                    "skipped",
                    log=(LogEntry(datetime.now(UTC), "skipped: the destination is disabled"),),
                )
                statuses.append(skipped)
                continue
            run = _plan(delivery, destination)
            statuses.append(run)
            if run.error is None:
                runs.append(run)
                run.note(
                    f"delivering {len(result_set.files)} file(s), {total} bytes, to "
                    f"{destination.type} under {run.prefix!r}"
                )

        futures: list[Future[None]] = []
        with ThreadPoolExecutor(concurrency, thread_name_prefix="destinations-deliver") as pool:
            for index in range(len(delivery.files)):
                for run in runs:
                    futures.append(pool.submit(delivery.deliver_file, run, index))
            if not delivery.files:
                for run in runs:
                    futures.append(pool.submit(delivery.finish, run))
        for future in futures:
            future.result()  # surfaces a bug in this module; destination failures never raise
    finally:
        for prepared in delivery.files:
            prepared.release()

    for item in statuses:
        if isinstance(item, DestinationStatus):
            _notify("destinations_delivery_finished", result_set=result_set, status=item)
    final: list[DestinationStatus] = []
    for item in statuses:
        if isinstance(item, _Run):
            assert item.status is not None
            final.append(item.status)
        else:
            final.append(item)
    return DeliveryReport(result_set, now, tuple(final))


def _plan(delivery: _Delivery, destination: Destination) -> _Run:
    """Expand the prefix and every key up front; a key that cannot be built fails the
    destination before any upload."""
    rs = delivery.result_set
    run = _Run(delivery, destination, "", [], None)
    try:
        run.prefix = destination.template.expand(
            collection_id=rs.collection_id,
            collection_name=rs.collection_name,
            result_set_id=rs.result_set_id,
            now=delivery.now,
        )
        run.keys = [object_key(run.prefix, f.name) for f in rs.files]
        if destination.manifest:
            run.manifest_key = object_key(run.prefix, rs.manifest_name)
    except StoreError as exc:
        run.fail("key", exc)
        delivery.finish(run)
        return run
    run.written = [False] * len(run.keys)
    run.remaining = len(run.keys)
    return run
