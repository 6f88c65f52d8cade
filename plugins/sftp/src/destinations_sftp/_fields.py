"""The field model of the ``sftp`` type and the host-key rule (pydantic and hashlib only; no
SSH library is imported until a store opens)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import Final, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from destinations.plugin import InvalidDestination, PathPrefix

__all__ = ["HOST_KEY_TYPES", "HostKey", "SftpFields", "parse_host_keys"]

#: Public key algorithms a host key line may name (OpenSSH's ``ssh -Q key`` minus certificates).
HOST_KEY_TYPES: Final[frozenset[str]] = frozenset(
    {
        "ssh-ed25519",
        "ssh-ed448",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "ssh-rsa",
        "ssh-dss",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)

_HOST_NAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_FINGERPRINT = re.compile(r"SHA256:([A-Za-z0-9+/]{43})=?")
_MD5_HEX = re.compile(r"(?:[0-9a-fA-F]{2}:){15}[0-9a-fA-F]{2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HOST_KEY_HELP = (
    "give the server's host key line (e.g. 'ssh-ed25519 AAAAC3Nza…', as ssh-keyscan prints "
    "it) or its SHA256: fingerprint (as ssh-keygen -lf prints it)"
)


@dataclass(frozen=True, slots=True)
class HostKey:
    """One trusted host key: its algorithm (``None`` when only the fingerprint was given)
    and its ``SHA256:`` fingerprint, what every comparison uses."""

    fingerprint: str
    algorithm: str | None = None
    blob: bytes | None = None

    @classmethod
    def from_line(cls, algorithm: str, data: str) -> Self:
        try:
            blob = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidDestination(
                {"sftp_host_key": f"the {algorithm} key is not valid base64; {_HOST_KEY_HELP}"}
            ) from None
        (length,) = struct.unpack(">I", blob[:4]) if len(blob) >= 4 else (0,)
        if blob[4 : 4 + length] != algorithm.encode():
            raise InvalidDestination(
                {
                    "sftp_host_key": f"the key data is not an {algorithm} key (the line's key "
                    f"type and its base64 data disagree); {_HOST_KEY_HELP}"
                }
            )
        return cls(fingerprint=fingerprint(blob), algorithm=algorithm, blob=blob)


def fingerprint(blob: bytes) -> str:
    """OpenSSH's ``SHA256:`` fingerprint of a public key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def parse_host_keys(value: str) -> tuple[HostKey, ...]:
    """The keys of an ``sftp_host_key`` value: one entry per line, each a host key line
    (``[host names] type base64 [comment]``, known_hosts or ssh-keyscan format) or a
    ``SHA256:`` fingerprint. Raises :class:`InvalidDestination` naming the field."""
    keys: list[HostKey] = []
    for raw in value.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = line.split()
        match = _FINGERPRINT.fullmatch(tokens[0])
        if match:
            keys.append(HostKey(fingerprint="SHA256:" + match.group(1)))
            continue
        if len(tokens) >= 2 and _FINGERPRINT.fullmatch(tokens[1]) and tokens[0].isdigit():
            keys.append(HostKey(fingerprint=tokens[1].rstrip("=")))  # ssh-keygen -lf output
            continue
        if tokens[0].startswith("@"):
            raise InvalidDestination(
                {
                    "sftp_host_key": f"{tokens[0]} lines are not supported; give the host's own "
                    "key line or its SHA256: fingerprint"
                }
            )
        if tokens[0].upper().startswith("MD5:") or _MD5_HEX.fullmatch(tokens[0]):
            raise InvalidDestination(
                {
                    "sftp_host_key": "MD5 fingerprints are not accepted; give the SHA256: "
                    "fingerprint (ssh-keygen -lf -E sha256) or the host key line"
                }
            )
        found = next((i for i, t in enumerate(tokens[:-1]) if t in HOST_KEY_TYPES), None)
        if found is None:
            shown = line if len(line) <= 40 else line[:40] + "…"
            raise InvalidDestination(
                {"sftp_host_key": f"{shown!r} is not a host key; {_HOST_KEY_HELP}"}
            )
        keys.append(HostKey.from_line(tokens[found], tokens[found + 1]))
    if not keys:
        raise InvalidDestination({"sftp_host_key": f"required: {_HOST_KEY_HELP}"})
    return tuple(keys)


def _no_control(field: str, value: str, what: str) -> str:
    if _CONTROL.search(value):
        raise InvalidDestination({field: f"{what} must not contain control characters"})
    return value


class SftpFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sftp_host: str = Field(
        description="Host name or IP address of the SFTP server, without scheme, user or "
        "port, e.g. sftp.example.com. Connections go only to public addresses it resolves to."
    )
    sftp_port: int = Field(22, description="TCP port of the SSH server (default 22).")
    sftp_username: str = Field(description="The account to log in as.")
    sftp_password: SecretStr | None = Field(
        None,
        description="Password of sftp_username (password or keyboard-interactive login). "
        "Give this, sftp_private_key, or both. Never shown again.",
    )
    sftp_private_key: SecretStr | None = Field(
        None,
        description="Private key for public-key login: the text of the key file (OpenSSH "
        "'-----BEGIN OPENSSH PRIVATE KEY-----', PEM or PKCS#8; PuTTY .ppk too). Never shown "
        "again.",
    )
    sftp_private_key_passphrase: SecretStr | None = Field(
        None,
        description="Passphrase of an encrypted sftp_private_key. Never shown again.",
    )
    sftp_host_key: str = Field(
        description="The server's public host key, one per line: a host key line as "
        "ssh-keyscan prints it ('ssh-ed25519 AAAA…', host names before it are ignored) or its "
        "SHA256: fingerprint. Required: a server presenting any other key is refused before "
        "any credential is sent. There is no trust-on-first-use."
    )
    sftp_path_prefix: PathPrefix = ""
    sftp_root: str | None = Field(
        None,
        description="Directory the path prefix is relative to, e.g. /upload or incoming; "
        "default the login directory. It must exist: only directories under it are created.",
    )

    @field_validator("sftp_host")
    @classmethod
    def _host(cls, value: str) -> str:
        host = value.strip()
        if not host:
            raise InvalidDestination({"sftp_host": "required"})
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            return str(ipaddress.ip_address(bare))
        except ValueError:
            pass
        if "://" in host or "@" in host or ":" in host or "/" in host:
            raise InvalidDestination(
                {
                    "sftp_host": "must be a host name or IP address only, e.g. "
                    "sftp.example.com (put the port in sftp_port and the user in "
                    "sftp_username)"
                }
            )
        if not _HOST_NAME.fullmatch(host):
            raise InvalidDestination(
                {"sftp_host": "is not a valid host name (letters, digits, dots and hyphens)"}
            )
        return host.lower()

    @field_validator("sftp_port", mode="before")
    @classmethod
    def _port(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return 22
        try:
            port = int(str(value).strip()) if not isinstance(value, bool) else 0
        except ValueError:
            port = 0
        if not 1 <= port <= 65535:
            raise InvalidDestination({"sftp_port": "must be a TCP port number from 1 to 65535"})
        return port

    @field_validator("sftp_username")
    @classmethod
    def _username(cls, value: str) -> str:
        name = value.strip()
        if not name:
            raise InvalidDestination({"sftp_username": "required"})
        if len(name) > 255:
            raise InvalidDestination({"sftp_username": "must be at most 255 characters"})
        return _no_control("sftp_username", name, "the user name")

    @field_validator("sftp_password", "sftp_private_key_passphrase")
    @classmethod
    def _empty_secret_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        return value

    @field_validator("sftp_private_key")
    @classmethod
    def _private_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value().strip()
        if not text:
            return None
        first = text.split(None, 1)[0]
        if first in HOST_KEY_TYPES:
            raise InvalidDestination(
                {
                    "sftp_private_key": "this is a public key; give the private key file's "
                    "text (the public key goes into the server's authorized_keys)"
                }
            )
        pem = "-----BEGIN " in text and "PRIVATE KEY-----" in text
        if not pem and not text.startswith("PuTTY-User-Key-File-"):
            raise InvalidDestination(
                {
                    "sftp_private_key": "must be the text of a private key file in OpenSSH or "
                    "PEM format (starting with -----BEGIN … PRIVATE KEY-----) or a PuTTY .ppk "
                    "file"
                }
            )
        return SecretStr(text + "\n")

    @field_validator("sftp_host_key")
    @classmethod
    def _host_key(cls, value: str) -> str:
        keys = parse_host_keys(value)
        lines = []
        for key in keys:
            if key.algorithm is not None and key.blob is not None:
                lines.append(f"{key.algorithm} {base64.b64encode(key.blob).decode()}")
            else:
                lines.append(key.fingerprint)
        return "\n".join(lines)

    @field_validator("sftp_root")
    @classmethod
    def _root(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        root = _no_control("sftp_root", value.strip(), "the directory")
        if len(root.encode()) > 1024:
            raise InvalidDestination({"sftp_root": "must be at most 1024 bytes long"})
        return root if root == "/" else root.rstrip("/")

    @model_validator(mode="after")
    def _credentials(self) -> Self:
        if self.sftp_password is None and self.sftp_private_key is None:
            raise InvalidDestination(
                {"sftp_password": "give sftp_password or sftp_private_key (or both)"}
            )
        if self.sftp_private_key_passphrase is not None and self.sftp_private_key is None:
            raise InvalidDestination(
                {"sftp_private_key_passphrase": "is only used with sftp_private_key"}
            )
        return self

    @property
    def host_keys(self) -> tuple[HostKey, ...]:
        """The trusted host keys, parsed."""
        return parse_host_keys(self.sftp_host_key)
