"""Load one stored destination by id, for operator tools on the server's own machine.

Whatever account owns it: the caller has the database URL and the encryption keys, so it is
the operator, not an API client.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from .._spec import Destination, parse_destination
from ._crypto import load_secret_box
from ._db import DestinationRow, make_engine

__all__ = ["DestinationNotFound", "load_destination"]


class DestinationNotFound(LookupError):
    """No destination with this id in the database (or no destinations table at all)."""


def load_destination(
    database_url: str, destination_id: str, *, encryption_keys: str | None = None
) -> Destination:
    """The stored destination ``destination_id``, secrets decrypted, parsed and validated.

    ``encryption_keys`` as for :func:`~destinations.api.create_app` (else the environment,
    else the key file beside a SQLite database). Raises :class:`DestinationNotFound`,
    :class:`~destinations.InvalidDestination` if the stored fields no longer validate (e.g. a
    local directory that is gone), or :class:`RuntimeError` if the secrets do not decrypt.
    """
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            try:
                row = session.scalar(
                    select(DestinationRow).where(DestinationRow.id == destination_id)
                )
            except (OperationalError, ProgrammingError) as exc:
                raise DestinationNotFound(
                    f"no destinations table in {engine.url.render_as_string()}; is this the "
                    "API's database?"
                ) from exc
        if row is None:
            raise DestinationNotFound(f"no destination with id {destination_id!r}")
        secrets = load_secret_box(encryption_keys, database_url).decrypt(row.secrets)
    finally:
        engine.dispose()
    return parse_destination(
        {
            **row.params,
            **secrets,
            "id": row.id,
            "name": row.name,
            "type": row.type,
            "enabled": row.enabled,
        }
    )
