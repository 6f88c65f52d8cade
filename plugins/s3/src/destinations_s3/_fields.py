"""The field models of the ``s3`` and ``s3compatible`` types, and their naming rules."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from destinations.plugin import (
    AccessKeyId,
    InvalidDestination,
    PathPrefix,
    Secret,
    SecretStr,
    check_endpoint_url as _check_endpoint_url,
)

__all__ = [
    "S3Acl",
    "S3CompatibleFields",
    "S3Fields",
    "S3ServerSideEncryption",
    "S3StorageClass",
    "check_aws_bucket_name",
    "check_endpoint_url",
    "check_external_id",
    "check_kms_key_id",
    "check_lenient_bucket_name",
    "check_region",
    "check_role_arn",
    "check_storage_class_name",
]

_AWS_BUCKET_CHARS = re.compile(r"[a-z0-9.-]+")
_LENIENT_BUCKET_CHARS = re.compile(r"[A-Za-z0-9._-]+")
_IPV4_LIKE = re.compile(r"\d+\.\d+\.\d+\.\d+")
# botocore's own check (utils.validate_region_name): a DNS label, not all digits.
_REGION = re.compile(r"(?![0-9]+$)(?!-)[a-zA-Z0-9-]{1,63}(?<!-)")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--table-s3")
# An IAM role in the commercial partition: arn:aws:iam::<12-digit account>:role/[path/]name.
_ROLE_ARN = re.compile(r"arn:aws:iam::\d{12}:role/(?:[\x21-\x7e]{0,510}/)?[\w+=,.@-]{1,64}")
# What STS accepts for ExternalId (2-1224 characters of [\w+=,.@:/-]).
_EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}")
# A KMS key id, key ARN, alias name or alias ARN.
_KMS_KEY_ID = re.compile(r"[\w:/+=,.@-]{1,2048}")

#: Server-side encryption S3 applies to every object written (``x-amz-server-side-encryption``).
S3ServerSideEncryption = Literal["AES256", "aws:kms"]
#: The canned ACLs S3 accepts on an object (``x-amz-acl``).
S3Acl = Literal[
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
]
#: Storage classes of general purpose buckets (``x-amz-storage-class``).
S3StorageClass = Literal[
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
    "REDUCED_REDUNDANCY",
]


def _bad_chars(value: str, allowed: re.Pattern[str]) -> str:
    bad = sorted({c for c in value if not allowed.fullmatch(c)})
    return ", ".join(repr(c) for c in bad[:5])


def _bucket_shape(field: str, value: str, allowed: re.Pattern[str], described: str) -> str:
    """The checks every bucket name gets: present, 3-63 characters, only ``allowed`` ones."""
    name = value.strip()
    if not name:
        raise InvalidDestination({field: "required"})
    if not 3 <= len(name) <= 63:
        raise InvalidDestination({field: f"must be 3 to 63 characters long, not {len(name)}"})
    if not allowed.fullmatch(name):
        raise InvalidDestination(
            {field: f"may contain only {described} (found {_bad_chars(name, allowed)})"}
        )
    return name


def check_aws_bucket_name(field: str, value: str) -> str:
    """Amazon S3's rules for general purpose bucket names."""
    name = _bucket_shape(
        field, value, _AWS_BUCKET_CHARS, "lowercase letters, digits, dots and hyphens"
    )
    if not (name[0].isalnum() and name[-1].isalnum()):
        raise InvalidDestination({field: "must start and end with a letter or a digit"})
    if ".." in name:
        raise InvalidDestination({field: "must not contain two adjacent dots"})
    if _IPV4_LIKE.fullmatch(name):
        raise InvalidDestination({field: "must not be formatted as an IP address"})
    if name.endswith("--x-s3"):
        raise InvalidDestination(
            {
                field: "names a directory bucket (S3 Express One Zone), which is not supported; "
                "use a general purpose bucket"
            }
        )
    for prefix in _RESERVED_PREFIXES:
        if name.startswith(prefix):
            raise InvalidDestination({field: f"must not start with the reserved {prefix!r}"})
    for suffix in _RESERVED_SUFFIXES:
        if name.endswith(suffix):
            raise InvalidDestination({field: f"must not end with the reserved {suffix!r}"})
    return name


def check_lenient_bucket_name(field: str, value: str) -> str:
    """What S3-compatible providers broadly accept; each applies its own stricter rules."""
    return _bucket_shape(
        field, value, _LENIENT_BUCKET_CHARS, "letters, digits, dots, hyphens and underscores"
    )


def check_endpoint_url(field: str, value: str) -> str:
    """An ``http(s)://host[:port][/path]`` URL without credentials, query or fragment."""
    return _check_endpoint_url(
        field, value, example="a URL such as https://s3.example.com", path=True
    )


def check_storage_class_name(field: str, value: str) -> str:
    """A provider's storage class name: 1-64 upper-case letters, digits and underscores."""
    name = value.strip()
    if not re.fullmatch(r"[A-Z0-9_]{1,64}", name):
        raise InvalidDestination(
            {
                field: "must be a storage class name such as 'STANDARD' (1-64 upper-case "
                "letters, digits and underscores)"
            }
        )
    return name


def check_region(field: str, value: str) -> str:
    region = value.strip()
    if not region:
        raise InvalidDestination({field: "must not be empty (leave it out for 'auto')"})
    if not _REGION.fullmatch(region):
        raise InvalidDestination(
            {
                field: "must be a region name such as 'auto', 'us-east-1' or 'fr-par' "
                "(letters, digits and inner hyphens)"
            }
        )
    return region


_KEY_ID = "Access key id of the credentials that write here. Shown masked (last 4 characters)."
_SECRET = "Secret access key paired with the access key id. Never shown again once saved."
_PREFIX = (
    "Path template for object keys inside the bucket, e.g. 'exports/%COLLECTION_ID%/%DATE%'. "
    "Tokens: %COLLECTION_ID%, %COLLECTION_NAME%, %RESULT_SET_ID%, %DATE%, %YEAR%, %MONTH%, "
    "%DAY%, %HOUR%."
)


_ACL_S3 = (
    "Canned ACL set on every object (x-amz-acl). 'bucket-owner-full-control' gives the "
    "bucket's owner full control of objects written from another account. Needs "
    "s3:PutObjectAcl as well; buckets with ACLs disabled (Object Ownership 'bucket owner "
    "enforced') accept only 'bucket-owner-full-control'. Unset: no ACL header."
)
_ACL_COMPATIBLE = (
    "Canned ACL set on every object (x-amz-acl), where the provider honours object ACLs "
    "(MinIO ignores them; Cloudflare R2 rejects most values). Unset: no ACL header."
)
_CLASS_S3 = (
    "Storage class of every object written (x-amz-storage-class), e.g. 'STANDARD_IA', "
    "'INTELLIGENT_TIERING', 'GLACIER_IR'. Unset: the bucket's default (STANDARD)."
)
_CLASS_COMPATIBLE = (
    "Storage class of every object written (x-amz-storage-class), where the provider "
    "honours it (names differ by provider; most accept 'STANDARD'). Unset: the provider's "
    "default."
)


def _blank_to_none(value: Any) -> Any:
    """API forms send every field; an empty optional one means "not used"."""
    if isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, SecretStr) and not value.get_secret_value().strip():
        return None
    return value


def check_role_arn(field: str, value: str) -> str:
    arn = value.strip()
    if not _ROLE_ARN.fullmatch(arn):
        raise InvalidDestination(
            {
                field: "must be an IAM role ARN such as 'arn:aws:iam::123456789012:role/"
                "destinations-writer' (12-digit account id, role name of letters, digits and "
                "+=,.@_-)"
            }
        )
    return arn


def check_external_id(field: str, value: str) -> str:
    external_id = value.strip()
    if not _EXTERNAL_ID.fullmatch(external_id):
        raise InvalidDestination(
            {
                field: "must be 2 to 1224 characters of letters, digits and +=,.@:/_- "
                f"(found {len(external_id)} characters)"
            }
        )
    return external_id


def check_kms_key_id(field: str, value: str) -> str:
    key = value.strip()
    if not _KMS_KEY_ID.fullmatch(key):
        raise InvalidDestination(
            {
                field: "must be a KMS key id, key ARN, alias ('alias/…') or alias ARN "
                "(letters, digits and :/+=,.@_-)"
            }
        )
    return key


class _S3Keys(BaseModel):
    """The access key pair of the ``s3compatible`` type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    s3_access_key_id: AccessKeyId = Field(description=_KEY_ID)
    s3_secret_access_key: Secret = Field(description=_SECRET)


class S3Fields(BaseModel):
    """Amazon S3: a bucket in any region (the region is found from the bucket).

    Credentials: the access key pair, or an IAM role to assume (``s3_role_arn``, with
    ``s3_external_id``) with the pair as the base credentials — or, when the operator allows
    it (``DESTINATIONS_ALLOW_DEFAULT_CREDENTIALS``), the server's own AWS credentials.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    s3_access_key_id: AccessKeyId | None = Field(
        None,
        description=_KEY_ID + " Required unless s3_role_arn is set and the operator lets "
        "roles be assumed with the server's own AWS credentials.",
    )
    s3_secret_access_key: Secret | None = Field(
        None, description=_SECRET + " Required with s3_access_key_id."
    )
    s3_bucket_name: str = Field(
        description="Name of an existing Amazon S3 general purpose bucket (3-63 lowercase "
        "letters, digits, dots, hyphens)."
    )
    s3_path_prefix: PathPrefix = Field("", description=_PREFIX)
    s3_role_arn: str | None = Field(
        None,
        description="IAM role to write as, e.g. 'arn:aws:iam::123456789012:role/"
        "destinations-writer'. The service calls STS AssumeRole with the access key pair (or, "
        "where the operator allows it, its own AWS credentials) and writes with the "
        "temporary credentials, refreshed before they expire.",
    )
    s3_external_id: str | None = Field(
        None,
        description="External ID sent with AssumeRole (sts:ExternalId). Recommended: require "
        "it in the role's trust policy so no one else can make this service use your role "
        "(the confused-deputy problem). Only with s3_role_arn.",
    )
    s3_server_side_encryption: S3ServerSideEncryption | None = Field(
        None,
        description="Server-side encryption of every object (x-amz-server-side-encryption): "
        "'AES256' (SSE-S3) or 'aws:kms' (SSE-KMS). Unset: the bucket's default encryption.",
    )
    s3_kms_key_id: str | None = Field(
        None,
        description="KMS key for 'aws:kms' (x-amz-server-side-encryption-aws-kms-key-id): key "
        "id, key ARN, alias or alias ARN. Unset with 'aws:kms': the AWS managed key aws/s3.",
    )
    s3_acl: S3Acl | None = Field(None, description=_ACL_S3)
    s3_storage_class: S3StorageClass | None = Field(None, description=_CLASS_S3)

    @field_validator(
        "s3_access_key_id",
        "s3_secret_access_key",
        "s3_role_arn",
        "s3_external_id",
        "s3_server_side_encryption",
        "s3_kms_key_id",
        "s3_acl",
        "s3_storage_class",
        mode="before",
    )
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("s3_bucket_name")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return check_aws_bucket_name("s3_bucket_name", value)

    @field_validator("s3_role_arn")
    @classmethod
    def _role(cls, value: str | None) -> str | None:
        return None if value is None else check_role_arn("s3_role_arn", value)

    @field_validator("s3_external_id")
    @classmethod
    def _external_id(cls, value: str | None) -> str | None:
        return None if value is None else check_external_id("s3_external_id", value)

    @field_validator("s3_kms_key_id")
    @classmethod
    def _kms_key(cls, value: str | None) -> str | None:
        return None if value is None else check_kms_key_id("s3_kms_key_id", value)

    @model_validator(mode="after")
    def _credentials_and_encryption(self) -> S3Fields:
        key, secret, role = self.s3_access_key_id, self.s3_secret_access_key, self.s3_role_arn
        errors: dict[str, str] = {}
        if key is not None and secret is None:
            errors["s3_secret_access_key"] = "required"
        elif key is None and secret is not None:
            errors["s3_access_key_id"] = "required"
        elif key is None and role is None:
            errors["s3_access_key_id"] = "required (or set s3_role_arn)"
            errors["s3_secret_access_key"] = "required (or set s3_role_arn)"
        if self.s3_external_id is not None and role is None:
            errors["s3_external_id"] = "is sent only when assuming a role: set s3_role_arn too"
        if self.s3_kms_key_id is not None and self.s3_server_side_encryption != "aws:kms":
            errors["s3_kms_key_id"] = (
                "needs s3_server_side_encryption 'aws:kms' (a KMS key is used only by SSE-KMS)"
            )
        if errors:
            raise InvalidDestination(errors)
        return self


class S3CompatibleFields(_S3Keys):
    """Any service speaking the S3 protocol at an endpoint URL (MinIO, R2, Wasabi, Ceph…)."""

    s3_bucket_name: str = Field(
        description="Name of an existing bucket (3-63 letters, digits, dots, hyphens, "
        "underscores; the provider may be stricter)."
    )
    s3_endpoint: str = Field(
        description="The provider's S3 endpoint URL, e.g. 'https://s3.eu-central-1.wasabisys.com'."
        " Requests use path-style addressing (endpoint/bucket/key)."
    )
    s3_path_prefix: PathPrefix = Field("", description=_PREFIX)
    s3_region: str = Field(
        "auto",
        description="Region the requests are signed for; 'auto' (the default) suits most "
        "providers, some need their own region name (e.g. 'us-east-1').",
    )
    s3_acl: S3Acl | None = Field(None, description=_ACL_COMPATIBLE)
    s3_storage_class: str | None = Field(None, description=_CLASS_COMPATIBLE)

    @field_validator("s3_acl", "s3_storage_class", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("s3_storage_class")
    @classmethod
    def _storage_class(cls, value: str | None) -> str | None:
        return None if value is None else check_storage_class_name("s3_storage_class", value)

    @field_validator("s3_bucket_name")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return check_lenient_bucket_name("s3_bucket_name", value)

    @field_validator("s3_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return check_endpoint_url("s3_endpoint", value)

    @field_validator("s3_region")
    @classmethod
    def _region(cls, value: str) -> str:
        return check_region("s3_region", value)
