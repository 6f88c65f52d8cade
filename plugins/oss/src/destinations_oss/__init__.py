"""The ``oss`` type: an Alibaba Cloud OSS bucket, through Alibaba's own SDK (``oss2``).

Signing: V4 (``OSS4-HMAC-SHA256``, what Alibaba recommends), scoped to the region
``oss_region_id`` names without its ``oss-`` prefix (``oss-cn-hangzhou`` signs for
``cn-hangzhou``). Endpoint: ``https://<oss_region_id>.aliyuncs.com`` unless ``oss_endpoint``
overrides it (private/internal endpoints, test servers).

Uploads: a known size below ``multipart_threshold`` is one PutObject streamed from the source.
From the threshold on, or when the size is unknown, a multipart upload done by hand —
InitiateMultipartUpload, one UploadPart per ``part_size`` chunk read one at a time,
CompleteMultipartUpload, AbortMultipartUpload on any failure — so memory stays at one part and
streams of unknown length work (oss2's ``resumable_upload`` needs a file name and a size). An
unsized stream that ends within its first part is sent as one PutObject instead. oss2's CRC-64
check runs on every put, part and completion.

Timeouts: oss2 passes ``connect_timeout`` to requests as one number, which requests applies
both to connecting and to every socket read/write wait; it is ``StoreOptions.timeout``.

Retries: oss2 retries none of these calls (only its resumable helpers, unused here, retry
parts). ``StoreOptions.retries`` goes to urllib3 as connection-attempt retries only: a failed
connect has sent no byte of the body, so repeating it is safe even for a one-shot stream.
Anything later (a 5xx, a reset mid-body, a read timeout) is raised for core's retry policy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from destinations.plugin import DestinationType, Store, StoreOptions, hookimpl

from ._fields import REGIONS, OssFields, default_endpoint, signing_region

if TYPE_CHECKING:
    from logging import Logger

    from ._store import (
        MAX_PART_SIZE as MAX_PART_SIZE,
        MAX_PARTS as MAX_PARTS,
        MIN_PART_SIZE as MIN_PART_SIZE,
        OssStore,
        map_error as map_error,
    )

    log: Logger

__all__ = [
    "REGIONS",
    "OssFields",
    "OssStore",
    "default_endpoint",
    "destinations_register_types",
    "signing_region",
]

# Names that live with the store: importing them imports oss2, so only on first use.
_STORE_NAMES = frozenset(
    {"MAX_PARTS", "MAX_PART_SIZE", "MIN_PART_SIZE", "OssStore", "log", "map_error"}
)


def __getattr__(name: str) -> Any:
    if name in _STORE_NAMES:
        from . import _store

        return getattr(_store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_oss(fields: OssFields, options: StoreOptions) -> Store:
    from ._store import OssStore

    return OssStore(fields, options)


@hookimpl
def destinations_register_types(register: Callable[[DestinationType], None]) -> None:
    register(
        DestinationType(
            name="oss",
            fields=OssFields,
            open_store=open_oss,
            prefix_field="oss_path_prefix",
            description="An Alibaba Cloud OSS bucket.",
            masked_fields=("oss_access_key",),
            endpoint_fields=("oss_endpoint",),
            reports_progress=True,
        )
    )
