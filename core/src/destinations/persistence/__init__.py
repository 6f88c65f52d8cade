"""Persistence: the tables, their migrations, the secret box and the repository that turns
stored rows back into destinations. Used by the HTTP API (:mod:`destinations.api`), the
Celery workers (:mod:`destinations.celery`) and the CLI (``--destination ID``); needs the
``api`` extra (SQLAlchemy, Alembic, cryptography).

* Tables (:class:`Account`, :class:`DestinationRow`, :class:`DeliveryStatusRow`) and
  :func:`upgrade`, which migrates a database to the newest schema (Alembic scripts in
  ``migrations/``; the API and ``destinations worker`` run it on start).
* :class:`SecretBox`: secret fields at rest as Fernet tokens; keys from the caller, else
  ``DESTINATIONS_ENCRYPTION_KEYS``, else a key file beside a SQLite database. A token no key
  opens raises :class:`~destinations.SecretsUnreadable`.
* :class:`DestinationRepository`: the one row ↔ destination conversion, and every statement
  on the destinations table; :func:`load_destination` for operator tools.
* Delivery statuses: :func:`record_status`, :func:`read_delivery_statuses`.
* Deliveries over HTTP (``POST /deliveries``), their claims, per-destination statuses and
  completion webhooks: :class:`DeliveryStore`.
"""

from __future__ import annotations

from .._settings import DEFAULT_DATABASE_URL, env_name
from ._accounts import (
    API_KEY_PREFIX,
    KeyInfo,
    account_for_key_hash,
    create_account,
    hash_api_key,
    key_generation,
    list_keys,
    mark_used,
    revoke_key,
)
from ._deliveries import (
    DELIVERY_STATUSES,
    DeliveryNotFound,
    DeliveryRow,
    DeliveryStore,
    DeliveryTargetRow,
    DueWebhook,
    IdempotencyConflict,
    NewDelivery,
    NotRetryable,
    StoredDelivery,
    StoredTarget,
    WebhookAttemptRow,
    WebhookEndpoint,
    WebhookEndpointRow,
    event_id,
    log_entry,
    redact_url,
)
from ._idempotency import (
    IDEMPOTENCY_TTL,
    Claim,
    claim_idempotency_key,
    finish_idempotency_key,
    release_idempotency_key,
)
from ._repository import (
    PRESENTED_COLUMNS,
    SORT_KEYS,
    ConcurrentUpdate,
    DestinationNotFound,
    DestinationRepository,
    LimitReached,
    Page,
    enabled_flags,
    load_destination,
    new_destination_id,
    rotate_secrets,
)
from ._schema import MIGRATIONS, make_engine, upgrade
from ._secrets import ENCRYPTION_KEYS_ENV, SecretBox, check_readable, load_secret_box
from ._statuses import (
    FINAL_STATUSES,
    StatusName,
    StoredStatus,
    read_delivery_statuses,
    record_status,
)
from ._tables import (
    Account,
    Base,
    DeliveryStatusRow,
    DestinationRow,
    IdempotencyRow,
    KeyGeneration,
    UTCDateTime,
    utcnow,
)

#: The environment variable of the database URL (read through destinations._settings).
DATABASE_URL_ENV = env_name("database_url")

__all__ = [
    "API_KEY_PREFIX",
    "DATABASE_URL_ENV",
    "DEFAULT_DATABASE_URL",
    "DELIVERY_STATUSES",
    "ENCRYPTION_KEYS_ENV",
    "FINAL_STATUSES",
    "IDEMPOTENCY_TTL",
    "MIGRATIONS",
    "PRESENTED_COLUMNS",
    "SORT_KEYS",
    "Account",
    "Base",
    "Claim",
    "ConcurrentUpdate",
    "DeliveryNotFound",
    "DeliveryRow",
    "DeliveryStatusRow",
    "DeliveryStore",
    "DeliveryTargetRow",
    "DestinationNotFound",
    "DestinationRepository",
    "DestinationRow",
    "DueWebhook",
    "IdempotencyConflict",
    "IdempotencyRow",
    "KeyGeneration",
    "KeyInfo",
    "LimitReached",
    "NewDelivery",
    "NotRetryable",
    "Page",
    "SecretBox",
    "StatusName",
    "StoredDelivery",
    "StoredStatus",
    "StoredTarget",
    "UTCDateTime",
    "WebhookAttemptRow",
    "WebhookEndpoint",
    "WebhookEndpointRow",
    "account_for_key_hash",
    "check_readable",
    "claim_idempotency_key",
    "create_account",
    "enabled_flags",
    "event_id",
    "finish_idempotency_key",
    "hash_api_key",
    "key_generation",
    "list_keys",
    "load_destination",
    "load_secret_box",
    "log_entry",
    "make_engine",
    "mark_used",
    "new_destination_id",
    "read_delivery_statuses",
    "record_status",
    "redact_url",
    "release_idempotency_key",
    "revoke_key",
    "rotate_secrets",
    "upgrade",
    "utcnow",
]
