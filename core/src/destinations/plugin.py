"""Everything a storage plugin needs from core, in one import.

See :mod:`destinations.hookspecs` for how a plugin is found and registered.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import pluggy
from pydantic import BaseModel, SecretStr

from ._errors import EndpointNotAllowed, InvalidDestination, StoreError, exception_chain
from ._guard import (
    check_endpoint_url,
    check_host,
    find_refusal,
    guarded_create_connection,
    private_endpoints_allowed,
    refuse_plain_http,
)
from ._progress import (
    MAX_BODY_CHUNK,
    ByteCounter,
    CountingBody,
    ProgressCallback,
    current_counter,
    sending_with,
    upload_progress,
)
from ._retry import part_retry_policy, parts_spent, retry_part
from ._store import (
    MiB,
    Source,
    Store,
    StoreOptions,
    open_source,
    read_exactly,
    read_file_exactly,
    source_size,
)
from ._toolkit import (
    AccessKeyId,
    InvalidMetadata,
    LimitedReader,
    MetadataRules,
    PathPrefix,
    Secret,
    SourceTooLarge,
    classify_transport_error,
    part_chunks,
    progress_granule,
    read_up_to,
)

__all__ = [
    "MAX_BODY_CHUNK",
    "AccessKeyId",
    "ByteCounter",
    "CountingBody",
    "DestinationType",
    "EndpointNotAllowed",
    "InvalidDestination",
    "InvalidMetadata",
    "LimitedReader",
    "MetadataRules",
    "MiB",
    "PathPrefix",
    "ProgressCallback",
    "Secret",
    "SecretStr",
    "Source",
    "SourceTooLarge",
    "Store",
    "StoreError",
    "StoreOptions",
    "check_endpoint_url",
    "check_host",
    "classify_transport_error",
    "current_counter",
    "exception_chain",
    "find_refusal",
    "guarded_create_connection",
    "hookimpl",
    "open_source",
    "part_chunks",
    "part_retry_policy",
    "parts_spent",
    "private_endpoints_allowed",
    "progress_granule",
    "read_exactly",
    "read_file_exactly",
    "read_up_to",
    "refuse_plain_http",
    "retry_part",
    "sending_with",
    "source_size",
    "upload_progress",
]

hookimpl = pluggy.HookimplMarker("destinations")


@dataclass(frozen=True)
class DestinationType:
    """One storage type a plugin provides.

    ``fields``: a pydantic model of the type's own fields, named ``<family>_<field>`` as the
    API exposes them. Annotate secret fields with ``SecretStr``. Configure it with
    ``extra="forbid"`` if you build it by hand; core rejects unknown fields before it is
    called either way. A model validator may raise :class:`InvalidDestination` with
    ``{field: message}`` to point at a field.

    ``open_store(fields, options)``: returns a :class:`Store` for validated fields.

    ``prefix_field``: the field holding the path template (compiled by core at parse time).

    ``masked_fields``: non-secret identifiers (access key ids) shown only by their last four
    characters. ``endpoint_fields``: user-supplied URLs, subject to the endpoint guard.

    ``reports_progress``: the store reports bytes sent through :func:`upload_progress`
    (SDK progress callbacks); when false, delivery counts the bytes the store reads.

    The endpoint guard (DESIGN.md "Persistence and security") is enforced when a connection
    is made: route every socket connect of the SDK's HTTP stack through
    :func:`guarded_create_connection` (it resolves, refuses loopback, private, link-local,
    metadata… addresses with :class:`EndpointNotAllowed`, and connects only to the addresses
    it checked), and when mapping SDK errors return :func:`find_refusal`'s result first.
    """

    name: str
    fields: type[BaseModel]
    open_store: Callable[[typing.Any, StoreOptions], Store]
    prefix_field: str | None = None
    description: str = ""
    masked_fields: tuple[str, ...] = ()
    endpoint_fields: tuple[str, ...] = ()
    reports_progress: bool = False

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name != self.name.lower():
            raise ValueError(f"type name {self.name!r} must be a lower-case identifier")
        model_fields = self.fields.model_fields
        for name in (self.prefix_field, *self.masked_fields, *self.endpoint_fields):
            if name is not None and name not in model_fields:
                raise ValueError(f"{self.name}: {name!r} is not a field of {self.fields}")

    @cached_property
    def secret_fields(self) -> frozenset[str]:
        """Fields annotated ``SecretStr`` (or ``SecretStr | None``)."""
        return frozenset(
            name for name, info in self.fields.model_fields.items() if _is_secret(info.annotation)
        )

    @cached_property
    def required_fields(self) -> tuple[str, ...]:
        return tuple(n for n, f in self.fields.model_fields.items() if f.is_required())

    @cached_property
    def optional_fields(self) -> tuple[str, ...]:
        return tuple(n for n, f in self.fields.model_fields.items() if not f.is_required())


def _is_secret(annotation: object) -> bool:
    if annotation is SecretStr:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_is_secret(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _is_secret(typing.get_args(annotation)[0])
    return False
