"""What Azure accepts as Content-Encoding and user metadata (``x-ms-meta-*``), checked
before anything is sent so a bad name fails with a clear error instead of a 400 (pure
Python, no SDK)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from destinations.plugin import StoreError

__all__ = ["MAX_METADATA_BYTES", "InvalidMetadata", "check_content_encoding", "check_metadata"]

#: Azure's limit on all of a blob's metadata: names plus values, in bytes.
MAX_METADATA_BYTES: Final = 8 * 1024

# A C# identifier, restricted to ASCII (it travels as an HTTP header name).
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Printable ASCII; no leading or trailing space (HTTP would strip it, so it would not
# round-trip).
_VALUE = re.compile(r"(?:[!-~](?:[ -~]*[!-~])?)?")


class InvalidMetadata(StoreError, ValueError):
    """``content_encoding`` or ``metadata`` that Azure would refuse (code ``provider_error``,
    ``provider_code`` ``InvalidMetadata``, never transient). Also a :class:`ValueError`."""

    def __init__(self, message: str) -> None:
        super().__init__(
            "provider_error", message, provider_code="InvalidMetadata", transient=False
        )


def check_content_encoding(value: str | None) -> str | None:
    """``value`` if Azure can store it as Content-Encoding; None for None or ""."""
    if not value:
        return None
    if not _VALUE.fullmatch(value):
        raise InvalidMetadata(
            f"content_encoding {value[:40]!r} is not a valid header value: use printable "
            "ASCII with no leading or trailing space (e.g. 'gzip')"
        )
    return value


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str] | None:
    """``metadata`` as Azure stores it (``x-ms-meta-<name>``), or None when empty.

    Names must be C# identifiers (letters, digits and underscores, not starting with a
    digit) and are case-insensitive, so two names differing only in case are refused.
    Values must be printable ASCII without leading or trailing spaces. Names and values
    together may take at most 8 KiB.
    """
    if not metadata:
        return None
    seen: dict[str, str] = {}
    total = 0
    for name, value in metadata.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidMetadata(
                f"metadata name {str(name)[:40]!r} is not allowed: Azure metadata names "
                "must be C# identifiers (ASCII letters, digits and underscores, not "
                "starting with a digit)"
            )
        folded = name.lower()
        if folded in seen:
            raise InvalidMetadata(
                f"metadata names {seen[folded]!r} and {name!r} differ only in case; Azure "
                "metadata names are case-insensitive"
            )
        seen[folded] = name
        if not isinstance(value, str) or not _VALUE.fullmatch(value):
            raise InvalidMetadata(
                f"metadata value of {name!r} is not allowed: use printable ASCII with no "
                "leading or trailing space (percent- or base64-encode anything else)"
            )
        total += len(name) + len(value)
    if total > MAX_METADATA_BYTES:
        raise InvalidMetadata(
            f"metadata takes {total} bytes (names plus values); Azure allows at most "
            f"{MAX_METADATA_BYTES}"
        )
    return dict(metadata)
