"""The field model of the ``oss`` type, its regions and endpoint rules (pydantic only, no
SDK)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from destinations.plugin import (
    AccessKeyId,
    InvalidDestination,
    PathPrefix,
    Secret,
    check_endpoint_url,
)

__all__ = [
    "REGIONS",
    "OssFields",
    "OssServerSideEncryption",
    "OssStorageClass",
    "default_endpoint",
    "signing_region",
]

#: Server-side encryption OSS applies to every object (x-oss-server-side-encryption).
OssServerSideEncryption = Literal["AES256", "KMS"]
#: OSS storage classes (x-oss-storage-class).
OssStorageClass = Literal["Standard", "IA", "Archive", "ColdArchive", "DeepColdArchive"]
_KMS_KEY_ID = re.compile(r"[\w:/+=,.@-]{1,256}")

#: The regions the Destinations API accepts for ``oss_region_id`` (an enum in the schema).
Region = Literal[
    "oss-cn-hangzhou",
    "oss-cn-shanghai",
    "oss-cn-qingdao",
    "oss-cn-beijing",
    "oss-cn-zhangjiakou",
    "oss-cn-huhehaote",
    "oss-cn-wulanchabu",
    "oss-cn-shenzhen",
    "oss-cn-heyuan",
    "oss-cn-guangzhou",
    "oss-cn-chengdu",
    "oss-cn-hongkong",
    "oss-us-west-1",
    "oss-us-east-1",
    "oss-ap-southeast-1",
    "oss-ap-southeast-2",
    "oss-ap-southeast-3",
    "oss-ap-southeast-5",
    "oss-ap-northeast-1",
    "oss-ap-south-1",
    "oss-eu-central-1",
    "oss-eu-west-1",
    "oss-me-east-1",
]
REGIONS: Final[tuple[str, ...]] = get_args(Region)

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_KEY_RE = re.compile(r"[!-~]+")  # printable ASCII, no spaces: what AccessKey pairs are made of
_HOST_RE = re.compile(r"[A-Za-z0-9.-]{1,253}")


def default_endpoint(region_id: str) -> str:
    """The public endpoint of an OSS region, e.g. ``https://oss-cn-hangzhou.aliyuncs.com``."""
    return f"https://{region_id}.aliyuncs.com"


def signing_region(region_id: str) -> str:
    """The region a V4 signature is scoped to: the region id without ``oss-``."""
    return region_id.removeprefix("oss-")


class OssFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    oss_access_key: AccessKeyId = Field(
        description="AccessKey ID of a RAM user (or account) allowed oss:PutObject and "
        "oss:DeleteObject under the path prefix; shown masked to its last four characters."
    )
    oss_secret_key: Secret = Field(
        description="AccessKey secret paired with oss_access_key. Never shown again."
    )
    oss_bucket_name: str = Field(
        description="Bucket name: 3-63 lowercase letters, digits and hyphens, starting and "
        "ending with a letter or digit."
    )
    oss_region_id: Region = Field(
        description="The bucket's region as OSS names it, e.g. oss-cn-hangzhou (case and "
        "surrounding spaces are ignored)."
    )
    oss_path_prefix: PathPrefix = Field(
        "",
        description="Path template for object keys, e.g. results/%COLLECTION_ID%/%DATE%.",
    )
    oss_endpoint: str | None = Field(
        None,
        description="Endpoint URL overriding https://<oss_region_id>.aliyuncs.com, e.g. an "
        "internal (VPC) endpoint. Optional.",
    )

    oss_server_side_encryption: OssServerSideEncryption | None = Field(
        None,
        description="Server-side encryption of every object (x-oss-server-side-encryption): "
        "'AES256' (OSS-managed keys) or 'KMS' (a KMS key). Unset: the bucket's default.",
    )
    oss_kms_key_id: str | None = Field(
        None,
        description="KMS key id for 'KMS' (x-oss-server-side-encryption-key-id). Unset with "
        "'KMS': the OSS default managed key. The RAM user also needs kms:GenerateDataKey "
        "and kms:Decrypt on it.",
    )
    oss_storage_class: OssStorageClass | None = Field(
        None,
        description="Storage class of every object (x-oss-storage-class): Standard, IA, "
        "Archive, ColdArchive or DeepColdArchive. Unset: the bucket's class.",
    )

    @field_validator(
        "oss_server_side_encryption", "oss_kms_key_id", "oss_storage_class", mode="before"
    )
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("oss_kms_key_id")
    @classmethod
    def _kms_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        key = value.strip()
        if not _KMS_KEY_ID.fullmatch(key):
            raise InvalidDestination(
                {"oss_kms_key_id": "must be a KMS key id (letters, digits and :/+=,.@_-)"}
            )
        return key

    @model_validator(mode="after")
    def _kms_needs_kms(self) -> OssFields:
        if self.oss_kms_key_id is not None and self.oss_server_side_encryption != "KMS":
            raise InvalidDestination({"oss_kms_key_id": "needs oss_server_side_encryption 'KMS'"})
        return self

    def upload_headers(self) -> dict[str, str]:
        """The headers every PutObject and InitiateMultipartUpload carries (the probe too);
        never UploadPart or CompleteMultipartUpload."""
        headers: dict[str, str] = {}
        if self.oss_server_side_encryption is not None:
            headers["x-oss-server-side-encryption"] = self.oss_server_side_encryption
        if self.oss_kms_key_id is not None:
            headers["x-oss-server-side-encryption-key-id"] = self.oss_kms_key_id
        if self.oss_storage_class is not None:
            headers["x-oss-storage-class"] = self.oss_storage_class
        return headers

    @field_validator("oss_bucket_name")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        value = value.strip()
        problem = None
        if not value:
            problem = "required"
        elif not 3 <= len(value) <= 63:
            problem = f"must be 3 to 63 characters long, not {len(value)}"
        elif not re.fullmatch(r"[a-z0-9-]+", value):
            problem = "may contain only lowercase letters, digits and hyphens"
        elif not _BUCKET_RE.fullmatch(value):
            problem = "must start and end with a lowercase letter or a digit"
        if problem is not None:
            shown = "" if not value else f" ({value[:70]!r})"
            raise InvalidDestination({"oss_bucket_name": f"{problem}{shown}"})
        return value

    @field_validator("oss_region_id", mode="before")
    @classmethod
    def _region_id(cls, value: object) -> object:
        if not isinstance(value, str):
            return value  # the enum's own error
        region = value.strip().lower()
        if region in REGIONS:
            return region
        if not region:
            problem = "required"
        elif f"oss-{region}" in REGIONS:
            problem = f"{value[:40]!r} needs the oss- prefix: use 'oss-{region}'"
        else:
            problem = f"{value[:40]!r} is not a supported OSS region"
        raise InvalidDestination(
            {"oss_region_id": f"{problem}; expected one of: {', '.join(REGIONS)}"}
        )

    @field_validator("oss_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return check_endpoint_url(
            "oss_endpoint", value, example="https://oss-cn-hangzhou-internal.aliyuncs.com"
        )


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
