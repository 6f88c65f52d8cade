"""API keys: authenticating a request's key, with a short cache of the valid ones."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy import Engine

from ..persistence import account_for_key_hash, hash_api_key, key_generation, mark_used
from ._errors import UNAUTHORIZED, ApiError

__all__ = ["LAST_USED_RESOLUTION", "REVOCATION_CHECK_SECONDS", "ApiKeys", "KeyCache"]

#: How stale a cached key may be after a revocation, at most (one small indexed read of
#: the ``key_generation`` row per process per interval).
REVOCATION_CHECK_SECONDS = 1.0
#: ``last_used_at`` is written at most this often per key and process.
LAST_USED_RESOLUTION = 60.0


class KeyCache:
    """API-key hash -> account id for keys found valid in the last ``ttl`` seconds.

    Bounded (least recently stored dropped first) and in-process. Only hits are cached: an
    unknown key is looked up in the database on every request, so it answers 401 every time.
    Revocations empty it (:class:`ApiKeys` compares the database's revocation generation
    at most every :data:`REVOCATION_CHECK_SECONDS`), so a revoked key stops working on
    every replica within that time, whatever ``ttl`` is.
    """

    def __init__(
        self, ttl: float, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def get(self, key_hash: str) -> int | None:
        if self.ttl <= 0:
            return None
        with self._lock:
            entry = self._entries.get(key_hash)
            if entry is None:
                return None
            account_id, expires = entry
            if self._clock() >= expires:
                del self._entries[key_hash]
                return None
            return account_id

    def put(self, key_hash: str, account_id: int) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._entries[key_hash] = (account_id, self._clock() + self.ttl)
            self._entries.move_to_end(key_hash)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, key_hash: str | None = None) -> None:
        """Drop one key hash, or every entry."""
        with self._lock:
            if key_hash is None:
                self._entries.clear()
            else:
                self._entries.pop(key_hash, None)


class ApiKeys:
    """Finds the account of an API key: from the :class:`KeyCache`, else one indexed lookup
    of its SHA-256 (a Core select on a Connection) that skips revoked keys.

    At most every :data:`REVOCATION_CHECK_SECONDS` one request reads the revocation
    generation first and empties the cache when it changed; ``last_used_at`` is stamped at
    most every :data:`LAST_USED_RESOLUTION` seconds per account.
    """

    def __init__(
        self, engine: Engine, cache_ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.engine = engine
        self.cache = KeyCache(cache_ttl, clock=clock)
        self._clock = clock
        self._generation_lock = threading.Lock()
        self._generation: int | None = None
        self._checked_at = float("-inf")
        #: Goes up whenever the cache is emptied for a revocation: a key looked up before
        #: that is not cached after it.
        self._epoch = 0
        self._used_lock = threading.Lock()
        self._used_at: dict[int, float] = {}

    def _check_revocations(self) -> None:
        now = self._clock()
        if now - self._checked_at < REVOCATION_CHECK_SECONDS:
            return
        with self._generation_lock:
            if self._clock() - self._checked_at < REVOCATION_CHECK_SECONDS:
                return  # another thread checked meanwhile
            generation = key_generation(self.engine)
            if generation != self._generation:
                self._epoch += 1
                self.cache.forget()
                self._generation = generation
            self._checked_at = self._clock()

    def _mark_used(self, account_id: int) -> None:
        now = self._clock()
        with self._used_lock:
            last = self._used_at.get(account_id)
            if last is not None and now - last < LAST_USED_RESOLUTION:
                return
            self._used_at[account_id] = now
            if len(self._used_at) > 4 * self.cache.max_entries:
                self._used_at.clear()
        mark_used(self.engine, account_id)

    def authenticate(self, api_key: str | None) -> int:
        """The account id of ``api_key``; :class:`ApiError` 401 for a missing, unknown or
        revoked key."""
        if api_key:
            self._check_revocations()
            key_hash = hash_api_key(api_key)
            account_id = self.cache.get(key_hash)
            if account_id is None:
                epoch = self._epoch
                account_id = account_for_key_hash(self.engine, key_hash)
                if account_id is None:
                    raise ApiError(401, UNAUTHORIZED)
                with self._generation_lock:
                    if epoch == self._epoch:
                        self.cache.put(key_hash, account_id)
            self._mark_used(account_id)
            return account_id
        raise ApiError(401, UNAUTHORIZED)
