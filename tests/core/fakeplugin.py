"""A test-only plugin registered in-process: a store whose failures a test scripts.

It is registered with ``destinations.register_plugin`` exactly as an embedding service would
register its own types, and records every call so tests can count storage operations.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, SecretStr

import destinations
from destinations.plugin import (
    DestinationType,
    Source,
    Store,
    StoreError,
    StoreOptions,
    open_source,
)


class ScriptedFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scripted_token: SecretStr
    scripted_key_id: str = "AKIAEXAMPLEKEY0001"
    scripted_path_prefix: str = ""
    scripted_fail_put: str = ""  # an error code, or "crash" for a plain exception
    scripted_fail_delete: str = ""
    scripted_delay: float = 0.0


class ScriptedStore(Store):
    objects: ClassVar[dict[str, bytes]] = {}
    calls: ClassVar[list[tuple[str, str]]] = []
    lock = threading.Lock()

    def __init__(self, fields: ScriptedFields, options: StoreOptions) -> None:
        self.fields = fields
        self.options = options

    def _maybe_fail(self, code: str) -> None:
        if code == "crash":
            raise RuntimeError(f"boom with {self.fields.scripted_token.get_secret_value()}")
        if code:
            raise StoreError(code, f"scripted {code}", provider_code="Scripted")  # type: ignore[arg-type]

    def put(self, key: str, source: Source, *, size: int | None, content_type: str | None) -> None:
        with self.lock:
            self.calls.append(("put", key))
        time.sleep(self.fields.scripted_delay)
        self._maybe_fail(self.fields.scripted_fail_put)
        with open_source(source) as f:
            data = f.read()
        with self.lock:
            self.objects[key] = data

    def delete(self, key: str) -> None:
        with self.lock:
            self.calls.append(("delete", key))
        self._maybe_fail(self.fields.scripted_fail_delete)
        with self.lock:
            self.objects.pop(key, None)


@destinations.hookimpl
def destinations_register_types(register: Callable[[DestinationType], None]) -> None:
    register(
        DestinationType(
            name="scripted",
            fields=ScriptedFields,
            open_store=ScriptedStore,
            prefix_field="scripted_path_prefix",
            masked_fields=("scripted_key_id",),
            description="test-only",
        )
    )


def install() -> None:
    destinations.register_plugin(sys.modules[__name__], name="tests.scripted")
