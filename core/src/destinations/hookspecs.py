"""The hooks a `destinations` plugin implements — the plugin author's guide (contract v2).

**Storage types.** A plugin is a module (or object) with functions marked
``@destinations.hookimpl``. It is found through an entry point in the group ``destinations``
whose *name is the type name* and whose value is the module::

    [project.entry-points.destinations]
    mystore = "destinations_mystore"

Listing types reads entry-point names only; the module (and its SDK) is imported the first
time one of its types is used, once. A module may register several types (``destinations-s3``
registers ``s3`` and ``s3compatible``; give each its own entry point to the same module).

A minimal plugin::

    from pydantic import BaseModel, ConfigDict, Field
    import destinations
    from destinations.plugin import (DestinationType, PathPrefix, Secret, Store, StoreError,
                                     open_source, upload_progress)

    class MyFields(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        my_token: Secret                     # a SecretStr: masked, encrypted at rest
        my_bucket: str = Field(description="The bucket to write into.")
        my_path_prefix: PathPrefix = ""      # compiled as a path template by core

    class MyStore(Store):
        def __init__(self, fields: MyFields, options): ...

        def put(self, key, source, *, size, content_type,
                content_encoding=None, metadata=None):
            progress = upload_progress()     # call with bytes sent, as they are sent
            try:
                ...                          # stream source; store type, encoding, metadata
            except MyThrottled as exc:
                raise StoreError("provider_error", "busy, slow down", provider_code="Busy",
                                 status=503, transient=True) from exc

        def delete(self, key): ...

    @destinations.hookimpl
    def destinations_register_types(register):
        register(DestinationType(name="mystore", fields=MyFields, open_store=MyStore,
                                 prefix_field="my_path_prefix", reports_progress=True))

What the contract asks of a store:

* **Errors** are :class:`~destinations.StoreError` with one of core's codes. Your mapper
  decides ``transient`` (your provider's throttling and server-busy answers: ``True``; an
  answer that will not change on retry: ``False``); left ``None``, core's generic rule
  applies (``timeout`` and ``endpoint_unreachable``, or HTTP 408/429/5xx, are transient).
  Delivery, the Celery task and every other retrying caller read only that flag.
* **put** stores ``content_type`` and ``content_encoding`` as the object's Content-Type and
  Content-Encoding, and ``metadata`` (``str -> str``) as user metadata; say in your README
  how, and what your provider limits. Stream the source; never read it whole.
* **Progress**: call :func:`destinations.plugin.upload_progress`'s callback with the bytes
  sent (from SDK progress callbacks) and set ``reports_progress=True``; otherwise core counts
  what your store reads from the source.
* **Endpoint guard**: route every connection through
  :func:`destinations.plugin.guarded_create_connection` (see ``DestinationType``).

Prove it with core's conformance suite against a real server: see ``destinations.testing``.

**Observers.** A distribution that only observes deliveries (webhooks, metrics, audit logs)
ships a module with ``destinations_file_delivered`` and/or ``destinations_delivery_finished``
implementations under the entry-point group ``destinations.observers`` (any name)::

    [project.entry-points."destinations.observers"]
    audit-log = "my_audit_observer"

Observer modules are imported once, on the first delivery. Each observer is called on its
own: one that raises is logged (by exception type) and the others still run. An embedding
service can also register an object with :func:`destinations.register_plugin`; for
per-delivery byte progress use ``deliver(on_progress=...)`` instead of a global observer.
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
    delivery, and the other observers are still called.
    """
