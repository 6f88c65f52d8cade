"""Amazon S3 (``s3``) and S3-compatible (``s3compatible``) destination types.

Both types come from this one module, each through its own entry point. ``s3`` talks to AWS
(or to ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` when set), signs for ``us-east-1`` and
follows a bucket to its region; ``s3compatible`` talks to ``s3_endpoint`` with path-style
addressing and checksums only where required, which is what most other providers accept.

:class:`S3ProtocolStore` is public so other plugins can drive an S3-protocol service with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from destinations.plugin import DestinationType, Store, StoreOptions, hookimpl

from ._fields import S3CompatibleFields, S3Fields
from ._options import UploadOptions, upload_options

if TYPE_CHECKING:
    from ._store import AddressingStyle, ChecksumMode, Labels, S3ProtocolStore

__all__ = [
    "AddressingStyle",
    "ChecksumMode",
    "Labels",
    "S3CompatibleFields",
    "S3Fields",
    "S3ProtocolStore",
    "UploadOptions",
    "destinations_register_types",
    "open_s3",
    "open_s3compatible",
    "upload_options",
]

#: AWS signs the first request for this region; a bucket elsewhere is followed to its own.
DEFAULT_AWS_REGION = "us-east-1"

# Names that live with the store: importing them imports boto3, so only on first use.
_STORE_NAMES = frozenset({"AddressingStyle", "ChecksumMode", "Labels", "S3ProtocolStore"})


def __getattr__(name: str) -> Any:
    if name in _STORE_NAMES:
        from . import _store

        return getattr(_store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_s3(fields: S3Fields, options: StoreOptions) -> S3ProtocolStore:
    from ._options import upload_options
    from ._store import Labels, S3ProtocolStore

    secret = fields.s3_secret_access_key
    if fields.s3_role_arn is None:
        return S3ProtocolStore(
            bucket=fields.s3_bucket_name,
            access_key_id=fields.s3_access_key_id,
            secret_access_key=secret,
            endpoint_url=None,  # boto3 then honours AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL
            region=DEFAULT_AWS_REGION,
            options=options,
            upload=upload_options(fields),
        )
    from destinations._settings import settings

    from ._assume import role_credentials

    credentials = role_credentials(
        role_arn=fields.s3_role_arn,
        external_id=fields.s3_external_id,
        access_key_id=fields.s3_access_key_id,
        secret_access_key=None if secret is None else secret.get_secret_value(),
        bucket=fields.s3_bucket_name,
        path_prefix=fields.s3_path_prefix,
        options=options,
        allow_default_credentials=settings().allow_default_credentials,
    )
    return S3ProtocolStore(
        bucket=fields.s3_bucket_name,
        access_key_id=None,
        secret_access_key=None,
        endpoint_url=None,
        region=DEFAULT_AWS_REGION,
        options=options,
        upload=upload_options(fields),
        credentials=credentials,
        role_arn=fields.s3_role_arn,
        labels=Labels(permissions=_ROLE_PERMISSIONS),
    )


_ROLE_PERMISSIONS = (
    "s3:PutObject and s3:DeleteObject (plus s3:AbortMultipartUpload) in the policy of the "
    "role in s3_role_arn"
)


def open_s3compatible(fields: S3CompatibleFields, options: StoreOptions) -> Store:
    """The native engine (obstore) where it can serve the destination, else boto3's."""
    from ._labels import Labels
    from ._native import open_native
    from ._options import upload_options

    labels = Labels(
        provider="the S3-compatible service",
        endpoint="s3_endpoint",
        region="s3_region",
        permissions="put-object, delete-object and multipart-upload permissions",
    )
    upload = upload_options(fields)
    native = open_native(
        bucket=fields.s3_bucket_name,
        access_key_id=fields.s3_access_key_id,
        secret_access_key=fields.s3_secret_access_key,
        endpoint_url=fields.s3_endpoint,
        region=fields.s3_region,
        options=options,
        labels=labels,
        upload_headers=upload.headers(),
    )
    if native is not None:
        return native
    from ._store import S3ProtocolStore

    return S3ProtocolStore(
        bucket=fields.s3_bucket_name,
        access_key_id=fields.s3_access_key_id,
        secret_access_key=fields.s3_secret_access_key,
        endpoint_url=fields.s3_endpoint,
        upload=upload,
        region=fields.s3_region,
        options=options,
        addressing_style="path",
        checksums="when_required",
        labels=labels,
    )


@hookimpl
def destinations_register_types(register: Callable[[DestinationType], None]) -> None:
    register(
        DestinationType(
            name="s3",
            fields=S3Fields,
            open_store=open_s3,
            prefix_field="s3_path_prefix",
            description="An Amazon S3 bucket, in any commercial AWS region.",
            masked_fields=("s3_access_key_id",),
            reports_progress=True,
        )
    )
    register(
        DestinationType(
            name="s3compatible",
            fields=S3CompatibleFields,
            open_store=open_s3compatible,
            prefix_field="s3_path_prefix",
            description="A bucket on any S3-compatible service (MinIO, Cloudflare R2, Wasabi, "
            "Backblaze B2, Ceph, DigitalOcean Spaces…) at its endpoint URL.",
            masked_fields=("s3_access_key_id",),
            endpoint_fields=("s3_endpoint",),
            reports_progress=True,
        )
    )
