"""The service: what each endpoint does, synchronously (the app runs it in a worker thread,
because verification does blocking network I/O). Raises :class:`ApiError` for every refusal.

It validates, verifies and refuses; the repository (:mod:`destinations.persistence`) stores,
:mod:`._keys` authenticates, :mod:`._present` shapes responses and :mod:`._limits` limits.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from .. import (
    Destination,
    InvalidDestination,
    PluginLoadError,
    VerificationFailed,
    available_types,
    needs_verification,
    parse_destination,
    verify_then_commit,
)
from .._spec import COMMON_FIELDS
from ..local import confined_to
from ..persistence import (
    SORT_KEYS,
    Claim,
    ConcurrentUpdate,
    DestinationNotFound,
    DestinationRepository,
    DestinationRow,
    LimitReached,
    claim_idempotency_key,
    finish_idempotency_key,
    release_idempotency_key,
)
from ._errors import NOT_FOUND, UNAUTHORIZED, ApiError
from ._keys import ApiKeys
from ._limits import RateLimiter, VerificationGate, check_lengths
from ._present import LOCAL, Presenter

__all__ = ["ApiError", "DestinationService", "Pending", "Settings"]

log = logging.getLogger("destinations.api")
PAGE_SIZE = 10
MAX_PAGE = 1_000_000


@dataclass(frozen=True, slots=True)
class Settings:
    """How one service is configured (:func:`~destinations.api.create_app` fills it)."""

    local_root: Path | None
    max_destinations: int
    verify_timeout: float
    verifications_per_minute: int = 30
    #: Seconds a valid API key stays in the :class:`~destinations.api._keys.KeyCache` (0
    #: turns the cache off); a revocation empties it within a second anyway.
    api_key_cache_ttl: float = 30.0
    #: Threads that run verifications (never the request threads), and how many of them
    #: one account may hold at once (more answer 429).
    verification_workers: int = 32
    verifications_per_account: int = 4


@dataclass(frozen=True, slots=True)
class Pending:
    """A create or update validated and ready to run: ``run()`` verifies (when
    ``verifies``), commits and returns the destination as shown."""

    verifies: bool
    run: Callable[[], dict[str, Any]]


class DestinationService:
    def __init__(self, repository: DestinationRepository, settings: Settings) -> None:
        self.repository = repository
        self.settings = settings
        self.verifications = RateLimiter(settings.verifications_per_minute)
        self.gate = VerificationGate(
            settings.verification_workers,
            settings.verifications_per_account,
            retry_after=max(1, min(5, math.ceil(settings.verify_timeout))),
        )
        self.api_keys = ApiKeys(repository.engine, settings.api_key_cache_ttl)
        self.presenter = Presenter(settings.local_root)

    # -- accounts ---------------------------------------------------------------------------

    def authenticate(self, api_key: str | None) -> int:
        return self.api_keys.authenticate(api_key)

    def offered_types(self) -> list[str]:
        return [t for t in available_types() if t != LOCAL or self.settings.local_root]

    # -- endpoints --------------------------------------------------------------------------

    def create(self, account_id: int, params: dict[str, Any]) -> dict[str, Any]:
        """Create, verifying on this thread (for callers outside the HTTP app)."""
        return self.prepare_create(account_id, params).run()

    def prepare_create(self, account_id: int, params: dict[str, Any]) -> Pending:
        if "id" in params:
            raise ApiError.invalid({"id": "is assigned by the server; do not send it"})
        check_lengths(params)
        with self._confined(account_id, params.get("type")):
            new = self._parse(params)
        limit = self.settings.max_destinations
        with _limit_refusal():
            self.repository.check_limit(account_id, limit)
        verified = needs_verification(None, new)
        if verified:
            self._take_verification(account_id)

        def commit(dest: Destination) -> DestinationRow:
            with _limit_refusal():
                return self.repository.insert(account_id, dest, verified=verified, limit=limit)

        def run() -> dict[str, Any]:
            row = self._verify_then_commit(None, new, commit)
            return self.presenter.present(self.repository.presented(row), account_id)

        return Pending(verified, run)

    async def execute(self, account_id: int, pending: Pending) -> dict[str, Any]:
        """Run ``pending``: a verification on the :class:`VerificationGate` (429 when the
        account's share or the pool is full), anything else on a request thread."""
        if pending.verifies:
            return await self.gate.run(account_id, pending.run)
        return await run_in_threadpool(pending.run)

    # -- Idempotency-Key --------------------------------------------------------------------

    def request_hash(self, params: Mapping[str, Any]) -> str:
        """The body's keyed fingerprint (it holds secrets: never a plain hash)."""
        canonical = json.dumps(params, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
        return self.repository.box.fingerprint(canonical.encode())

    def claim(self, account_id: int, key: str, params: Mapping[str, Any]) -> Claim:
        """Claim ``key``: :class:`ApiError` 409 when it was used with another body or its
        first request is still running; a ``replay`` claim carries the stored response."""
        claim = claim_idempotency_key(
            self.repository.engine, account_id, key, self.request_hash(params)
        )
        if claim.outcome == "mismatch":
            raise ApiError(
                409,
                "Idempotency-Key was already used with a different request body in the last "
                "24 hours; use a new key for a new request",
            )
        if claim.outcome == "in_progress":
            raise ApiError(
                409,
                "A request with this Idempotency-Key is still being processed; retry shortly",
                headers={"Retry-After": "1"},
            )
        return claim

    def finish(self, account_id: int, key: str, status: int, body: bytes) -> None:
        finish_idempotency_key(self.repository.engine, account_id, key, status, body.decode())

    def release(self, account_id: int, key: str) -> None:
        release_idempotency_key(self.repository.engine, account_id, key)

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
        if sort_by is not None and sort_by not in SORT_KEYS:
            errors["sort_by"] = "must be name or type"
        direction = query.get("sort_direction") or "ascending"
        if direction not in ("ascending", "descending"):
            errors["sort_direction"] = "must be ascending or descending"
        if errors:
            raise ApiError.invalid(errors)

        term = query.get("search_term", "").strip()
        found = self.repository.page(
            account_id,
            offset=(page - 1) * PAGE_SIZE,
            page_size=PAGE_SIZE,
            sort_by=sort_by,
            descending=direction == "descending",
            name_contains=term,
        )
        rows, total, used = found.rows, found.total, found.used
        limit = self.settings.max_destinations
        return {
            "usage": {"used": used, "limit": limit, "available": max(limit - used, 0)},
            "current_page": page,
            "total_pages": max(math.ceil(total / PAGE_SIZE), 1),
            "total_results": total,
            "destinations": [self.presenter.present(row, account_id) for row in rows],
        }

    def get(self, account_id: int, destination_id: str) -> dict[str, Any]:
        row = self.repository.get_presented(account_id, destination_id)
        if row is None:
            raise ApiError(404, NOT_FOUND)
        return self.presenter.present(row, account_id)

    def update(
        self, account_id: int, destination_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """Update, verifying on this thread (for callers outside the HTTP app)."""
        return self.prepare_update(account_id, destination_id, changes).run()

    def prepare_update(
        self, account_id: int, destination_id: str, changes: dict[str, Any]
    ) -> Pending:
        check_lengths(changes)
        # Another account's destination is "not found" too: ids reveal nothing.
        row = self.repository.find_row(destination_id, account_id)
        if row is None:
            raise ApiError(404, NOT_FOUND)
        if changes.get("id", destination_id) != destination_id:
            raise ApiError.invalid({"id": "cannot be changed"})
        changes.pop("id", None)
        stored = self.repository.stored_fields(row)
        type_name = changes.get("type", row.type)
        old: Destination | None
        with self._confined(account_id, type_name if row.type != LOCAL else LOCAL):
            try:
                old = parse_destination(stored)
            except InvalidDestination:
                old = None  # e.g. its directory is gone; the update must then verify afresh
            if old is not None:
                new = self._guard(lambda: old.updated(changes))
            else:
                if str(type_name).strip().lower() != row.type:
                    stored = {k: v for k, v in stored.items() if k in COMMON_FIELDS}
                new = self._parse({**stored, **changes})
        verified = needs_verification(old, new)
        if verified:
            self._take_verification(account_id)

        def commit(dest: Destination) -> DestinationRow:
            try:
                return self.repository.replace(row, dest, verified=verified)
            except DestinationNotFound as exc:  # deleted meanwhile
                raise ApiError(404, NOT_FOUND) from exc
            except ConcurrentUpdate as exc:
                raise ApiError(
                    409,
                    "The destination was changed by another request while this one was "
                    "being processed; nothing was saved. Fetch it again and retry.",
                ) from exc

        def run() -> dict[str, Any]:
            committed = self._verify_then_commit(old, new, commit)
            return self.presenter.present(self.repository.presented(committed), account_id)

        return Pending(verified, run)

    def delete(self, account_id: int, destination_id: str) -> None:
        if not self.repository.delete(account_id, destination_id):
            raise ApiError(404, NOT_FOUND)

    # -- helpers ----------------------------------------------------------------------------

    def _parse(self, params: Mapping[str, Any]) -> Destination:
        return self._guard(lambda: parse_destination(params))

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

    def account_root(self, account_id: int) -> Path:
        """The account's own subtree of the local root (``ROOT/<account id>``, created on
        first use, mode 0700): its ``local`` destinations write only inside it, so two
        accounts naming the same directory never share files."""
        root = self.settings.local_root
        assert root is not None
        mine = root / str(account_id)
        mine.mkdir(mode=0o700, exist_ok=True)
        return mine

    def _confined(self, account_id: int, type_name: object) -> AbstractContextManager[None]:
        """Parse ``local`` destinations inside the account's subtree (relative values are
        relative to it; anything outside it is refused with one message, whether or not it
        exists)."""
        if str(type_name or "").strip().lower() != LOCAL:
            return nullcontext()
        if self.settings.local_root is None:
            raise ApiError.invalid({"type": self._not_offered()})
        return confined_to(self.account_root(account_id))

    def _take_verification(self, account_id: int) -> None:
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

    def _verify_then_commit(
        self, old: Destination | None, new: Destination, commit: Any
    ) -> DestinationRow:
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
            raise ApiError(401, UNAUTHORIZED) from exc
        row: DestinationRow = committed.value
        return row


@contextmanager
def _limit_refusal() -> Iterator[None]:
    try:
        yield
    except LimitReached as exc:
        raise ApiError(
            400,
            f"Destination limit reached: this account has {exc.used} of {exc.limit} "
            "destinations; delete one before creating another",
        ) from exc


