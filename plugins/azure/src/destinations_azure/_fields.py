"""The field model of the ``azure`` type and its naming rules (pydantic only, no SDK)."""

from __future__ import annotations

import base64
import binascii
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from destinations.plugin import (
    InvalidDestination,
    PathPrefix,
    Secret,
    SecretStr,
    check_endpoint_url,
)

__all__ = ["AzureFields"]

_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")
_CONTAINER_NAME = re.compile(r"[a-z0-9](?:-?[a-z0-9])*")


class AzureFields(BaseModel):
    """Where and as whom to write in Azure Blob Storage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    azure_account_name: str = Field(
        description="Storage account name: 3 to 24 lowercase letters and digits."
    )
    azure_account_key: Secret = Field(
        description="One of the storage account's access keys (key1 or key2), base64."
    )
    azure_container_name: str = Field(
        description="Container to write to: 3 to 63 lowercase letters, digits and hyphens."
    )
    azure_path_prefix: PathPrefix = Field(
        default="",
        description="Path template for blob names, e.g. 'exports/%COLLECTION_ID%/%DATE%'.",
    )
    azure_endpoint: str | None = Field(
        default=None,
        description="Blob service URL, when not https://<account>.blob.core.windows.net "
        "(sovereign clouds, private endpoints, emulators).",
    )

    @field_validator("azure_account_name")
    @classmethod
    def _check_account_name(cls, value: str) -> str:
        if not _ACCOUNT_NAME.fullmatch(value):
            raise InvalidDestination(
                {
                    "azure_account_name": f"{value!r} is not a storage account name: use 3 "
                    "to 24 lowercase letters and digits (the name in "
                    "<account>.blob.core.windows.net)"
                }
            )
        return value

    @field_validator("azure_container_name")
    @classmethod
    def _check_container_name(cls, value: str) -> str:
        if not (3 <= len(value) <= 63 and _CONTAINER_NAME.fullmatch(value)):
            raise InvalidDestination(
                {
                    "azure_container_name": f"{value!r} is not a valid container name: use "
                    "3 to 63 lowercase letters, digits and hyphens, starting and ending "
                    "with a letter or digit, with no two hyphens in a row"
                }
            )
        return value

    @field_validator("azure_account_key")
    @classmethod
    def _check_account_key(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value().strip()
        try:
            decoded = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if not decoded:
            raise InvalidDestination(
                {
                    "azure_account_key": "is not a valid account key (expected base64 text, "
                    "as shown under the storage account's 'Access keys')"
                }
            )
        return SecretStr(text)

    @field_validator("azure_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return check_endpoint_url(
            "azure_endpoint",
            value,
            example="https://myaccount.blob.core.windows.net",
            path=True,  # azurite and other path-style services: http://host:port/account
        )

    @property
    def account_url(self) -> str:
        return self.azure_endpoint or f"https://{self.azure_account_name}.blob.core.windows.net"
