"""What OSS accepts as Content-Encoding and user metadata (``x-oss-meta-*``), checked before
anything is sent so a bad name fails with a clear error instead of a 400 (pure Python, no
SDK)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from destinations.plugin import StoreError

__all__ = [
    "MAX_METADATA_BYTES",
    "META_PREFIX",
    "InvalidMetadata",
    "check_content_encoding",
    "metadata_headers",
]

#: OSS's limit on an object's user metadata: every ``x-oss-meta-*`` header name and value,
#: in bytes; requests at or above it are refused.
MAX_METADATA_BYTES: Final = 8 * 1024
META_PREFIX: Final = "x-oss-meta-"

# Letters, digits and hyphens; OSS lower-cases the letters.
_NAME = re.compile(r"[A-Za-z0-9-]+")
# Printable ASCII; no leading or trailing space (HTTP would strip it, so it would not
# round-trip).
_VALUE = re.compile(r"(?:[!-~](?:[ -~]*[!-~])?)?")


class InvalidMetadata(StoreError, ValueError):
    """``content_encoding`` or ``metadata`` that OSS would refuse (code ``provider_error``,
    ``provider_code`` ``InvalidMetadata``, never transient). Also a :class:`ValueError`."""

    def __init__(self, message: str) -> None:
        super().__init__(
            "provider_error", message, provider_code="InvalidMetadata", transient=False
        )


def check_content_encoding(value: str | None) -> str | None:
    """``value`` if OSS can store it as Content-Encoding; None for None or ""."""
    if not value:
        return None
    if not _VALUE.fullmatch(value):
        raise InvalidMetadata(
            f"content_encoding {value[:40]!r} is not a valid header value: use printable "
            "ASCII with no leading or trailing space (e.g. 'gzip')"
        )
    return value


def metadata_headers(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """``metadata`` as the ``x-oss-meta-<name>`` headers OSS stores it from.

    Names may hold ASCII letters, digits and hyphens only (no underscores); OSS stores
    them lower-case, so two names differing only in case are refused. Values must be
    printable ASCII without leading or trailing spaces. All headers (``x-oss-meta-`` +
    name, and value) must stay under 8 KiB.
    """
    headers: dict[str, str] = {}
    if not metadata:
        return headers
    seen: dict[str, str] = {}
    total = 0
    for name, value in metadata.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidMetadata(
                f"metadata name {str(name)[:40]!r} is not allowed: OSS metadata names may "
                "hold only ASCII letters, digits and hyphens (no underscores or spaces)"
            )
        folded = name.lower()
        if folded in seen:
            raise InvalidMetadata(
                f"metadata names {seen[folded]!r} and {name!r} differ only in case; OSS "
                "stores metadata names lower-case"
            )
        seen[folded] = name
        if not isinstance(value, str) or not _VALUE.fullmatch(value):
            raise InvalidMetadata(
                f"metadata value of {name!r} is not allowed: use printable ASCII with no "
                "leading or trailing space (percent- or base64-encode anything else)"
            )
        header = META_PREFIX + folded
        headers[header] = value
        total += len(header) + len(value)
    if total >= MAX_METADATA_BYTES:
        raise InvalidMetadata(
            f"metadata takes {total} bytes (x-oss-meta- header names plus values); OSS "
            f"allows less than {MAX_METADATA_BYTES}"
        )
    return headers
