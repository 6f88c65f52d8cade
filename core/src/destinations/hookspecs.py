"""The hooks a `destinations` plugin implements — the plugin author's guide.

A plugin is a module (or object) with functions marked ``@destinations.hookimpl``. It is found
through an entry point in the group ``destinations`` whose *name is the type name* and whose
value is the module::

    [project.entry-points.destinations]
    mystore = "destinations_mystore"

Listing types reads entry-point names only; the module (and its SDK) is imported the first
time one of its types is used, once. A module may register several types (``destinations-s3``
registers ``s3`` and ``s3compatible``; give each its own entry point to the same module).

A minimal plugin::

    from pydantic import BaseModel, SecretStr
    import destinations
    from destinations.plugin import DestinationType, Store, StoreError

    class MyFields(BaseModel):
        my_token: SecretStr              # SecretStr marks a secret field
        my_bucket: str
        my_path_prefix: str = ""         # compiled as a path template by core

    class MyStore(Store):
        def __init__(self, fields: MyFields, options): ...
        def put(self, key, source, *, size, content_type): ...
        def delete(self, key): ...

    @destinations.hookimpl
    def destinations_register_types(register):
        register(DestinationType(name="mystore", fields=MyFields, open_store=MyStore,
                                 prefix_field="my_path_prefix"))

Run core's conformance suite against a real server to prove it: see
``destinations.testing``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from ._records import Destination, DestinationStatus, ResultSet
    from .plugin import DestinationType

hookspec = pluggy.HookspecMarker("destinations")


@hookspec(historic=True)
def destinations_register_types(register: Callable[[DestinationType], None]) -> None:
    """Register the destination types this plugin provides.

    :param register: call once per type with a :class:`destinations.plugin.DestinationType`.
        Registering a name another plugin already registered raises ``ValueError``.

    Historic: a plugin registered late (they load lazily) is still called.
    """


@hookspec
def destinations_file_delivered(
    result_set: ResultSet, destination: Destination, key: str, size: int
) -> None:
    """Observe one file of a result set written to one destination (not the manifest).

    :param result_set: the :class:`destinations.ResultSet` being delivered.
    :param destination: where the file went.
    :param key: the object key it was written to.
    :param size: its size in bytes.

    Called from :func:`destinations.deliver`'s worker threads, once per file and destination,
    right after the put returned: keep it quick and thread-safe (e.g. a progress counter).
    An exception is logged by type and ignored; it never fails the delivery.
    """


@hookspec
def destinations_delivery_finished(result_set: ResultSet, status: DestinationStatus) -> None:
    """Observe one destination's outcome: webhooks, metrics, ``destination_status`` records.

    :param result_set: the :class:`destinations.ResultSet` being delivered.
    :param status: the destination's final :class:`destinations.DestinationStatus`
        (``success``, ``failed`` or ``skipped``); ``status.to_dict()`` is the seed's
        ``destination_status`` record.

    Called once per destination given to :func:`destinations.deliver`, as soon as that
    destination is finished (from a worker thread; skipped ones after the others), before
    ``deliver`` returns. An exception is logged by type and ignored; it never fails the
    delivery, though pluggy skips the observers after the one that raised for that call.
    """
