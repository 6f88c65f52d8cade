"""The field model of the ``azure`` type and its naming rules (pydantic only, no SDK)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from destinations.plugin import (
    InvalidDestination,
    PathPrefix,
    Secret,
    SecretStr,
    check_endpoint_url,
)

__all__ = ["AzureAccessTier", "AzureFields"]

#: Access tiers of block blobs (x-ms-access-tier).
AzureAccessTier = Literal["Hot", "Cool", "Cold", "Archive"]
_HOW_TO_AUTH = "give either azure_account_key or azure_sas_token, not both"

_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")
_CONTAINER_NAME = re.compile(r"[a-z0-9](?:-?[a-z0-9])*")


class AzureFields(BaseModel):
    """Where and as whom to write in Azure Blob Storage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    azure_account_name: str = Field(
        description="Storage account name: 3 to 24 lowercase letters and digits."
    )
    azure_account_key: Secret | None = Field(
        default=None,
        description="One of the storage account's access keys (key1 or key2), base64. "
        "Or use azure_sas_token instead.",
    )
    azure_sas_token: Secret | None = Field(
        default=None,
        description="Instead of the account key: a shared access signature (the query string "
        "'sv=…&sig=…', with or without '?'), ideally container-scoped with only create, "
        "write and delete permissions (sp=cwd). Never shown again once saved; it stops "
        "working at its expiry (se=…).",
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
    azure_access_tier: AzureAccessTier | None = Field(
        default=None,
        description="Access tier of every blob written (x-ms-access-tier): Hot, Cool, Cold or "
        "Archive. Unset: the account's default tier.",
    )

    @field_validator("azure_account_key", "azure_sas_token", "azure_access_tier", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            return None
        return value

    @field_validator("azure_sas_token")
    @classmethod
    def _check_sas_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value().strip().removeprefix("?")
        fields = parse_qs(text, keep_blank_values=True)
        missing = [name for name in ("sv", "sig") if not fields.get(name)]
        if missing or "://" in text:
            raise InvalidDestination(
                {
                    "azure_sas_token": "is not a SAS token: paste only its query string "
                    "(sv=…&sp=…&sig=…), not a URL"
                    + (f" (missing {', '.join(missing)})" if missing and "://" not in text else "")
                }
            )
        return SecretStr(text)

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> AzureFields:
        if self.azure_account_key is None and self.azure_sas_token is None:
            raise InvalidDestination(
                {
                    "azure_account_key": f"required: {_HOW_TO_AUTH}",
                    "azure_sas_token": f"required: {_HOW_TO_AUTH}",
                }
            )
        if self.azure_account_key is not None and self.azure_sas_token is not None:
            raise InvalidDestination(
                {"azure_account_key": _HOW_TO_AUTH, "azure_sas_token": _HOW_TO_AUTH}
            )
        return self

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
    def _check_account_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
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
    def uses_sas(self) -> bool:
        return self.azure_sas_token is not None

    @property
    def account_url(self) -> str:
        return self.azure_endpoint or f"https://{self.azure_account_name}.blob.core.windows.net"
