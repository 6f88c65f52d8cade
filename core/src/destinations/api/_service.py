"""What each endpoint does, synchronously (the app runs it in a worker thread, because
verification does blocking network I/O). Raises :class:`ApiError` for every refusal."""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    RowMapping,
    Select,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy import delete as sql_delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .._errors import InvalidDestination, PluginLoadError, VerificationFailed
from .._plugins import available_types, get_type
from .._spec import COMMON_FIELDS, Destination, parse_destination
from .._verify import needs_verification, verify_then_commit
from ..plugin import DestinationType
from ._crypto import SecretBox
from ._db import Account, DestinationRow, hash_api_key, new_destination_id, utcnow

__all__ = ["ApiError", "DestinationService", "Settings"]

log = logging.getLogger("destinations.api")
PAGE_SIZE = 10
MAX_PAGE = 1_000_000
LOCAL = "local"
LOCAL_DIRECTORY = "local_directory"
#: The read path (authenticate, list, get) uses Core selects of plain columns on a
#: Connection: no ORM Session, no identity map, no entity loading.
_ACCOUNTS = Account.__table__.c
_DESTINATIONS = DestinationRow.__table__.c
SORT_COLUMNS = {"name": _DESTINATIONS.name, "type": _DESTINATIONS.type}
#: The columns :meth:`DestinationService._present` shows.
_PRESENTED = (
    _DESTINATIONS.id,
    _DESTINATIONS.name,
    _DESTINATIONS.type,
    _DESTINATIONS.enabled,
    _DESTINATIONS.params,
    _DESTINATIONS.created_at,
    _DESTINATIONS.updated_at,
    _DESTINATIONS.last_verified_at,
)
#: Statements built once, with bound parameters (building one costs more than running it).
_AUTHENTICATE = select(_ACCOUNTS.id).where(_ACCOUNTS.api_key_hash == bindparam("key_hash"))
_MINE = _DESTINATIONS.account_id == bindparam("account_id")
_COUNT = select(func.count()).where(_MINE)
_GET = select(*_PRESENTED).where(_DESTINATIONS.id == bindparam("id"), _MINE)
_TOTAL = "total_matching"


@functools.cache
def _page_statement(sort_by: str | None, descending: bool) -> Select[Any]:
    """One page of an account's destinations (``account_id``, ``offset``), each row with
    the number of rows matching in all (:data:`_TOTAL`); add search terms with ``where``."""
    order: list[ColumnElement[Any]]
    if sort_by is None:
        order = [_DESTINATIONS.created_at, _DESTINATIONS.id]
    else:
        order = [func.lower(SORT_COLUMNS[sort_by]), _DESTINATIONS.name, _DESTINATIONS.id]
    if descending:
        order = [column.desc() for column in order]
    return (
        select(*_PRESENTED, func.count().over().label(_TOTAL))
        .where(_MINE)
        .order_by(*order)
        .offset(bindparam("offset"))
        .limit(PAGE_SIZE)
    )


class ApiError(Exception):
    """A refusal: HTTP ``status``, a message for ``request_info``, and extra keys for it.
    ``headers`` go on the response (``Retry-After``)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.extra = extra

    @classmethod
    def invalid(cls, errors: Mapping[str, str]) -> ApiError:
        detail = "; ".join(f"{field}: {message}" for field, message in errors.items())
        return cls(400, f"Invalid parameters: {detail}", errors=dict(errors))


NOT_FOUND = "Destination not found"


#: Longest value of any one field (a service-account key file is ~2.4 KB; 4096-bit keys
#: ~3.3 KB) and longest field name.
MAX_FIELD_CHARS = 8192
MAX_FIELD_NAME_CHARS = 255


@dataclass(frozen=True, slots=True)
class Settings:
    local_root: Path | None
    max_destinations: int
    verify_timeout: float
    verifications_per_minute: int = 30
    #: Seconds a valid API key stays in :class:`KeyCache` (0 turns the cache off).
    api_key_cache_ttl: float = 30.0


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


class DestinationService:
    def __init__(self, engine: Engine, box: SecretBox, settings: Settings) -> None:
        self.engine = engine
        self.box = box
        self.settings = settings
        self.verifications = RateLimiter(settings.verifications_per_minute)
        self.api_keys = KeyCache(settings.api_key_cache_ttl)
        #: type name -> (its DestinationType, masked fields, secret fields), for _present.
        self._field_sets: dict[str, tuple[DestinationType, frozenset[str], frozenset[str]]] = {}

    # -- accounts ---------------------------------------------------------------------------

    def authenticate(self, api_key: str | None) -> int:
        if api_key:
            key_hash = hash_api_key(api_key)
            account_id = self.api_keys.get(key_hash)
            if account_id is not None:
                return account_id
            with self.engine.connect() as connection:
                account_id = connection.execute(_AUTHENTICATE, {"key_hash": key_hash}).scalar()
            if account_id is not None:
                self.api_keys.put(key_hash, account_id)
                return int(account_id)
        raise ApiError(401, "Supplied api_key is not valid")

    def offered_types(self) -> list[str]:
        return [t for t in available_types() if t != LOCAL or self.settings.local_root]

    # -- endpoints --------------------------------------------------------------------------

    def create(self, account_id: int, params: dict[str, Any]) -> dict[str, Any]:
        if "id" in params:
            raise ApiError.invalid({"id": "is assigned by the server; do not send it"})
        _check_lengths(params)
        params = self._resolve_local(params, params.get("type"))
        new = self._parse(params)
        with Session(self.engine) as session:
            self._check_limit(session, account_id)
        now = utcnow()
        verified = needs_verification(None, new)

        def commit(dest: Destination) -> DestinationRow:
            non_secret, secret = self._split(dest)
            row = DestinationRow(
                id=new_destination_id(),
                account_id=account_id,
                name=dest.name,
                type=dest.type,
                enabled=dest.enabled,
                params=non_secret,
                secrets=self.box.encrypt(secret),
                version=1,
                created_at=now,
                updated_at=now,
                last_verified_at=utcnow() if verified else None,
            )
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                # Lock the account row so concurrent creates cannot both slip under the limit
                # (PostgreSQL; SQLite serialises writers anyway).
                session.scalar(select(Account.id).where(Account.id == account_id).with_for_update())
                self._check_limit(session, account_id)
                session.add(row)
            return row

        row = self._verify_then_commit(None, new, commit, account_id)
        return self._present(_presented(row))

    def list(self, account_id: int, query: Mapping[str, str]) -> dict[str, Any]:
        errors: dict[str, str] = {}
        page = 1
        if "page" in query:
            try:
                page = int(query["page"])
                if not 1 <= page <= MAX_PAGE:
                    raise ValueError
            except ValueError:
                errors["page"] = f"must be a whole number from 1 to {MAX_PAGE}"
        sort_by = query.get("sort_by") or None
        if sort_by is not None and sort_by not in SORT_COLUMNS:
            errors["sort_by"] = "must be name or type"
        direction = query.get("sort_direction") or "ascending"
        if direction not in ("ascending", "descending"):
            errors["sort_direction"] = "must be ascending or descending"
        if errors:
            raise ApiError.invalid(errors)

        term = query.get("search_term", "").strip()
        params = {"account_id": account_id, "offset": (page - 1) * PAGE_SIZE}
        statement = _page_statement(sort_by, direction == "descending")
        matching: list[ColumnElement[bool]] = []
        if term:
            matching.append(func.lower(_DESTINATIONS.name).contains(term.lower(), autoescape=True))
            statement = statement.where(*matching)
        with self.engine.connect() as connection:
            # The page carries the count of all matching rows (a window over the same WHERE).
            rows = connection.execute(statement, params).mappings().all()
            if rows:
                total = rows[0][_TOTAL]
            else:  # past the last page, or nothing matches
                total = connection.execute(_COUNT.where(*matching), params).scalar() or 0
            # Without a search term every destination of the account matches: no second count.
            used = (connection.execute(_COUNT, params).scalar() or 0) if term else total
        limit = self.settings.max_destinations
        return {
            "usage": {"used": used, "limit": limit, "available": max(limit - used, 0)},
            "current_page": page,
            "total_pages": max(math.ceil(total / PAGE_SIZE), 1),
            "total_results": total,
            "destinations": [self._present(row) for row in rows],
        }

    def get(self, account_id: int, destination_id: str) -> dict[str, Any]:
        with self.engine.connect() as connection:
            return self._present(self._load_presented(connection, account_id, destination_id))

    def update(
        self, account_id: int, destination_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        _check_lengths(changes)
        with Session(self.engine) as session:
            row = self._load(session, account_id, destination_id)
        if changes.get("id", destination_id) != destination_id:
            raise ApiError.invalid({"id": "cannot be changed"})
        changes.pop("id", None)
        stored = {
            **row.params,
            **self.box.decrypt(row.secrets),
            "name": row.name,
            "type": row.type,
            "enabled": row.enabled,
        }
        changes = self._resolve_local(changes, changes.get("type", row.type))
        old: Destination | None
        try:
            old = parse_destination(stored)
        except InvalidDestination:
            old = None  # e.g. its directory is gone; the update must then verify afresh
        if old is not None:
            new = self._guard(lambda: old.updated(changes))
        else:
            if str(changes.get("type", row.type)).strip().lower() != row.type:
                stored = {k: v for k, v in stored.items() if k in COMMON_FIELDS}
            new = self._parse({**stored, **changes})
        self._check_local(new)
        verified = needs_verification(old, new)

        def commit(dest: Destination) -> DestinationRow:
            non_secret, secret = self._split(dest)
            values = {
                "name": dest.name,
                "type": dest.type,
                "enabled": dest.enabled,
                "params": non_secret,
                "secrets": self.box.encrypt(secret),
                "version": row.version + 1,
                "updated_at": utcnow(),
                "last_verified_at": utcnow() if verified else row.last_verified_at,
            }
            with Session(self.engine) as session, session.begin():
                result = session.execute(
                    update(DestinationRow)
                    .where(
                        DestinationRow.id == row.id,
                        DestinationRow.account_id == account_id,
                        DestinationRow.version == row.version,
                    )
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount != 1:  # type: ignore[attr-defined]
                    self._load(session, account_id, destination_id)  # 404 if deleted meanwhile
                    raise ApiError(
                        409,
                        "The destination was changed by another request while this one was "
                        "being processed; nothing was saved. Fetch it again and retry.",
                    )
            for key, value in values.items():
                setattr(row, key, value)
            return row

        return self._present(_presented(self._verify_then_commit(old, new, commit, account_id)))

    def delete(self, account_id: int, destination_id: str) -> None:
        with Session(self.engine) as session, session.begin():
            result = session.execute(
                sql_delete(DestinationRow)
                .where(DestinationRow.id == destination_id, DestinationRow.account_id == account_id)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise ApiError(404, NOT_FOUND)

    # -- helpers ----------------------------------------------------------------------------

    def _load(self, session: Session, account_id: int, destination_id: str) -> DestinationRow:
        # Another account's destination is "not found" too: ids reveal nothing.
        row = session.scalar(
            select(DestinationRow).where(
                DestinationRow.id == destination_id, DestinationRow.account_id == account_id
            )
        )
        if row is None:
            raise ApiError(404, NOT_FOUND)
        return row

    def _load_presented(
        self, connection: Connection, account_id: int, destination_id: str
    ) -> RowMapping:
        """The shown columns of one destination of the account, as :meth:`_load` finds it."""
        row = (
            connection.execute(_GET, {"id": destination_id, "account_id": account_id})
            .mappings()
            .first()
        )
        if row is None:
            raise ApiError(404, NOT_FOUND)
        return row

    def _check_limit(self, session: Session, account_id: int) -> None:
        used = (
            session.scalar(select(func.count()).where(DestinationRow.account_id == account_id)) or 0
        )
        limit = self.settings.max_destinations
        if used >= limit:
            raise ApiError(
                400,
                f"Destination limit reached: this account has {used} of {limit} destinations; "
                "delete one before creating another",
            )

    def _parse(self, params: Mapping[str, Any]) -> Destination:
        destination = self._guard(lambda: parse_destination(params))
        self._check_local(destination)
        return destination

    def _guard(self, build: Any) -> Destination:
        try:
            destination: Destination = build()
        except InvalidDestination as exc:
            raise ApiError.invalid(exc.errors) from exc
        except PluginLoadError as exc:
            log.error("%s", exc)
            raise ApiError.invalid(
                {
                    "type": "this destination type is installed but cannot be loaded on this "
                    "server right now; ask the operator"
                }
            ) from exc
        if destination.type == LOCAL and self.settings.local_root is None:
            raise ApiError.invalid({"type": self._not_offered()})
        return destination

    def _not_offered(self) -> str:
        offered = ", ".join(self.offered_types()) or "none"
        return f"type 'local' is not offered by this server; offered types: {offered}"

    def _resolve_local(self, params: dict[str, Any], type_name: object) -> dict[str, Any]:
        """A relative ``local_directory`` is relative to the operator's root."""
        if str(type_name or "").strip().lower() != LOCAL:
            return params
        root = self.settings.local_root
        if root is None:
            raise ApiError.invalid({"type": self._not_offered()})
        value = params.get(LOCAL_DIRECTORY)
        if isinstance(value, str) and value.strip():
            resolved = os.path.realpath(root / value.strip())  # absolute values replace root
            return {**params, LOCAL_DIRECTORY: resolved}
        return params

    def _check_local(self, destination: Destination) -> None:
        if destination.type != LOCAL:
            return
        root = self.settings.local_root
        assert root is not None
        directory = Path(os.path.realpath(getattr(destination.settings, LOCAL_DIRECTORY)))
        if not directory.is_relative_to(root):
            raise ApiError.invalid(
                {
                    LOCAL_DIRECTORY: "must be a directory inside this server's local root "
                    "(give a path relative to it)"
                }
            )

    def _verify_then_commit(
        self, old: Destination | None, new: Destination, commit: Any, account_id: int
    ) -> DestinationRow:
        if needs_verification(old, new):
            wait = self.verifications.take(account_id)
            if wait > 0:
                retry_after = max(1, math.ceil(wait))
                raise ApiError(
                    429,
                    f"Too many verification attempts: at most "
                    f"{self.settings.verifications_per_minute} a minute per account; retry "
                    f"in {retry_after} s",
                    headers={"Retry-After": str(retry_after)},
                )
        try:
            committed = verify_then_commit(old, new, commit, timeout=self.settings.verify_timeout)
        except VerificationFailed as exc:
            extra: dict[str, Any] = {
                "connectivity_problem": True,
                "step": exc.step,
                "code": exc.code,
            }
            if exc.provider_code:
                extra["provider_code"] = exc.provider_code
            raise ApiError(400, f"Destination verification failed: {exc.message}", **extra) from exc
        except IntegrityError as exc:  # the account was deleted meanwhile
            raise ApiError(401, "Supplied api_key is not valid") from exc
        row: DestinationRow = committed.value
        return row

    def _split(self, destination: Destination) -> tuple[dict[str, Any], dict[str, Any]]:
        secret_names = destination.destination_type.secret_fields
        params = destination.to_params(reveal_secrets=True)
        non_secret: dict[str, Any] = {}
        secret: dict[str, Any] = {}
        for key, value in params.items():
            if key in ("id", "name", "type", "enabled"):
                continue
            (secret if key in secret_names else non_secret)[key] = to_jsonable_python(value)
        return non_secret, secret

    def _fields_of(self, type_name: str) -> tuple[frozenset[str], frozenset[str]]:
        """A type's masked and secret field names (empty if it cannot be loaded now)."""
        try:
            dtype = get_type(type_name)
        except (InvalidDestination, PluginLoadError):
            return frozenset(), frozenset()  # not cached: the plugin may load later
        cached = self._field_sets.get(type_name)
        if cached is None or cached[0] is not dtype:
            cached = (dtype, frozenset(dtype.masked_fields), dtype.secret_fields)
            self._field_sets[type_name] = cached
        return cached[1], cached[2]

    def _present(self, row: Mapping[Any, Any]) -> dict[str, Any]:
        """A destination as the API shows it: never a secret, masked ids, UTC times.
        ``row``: the :data:`_PRESENTED` columns by name."""
        type_name = row["type"]
        masked, secret = self._fields_of(type_name)
        root = self.settings.local_root if type_name == LOCAL else None
        out: dict[str, Any] = {
            "id": row["id"],
            "name": row["name"],
            "type": type_name,
            "enabled": row["enabled"],
        }
        for key, value in row["params"].items():
            if key in secret:
                continue
            if key in masked and isinstance(value, str):
                value = _mask(value)
            if key == LOCAL_DIRECTORY and root:
                value = _relative_to(value, root)
            out[key] = value
        out["created_at"] = _iso(row["created_at"])
        out["updated_at"] = _iso(row["updated_at"])
        out["last_verified_at"] = _iso(row["last_verified_at"])
        return out


def _presented(row: DestinationRow) -> dict[str, Any]:
    """An ORM row's :data:`_PRESENTED` columns by name (after a write)."""
    return {column.key: getattr(row, column.key) for column in _PRESENTED}


def _check_lengths(params: Mapping[str, Any]) -> None:
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


def _mask(value: str) -> str:
    return "****" + value[-4:] if len(value) > 4 else "****"


def _relative_to(value: str, root: Path) -> str:
    # Plain string work: both sides are real, absolute paths (resolved when saved), and this
    # runs for every local row of every listing.
    base = str(root)
    if value == base:
        return "."
    if value.startswith(base.rstrip(os.sep) + os.sep):
        return value[len(base.rstrip(os.sep)) + 1 :]
    return value


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
