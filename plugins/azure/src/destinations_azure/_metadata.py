"""What Azure accepts as Content-Encoding and user metadata (``x-ms-meta-*``), checked
before anything is sent so a bad name fails with a clear error instead of a 400 (core's
:class:`~destinations.plugin.MetadataRules`; pure Python, no SDK)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from destinations.plugin import InvalidMetadata, MetadataRules

__all__ = [
    "MAX_METADATA_BYTES",
    "RULES",
    "InvalidMetadata",
    "check_content_encoding",
    "check_metadata",
]

#: Azure's limit on all of a blob's metadata: names plus values, in bytes.
MAX_METADATA_BYTES: Final = 8 * 1024

#: Names are C# identifiers, restricted to ASCII (they travel as HTTP header names), and
#: case-insensitive.
RULES: Final = MetadataRules(
    provider="Azure",
    name=re.compile(r"[A-Za-z_][A-Za-z0-9_]*"),
    name_rule="must be C# identifiers (ASCII letters, digits and underscores, not starting "
    "with a digit)",
    case_rule="Azure metadata names are case-insensitive",
    limit=MAX_METADATA_BYTES,
)

check_content_encoding = RULES.check_content_encoding


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str] | None:
    """``metadata`` as Azure stores it (``x-ms-meta-<name>``), or None when empty. Names and
    values together may take at most 8 KiB."""
    return RULES.check(metadata) or None
