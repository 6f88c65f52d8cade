"""The secret box: secret fields at rest as Fernet tokens under a MultiFernet, so keys rotate.

Keys come from the caller, else ``DESTINATIONS_ENCRYPTION_KEYS`` (read through
:func:`destinations._settings.settings`; comma- or whitespace-separated, newest first): new
tokens use the first key, any listed key decrypts. With no keys configured and a SQLite file
database, a key file is created beside the database (mode 0600) and reused on the next
start; losing it makes stored secrets unreadable, so the creation is logged loudly. A token
no configured key opens raises :class:`~destinations.SecretsUnreadable`.
"""

from __future__ import annotations

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

__all__ = ["ENCRYPTION_KEYS_ENV", "SecretBox", "load_secret_box"]

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
        except ValueError as exc:
            raise ValueError(
                f"{source}: every key must be a Fernet key (32 url-safe "
                "base64-encoded bytes, e.g. from cryptography.fernet.Fernet.generate_key())"
            ) from exc

    def encrypt(self, values: Mapping[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(dict(values)).encode()).decode()

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


_KEY_FILE = "the key file beside the SQLite database"


def _split(keys: str) -> list[str]:
    return [k for k in re.split(r"[,\s]+", keys) if k]


def load_secret_box(keys: str | Sequence[str] | None, database_url: str) -> SecretBox:
    """The box for ``keys`` (or the environment, or the key file beside a SQLite database)."""
    source = "the keys given"
    if keys is None:
        keys = settings().encryption_keys_text()
        source = ENCRYPTION_KEYS_ENV
    if isinstance(keys, str):
        keys = _split(keys)
    if keys:
        return SecretBox(list(keys), source=source)

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
    key_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return SecretBox(_split(key_file.read_text()), source=_KEY_FILE)
    with os.fdopen(fd, "w") as f:
        f.write(Fernet.generate_key().decode() + "\n")
    log.warning(
        "created encryption key file %s (mode 0600) for the secrets in %s; back it up with the "
        "database, or set %s instead",
        key_file.resolve(),
        url.database,
        ENCRYPTION_KEYS_ENV,
    )
    return SecretBox(_split(key_file.read_text()), source=_KEY_FILE)
