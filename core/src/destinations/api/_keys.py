"""API keys: authenticating a request's key, with a short cache of the valid ones."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy import Engine

from ..persistence import account_for_key_hash, hash_api_key
from ._errors import UNAUTHORIZED, ApiError

__all__ = ["ApiKeys", "KeyCache"]


class KeyCache:
    """API-key hash -> account id for keys found valid in the last ``ttl`` seconds.

    Bounded (least recently stored dropped first) and in-process. Only hits are cached: an
    unknown key is looked up in the database on every request, so it answers 401 every time.
    There is no API-key revocation (nor account deletion through the API) yet; a feature
    that adds one must invalidate this cache (:meth:`forget`, on every replica), or a
    revoked key keeps working for up to ``ttl`` seconds.
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
    of its SHA-256 (a Core select on a Connection)."""

    def __init__(self, engine: Engine, cache_ttl: float) -> None:
        self.engine = engine
        self.cache = KeyCache(cache_ttl)

    def authenticate(self, api_key: str | None) -> int:
        """The account id of ``api_key``; :class:`ApiError` 401 for a missing or unknown key."""
        if api_key:
            key_hash = hash_api_key(api_key)
            account_id = self.cache.get(key_hash)
            if account_id is not None:
                return account_id
            account_id = account_for_key_hash(self.engine, key_hash)
            if account_id is not None:
                self.cache.put(key_hash, account_id)
                return account_id
        raise ApiError(401, UNAUTHORIZED)
