"""Verify-then-commit: prove a destination is writable before saving it.

Exactly two storage requests: put a small probe object, delete it. The probe key sits under
the template's literal text before its first token, so it stays inside any prefix an access
policy is scoped to. One overall deadline bounds the whole exercise.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Generic, TypeVar

from . import _metrics
from ._errors import StoreError, VerificationFailed
from ._records import Destination
from ._store import Store, StoreOptions

__all__ = [
    "Committed",
    "VerificationReport",
    "needs_verification",
    "open_store",
    "probe_key_for",
    "verify",
    "verify_then_commit",
]

log = logging.getLogger("destinations.verify")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class VerificationReport:
    """What one successful verification did and how long each step took (seconds)."""

    destination_type: str
    probe_key: str
    open_seconds: float
    put_seconds: float
    delete_seconds: float
    total_seconds: float
    requests: int = 2
    warnings: tuple[str, ...] = ()


def open_store(destination: Destination, options: StoreOptions | None = None) -> Store:
    """Open a store for ``destination`` (imports its plugin on first use)."""
    dtype = destination.destination_type
    return dtype.open_store(destination.settings, options or StoreOptions())


def probe_key_for(destination: Destination) -> str:
    """A fresh probe key: literal template text before the first token + a unique name."""
    # 32 random hex digits, as uuid4().hex gave, without building a UUID object.
    return f"{destination.template.probe_prefix}destinations-verify-{os.urandom(16).hex()}.txt"


def _store_failure(
    step: str, exc: BaseException, destination: Destination, probe_key: str
) -> VerificationFailed:
    if isinstance(exc, StoreError):
        error = exc
    else:
        # Unmapped exceptions may echo request details; keep only the type in the message
        # and chain the original for the embedding service's own debugging.
        name = type(exc).__name__
        error = StoreError(
            "provider_error",
            f"the {destination.type} plugin raised an unexpected {name}",
            provider_code=name,
        )
    left = step == "delete"
    message = error.message
    if left:
        message += (
            f". The probe object was left at {probe_key!r}: delete it by hand, and give the "
            "credentials permission to delete objects under the path prefix (or set "
            "probe_delete_failure=warn for a write-only or retention-locked bucket)"
        )
    return VerificationFailed(
        step,  # type: ignore[arg-type]
        error,
        probe_key=probe_key,
        probe_left=left,
        message=message,
    )


def verify(
    destination: Destination,
    *,
    timeout: float = 30.0,
    options: StoreOptions | None = None,
) -> VerificationReport:
    """Write a small probe object to ``destination`` and delete it.

    Raises :class:`~destinations.VerificationFailed` (``step``, ``code``) on failure. A failed
    delete fails unless the destination sets ``probe_delete_failure="warn"``, in which case
    the report carries a warning naming where the probe was left. The whole call is bounded
    by ``timeout`` seconds.
    """
    try:
        report = _verify(destination, timeout, options)
    except VerificationFailed as exc:
        _metrics.observe_verification(destination.type, code=exc.code)
        raise
    _metrics.observe_verification(
        destination.type,
        code=None,
        steps={
            "connect": report.open_seconds,
            "put": report.put_seconds,
            "delete": report.delete_seconds,
            "total": report.total_seconds,
        },
    )
    return report


def _verify(
    destination: Destination, timeout: float, options: StoreOptions | None
) -> VerificationReport:
    probe_key = probe_key_for(destination)
    if options is None:
        options = StoreOptions(timeout=timeout, retries=0)
    else:
        options = replace(options, timeout=timeout, retries=0)
    state: dict[str, object] = {"step": "put"}

    def run() -> None:
        try:
            state["report"] = _verify_steps(destination, probe_key, options, state)
        except BaseException as exc:  # handed to the calling thread below
            state["error"] = exc

    worker = threading.Thread(target=run, name="destinations-verify", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        step = str(state["step"])
        where = f"; a probe object may have been left at {probe_key!r}" if step == "delete" else ""
        raise VerificationFailed(
            step,  # type: ignore[arg-type]
            StoreError(
                "timeout",
                f"no answer within {timeout:g} s during the {step} step; check that the "
                f"endpoint is reachable from this server{where}",
            ),
            probe_key=probe_key,
            probe_left=step == "delete",
        )
    error = state.get("error")
    if error is not None:
        assert isinstance(error, BaseException)
        raise error
    report = state["report"]
    assert isinstance(report, VerificationReport)
    return report


def _verify_steps(
    destination: Destination, probe_key: str, options: StoreOptions, state: dict[str, object]
) -> VerificationReport:
    started = time.perf_counter()
    body = (
        f"destinations verification probe {probe_key}\n"
        f"written {datetime.now(UTC).isoformat()}; safe to delete\n"
    ).encode()
    try:
        store = open_store(destination, options)
    except Exception as exc:
        raise _store_failure("put", exc, destination, probe_key) from exc
    warnings: list[str] = []
    try:
        opened = time.perf_counter()
        try:
            store.put(probe_key, io.BytesIO(body), size=len(body), content_type="text/plain")
        except Exception as exc:
            raise _store_failure("put", exc, destination, probe_key) from exc
        put_done = time.perf_counter()
        state["step"] = "delete"
        try:
            store.delete(probe_key)
        except Exception as exc:
            failure = _store_failure("delete", exc, destination, probe_key)
            if destination.probe_delete_failure != "warn":
                raise failure from exc
            warnings.append(failure.message)
            log.warning("verification of %r: %s", destination.name, failure.message)
        deleted = time.perf_counter()
    finally:
        store.close()
    return VerificationReport(
        destination_type=destination.type,
        probe_key=probe_key,
        open_seconds=opened - started,
        put_seconds=put_done - opened,
        delete_seconds=deleted - put_done,
        total_seconds=deleted - started,
        warnings=tuple(warnings),
    )


def needs_verification(old: Destination | None, new: Destination) -> bool:
    """Whether saving ``new`` over ``old`` must verify first (DESIGN.md "Verify-then-commit").

    Yes when ``new`` is enabled and it is created, re-enabled, or changes its type or any
    of the type's fields (credentials, bucket, endpoint, region, path prefix…). A rename, the
    manifest flag or disabling never verifies.
    """
    if not new.enabled:
        return False
    if old is None or not old.enabled:
        return True
    return old.type != new.type or old.settings != new.settings


@dataclass(frozen=True, slots=True)
class Committed(Generic[T]):
    """What :func:`verify_then_commit` returns: the commit's value and the verification."""

    value: T
    verification: VerificationReport | None


def verify_then_commit(
    old: Destination | None,
    new: Destination,
    commit: Callable[[Destination], T],
    *,
    timeout: float = 30.0,
) -> Committed[T]:
    """Verify ``new`` when :func:`needs_verification` says so, then call ``commit(new)``.

    ``commit`` is called only after a successful verification (or when none is needed); on
    :class:`~destinations.VerificationFailed` nothing is committed and the old destination
    stays as it was.
    """
    report = verify(new, timeout=timeout) if needs_verification(old, new) else None
    return Committed(commit(new), report)
