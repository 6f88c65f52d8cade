"""Deliver result sets to storage your customers own.

Register a destination once, prove it is writable (a probe object put and deleted), and
from then on deliver every result set under the path the customer templated.

Names are resolved on first access, so ``import destinations; available_types()`` stays
cheap: pydantic and pluggy load only when a destination is parsed or a type is used. The
``TYPE_CHECKING`` imports below are the one list of public names: type checkers read them,
and ``__all__`` and the lazy loading are derived from them.
"""

from typing import TYPE_CHECKING, Any

from ._plugins import available_types as available_types

if TYPE_CHECKING:
    from ._deliver import (
        deliver as deliver,
    )
    from ._errors import (
        CODES as CODES,
        DestinationsError as DestinationsError,
        EndpointNotAllowed as EndpointNotAllowed,
        InvalidDestination as InvalidDestination,
        InvalidTemplate as InvalidTemplate,
        ObjectKeyTooLong as ObjectKeyTooLong,
        PluginLoadError as PluginLoadError,
        SecretsUnreadable as SecretsUnreadable,
        SourceUnreadable as SourceUnreadable,
        StoreError as StoreError,
        UnknownType as UnknownType,
        VerificationFailed as VerificationFailed,
    )
    from ._plugins import (
        get_type as get_type,
    )
    from ._records import (
        DeliveryError as DeliveryError,
        DeliveryProgress as DeliveryProgress,
        DeliveryReport as DeliveryReport,
        Destination as Destination,
        DestinationStatus as DestinationStatus,
        LogEntry as LogEntry,
        ResultFile as ResultFile,
        ResultSet as ResultSet,
    )
    from ._retry import (
        RetryPolicy as RetryPolicy,
        is_transient as is_transient,
    )
    from ._spec import (
        CommonFields as CommonFields,
        parse_destination as parse_destination,
    )
    from ._store import (
        Store as Store,
        StoreOptions as StoreOptions,
    )
    from ._template import (
        PathTemplate as PathTemplate,
        expand_prefix as expand_prefix,
        object_key as object_key,
    )
    from ._verify import (
        Committed as Committed,
        VerificationReport as VerificationReport,
        needs_verification as needs_verification,
        open_store as open_store,
        verify as verify,
        verify_then_commit as verify_then_commit,
    )
    from .plugin import (
        DestinationType as DestinationType,
        hookimpl as hookimpl,
    )


_exports: dict[str, str] | None = None
_MODULE_NAMES = ("available_types", "register_plugin", "unregister_plugin")


def _public() -> dict[str, str]:
    """Public name -> defining module, read once from the ``TYPE_CHECKING`` block above:
    that block is the one list of what ``destinations`` exports."""
    global _exports
    if _exports is None:
        import ast

        with open(__file__, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        found: dict[str, str] = {}
        for node in tree.body:
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
                for stmt in node.body:
                    if isinstance(stmt, ast.ImportFrom) and stmt.level == 1 and stmt.module:
                        found.update({alias.name: stmt.module for alias in stmt.names})
        _exports = found
    return _exports


def __getattr__(name: str) -> Any:
    if name == "__all__":
        return sorted([*_public(), *_MODULE_NAMES])
    module = _public().get(name)
    if module is None:
        raise AttributeError(f"module 'destinations' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*_public(), *_MODULE_NAMES])


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register a plugin object (hooks or types) from an embedding service, without an
    entry point."""
    from ._plugins import host

    host().register_plugin(plugin, name)


def unregister_plugin(plugin: object) -> None:
    """Remove a plugin object registered with :func:`register_plugin`."""
    from ._plugins import host

    host().unregister_plugin(plugin)
