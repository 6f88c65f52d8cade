"""The ``gcs`` field model: a bucket, and exactly one way to authenticate."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from destinations.plugin import (
    AccessKeyId,
    InvalidDestination,
    PathPrefix,
    Secret,
    SecretStr,
    check_endpoint_url,
)

__all__ = [
    "GcsFields",
    "GcsStorageClass",
    "check_gcs_bucket_name",
    "check_kms_key_name",
    "parse_service_account",
]

#: Storage classes of Cloud Storage objects.
GcsStorageClass = Literal["STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"]
_KMS_KEY_NAME = re.compile(
    r"projects/[a-z0-9.:-]{1,100}/locations/[a-z0-9-]{1,64}/keyRings/[\w-]{1,63}"
    r"/cryptoKeys/[\w-]{1,63}"
)


def check_kms_key_name(field: str, value: str) -> str:
    """A Cloud KMS key's resource name (no key version: Cloud Storage uses the primary)."""
    name = value.strip()
    if not _KMS_KEY_NAME.fullmatch(name):
        raise InvalidDestination(
            {
                field: "must be a Cloud KMS key name such as 'projects/my-project/locations/"
                "europe-west1/keyRings/my-ring/cryptoKeys/my-key' (without /cryptoKeyVersions/)"
            }
        )
    return name


_BUCKET_CHARS = re.compile(r"[a-z0-9._-]+")
_GOOGLE_LIKE = re.compile(r"g[o0][o0]g[l1][e3]")
_IPV4_LIKE = re.compile(r"\d+\.\d+\.\d+\.\d+")
_SA_REQUIRED = ("client_email", "private_key", "token_uri")
_HOW_TO_AUTH = (
    "give either gcs_access_key and gcs_secret_key (an HMAC key) or "
    "gcs_service_account_json (a service-account JSON key), not both"
)


def check_gcs_bucket_name(field: str, value: str) -> str:
    """Google Cloud Storage bucket naming rules."""
    name = value.strip()
    if not name:
        raise InvalidDestination({field: "required"})
    if not _BUCKET_CHARS.fullmatch(name):
        bad = ", ".join(repr(c) for c in sorted({c for c in name if not _BUCKET_CHARS.match(c)}))
        raise InvalidDestination(
            {
                field: "may contain only lowercase letters, digits, dashes, underscores and dots "
                f"(found {bad})"
            }
        )
    if not 3 <= len(name) <= (222 if "." in name else 63):
        raise InvalidDestination(
            {field: f"must be 3 to 63 characters long (up to 222 with dots), not {len(name)}"}
        )
    if "." in name and any(not 1 <= len(part) <= 63 for part in name.split(".")):
        raise InvalidDestination({field: "each dot-separated part must be 1 to 63 characters long"})
    if not (name[0].isalnum() and name[-1].isalnum()):
        raise InvalidDestination({field: "must start and end with a letter or a digit"})
    if _IPV4_LIKE.fullmatch(name):
        raise InvalidDestination({field: "must not be an IP address"})
    if name.startswith("goog"):
        raise InvalidDestination({field: "must not start with the reserved 'goog'"})
    if _GOOGLE_LIKE.search(name):
        raise InvalidDestination({field: "must not contain 'google' or a look-alike of it"})
    return name


def parse_service_account(field: str, text: str) -> dict[str, Any]:
    """The key file as a dict; errors describe its shape and never echo its content."""
    try:
        info = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidDestination(
            {
                field: f"is not valid JSON (line {exc.lineno}, column {exc.colno}); paste the "
                "whole key file downloaded from the Google Cloud console"
            }
        ) from None
    if not isinstance(info, dict):
        raise InvalidDestination({field: "must be a JSON object (the key file's content)"})
    if info.get("type") != "service_account":
        raise InvalidDestination(
            {field: 'must be a service-account key file (its "type" must be "service_account")'}
        )
    missing = [k for k in _SA_REQUIRED if not isinstance(info.get(k), str) or not info[k]]
    if missing:
        raise InvalidDestination(
            {field: f"is missing {', '.join(missing)}; paste the whole key file"}
        )
    if "PRIVATE KEY-----" not in info["private_key"]:
        raise InvalidDestination({field: "has a private_key that is not a PEM private key"})
    return info


def _endpoint(field: str, value: str) -> str:
    return check_endpoint_url(field, value, example="a URL such as https://storage.googleapis.com")


def _blank_to_none(value: Any) -> Any:
    # API forms send every field; an empty one means "not used".
    if isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, SecretStr) and not value.get_secret_value().strip():
        return None
    return value


class GcsFields(BaseModel):
    """A Google Cloud Storage bucket, reached with an HMAC key or a service-account key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gcs_access_key: AccessKeyId | None = Field(
        None,
        description="HMAC access id (Cloud Storage > Settings > Interoperability), used with "
        "gcs_secret_key. Shown masked (last 4 characters).",
    )
    gcs_secret_key: Secret | None = Field(
        None, description="HMAC secret paired with gcs_access_key. Never shown again once saved."
    )
    gcs_service_account_json: SecretStr | None = Field(
        None,
        description="Instead of the HMAC pair: the whole JSON key file of a service account. "
        "Never shown again once saved.",
    )
    gcs_bucket_name: str = Field(
        description="Name of an existing bucket (3-63 lowercase letters, digits, dashes, "
        "underscores, dots; up to 222 with dots)."
    )
    gcs_path_prefix: PathPrefix = Field(
        "",
        description="Path template for object names inside the bucket, e.g. "
        "'exports/%COLLECTION_ID%/%DATE%'.",
    )
    gcs_endpoint: str | None = Field(
        None,
        description="Override of https://storage.googleapis.com, e.g. a Private Service "
        "Connect endpoint. Leave out for Google's public endpoint.",
    )

    gcs_kms_key_name: str | None = Field(
        None,
        description="Cloud KMS key (CMEK) encrypting every object, e.g. 'projects/my-project/"
        "locations/europe-west1/keyRings/my-ring/cryptoKeys/my-key' (XML API header "
        "x-goog-encryption-kms-key-name, JSON API kmsKeyName). The Cloud Storage service "
        "agent needs roles/cloudkms.cryptoKeyEncrypterDecrypter on the key. Unset: the "
        "bucket's default encryption.",
    )
    gcs_storage_class: GcsStorageClass | None = Field(
        None,
        description="Storage class of every object (XML API x-goog-storage-class, JSON API "
        "storageClass): STANDARD, NEARLINE, COLDLINE or ARCHIVE. Unset: the bucket's default.",
    )

    @field_validator(
        "gcs_access_key",
        "gcs_secret_key",
        "gcs_service_account_json",
        "gcs_endpoint",
        "gcs_kms_key_name",
        "gcs_storage_class",
        mode="before",
    )
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("gcs_service_account_json")
    @classmethod
    def _service_account(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        parse_service_account("gcs_service_account_json", value.get_secret_value())
        return SecretStr(value.get_secret_value().strip())

    @field_validator("gcs_bucket_name")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return check_gcs_bucket_name("gcs_bucket_name", value)

    @field_validator("gcs_kms_key_name")
    @classmethod
    def _kms_key(cls, value: str | None) -> str | None:
        return None if value is None else check_kms_key_name("gcs_kms_key_name", value)

    @field_validator("gcs_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else _endpoint("gcs_endpoint", value)

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> GcsFields:
        key, secret = self.gcs_access_key, self.gcs_secret_key
        if self.gcs_service_account_json is not None:
            if key is not None or secret is not None:
                both = {"gcs_service_account_json": _HOW_TO_AUTH}
                both.update(
                    {
                        f: _HOW_TO_AUTH
                        for f, v in (("gcs_access_key", key), ("gcs_secret_key", secret))
                        if v is not None
                    }
                )
                raise InvalidDestination(both)
        elif key is None and secret is None:
            raise InvalidDestination(
                {
                    "gcs_access_key": f"required: {_HOW_TO_AUTH}",
                    "gcs_secret_key": f"required: {_HOW_TO_AUTH}",
                }
            )
        elif key is None:
            raise InvalidDestination({"gcs_access_key": "required with gcs_secret_key"})
        elif secret is None:
            raise InvalidDestination({"gcs_secret_key": "required with gcs_access_key"})
        return self

    @property
    def uses_hmac(self) -> bool:
        return self.gcs_service_account_json is None

    def xml_api_headers(self) -> dict[str, str]:
        """The headers the HMAC (XML API) path adds to every object upload (PutObject and
        the initiation of a multipart upload), probe included."""
        headers = {}
        if self.gcs_kms_key_name is not None:
            headers["x-goog-encryption-kms-key-name"] = self.gcs_kms_key_name
        if self.gcs_storage_class is not None:
            headers["x-goog-storage-class"] = self.gcs_storage_class
        return headers
