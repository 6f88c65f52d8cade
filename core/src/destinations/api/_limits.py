"""What one account and one request may do: verifications a minute, field sizes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import ApiError

__all__ = ["MAX_FIELD_CHARS", "MAX_FIELD_NAME_CHARS", "RateLimiter", "check_lengths"]

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
