"""Configuration read from the environment, in one typed object.

Use it as::

    from destinations._settings import settings

    settings().allow_private_endpoints   # DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS
    settings().database_url              # DESTINATIONS_DATABASE_URL

Every variable is ``DESTINATIONS_`` + the field name in capitals; an empty value counts as
unset. :func:`settings` is fresh and cheap: it compares the current values of the variables
below with those the cached object was built from (one ``os.environ`` lookup per field,
20-30 µs in all on a loaded 2-core machine; a rebuild costs about 0.25 ms) and rebuilds
only when one changed, so a variable changed at runtime (a test's ``monkeypatch.setenv``,
an operator's ``os.environ``) applies to the next call. The endpoint guard, asked on every
request, reads its one switch alone (:func:`destinations._guard.private_endpoints_allowed`,
the same variable and rule).

Arguments given in code (``create_app(database_url=...)``, ``--database-url``) win over
these. A value that does not parse raises :class:`InvalidSettings` naming the variable
(never echoing the value: it may be a secret).

``DESTINATIONS_DISABLE_PLUGINS`` is not here: the plugin host reads it itself, because
listing the installed types must import neither pydantic nor pluggy.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Annotated, Final

from pydantic import AliasGenerator, BeforeValidator, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._errors import DestinationsError
from ._guard import switch_on

__all__ = ["ENV_PREFIX", "InvalidSettings", "Settings", "env_name", "settings"]

ENV_PREFIX: Final = "DESTINATIONS_"
DEFAULT_DATABASE_URL: Final = "sqlite:///destinations.db"
DEFAULT_QUEUE: Final = "destinations"


def _switch(value: object) -> object:
    """``1`` or ``true`` (any case, spaces around) turn a switch on; anything else is off,
    as the guard has always read it (an unknown word never lifts a protection): the guard's
    own rule, :func:`destinations._guard.switch_on`."""
    if isinstance(value, str):
        return switch_on(value)
    return value


Switch = Annotated[bool, BeforeValidator(_switch)]


def env_name(field: str) -> str:
    """The environment variable of a :class:`Settings` field."""
    return ENV_PREFIX + field.upper()


class InvalidSettings(DestinationsError, ValueError):
    """An environment variable has a value that does not parse; the message names it."""


class Settings(BaseSettings):
    """What the library, the API, the workers and the CLI read from the environment."""

    # Exact names: each field's variable is its alias, matched case-sensitively, so
    # :func:`settings` knows precisely which variables to watch.
    model_config = SettingsConfigDict(
        alias_generator=AliasGenerator(validation_alias=env_name),
        populate_by_name=True,
        case_sensitive=True,
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    #: SQLAlchemy URL of the API's database (also read by the workers and the CLI). Kept out
    #: of the repr: it may hold a password.
    database_url: str = Field(default=DEFAULT_DATABASE_URL, repr=False)
    #: Fernet keys, newest first, comma- or whitespace-separated.
    encryption_keys: SecretStr | None = None
    #: The only directory tree ``local`` destinations created through the API may write into.
    local_root: Path | None = None
    #: Lift the endpoint guard (private, loopback and plain-http endpoints), for development.
    allow_private_endpoints: Switch = False
    #: Let ``s3`` destinations with ``s3_role_arn`` and no key pair assume their role with
    #: this server's own AWS credentials (the SDK's default chain: environment, instance or
    #: container role). Off: every destination brings its own key pair.
    allow_default_credentials: Switch = False
    #: Celery broker, ``redis://…`` or ``amqp://…``. Kept out of the repr: it may hold a
    #: password.
    broker_url: str | None = Field(default=None, repr=False)
    #: Celery queue of the delivery tasks.
    queue: str = DEFAULT_QUEUE
    #: Destinations one account may hold.
    max_destinations: int = Field(default=50, ge=0)
    #: Verification attempts per account per minute, per process (0 turns the limit off).
    verifications_per_minute: int = Field(default=30, ge=0)
    #: Delivery over HTTP (``POST /deliveries``): the only directory tree ``{name, path}``
    #: files may be read from (unset: only https URLs are accepted).
    file_root: Path | None = None
    #: Files one delivery may name, and their total bytes (paths and fetched URLs).
    max_delivery_files: int = Field(default=100, ge=1)
    max_delivery_bytes: int = Field(default=10 * 1024**3, ge=1)
    #: One file URL: most bytes fetched, and seconds for the whole fetch.
    max_fetch_bytes: int = Field(default=5 * 1024**3, ge=1)
    fetch_timeout: float = Field(default=300.0, gt=0)
    #: Deliveries run at once by one ``serve`` process, and uploads in flight in each.
    delivery_workers: int = Field(default=2, ge=1)
    delivery_concurrency: int = Field(default=8, ge=1)
    #: Seconds a claimed delivery stays claimed without a heartbeat (its runner renews the
    #: claim every third of it): how long a delivery of a killed server waits to be resumed.
    delivery_lease_seconds: float = Field(default=60.0, gt=0)
    #: Completion webhooks: seconds per attempt, the first retry's wait, the longest wait,
    #: and how long after the first attempt retries stop.
    webhook_timeout: float = Field(default=5.0, gt=0)
    webhook_retry_initial: float = Field(default=10.0, ge=0)
    webhook_retry_max_wait: float = Field(default=600.0, ge=0)
    webhook_retry_window: float = Field(default=3600.0, ge=0)

    def encryption_keys_text(self) -> str | None:
        return None if self.encryption_keys is None else self.encryption_keys.get_secret_value()


_NAMES: Final = tuple(env_name(field) for field in Settings.model_fields)
_lock = threading.Lock()
_cached: tuple[tuple[str | None, ...], Settings] | None = None


def _snapshot() -> tuple[str | None, ...]:
    environ = os.environ
    return tuple(map(environ.get, _NAMES))


def settings() -> Settings:
    """The settings as the environment is now (rebuilt only when a variable changed)."""
    global _cached
    snapshot = _snapshot()
    cached = _cached
    if cached is not None and cached[0] == snapshot:
        return cached[1]
    with _lock:
        built = _build()
        _cached = (snapshot, built)
    return built


def _build() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{error['loc'][0]}: {error['msg']}" if error["loc"] else error["msg"]
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise InvalidSettings(f"invalid environment setting: {problems}") from None
