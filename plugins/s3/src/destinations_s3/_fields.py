"""The field models of the ``s3`` and ``s3compatible`` types, and their naming rules."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from destinations.plugin import (
    AccessKeyId,
    InvalidDestination,
    PathPrefix,
    Secret,
    check_endpoint_url as _check_endpoint_url,
)

__all__ = [
    "S3CompatibleFields",
    "S3Fields",
    "check_aws_bucket_name",
    "check_endpoint_url",
    "check_lenient_bucket_name",
    "check_region",
]

_AWS_BUCKET_CHARS = re.compile(r"[a-z0-9.-]+")
_LENIENT_BUCKET_CHARS = re.compile(r"[A-Za-z0-9._-]+")
_IPV4_LIKE = re.compile(r"\d+\.\d+\.\d+\.\d+")
# botocore's own check (utils.validate_region_name): a DNS label, not all digits.
_REGION = re.compile(r"(?![0-9]+$)(?!-)[a-zA-Z0-9-]{1,63}(?<!-)")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--table-s3")


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


class _S3Keys(BaseModel):
    """The access key pair both S3 types start with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    s3_access_key_id: AccessKeyId = Field(description=_KEY_ID)
    s3_secret_access_key: Secret = Field(description=_SECRET)


class S3Fields(_S3Keys):
    """Amazon S3: a bucket in any region (the region is found from the bucket)."""

    s3_bucket_name: str = Field(
        description="Name of an existing Amazon S3 general purpose bucket (3-63 lowercase "
        "letters, digits, dots, hyphens)."
    )
    s3_path_prefix: PathPrefix = Field("", description=_PREFIX)

    @field_validator("s3_bucket_name")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return check_aws_bucket_name("s3_bucket_name", value)


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
