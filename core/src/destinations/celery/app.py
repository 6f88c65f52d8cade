"""An app configured from the environment, for ``celery -A destinations.celery.app worker``:
``DESTINATIONS_BROKER_URL``, ``DESTINATIONS_DATABASE_URL``, ``DESTINATIONS_ENCRYPTION_KEYS``
and optionally ``DESTINATIONS_QUEUE`` (default ``destinations``)."""

from __future__ import annotations

from .._settings import settings
from ._app import create_celery

app = create_celery(queue=settings().queue)
