"""A test-only storage type, registered in-process as an embedding service would register
its own: a secret field, a masked access key id, scripted failures, and a record of every
probe so tests can count verifications."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, SecretStr

import destinations
from destinations.plugin import DestinationType, Source, Store, StoreError, StoreOptions

BAD_CREDENTIALS = "bad-credentials"
GATED = "gated"  # put waits for VaultStore.gate, to hold a verification open
#: A bucket "fail-put-<code>" or "fail-delete-<code>" fails that step with that error code;
#: "explode-put" raises an unmapped exception whose text contains the secret.
FAIL_PREFIX = "fail-"
EXPLODE = "explode-put"


class VaultFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    vault_access_key_id: str
    vault_secret_key: SecretStr
    vault_bucket: str
    vault_path_prefix: str = ""


class VaultStore(Store):
    #: (bucket, secret) seen by each put, in order.
    puts: ClassVar[list[tuple[str, str]]] = []
    objects: ClassVar[set[str]] = set()
    gate: ClassVar[threading.Event] = threading.Event()
    waiting: ClassVar[threading.Event] = threading.Event()
    lock = threading.Lock()

    def __init__(self, fields: VaultFields, options: StoreOptions) -> None:
        self.fields = fields

    @classmethod
    def reset(cls) -> None:
        cls.puts.clear()
        cls.objects.clear()
        cls.gate.clear()
        cls.waiting.clear()

    def put(self, key: str, source: Source, *, size: int | None, content_type: str | None) -> None:
        bucket = self.fields.vault_bucket
        with self.lock:
            self.puts.append((bucket, self.fields.vault_secret_key.get_secret_value()))
        if bucket == BAD_CREDENTIALS:
            raise StoreError(
                "invalid_credentials",
                "the access key was rejected; check vault_access_key_id and vault_secret_key",
                provider_code="InvalidAccessKeyId",
            )
        if bucket == EXPLODE:
            raise RuntimeError(
                f"SDK echo: Authorization {self.fields.vault_secret_key.get_secret_value()}"
            )
        if bucket.startswith(FAIL_PREFIX + "put-"):
            code = bucket.removeprefix(FAIL_PREFIX + "put-").replace("-", "_")
            raise StoreError(code, f"scripted {code} at put", provider_code="Scripted")  # type: ignore[arg-type]
        if bucket == GATED:
            self.waiting.set()
            if not self.gate.wait(20):
                raise StoreError("timeout", "test gate never opened")
        with self.lock:
            self.objects.add(key)

    def delete(self, key: str) -> None:
        bucket = self.fields.vault_bucket
        if bucket.startswith(FAIL_PREFIX + "delete-"):
            code = bucket.removeprefix(FAIL_PREFIX + "delete-").replace("-", "_")
            raise StoreError(code, f"scripted {code} at delete")  # type: ignore[arg-type]
        with self.lock:
            self.objects.discard(key)


@destinations.hookimpl
def destinations_register_types(register: Callable[[DestinationType], None]) -> None:
    register(
        DestinationType(
            name="vault",
            fields=VaultFields,
            open_store=VaultStore,
            prefix_field="vault_path_prefix",
            masked_fields=("vault_access_key_id",),
            description="Test-only store.",
        )
    )


def install() -> type[VaultStore]:
    import sys

    destinations.register_plugin(sys.modules[__name__], name="tests.api.vaultplugin")
    VaultStore.reset()
    return VaultStore
