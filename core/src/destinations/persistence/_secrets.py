"""The secret box: secret fields at rest as Fernet tokens under a MultiFernet, so keys rotate.

Keys come from the caller, else ``DESTINATIONS_ENCRYPTION_KEYS`` (read through
:func:`destinations._settings.settings`; comma- or whitespace-separated, newest first): new
tokens use the first key, any listed key decrypts. With no keys configured and a SQLite file
database, a key file is created beside the database (mode 0600) and reused on the next
start; losing it makes stored secrets unreadable, so the creation is logged loudly. A token
no configured key opens raises :class:`~destinations.SecretsUnreadable`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy.engine import make_url

from .. import SecretsUnreadable
from .._settings import env_name, settings

__all__ = [
    "ENCRYPTION_KEYS_ENV",
    "READABLE_SAMPLE",
    "SecretBox",
    "check_readable",
    "load_secret_box",
]

ENCRYPTION_KEYS_ENV = env_name("encryption_keys")
log = logging.getLogger("destinations.api")


class SecretBox:
    """Encrypts a mapping of secret fields to one token, and back.

    ``source`` says where the keys came from, for the message of
    :class:`~destinations.SecretsUnreadable` (it never holds a key).
    """

    def __init__(self, keys: Sequence[str | bytes], *, source: str = ENCRYPTION_KEYS_ENV) -> None:
        self.source = source
        if not keys:
            raise ValueError("at least one encryption key is needed")
        try:
            self._fernet = MultiFernet([Fernet(k) for k in keys])
            newest = keys[0].encode() if isinstance(keys[0], str) else keys[0]
            self._fingerprint_key = hmac.new(
                base64.urlsafe_b64decode(newest), b"destinations request fingerprint", "sha256"
            ).digest()
        except ValueError as exc:
            raise ValueError(
                f"{source}: every key must be a Fernet key (32 url-safe "
                "base64-encoded bytes, e.g. from cryptography.fernet.Fernet.generate_key())"
            ) from exc

    def encrypt(self, values: Mapping[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(dict(values)).encode()).decode()

    def fingerprint(self, data: bytes) -> str:
        """A keyed digest of ``data`` (HMAC-SHA256 with a key derived from the newest
        encryption key): equal data gives equal fingerprints, and a fingerprint stored in the
        database reveals nothing about data that holds secrets (a plain hash of a request body
        could be checked against guessed secrets offline)."""
        return hmac.new(self._fingerprint_key, data, hashlib.sha256).hexdigest()

    def rotate(self, token: str) -> str:
        """``token`` re-encrypted with the newest key (decrypted with whichever key fits)."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken as exc:
            raise self._unreadable() from exc

    def decrypt(self, token: str) -> dict[str, Any]:
        try:
            plain = self._fernet.decrypt(token.encode())
        except InvalidToken as exc:
            raise self._unreadable() from exc
        loaded = json.loads(plain)
        assert isinstance(loaded, dict)
        return loaded

    def _unreadable(self) -> SecretsUnreadable:
        return SecretsUnreadable(
            f"a stored secret cannot be decrypted with the encryption keys from {self.source}; "
            "keep retired keys there (after the newest) until every row has been re-encrypted "
            "(destinations keys rotate-encryption)"
        )


def _split(keys: str) -> list[str]:
    return [k for k in re.split(r"[,\s]+", keys) if k]


#: Rows whose secrets :func:`load_secret_box` test-decrypts before it hands out a box.
READABLE_SAMPLE = 1000
_WHAT_TO_DO = (
    "restore the key file from your backup (or set {env} to the keys the secrets were "
    "encrypted with); a new key would make every stored secret unreadable"
)


def load_secret_box(
    keys: str | Sequence[str] | None, database_url: str, *, check: bool = True
) -> SecretBox:
    """The box for ``keys`` (or the environment, or the key file beside a SQLite database).

    Refuses (:class:`~destinations.SecretsUnreadable`, naming where the keys come from and
    what to do) when the database holds secrets that none of those keys decrypts (up to
    :data:`READABLE_SAMPLE` rows are tried), and (``ValueError`` naming the file) a key
    file that is empty, corrupt, unreadable or not a file. A key file is created only for
    a database without stored destinations. ``check=False`` skips the test decryption
    (``destinations keys rotate-encryption`` counts the rows no key opens itself).
    """
    source = "the keys given"
    if keys is None:
        keys = settings().encryption_keys_text()
        source = ENCRYPTION_KEYS_ENV
    if isinstance(keys, str):
        keys = _split(keys)
    if keys:
        box = SecretBox(list(keys), source=source)
        if check:
            check_readable(box, database_url)
        return box

    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        raise ValueError(
            f"set {ENCRYPTION_KEYS_ENV} (Fernet keys, newest first) to store secrets in "
            f"{url.get_backend_name()}; every API replica needs the same keys"
        )
    if not url.database or url.database == ":memory:":
        log.warning("in-memory database: secrets are encrypted with a throwaway key")
        return SecretBox([Fernet.generate_key()])

    key_file = Path(url.database).with_suffix(Path(url.database).suffix + ".key")
    if os.path.lexists(key_file):
        box = SecretBox(_read_key_file(key_file), source=f"the key file {key_file}")
        if check:
            check_readable(box, database_url)
        return box
    stored = _stored_secret_count(database_url)
    if stored:
        raise SecretsUnreadable(
            f"the key file {key_file} is missing, but {url.database} holds the encrypted "
            f"secrets of {stored} destination(s); "
            + _WHAT_TO_DO.format(env=ENCRYPTION_KEYS_ENV)
        )
    key_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it meanwhile
        return SecretBox(_read_key_file(key_file), source=f"the key file {key_file}")
    with os.fdopen(fd, "w") as f:
        f.write(Fernet.generate_key().decode() + "\n")
    log.warning(
        "created encryption key file %s (mode 0600) for the secrets in %s; back it up with the "
        "database, or set %s instead",
        key_file.resolve(),
        url.database,
        ENCRYPTION_KEYS_ENV,
    )
    return SecretBox(_read_key_file(key_file), source=f"the key file {key_file}")


def _read_key_file(key_file: Path) -> list[str]:
    """The keys in ``key_file``; ``ValueError`` naming the file and what is wrong."""
    fix = (
        f"restore it from your backup, or set {ENCRYPTION_KEYS_ENV}; only a database "
        "without stored destinations may get a new key file (delete it then)"
    )
    if not key_file.is_file():
        raise ValueError(f"the key file {key_file} is not a regular file; {fix}")
    try:
        text = key_file.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not ASCII"
        raise ValueError(f"the key file {key_file} cannot be read ({reason}); {fix}") from None
    keys = _split(text)
    if not keys:
        raise ValueError(f"the key file {key_file} is empty; {fix}")
    for key in keys:
        try:
            Fernet(key)
        except ValueError:
            raise ValueError(
                f"the key file {key_file} does not hold Fernet keys (one per line, 32 "
                f"url-safe base64-encoded bytes each); {fix}"
            ) from None
    return keys


def _tokens(database_url: str, limit: int) -> list[str] | None:
    """Up to ``limit`` stored secret tokens (oldest and newest first), None without a
    destinations table (a database not yet migrated)."""
    from sqlalchemy import inspect, select

    from ._schema import make_engine
    from ._tables import DestinationRow

    engine = make_engine(database_url, create_file=False)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table(DestinationRow.__tablename__):
                return None
            column = DestinationRow.__table__.c
            half = max(limit // 2, 1)
            oldest = select(column.secrets).order_by(column.updated_at).limit(half)
            newest = select(column.secrets).order_by(column.updated_at.desc()).limit(half)
            return [
                *connection.execute(oldest).scalars(),
                *connection.execute(newest).scalars(),
            ]
    finally:
        engine.dispose()


def _stored_secret_count(database_url: str) -> int:
    from sqlalchemy import func, inspect, select

    from ._schema import make_engine
    from ._tables import DestinationRow

    if not os.path.exists(make_url(database_url).database or ""):
        return 0
    engine = make_engine(database_url, create_file=False)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table(DestinationRow.__tablename__):
                return 0
            return int(connection.execute(select(func.count()).select_from(
                DestinationRow.__table__)).scalar() or 0)
    finally:
        engine.dispose()


def check_readable(box: SecretBox, database_url: str, sample: int = READABLE_SAMPLE) -> None:
    """Raise :class:`~destinations.SecretsUnreadable` if a stored secret (of up to
    ``sample`` rows, the least and the most recently written) does not decrypt with
    ``box``."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and (
        not url.database or url.database == ":memory:" or not os.path.exists(url.database)
    ):
        return
    tokens = _tokens(database_url, sample)
    if not tokens:
        return
    unreadable = 0
    for token in tokens:
        try:
            box.decrypt(token)
        except SecretsUnreadable:
            unreadable += 1
    if unreadable:
        raise SecretsUnreadable(
            f"{unreadable} of {len(tokens)} stored secret(s) checked cannot be decrypted with "
            f"the encryption keys from {box.source}; configure the keys they were encrypted "
            f"with (restore the key file or {ENCRYPTION_KEYS_ENV} from your backup, retired "
            "keys after the newest until destinations keys rotate-encryption has re-encrypted "
            "every row); a new key would make every stored secret unreadable"
        )
