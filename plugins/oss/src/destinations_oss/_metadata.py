"""What OSS accepts as Content-Encoding and user metadata (``x-oss-meta-*``), checked before
anything is sent so a bad name fails with a clear error instead of a 400 (core's
:class:`~destinations.plugin.MetadataRules`; pure Python, no SDK)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from destinations.plugin import InvalidMetadata, MetadataRules

__all__ = [
    "MAX_METADATA_BYTES",
    "META_PREFIX",
    "RULES",
    "InvalidMetadata",
    "check_content_encoding",
    "metadata_headers",
]

#: OSS's limit on an object's user metadata: every ``x-oss-meta-*`` header name and value,
#: in bytes; requests at or above it are refused.
MAX_METADATA_BYTES: Final = 8 * 1024
META_PREFIX: Final = "x-oss-meta-"

#: Letters, digits and hyphens; OSS stores the names lower-case.
RULES: Final = MetadataRules(
    provider="OSS",
    name=re.compile(r"[A-Za-z0-9-]+"),
    name_rule="may hold only ASCII letters, digits and hyphens (no underscores or spaces)",
    case_rule="OSS stores metadata names lower-case",
    limit=MAX_METADATA_BYTES,
    prefix=META_PREFIX,
    limit_inclusive=False,
)

check_content_encoding = RULES.check_content_encoding


def metadata_headers(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """``metadata`` as the ``x-oss-meta-<name>`` headers OSS stores it from (names
    lower-case). All headers must stay under 8 KiB."""
    return {META_PREFIX + name.lower(): value for name, value in RULES.check(metadata).items()}
