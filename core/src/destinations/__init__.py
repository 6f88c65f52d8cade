"""Deliver result sets to storage your customers own.

Register a destination once, prove it is writable (a probe object put and deleted), and
from then on deliver every result set under the path the customer templated.
"""

from ._errors import (
    CODES,
    DestinationsError,
    InvalidDestination,
    InvalidTemplate,
    ObjectKeyTooLong,
    PluginLoadError,
    StoreError,
    UnknownType,
    VerificationFailed,
)
from ._plugins import available_types, get_type
from ._spec import Destination, parse_destination
from ._store import Store, StoreOptions
from ._template import PathTemplate, expand_prefix, object_key
from ._verify import (
    Committed,
    VerificationReport,
    needs_verification,
    open_store,
    verify,
    verify_then_commit,
)
from .plugin import DestinationType, hookimpl


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register a plugin object (hooks or types) from an embedding service, without an
    entry point."""
    from ._plugins import host

    host().register_plugin(plugin, name)


__all__ = [
    "CODES",
    "Committed",
    "Destination",
    "DestinationType",
    "DestinationsError",
    "InvalidDestination",
    "InvalidTemplate",
    "ObjectKeyTooLong",
    "PathTemplate",
    "PluginLoadError",
    "Store",
    "StoreError",
    "StoreOptions",
    "UnknownType",
    "VerificationFailed",
    "VerificationReport",
    "available_types",
    "expand_prefix",
    "get_type",
    "hookimpl",
    "needs_verification",
    "object_key",
    "open_store",
    "parse_destination",
    "register_plugin",
    "verify",
    "verify_then_commit",
]
