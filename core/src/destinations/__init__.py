"""Deliver result sets to storage your customers own.

Register a destination once, prove it is writable (a probe object put and deleted), and
from then on deliver every result set under the path the customer templated.
"""

from typing import TYPE_CHECKING, Any

from ._plugins import available_types

if TYPE_CHECKING:
    from ._deliver import (
        DeliveryReport,
        DestinationStatus,
        ResultFile,
        ResultSet,
        RetryPolicy,
        deliver,
    )
    from ._errors import (
        CODES,
        DestinationsError,
        EndpointNotAllowed,
        InvalidDestination,
        InvalidTemplate,
        ObjectKeyTooLong,
        PluginLoadError,
        StoreError,
        UnknownType,
        VerificationFailed,
    )
    from ._plugins import get_type
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

# Names resolved on first access, so `import destinations; available_types()` stays cheap:
# pydantic and pluggy load only when a destination is parsed or a type is used.
_LAZY = {
    "DeliveryReport": "_deliver",
    "DestinationStatus": "_deliver",
    "ResultFile": "_deliver",
    "ResultSet": "_deliver",
    "RetryPolicy": "_deliver",
    "deliver": "_deliver",
    "CODES": "_errors",
    "DestinationsError": "_errors",
    "EndpointNotAllowed": "_errors",
    "InvalidDestination": "_errors",
    "InvalidTemplate": "_errors",
    "ObjectKeyTooLong": "_errors",
    "PluginLoadError": "_errors",
    "StoreError": "_errors",
    "UnknownType": "_errors",
    "VerificationFailed": "_errors",
    "get_type": "_plugins",
    "Destination": "_spec",
    "parse_destination": "_spec",
    "Store": "_store",
    "StoreOptions": "_store",
    "PathTemplate": "_template",
    "expand_prefix": "_template",
    "object_key": "_template",
    "Committed": "_verify",
    "VerificationReport": "_verify",
    "needs_verification": "_verify",
    "open_store": "_verify",
    "verify": "_verify",
    "verify_then_commit": "_verify",
    "DestinationType": "plugin",
    "hookimpl": "plugin",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'destinations' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register a plugin object (hooks or types) from an embedding service, without an
    entry point."""
    from ._plugins import host

    host().register_plugin(plugin, name)


__all__ = [
    "CODES",
    "Committed",
    "DeliveryReport",
    "Destination",
    "DestinationStatus",
    "DestinationType",
    "DestinationsError",
    "EndpointNotAllowed",
    "InvalidDestination",
    "InvalidTemplate",
    "ObjectKeyTooLong",
    "PathTemplate",
    "PluginLoadError",
    "ResultFile",
    "ResultSet",
    "RetryPolicy",
    "Store",
    "StoreError",
    "StoreOptions",
    "UnknownType",
    "VerificationFailed",
    "VerificationReport",
    "available_types",
    "deliver",
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
