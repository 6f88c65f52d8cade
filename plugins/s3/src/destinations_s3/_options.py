"""What a put sends besides the object: encryption, ACL and storage class, from the fields.

Pure data (no SDK import), so every engine of the S3 family builds its requests from the
same function: the boto3 store passes :meth:`UploadOptions.extra_args` to s3transfer, an
engine speaking HTTP itself sends :meth:`UploadOptions.headers`. Verification goes through
the same ``Store.put`` as deliveries, so the probe carries the same headers: a bucket policy
that demands encryption, or a role without ``s3:PutObjectAcl``, fails at save time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._fields import S3CompatibleFields, S3Fields

__all__ = ["UploadOptions", "upload_options"]

# boto3 ExtraArgs name -> the HTTP header S3 reads it from.
_HEADERS = {
    "ServerSideEncryption": "x-amz-server-side-encryption",
    "SSEKMSKeyId": "x-amz-server-side-encryption-aws-kms-key-id",
    "ACL": "x-amz-acl",
    "StorageClass": "x-amz-storage-class",
}


@dataclass(frozen=True, slots=True)
class UploadOptions:
    """The per-object settings of one destination; every attribute ``None`` means "not sent".

    ``raw_headers``: headers sent as they are, for S3-protocol services with their own names
    (Google's XML API: ``x-goog-storage-class``, ``x-goog-encryption-kms-key-name``).
    """

    server_side_encryption: str | None = None
    kms_key_id: str | None = None
    acl: str | None = None
    storage_class: str | None = None
    raw_headers: Mapping[str, str] | None = None

    def extra_args(self) -> dict[str, str]:
        """boto3/s3transfer ``ExtraArgs`` (``ServerSideEncryption``, ``SSEKMSKeyId``, ``ACL``,
        ``StorageClass``) for ``PutObject`` and ``CreateMultipartUpload``; only the set ones.
        ``raw_headers`` are not in it (boto3 has no argument for them)."""
        values = {
            "ServerSideEncryption": self.server_side_encryption,
            "SSEKMSKeyId": self.kms_key_id,
            "ACL": self.acl,
            "StorageClass": self.storage_class,
        }
        return {name: value for name, value in values.items() if value is not None}

    def headers(self) -> dict[str, str]:
        """Every HTTP header these options add to a ``PutObject`` or to the
        ``CreateMultipartUpload`` of a multipart upload (never to ``UploadPart`` or
        ``CompleteMultipartUpload``), names in lower case: ``x-amz-server-side-encryption``,
        ``x-amz-server-side-encryption-aws-kms-key-id``, ``x-amz-acl``, ``x-amz-storage-class``
        and the ``raw_headers``."""
        headers = {_HEADERS[name]: value for name, value in self.extra_args().items()}
        for name, value in (self.raw_headers or {}).items():
            headers[name.lower()] = value
        return headers

    def __bool__(self) -> bool:
        return bool(self.extra_args() or self.raw_headers)


def upload_options(fields: S3Fields | S3CompatibleFields) -> UploadOptions:
    """The :class:`UploadOptions` of an ``s3`` or ``s3compatible`` destination.

    ``s3``: ``s3_server_side_encryption``, ``s3_kms_key_id``, ``s3_acl``, ``s3_storage_class``.
    ``s3compatible``: ``s3_acl`` and ``s3_storage_class`` only.
    """
    return UploadOptions(
        server_side_encryption=getattr(fields, "s3_server_side_encryption", None),
        kms_key_id=getattr(fields, "s3_kms_key_id", None),
        acl=fields.s3_acl,
        storage_class=fields.s3_storage_class,
    )
