"""Delivery: every file of a result set to every enabled destination given — the engine.

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
* **Streaming.** Paths are handed to the store by name; streams are read in chunks, shared
  between destinations through per-upload views (see :mod:`destinations._sources`). No file
  is read whole into memory.
* **Retries.** A failure whose :attr:`StoreError.transient <destinations.StoreError>` is
  true is retried per the :class:`~destinations.RetryPolicy` (see
  :mod:`destinations._retry`); everything else fails at once. Every retry rewinds the
  source. A failed multipart upload is retried whole (the SDKs abort the old one).
* **One retry layer.** Stores are opened with ``StoreOptions.retries=0`` (the default): the
  SDK makes one attempt per call. Passing ``options=StoreOptions(retries=n)`` *stacks* the
  layers — up to ``attempts * (n + 1)`` requests per file.
* **Manifest** (opt-in, ``Destination.manifest``): see :mod:`destinations._manifest`.
* **Progress.** ``on_progress(event)`` receives :class:`~destinations.DeliveryProgress`
  records for this call only, at least every 8 MiB or 1 % of a file (whichever is smaller),
  and once when each put completes; called from worker (and SDK) threads, so keep it quick
  and thread-safe. Types that report their own byte progress do so through SDK callbacks;
  for the others delivery counts what the store reads.
* **Observers.** ``destinations_file_delivered`` and ``destinations_delivery_finished``
  (see :mod:`destinations.hookspecs`) are called through the plugin host's typed hooks,
  each observer on its own: one that raises is logged (by exception type) and the others
  still run. ``destinations.observers`` entry points are loaded on the first delivery.
* **No secrets in logs.** Log texts come from :class:`~destinations.StoreError` messages,
  which never carry secrets; any other exception is named by its type only.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import io
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast

from . import _metrics
from ._errors import ErrorCode, StoreError
from ._manifest import ManifestEntry, manifest_body
from ._plugins import PluginHooks, host
from ._progress import reporting_progress
from ._records import (
    DeliveryError,
    DeliveryProgress,
    DeliveryReport,
    Destination,
    DestinationStatus,
    LogEntry,
    ResultFile,
    ResultSet,
    Step,
)
from ._retry import RetryPolicy, call_with_retries, is_transient, retrying_parts
from ._shaping import (
    SUFFIXES,
    Codec,
    CompressedReader,
    Part,
    RecordFormat,
    record_format,
    split_records,
)
from ._sources import (
    CHUNK,
    PartSource,
    PathFile,
    Prepared,
    ProgressReader,
    SharedStream,
    prepare,
)
from ._store import MiB, Source, Store, StoreOptions, open_source
from ._template import FileNameTemplate, join_key, object_key, sanitize_segment
from ._verify import open_store

__all__ = ["ProgressHandler", "deliver"]

log = logging.getLogger("destinations.deliver")

#: What ``deliver(on_progress=...)`` takes.
ProgressHandler = Callable[[DeliveryProgress], None]

#: The coarsest progress step: a bar moves at least every 8 MiB (or 1 % of a file).
_MAX_STEP = 8 * MiB


class _Meter:
    """Turns one put attempt's byte increments into throttled :class:`DeliveryProgress`.

    The promise: consecutive events at most ``step`` bytes apart (8 MiB or 1 % of the file,
    whichever is smaller) whenever the store's increments are at most a step. An event is
    sent once half a step has gathered, and — before an increment that would carry the
    gathered bytes past a whole step — for the bytes gathered so far. Events are sent under
    the meter's lock, so a handler fed from several SDK threads (parts or blocks in flight)
    sees ``bytes_sent`` only grow.
    """

    __slots__ = ("_emit", "_half", "_last", "_lock", "_make", "_step", "sent")

    def __init__(
        self, emit: ProgressHandler, make: Callable[[int], DeliveryProgress], total: int | None
    ) -> None:
        self._emit = emit
        self._make = make
        self._lock = threading.Lock()
        self.sent = 0
        self._last = 0
        self._step = max(1, _MAX_STEP if total is None else min(_MAX_STEP, total // 100))
        self._half = max(1, self._step // 2)

    def __call__(self, nbytes: int) -> None:
        with self._lock:
            if self.sent > self._last and self.sent + nbytes - self._last > self._step:
                self._send(self.sent)
            self.sent += nbytes
            if self.sent - self._last >= self._half:
                self._send(self.sent)

    def _send(self, sent: int) -> None:
        self._last = sent
        self._emit(self._make(sent))

    def done(self, size: int | None) -> None:
        """The put returned: the bar shows the whole file, once."""
        with self._lock:
            final = self.sent if size is None else size
            if final == self._last and final:
                return
            self._send(final)


def _describe(exc: BaseException, destination: Destination) -> tuple[ErrorCode, str, str | None]:
    if isinstance(exc, StoreError):
        return exc.code, exc.message, exc.provider_code
    name = type(exc).__name__
    return "provider_error", f"the {destination.type} plugin raised an unexpected {name}", name


class _Run:
    """One destination's delivery while it is in progress (shared by worker threads)."""

    def __init__(self, delivery: _Delivery, destination: Destination) -> None:
        self.delivery = delivery
        self.destination = destination
        self.prefix = ""
        #: Per file: its key, or None when it is split (part keys are made as parts come).
        self.keys: list[str | None] = []
        #: Per file: how it is shaped for this destination.
        self.shapes: list[_Shape] = []
        self.manifest_key: str | None = None
        self.lock = threading.Lock()
        self.open_lock = threading.Lock()
        self.store: Store | None = None
        self.opened = False
        self.error: DeliveryError | None = None
        #: Per file: the objects written for it (one, or one per part), in order.
        self.written: list[list[_Object]] = []
        self.remaining = 0
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

    def fail(self, step: Step, exc: BaseException, *, key: str | None = None) -> None:
        code, message, provider_code = _describe(exc, self.destination)
        store_error = exc if isinstance(exc, StoreError) else None
        error = DeliveryError(
            code,
            step,
            message,
            provider_code,
            key,
            transient=store_error is not None and store_error.transient,
            status=store_error.status if store_error is not None else None,
        )
        with self.lock:
            if self.error is None:
                self.error = error
        where = f" of {key!r}" if key else ""
        provider = f", {provider_code}" if provider_code else ""
        self.note(f"failed at {step}{where} ({code}{provider}): {message}", logging.WARNING)

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
        hooks: PluginHooks,
        on_progress: ProgressHandler | None,
    ) -> None:
        self.result_set = result_set
        self.now = now
        self.options = options
        self.retry = retry
        self.hooks = hooks
        self.on_progress = on_progress
        self.files: list[Prepared] = []

    # -- puts -------------------------------------------------------------------------------

    def put(self, run: _Run, store: Store, key: str, prepared: Prepared) -> None:
        """Put one object, retrying transient failures per the policy."""
        attempts = self.retry.attempts if prepared.rewindable else 1
        options = _put_options(prepared.file)

        def attempt(number: int) -> None:
            source = prepared.attempt()
            meter = self._meter(run, key, prepared, number)
            upload: Source = source
            if meter is not None and not run.destination.destination_type.reports_progress:
                upload = ProgressReader.of(source, meter)
            started = time.perf_counter()
            ok = False
            try:
                with (
                    reporting_progress(meter) if meter is not None else nullcontext(),
                    retrying_parts(self.retry if attempts > 1 else None),
                ):
                    store.put(key, upload, size=prepared.size, **options)
                ok = True
            finally:
                _metrics.observe_upload(run.destination.type, time.perf_counter() - started, ok=ok)
                if upload is not source:
                    cast(BinaryIO, upload).close()
            prepared.succeeded(source)
            if meter is not None:
                meter.done(prepared.size)

        try:
            call_with_retries(
                attempt, self.retry, attempts=attempts, on_retry=self._on_retry(run, key)
            )
        except Exception as exc:
            if not prepared.rewindable and is_transient(exc):
                run.note(
                    f"put {key!r} failed with a transient error, but its stream cannot be "
                    "rewound, so it was not retried",
                    logging.WARNING,
                )
            raise

    def _meter(self, run: _Run, key: str, prepared: Prepared, attempt: int) -> _Meter | None:
        handler = self.on_progress
        if handler is None:
            return None
        destination, name, total = run.destination, prepared.file.name, prepared.size

        def make(sent: int) -> DeliveryProgress:
            return DeliveryProgress(destination, name, key, sent, total, attempt)

        return _Meter(handler, make, total)

    # -- tasks ------------------------------------------------------------------------------

    def deliver_file(self, run: _Run, index: int) -> None:
        try:
            store = run.open()
            if store is None:
                with run.lock:
                    run.not_attempted += 1
                return
            prepared = self.files[index]
            shape = run.shapes[index]
            try:
                if shape.split is not None:
                    objects = self.put_parts(run, store, prepared, shape)
                elif shape.codec is not None:
                    key = run.keys[index]
                    assert key is not None
                    objects = [self.put_compressed(run, store, key, prepared, shape.codec)]
                else:
                    key = run.keys[index]
                    assert key is not None
                    self.put(run, store, key, prepared)
                    objects = [_Object(key, prepared.size or 0, prepared.file.name)]
                    if run.destination.manifest and isinstance(prepared, PathFile):
                        prepared.sha256()  # while the file is likely still in the page cache
                    self.delivered(run, objects[0])
            except _PartFailed as failed:
                with run.lock:
                    run.written[index] = failed.written
                    run.bytes += sum(o.size for o in failed.written)
                run.fail("put", failed.error, key=failed.key)
                return
            except Exception as exc:
                run.fail("put", exc, key=run.keys[index])
                return
            with run.lock:
                run.written[index] = objects
                run.bytes += sum(o.size for o in objects)
            if shape.split is not None:
                parts = len(objects)
                records = sum(o.records or 0 for o in objects)
                run.note(f"split {prepared.file.name!r} into {parts} part(s), {records} record(s)")
        finally:
            with run.lock:
                run.remaining -= 1
                last = run.remaining == 0
            if last:
                self.finish(run)

    def delivered(self, run: _Run, obj: _Object) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("destination %r: put %r (%d bytes)", run.destination.name, obj.key, obj.size)
        self.hooks.file_delivered(
            result_set=self.result_set, destination=run.destination, key=obj.key, size=obj.size
        )

    def put_compressed(
        self,
        run: _Run,
        store: Store,
        key: str,
        prepared: Prepared,
        codec: Codec,
        *,
        announce: bool = True,
    ) -> _Object:
        """Compress ``prepared`` on the way to ``store`` (unsized upload; every attempt
        compresses again from the start). Progress counts the file's own bytes read."""
        file = prepared.file
        attempts = self.retry.attempts if prepared.rewindable else 1
        done: list[CompressedReader] = []

        def attempt(number: int) -> None:
            meter = self._meter(run, key, prepared, number)
            with open_source(prepared.attempt()) as raw:
                counted = raw if meter is None else ProgressReader(raw, meter)
                reader = CompressedReader(counted, codec)
                started = time.perf_counter()
                ok = False
                try:
                    with (
                        reporting_progress(None),  # the store counts compressed bytes
                        retrying_parts(self.retry if attempts > 1 else None),
                    ):
                        store.put(key, cast(BinaryIO, reader), size=None, **_put_options(file))
                    ok = True
                finally:
                    _metrics.observe_upload(
                        run.destination.type, time.perf_counter() - started, ok=ok
                    )
            if meter is not None:
                meter.done(prepared.size)
            done.append(reader)

        call_with_retries(attempt, self.retry, attempts=attempts, on_retry=self._on_retry(run, key))
        reader = done[-1]
        obj = _Object(key, reader.size, file.name, sha256=reader.sha256, compression=codec)
        if announce:
            self.delivered(run, obj)
        return obj

    def put_parts(
        self, run: _Run, store: Store, prepared: Prepared, shape: _Shape
    ) -> list[_Object]:
        """Split ``prepared`` at record boundaries and put every part (compressed if asked)
        with its own retries, so a failed part is sent again alone and memory stays flat.

        A file on disk or a seekable stream is read once: each part is streamed to the store
        as it is cut (a retry cuts it again from its first record; see ``PartSource``). A
        stream that cannot be rewound is split as it is read, each part spooled to an
        anonymous temporary file on disk first."""
        assert shape.split is not None
        written: list[_Object] = []
        key = None
        try:
            if isinstance(prepared, PathFile | SharedStream):
                start, number, header = 0, 1, None
                while number == 1 or start < (prepared.size or 0):
                    key = self.part_key(run, prepared.file.name, number, shape.codec)
                    part = PartSource(
                        prepared,
                        shape.split,
                        start=start,
                        number=number,
                        header=header,
                        max_records=run.destination.max_file_records,
                        max_bytes=run.destination.max_file_bytes,
                        hashing=run.destination.manifest and shape.codec is None,
                    )
                    written.append(self._put_part(run, store, key, part, shape.codec))
                    sent = part.last
                    assert sent is not None and sent.source_end is not None
                    start, number, header = start + sent.source_end, number + 1, sent.header
            else:
                with open_source(prepared.attempt()) as raw:
                    for piece in split_records(
                        raw,
                        shape.split,
                        max_records=run.destination.max_file_records,
                        max_bytes=run.destination.max_file_bytes,
                        digest=False,
                    ):
                        key = self.part_key(run, prepared.file.name, piece.number, shape.codec)
                        written.append(self._put_spooled(run, store, key, prepared, piece, shape))
        except Exception as exc:
            raise _PartFailed(exc, key, written) from exc
        return written

    def _put_part(
        self, run: _Run, store: Store, key: str, part: PartSource, codec: Codec | None
    ) -> _Object:
        file = part.file
        try:
            if codec is not None:
                obj = self.put_compressed(run, store, key, part, codec, announce=False)
            else:
                self.put(run, store, key, part)
                assert part.last is not None
                digest = part.last.sha256 if run.destination.manifest else None
                obj = _Object(key, part.last.size, file.name, sha256=digest)
        finally:
            part.release()
        assert part.last is not None
        obj = replace(obj, records=part.last.records, part=part.number)
        self.delivered(run, obj)
        return obj

    def _put_spooled(
        self, run: _Run, store: Store, key: str, prepared: Prepared, part: Part, shape: _Shape
    ) -> _Object:
        file = prepared.file
        body: io.RawIOBase = part if shape.codec is None else CompressedReader(part, shape.codec)
        spool = tempfile.TemporaryFile(prefix="destinations-part-")  # noqa: SIM115
        digest = hashlib.sha256()
        try:
            while chunk := body.read(CHUNK):
                spool.write(chunk)
                digest.update(chunk)
            size = spool.tell()
            piece = ResultFile(
                file.name,
                stream=cast(BinaryIO, spool),
                content_type=file.content_type,
                metadata=file.metadata,
            )
            self.put(run, store, key, SharedStream(piece, spool, 0, size))
        finally:
            spool.close()
        obj = _Object(
            key,
            size,
            file.name,
            sha256=digest.hexdigest(),
            records=part.records,
            part=part.number,
            compression=shape.codec,
        )
        self.delivered(run, obj)
        return obj

    def part_key(self, run: _Run, file_name: str, number: int, codec: Codec | None) -> str:
        rs = self.result_set
        template = run.destination.name_template
        if not template.uses_part:
            template = _SPLIT_NAMES
        name = template.expand_name(
            file_name,
            part=number,
            collection_id=rs.collection_id,
            collection_name=rs.collection_name,
            result_set_id=rs.result_set_id,
            now=self.now,
        )
        return join_key(run.prefix, name + (SUFFIXES[codec] if codec else ""))

    def _on_retry(self, run: _Run, key: str) -> Callable[[BaseException, int, float], None]:
        attempts = self.retry.attempts

        def on_retry(exc: BaseException, number: int, wait: float) -> None:
            code, message, provider_code = _describe(exc, run.destination)
            _metrics.observe_retry(run.destination.type, code)
            provider = f", {provider_code}" if provider_code else ""
            run.note(
                f"put {key!r} failed ({code}{provider}): {message}; attempt "
                f"{number} of {attempts} in {wait:.2f} s",
                logging.WARNING,
            )

        return on_retry

    def finish(self, run: _Run) -> None:
        """Write the manifest (if wanted and earned), close the store, report."""
        keys = [o.key for objects in run.written for o in objects]
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
            run.note(
                f"delivered {len(run.keys)} file(s) as {len(keys)} object(s), {run.bytes} bytes "
                f"in {seconds:.2f} s"
            )
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
        self.hooks.delivery_finished(result_set=self.result_set, status=run.status)

    def write_manifest(self, run: _Run, store: Store, key: str) -> bool:
        rs = self.result_set
        try:
            entries = [
                ManifestEntry(
                    o.key,
                    o.size,
                    o.sha256 if o.sha256 is not None else p.sha256(),
                    p.file.content_type,
                    source=o.source,
                    records=o.records,
                    part=o.part,
                    compression=o.compression,
                )
                for objects, p in zip(run.written, self.files, strict=True)
                for o in objects
            ]
        except Exception as exc:
            run.fail("manifest", exc, key=key)
            return False
        body = manifest_body(rs, self.now, entries)
        buffer = io.BytesIO(body)
        file = ResultFile(rs.manifest_name, stream=buffer, content_type="application/json")
        manifest = SharedStream(file, buffer, 0, len(body))
        try:
            self.put(run, store, key, manifest)
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
    on_progress: ProgressHandler | None = None,
) -> DeliveryReport:
    """Upload every file of ``result_set`` to every enabled destination.

    ``now`` is the upload time used for every key (naive means UTC; default: the current
    time, taken once). ``concurrency`` bounds the puts in flight across all destinations and
    files. ``options`` are the stores' options (keep ``retries=0``: see the module
    docstring); ``retry`` the policy for transient failures. ``on_progress`` receives this
    call's :class:`~destinations.DeliveryProgress` events (from worker threads).

    Returns a :class:`DeliveryReport` in the order ``destinations`` were given; it never
    raises for a destination's failure. Raises ``ValueError`` for bad arguments and
    :class:`~destinations.DestinationsError` when a file's path cannot be read, before
    anything is uploaded.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    else:
        now = now.astimezone(UTC)
    plugins = host()
    plugins.load_observers()
    delivery = _Delivery(
        result_set,
        now,
        options or StoreOptions(),
        retry or RetryPolicy(),
        plugins.hooks,
        on_progress,
    )

    enabled = [d for d in destinations if d.enabled]
    manifest_segment = sanitize_segment(result_set.manifest_name)
    if any(d.manifest for d in enabled) and any(
        sanitize_segment(f.name) == manifest_segment for f in result_set.files
    ):
        raise ValueError(f"a result file is named like the manifest, {manifest_segment!r}")

    statuses: list[DestinationStatus | _Run] = []
    runs: list[_Run] = []
    try:
        hashing = any(d.manifest for d in enabled)
        delivery.files = [prepare(f, len(enabled), hashing=hashing) for f in result_set.files]
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

        # The uploads, file by file and destination by destination, taken in turn by at
        # most ``concurrency`` workers (no future per file: a task each costs more than a
        # small file's own work). Each worker runs in a copy of the caller's context: its log
        # lines keep the caller's ids (a worker's task, result set and destination; a
        # request's id); what an upload sets in it, it resets.
        todo: list[Callable[[], None]] = [
            functools.partial(delivery.deliver_file, run, index)
            for index in range(len(delivery.files))
            for run in runs
        ] or [functools.partial(delivery.finish, run) for run in runs]
        tasks = iter(todo)

        def work() -> None:
            for task in tasks:  # next() on a list iterator is atomic: each task runs once
                task()

        workers = max(1, min(concurrency, len(todo)))
        with ThreadPoolExecutor(workers, thread_name_prefix="destinations-deliver") as pool:
            futures = [pool.submit(contextvars.copy_context().run, work) for _ in range(workers)]
        for future in futures:
            future.result()  # surfaces a bug in this module; destination failures never raise
    finally:
        for prepared in delivery.files:
            prepared.release()

    for item in statuses:
        if isinstance(item, DestinationStatus):
            delivery.hooks.delivery_finished(result_set=result_set, status=item)
    final: list[DestinationStatus] = []
    for item in statuses:
        if isinstance(item, _Run):
            assert item.status is not None
            final.append(item.status)
        else:
            final.append(item)
    return DeliveryReport(result_set, now, tuple(final))


def _plan(delivery: _Delivery, destination: Destination) -> _Run:
    """Expand the prefix and every key up front (a split file's first and last possible
    part keys are checked); a key that cannot be built fails the destination before any
    upload."""
    rs = delivery.result_set
    run = _Run(delivery, destination)
    try:
        run.prefix = destination.template.expand(
            collection_id=rs.collection_id,
            collection_name=rs.collection_name,
            result_set_id=rs.result_set_id,
            now=delivery.now,
        )
        for prepared in delivery.files:
            shape = _shape(run, prepared.file)
            run.shapes.append(shape)
            if shape.split is not None:
                for number in (1, 99_999):
                    delivery.part_key(run, prepared.file.name, number, shape.codec)
                run.keys.append(None)
                continue
            name = destination.name_template.expand_name(
                prepared.file.name,
                collection_id=rs.collection_id,
                collection_name=rs.collection_name,
                result_set_id=rs.result_set_id,
                now=delivery.now,
            )
            run.keys.append(join_key(run.prefix, name + _suffix(shape.codec)))
        if destination.manifest:
            run.manifest_key = object_key(run.prefix, rs.manifest_name)
    except StoreError as exc:
        run.fail("key", exc)
        delivery.finish(run)
        return run
    run.written = [[] for _ in run.keys]
    run.remaining = len(run.keys)
    return run


@dataclass(frozen=True, slots=True)
class _Shape:
    """How one file is written to one destination: compressed with ``codec`` and/or split
    as ``split`` records (None: as it is)."""

    codec: Codec | None = None
    split: RecordFormat | None = None


_AS_IS = _Shape()
#: How parts are named when the destination's file-name template has no %PART%.
_SPLIT_NAMES = FileNameTemplate("%FILE_NAME%-%PART%%FILE_EXT%")


def _shape(run: _Run, file: ResultFile) -> _Shape:
    dest = run.destination
    codec: Codec | None = None if dest.compression == "none" else dest.compression
    if codec is not None and file.content_encoding not in (None, "identity"):
        run.note(
            f"{file.name!r} is not compressed again: it already has content encoding "
            f"{file.content_encoding!r}"
        )
        codec = None
    split: RecordFormat | None = None
    if dest.splits:
        split = record_format(file.name, file.content_type, file.content_encoding)
        if split is None:
            run.note(
                f"{file.name!r} is not split: only JSON Lines (.jsonl, .ndjson) and CSV "
                "files are split at record boundaries"
            )
    if codec is None and split is None:
        return _AS_IS
    return _Shape(codec, split)


def _suffix(codec: Codec | None) -> str:
    return SUFFIXES[codec] if codec is not None else ""


def _put_options(file: ResultFile) -> dict[str, Any]:
    """``put``'s keywords for ``file``: content_encoding and metadata only when set, so a
    store written for the first contract (``put(key, source, *, size, content_type)``)
    still takes plain files."""
    options: dict[str, Any] = {"content_type": file.content_type}
    if file.content_encoding is not None:
        options["content_encoding"] = file.content_encoding
    if file.metadata is not None:
        options["metadata"] = file.metadata
    return options


@dataclass(frozen=True, slots=True)
class _Object:
    """One object written: its key and stored size, the result file it came from, and —
    when delivery shaped it — the sha256 of the stored bytes, its records, part and
    compression."""

    key: str
    size: int
    source: str
    sha256: str | None = None
    records: int | None = None
    part: int | None = None
    compression: str | None = None


class _PartFailed(Exception):
    """A split file failed at a part; the parts before it were written."""

    def __init__(self, error: BaseException, key: str | None, written: list[_Object]) -> None:
        super().__init__(type(error).__name__)
        self.error = error
        self.key = key
        self.written = written
