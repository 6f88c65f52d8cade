"""What one account and one request may do: verifications a minute, verifications at
once, field sizes."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from ._errors import ApiError

__all__ = [
    "MAX_FIELD_CHARS",
    "MAX_FIELD_NAME_CHARS",
    "RateLimiter",
    "VerificationGate",
    "check_lengths",
]

T = TypeVar("T")

#: Longest value of any one field (a service-account key file is ~2.4 KB; 4096-bit keys
#: ~3.3 KB) and longest field name.
MAX_FIELD_CHARS = 8192
MAX_FIELD_NAME_CHARS = 255


class RateLimiter:
    """A token bucket per account: ``rate`` attempts a minute, bursts up to ``rate``.

    In-process: with several API replicas (or workers) each one allows ``rate`` a minute,
    so the account-wide limit is ``rate`` times the number of processes.
    """

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[int, tuple[float, float]] = {}

    def take(self, account_id: int) -> float:
        """Take one token; 0 if granted, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        per_second = self.rate / 60.0
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.get(account_id, (float(self.rate), now))
            tokens = min(float(self.rate), tokens + (now - last) * per_second)
            if tokens >= 1.0:
                self._buckets[account_id] = (tokens - 1.0, now)
                return 0.0
            self._buckets[account_id] = (tokens, now)
            return (1.0 - tokens) / per_second


class VerificationGate:
    """Where verifications run: a pool of ``workers`` threads of its own (never the threads
    that serve requests and authenticate keys), of which one account may hold at most
    ``per_account`` at once. A verification beyond either bound is refused at once with
    429 and ``Retry-After`` (it is never queued: a queue would let one account's stalled
    endpoints delay every other account's verifications)."""

    def __init__(self, workers: int, per_account: int, retry_after: int = 5) -> None:
        if workers < 1 or per_account < 1:
            raise ValueError("verification workers and the per-account share must be >= 1")
        self.workers = workers
        self.per_account = min(per_account, workers)
        self.retry_after = retry_after
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="destinations-verify")
        self._lock = threading.Lock()
        self._running: dict[int, int] = {}
        self._total = 0

    def _acquire(self, account_id: int) -> None:
        with self._lock:
            mine = self._running.get(account_id, 0)
            if mine >= self.per_account:
                message = (
                    f"Too many verifications at once: at most {self.per_account} per account "
                    f"run at the same time; retry in {self.retry_after} s"
                )
            elif self._total >= self.workers:
                message = (
                    "The server is busy verifying other destinations; retry in "
                    f"{self.retry_after} s"
                )
            else:
                self._running[account_id] = mine + 1
                self._total += 1
                return
        raise ApiError(429, message, headers={"Retry-After": str(self.retry_after)})

    def _release(self, account_id: int) -> None:
        with self._lock:
            self._total -= 1
            left = self._running[account_id] - 1
            if left:
                self._running[account_id] = left
            else:
                del self._running[account_id]

    def running(self, account_id: int) -> int:
        with self._lock:
            return self._running.get(account_id, 0)

    async def run(self, account_id: int, work: Callable[[], T]) -> T:
        """``work()`` on the pool, holding one of the account's slots until it returns
        (also when the client goes away meanwhile: the slot is freed by the thread)."""
        self._acquire(account_id)
        try:
            future: Future[T] = self._executor.submit(contextvars.copy_context().run, work)
        except BaseException:
            self._release(account_id)
            raise
        future.add_done_callback(lambda _: self._release(account_id))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def check_lengths(params: Mapping[str, Any]) -> None:
    """Refuse over-long field names and values, NUL characters and non-scalar values."""
    errors: dict[str, str] = {}
    for key, value in params.items():
        if not isinstance(key, str) or len(key) > MAX_FIELD_NAME_CHARS:
            raise ApiError.invalid(
                {"fields": f"field names must be at most {MAX_FIELD_NAME_CHARS} characters"}
            )
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
            errors[key] = f"must be at most {MAX_FIELD_CHARS} characters"
        elif isinstance(value, str) and "\x00" in value:
            errors[key] = "must not contain NUL characters"
        elif not isinstance(value, str | bool | int | float | type(None)):
            errors[key] = "must be a string, number, boolean or null"
    if errors:
        raise ApiError.invalid(errors)
