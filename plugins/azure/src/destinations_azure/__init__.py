"""The ``azure`` type: a container in Azure Blob Storage, written with the account's shared key
or a SAS token (``azure_sas_token``, ideally container-scoped with ``sp=cwd``).

Blobs are block blobs. Below ``StoreOptions.multipart_threshold`` a blob is one ``Put Blob``;
at or above it, or when the size is unknown, it is staged as blocks of ``part_size``
(``Put Block`` + ``Put Block List``), so memory stays bounded by a few blocks whatever the
file size. ``azure_endpoint`` overrides the blob service URL (sovereign clouds, private
endpoints, azurite's ``http://127.0.0.1:10000/devstoreaccount1``); by default it is
``https://<account>.blob.core.windows.net``.

The account key never leaves the SDK's signing policy: error messages are built from
Azure's error codes, never from ``str(exception)`` (which carries request URLs and headers),
and the SDK's HTTP logging redacts ``Authorization``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from destinations.plugin import DestinationType, Store, StoreOptions, hookimpl

from ._fields import AzureFields

if TYPE_CHECKING:
    from ._store import AzureStore, map_error as map_error

__all__ = ["AzureFields", "AzureStore", "destinations_register_types"]

# Names that live with the store: importing them imports the Azure SDK, so only on first use.
_STORE_NAMES = frozenset({"AzureStore", "map_error"})


def __getattr__(name: str) -> Any:
    if name in _STORE_NAMES:
        from . import _store

        return getattr(_store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_azure(fields: AzureFields, options: StoreOptions) -> Store:
    from ._store import AzureStore

    return AzureStore(fields, options)


@hookimpl
def destinations_register_types(register: Callable[[DestinationType], None]) -> None:
    register(
        DestinationType(
            name="azure",
            fields=AzureFields,
            open_store=open_azure,
            prefix_field="azure_path_prefix",
            description="A container in Azure Blob Storage (account shared key or SAS token).",
            endpoint_fields=("azure_endpoint",),
            reports_progress=True,
        )
    )
