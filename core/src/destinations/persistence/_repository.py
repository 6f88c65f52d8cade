"""The repository: stored destinations in and out. The one place a row becomes a
:class:`~destinations.Destination` (secrets decrypted, parsed and validated) and a
destination becomes a row's values (secrets encrypted), plus every statement on the
destinations table that the API, the workers and the CLI run.
"""

from __future__ import annotations

import functools
import secrets as _random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pydantic_core import to_jsonable_python
from sqlalchemy import (
    ColumnElement,
    Engine,
    RowMapping,
    Select,
    bindparam,
    delete as sql_delete,
    func,
    select,
    update,
)
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from .. import Destination, SecretsUnreadable, parse_destination
from ._schema import make_engine
from ._secrets import SecretBox, load_secret_box
from ._tables import Account, DestinationRow, utcnow

__all__ = [
    "PRESENTED_COLUMNS",
    "SORT_KEYS",
    "ConcurrentUpdate",
    "DestinationNotFound",
    "DestinationRepository",
    "LimitReached",
    "Page",
    "enabled_flags",
    "load_destination",
    "new_destination_id",
    "rotate_secrets",
]

#: The columns the API shows (no secrets, no account, no version).
_DESTINATIONS = DestinationRow.__table__.c
PRESENTED_COLUMNS: Final = (
    _DESTINATIONS.id,
    _DESTINATIONS.name,
    _DESTINATIONS.type,
    _DESTINATIONS.enabled,
    _DESTINATIONS.params,
    _DESTINATIONS.created_at,
    _DESTINATIONS.updated_at,
    _DESTINATIONS.last_verified_at,
)
_SORT_COLUMNS: Final = {"name": _DESTINATIONS.name, "type": _DESTINATIONS.type}
SORT_KEYS: Final = tuple(_SORT_COLUMNS)
#: The fields every row stores in columns of their own rather than in ``params``.
_COLUMN_FIELDS: Final = ("id", "name", "type", "enabled")
#: The read path (list, get) uses Core selects of plain columns on a Connection: no ORM
#: Session, no identity map, no entity loading. Statements are built once, with bound
#: parameters (building one costs more than running it).
_MINE = _DESTINATIONS.account_id == bindparam("account_id")
_COUNT = select(func.count()).where(_MINE)
_GET = select(*PRESENTED_COLUMNS).where(_DESTINATIONS.id == bindparam("id"), _MINE)
_TOTAL = "total_matching"


class DestinationNotFound(LookupError):
    """No destination with this id (for this account), or no destinations table at all."""


class ConcurrentUpdate(Exception):
    """The row changed (its ``version`` moved on) between reading it and writing it."""


class LimitReached(Exception):
    """The account already holds ``limit`` destinations (``used`` of them)."""

    def __init__(self, used: int, limit: int) -> None:
        super().__init__(f"{used} of {limit} destinations")
        self.used = used
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Page:
    """One page of an account's destinations: the :data:`PRESENTED_COLUMNS` of each row by
    name, how many rows match in all, and how many destinations the account holds."""

    rows: Sequence[RowMapping]
    total: int
    used: int


def new_destination_id() -> str:
    """12 URL-safe characters (72 random bits): short in a URL, unguessable, collision-free
    in practice; ids are never sequential, so they reveal nothing about other accounts."""
    return _random.token_urlsafe(9)


@functools.cache
def _page_statement(sort_by: str | None, descending: bool, page_size: int) -> Select[Any]:
    """One page of an account's destinations (``account_id``, ``offset``), each row with
    the number of rows matching in all (:data:`_TOTAL`); add search terms with ``where``."""
    order: list[ColumnElement[Any]]
    if sort_by is None:
        order = [_DESTINATIONS.created_at, _DESTINATIONS.id]
    else:
        order = [func.lower(_SORT_COLUMNS[sort_by]), _DESTINATIONS.name, _DESTINATIONS.id]
    if descending:
        order = [column.desc() for column in order]
    return (
        select(*PRESENTED_COLUMNS, func.count().over().label(_TOTAL))
        .where(_MINE)
        .order_by(*order)
        .offset(bindparam("offset"))
        .limit(page_size)
    )


class DestinationRepository:
    """Stored destinations in ``engine``, their secrets sealed by ``box``."""

    def __init__(self, engine: Engine, box: SecretBox) -> None:
        self.engine = engine
        self.box = box

    # -- row <-> destination ------------------------------------------------------------------

    def stored_fields(self, row: DestinationRow) -> dict[str, Any]:
        """The flat fields ``row`` was saved from, secrets decrypted (raises
        :class:`~destinations.SecretsUnreadable` when no configured key opens them)."""
        return {
            **row.params,
            **self.box.decrypt(row.secrets),
            "id": row.id,
            "name": row.name,
            "type": row.type,
            "enabled": row.enabled,
        }

    def to_destination(self, row: DestinationRow) -> Destination:
        """``row`` as a destination, parsed and validated now (raises
        :class:`~destinations.InvalidDestination` if its fields no longer validate, e.g. a
        local directory that is gone)."""
        return parse_destination(self.stored_fields(row))

    def row_values(self, destination: Destination) -> dict[str, Any]:
        """The columns that store ``destination``: ``name``, ``type``, ``enabled``, the
        non-secret ``params`` (JSON) and the encrypted ``secrets``."""
        secret_names = destination.destination_type.secret_fields
        non_secret: dict[str, Any] = {}
        secret: dict[str, Any] = {}
        for key, value in destination.to_params(reveal_secrets=True).items():
            if key in _COLUMN_FIELDS:
                continue
            (secret if key in secret_names else non_secret)[key] = to_jsonable_python(value)
        return {
            "name": destination.name,
            "type": destination.type,
            "enabled": destination.enabled,
            "params": non_secret,
            "secrets": self.box.encrypt(secret),
        }

    @staticmethod
    def presented(row: DestinationRow) -> dict[str, Any]:
        """An ORM row's :data:`PRESENTED_COLUMNS` by name (as the read path returns them)."""
        return {column.key: getattr(row, column.key) for column in PRESENTED_COLUMNS}

    # -- reads ---------------------------------------------------------------------------------

    def find_row(self, destination_id: str, account_id: int | None = None) -> DestinationRow | None:
        """The row ``destination_id`` (only if ``account_id`` owns it, when given)."""
        with Session(self.engine) as session:
            return self._find_row(session, destination_id, account_id)

    def find(self, destination_id: str, account_id: int | None = None) -> Destination | None:
        """The stored destination, secrets decrypted here; None if it is gone (or belongs to
        another account)."""
        row = self.find_row(destination_id, account_id)
        return None if row is None else self.to_destination(row)

    def get_presented(self, account_id: int, destination_id: str) -> RowMapping | None:
        """The shown columns of one destination of the account (another account's is None
        too: ids reveal nothing)."""
        with self.engine.connect() as connection:
            return (
                connection.execute(_GET, {"id": destination_id, "account_id": account_id})
                .mappings()
                .first()
            )

    def page(
        self,
        account_id: int,
        *,
        offset: int,
        page_size: int,
        sort_by: str | None = None,
        descending: bool = False,
        name_contains: str = "",
    ) -> Page:
        """``page_size`` rows from ``offset``, ordered by creation (or ``sort_by``, one of
        :data:`SORT_KEYS`, case-insensitively), optionally only names containing
        ``name_contains`` (case-insensitive)."""
        params = {"account_id": account_id, "offset": offset}
        statement = _page_statement(sort_by, descending, page_size)
        matching: list[ColumnElement[bool]] = []
        if name_contains:
            matching.append(
                func.lower(_DESTINATIONS.name).contains(name_contains.lower(), autoescape=True)
            )
            statement = statement.where(*matching)
        with self.engine.connect() as connection:
            # The page carries the count of all matching rows (a window over the same WHERE).
            rows = connection.execute(statement, params).mappings().all()
            if rows:
                total = rows[0][_TOTAL]
            else:  # past the last page, or nothing matches
                total = connection.execute(_COUNT.where(*matching), params).scalar() or 0
            # Without a search term every destination of the account matches: no second count.
            used = (connection.execute(_COUNT, params).scalar() or 0) if name_contains else total
        return Page(rows, total, used)

    def check_limit(self, account_id: int, limit: int) -> None:
        """Raise :class:`LimitReached` if the account already holds ``limit`` destinations."""
        with Session(self.engine) as session:
            self._check_limit(session, account_id, limit)

    # -- writes --------------------------------------------------------------------------------

    def insert(
        self, account_id: int, destination: Destination, *, verified: bool, limit: int
    ) -> DestinationRow:
        """Store ``destination`` for the account under a new id; ``verified`` stamps
        ``last_verified_at``. Raises :class:`LimitReached` when the account is full."""
        now = utcnow()
        row = DestinationRow(
            id=new_destination_id(),
            account_id=account_id,
            **self.row_values(destination),
            version=1,
            created_at=now,
            updated_at=now,
            last_verified_at=utcnow() if verified else None,
        )
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            _lock_account(session, account_id)
            self._check_limit(session, account_id, limit)
            session.add(row)
        return row

    def replace(
        self, row: DestinationRow, destination: Destination, *, verified: bool
    ) -> DestinationRow:
        """Overwrite ``row`` (as read) with ``destination``, only if nobody changed it since
        (its ``version``); ``row`` is updated in place and returned. Raises
        :class:`DestinationNotFound` if it was deleted meanwhile, else
        :class:`ConcurrentUpdate` if it was changed."""
        values = {
            **self.row_values(destination),
            "version": row.version + 1,
            "updated_at": utcnow(),
            "last_verified_at": utcnow() if verified else row.last_verified_at,
        }
        with Session(self.engine) as session, session.begin():
            result = session.execute(
                update(DestinationRow)
                .where(
                    DestinationRow.id == row.id,
                    DestinationRow.account_id == row.account_id,
                    DestinationRow.version == row.version,
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                if self._find_row(session, row.id, row.account_id) is None:
                    raise DestinationNotFound(f"no destination with id {row.id!r}")
                raise ConcurrentUpdate(f"destination {row.id!r} changed meanwhile")
        for key, value in values.items():
            setattr(row, key, value)
        return row

    def delete(self, account_id: int, destination_id: str) -> bool:
        """Delete the account's destination; False if it has none with this id."""
        with Session(self.engine) as session, session.begin():
            result = session.execute(
                sql_delete(DestinationRow)
                .where(DestinationRow.id == destination_id, DestinationRow.account_id == account_id)
                .execution_options(synchronize_session=False)
            )
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _find_row(
        session: Session, destination_id: str, account_id: int | None
    ) -> DestinationRow | None:
        query = select(DestinationRow).where(DestinationRow.id == destination_id)
        if account_id is not None:
            query = query.where(DestinationRow.account_id == account_id)
        return session.scalar(query)

    @staticmethod
    def _check_limit(session: Session, account_id: int, limit: int) -> None:
        used = (
            session.scalar(select(func.count()).where(DestinationRow.account_id == account_id)) or 0
        )
        if used >= limit:
            raise LimitReached(used, limit)


def _lock_account(session: Session, account_id: int) -> None:
    """Take the lock that makes "count, then insert" atomic against concurrent creates of
    the same account: the account row's lock on PostgreSQL (``SELECT … FOR UPDATE``); on
    SQLite, which ignores ``FOR UPDATE`` and whose driver starts a transaction only at the
    first write, a no-op write to the account row as the transaction's first statement, so
    the database's write lock is held before the count (other writers wait for it)."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(Account).where(Account.id == account_id).values(id=Account.id))
    else:
        session.scalar(select(Account.id).where(Account.id == account_id).with_for_update())


def enabled_flags(engine: Engine, destination_ids: Iterable[str]) -> dict[str, tuple[bool, int]]:
    """``id -> (enabled, account_id)`` of those of ``destination_ids`` that exist. Reads no
    secret, so it needs no keys (fan-out runs where the keys may not be)."""
    ids = list(destination_ids)
    with Session(engine) as session:
        rows = session.execute(
            select(DestinationRow.id, DestinationRow.enabled, DestinationRow.account_id).where(
                DestinationRow.id.in_(ids)
            )
        )
        return {r.id: (r.enabled, r.account_id) for r in rows}


def load_destination(
    database_url: str, destination_id: str, *, encryption_keys: str | None = None
) -> Destination:
    """The stored destination ``destination_id``, whatever account owns it, for operator
    tools on the server's own machine (the caller has the database URL and the keys, so it
    is the operator, not an API client).

    ``encryption_keys`` as for :func:`~destinations.api.create_app` (else the environment,
    else the key file beside a SQLite database). Raises :class:`DestinationNotFound`,
    :class:`~destinations.InvalidDestination` if the stored fields no longer validate, or
    :class:`~destinations.SecretsUnreadable` if the secrets do not decrypt.
    """
    engine = make_engine(database_url)
    try:
        repository = DestinationRepository(engine, load_secret_box(encryption_keys, database_url))
        try:
            row = repository.find_row(destination_id)
        except (OperationalError, ProgrammingError) as exc:
            raise DestinationNotFound(
                f"no destinations table in {engine.url.render_as_string()}; is this the "
                "API's database?"
            ) from exc
        if row is None:
            raise DestinationNotFound(f"no destination with id {destination_id!r}")
        return repository.to_destination(row)
    finally:
        engine.dispose()


def rotate_secrets(engine: Engine, box: SecretBox, batch: int = 200) -> tuple[int, int]:
    """Re-encrypt every row's secrets with ``box``'s newest key; ``(rotated, failed)``.

    Each row is rewritten only if its token is still the one read (``WHERE secrets = old``),
    so a concurrent update is never overwritten; such a row is already on the newest key.
    """
    rotated = failed = 0
    last = ""
    while True:
        with Session(engine) as session:
            rows = session.execute(
                select(DestinationRow.id, DestinationRow.secrets)
                .where(DestinationRow.id > last)
                .order_by(DestinationRow.id)
                .limit(batch)
            ).all()
        if not rows:
            return rotated, failed
        with Session(engine) as session, session.begin():
            for row_id, token in rows:
                try:
                    new = box.rotate(token)
                except SecretsUnreadable:
                    failed += 1
                    continue
                session.execute(
                    update(DestinationRow)
                    .where(DestinationRow.id == row_id, DestinationRow.secrets == token)
                    .values(secrets=new)
                    .execution_options(synchronize_session=False)
                )
                rotated += 1
        last = rows[-1][0]

