"""The ``azure`` type: a container in Azure Blob Storage, written with the account's shared key.

Blobs are block blobs. Below ``StoreOptions.multipart_threshold`` a blob is one ``Put Blob``;
at or above it, or when the size is unknown, it is staged as blocks of ``part_size``
(``Put Block`` + ``Put Block List``), so memory stays bounded by a few blocks whatever the
file size. ``azure_endpoint`` overrides the blob service URL (sovereign clouds, private
endpoints, azurite's ``http://127.0.0.1:10000/devstoreaccount1``); by default it is
``https://<account>.blob.core.windows.net``.

The account key never leaves the SDK's signing policy: error messages are built from
Azure's error codes, never from ``str(exception)`` (which carries request URLs and headers),
and the SDK's HTTP logging redacts ``Authorization``.
"""

from __future__ import annotations

import base64
import binascii
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import requests
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import ContainerClient, ContentSettings, ExponentialRetry
from pydantic import BaseModel, ConfigDict, Field, field_validator
from urllib3.util.retry import Retry

from destinations.plugin import (
    DestinationType,
    InvalidDestination,
    SecretStr,
    Source,
    Store,
    StoreError,
    StoreOptions,
    find_refusal,
    hookimpl,
    open_source,
    source_size,
)
from destinations.requests_guard import GuardedAdapter

__all__ = ["AzureFields", "AzureStore", "destinations_register_types"]

_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")
_CONTAINER_NAME = re.compile(r"[a-z0-9](?:-?[a-z0-9])*")

# Per-part upload threads. Unsized streams buffer one block per thread, so this also bounds
# memory: at most this many blocks of ``part_size`` in flight.
_MAX_BLOCK_THREADS = 4


class AzureFields(BaseModel):
    """Where and as whom to write in Azure Blob Storage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    azure_account_name: str = Field(
        description="Storage account name: 3 to 24 lowercase letters and digits."
    )
    azure_account_key: SecretStr = Field(
        description="One of the storage account's access keys (key1 or key2), base64."
    )
    azure_container_name: str = Field(
        description="Container to write to: 3 to 63 lowercase letters, digits and hyphens."
    )
    azure_path_prefix: str = Field(
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
        value = value.strip()
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            parts = None
        problem = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            problem = "must be an http(s) URL such as https://myaccount.blob.core.windows.net"
        elif parts.username is not None or parts.password is not None:
            problem = "must not contain a user name or password"
        elif parts.query or parts.fragment:
            problem = "must not contain a query string or fragment (no SAS tokens)"
        if problem:
            raise InvalidDestination({"azure_endpoint": problem})
        return value.rstrip("/")

    @property
    def account_url(self) -> str:
        return self.azure_endpoint or f"https://{self.azure_account_name}.blob.core.windows.net"


class _PooledAdapter(GuardedAdapter):
    """A guarded requests adapter with azure-core's settings: no urllib3 retries, 64 KiB
    sends."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("blocksize", 64 * 1024)
        super().init_poolmanager(*args, **kwargs)


def _transport(options: StoreOptions, guard_label: str) -> RequestsTransport:
    session = requests.Session()
    # The SDK's retry policy is the only one; urllib3 must not retry underneath it.
    adapter = _PooledAdapter(
        guard_label=guard_label,
        pool_connections=1,
        pool_maxsize=max(1, options.max_connections),
        max_retries=Retry(total=False, redirect=False, raise_on_status=False),
    )
    for scheme in ("http://", "https://"):
        session.mount(scheme, adapter)
    return RequestsTransport(
        session=session,
        session_owner=True,
        connection_timeout=options.timeout,
        read_timeout=options.timeout,
    )


def _retry_policy(retries: int) -> ExponentialRetry:
    # retry_total alone is not enough: the connect/read/status budgets default to 3 each and
    # the policy stops at whichever runs out first, so every budget is set to `retries`.
    # Backoff 1 s, then 1 + 2^n s (±1 s jitter) instead of the SDK's 15 s start: core owns
    # the retry policy and its deadlines.
    n = max(0, retries)
    return ExponentialRetry(
        initial_backoff=1,
        increment_base=2,
        random_jitter_range=1,
        retry_total=n,
        retry_connect=n,
        retry_read=n,
        retry_status=n,
    )


class AzureStore(Store):
    """One container client (one connection pool) per store, reused across calls."""

    def __init__(self, fields: AzureFields, options: StoreOptions) -> None:
        self.fields = fields
        self.options = options
        self._max_concurrency = max(1, min(options.max_connections, _MAX_BLOCK_THREADS))
        self._container = ContainerClient(
            fields.account_url,
            fields.azure_container_name,
            credential={
                "account_name": fields.azure_account_name,
                "account_key": fields.azure_account_key.get_secret_value(),
            },
            transport=_transport(
                options, "azure_endpoint" if fields.azure_endpoint else "the Azure blob endpoint"
            ),
            retry_policy=_retry_policy(options.retries),
            # Put Blob up to threshold - 1 bytes; blocks from the threshold on.
            max_single_put_size=max(0, options.multipart_threshold - 1),
            max_block_size=max(1, options.part_size),
            # Seekable sources are read straight into each Put Block, not buffered whole.
            min_large_block_upload_threshold=1,
        )

    def put(self, key: str, source: Source, *, size: int | None, content_type: str | None) -> None:
        blob = self._container.get_blob_client(key)
        settings = ContentSettings(content_type=content_type) if content_type else None
        with self._errors("put"), open_source(source) as stream:
            if size is None:
                # The SDK would size a regular file by fstat, ignoring the stream's position.
                size = source_size(stream)
            blob.upload_blob(
                stream,
                length=size,
                blob_type="BlockBlob",
                overwrite=True,
                content_settings=settings,
                max_concurrency=self._max_concurrency,
            )

    def delete(self, key: str) -> None:
        blob = self._container.get_blob_client(key)
        try:
            with self._errors("delete"):
                blob.delete_blob(delete_snapshots="include")
        except StoreError as exc:
            if exc.provider_code != "BlobNotFound":
                raise

    def close(self) -> None:
        self._container.close()

    def _errors(self, step: str) -> _ErrorMapper:
        return _ErrorMapper(self.fields, step)


class _ErrorMapper:
    """Context manager turning SDK exceptions into :class:`StoreError` (cause chained)."""

    def __init__(self, fields: AzureFields, step: str) -> None:
        self.fields = fields
        self.step = step

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, AzureError):
            raise map_error(exc, self.fields) from exc
        if exc is not None and not isinstance(exc, StoreError):
            refusal = find_refusal(exc)
            if refusal is not None:
                raise refusal from exc


def _error_code(exc: HttpResponseError) -> str | None:
    headers = getattr(exc.response, "headers", None) or {}
    code = headers.get("x-ms-error-code")
    if code:
        return str(code)
    # Set by azure-storage's error processing, from the body when the header is missing.
    parsed = getattr(exc, "error_code", None)
    if parsed is None:
        return None
    return str(getattr(parsed, "value", parsed))


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps: azure ``inner_exception``, ``__cause__``, requests'
    and urllib3's wrapped reasons."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [
            getattr(current, "inner_exception", None),
            getattr(current, "reason", None),
            current.__cause__,
            current.__context__,
            *current.args,
        ]
        todo.extend(e for e in nested if isinstance(e, BaseException))


def _is_tls(exc: BaseException) -> bool:
    return any(
        isinstance(e, (ssl.SSLError, ssl.CertificateError, requests.exceptions.SSLError))
        for e in _causes(exc)
    )


def _is_timeout(exc: BaseException) -> bool:
    timeouts = (
        ServiceRequestTimeoutError,
        ServiceResponseTimeoutError,
        requests.exceptions.Timeout,
        socket.timeout,
        TimeoutError,
    )
    return any(isinstance(e, timeouts) for e in _causes(exc))


_AUTH_FAILED = frozenset({"AuthenticationFailed", "InvalidAuthenticationInfo"})
_DENIED = frozenset(
    {
        "AuthorizationPermissionMismatch",
        "InsufficientAccountPermissions",
        "AuthorizationSourceIPMismatch",
        "AuthorizationProtocolMismatch",
        "AuthorizationResourceTypeMismatch",
        "AuthorizationServiceMismatch",
        "KeyBasedAuthenticationNotPermitted",
        "AccountIsDisabled",
    }
)


def map_error(exc: AzureError, fields: AzureFields) -> StoreError:
    """The :class:`StoreError` for an SDK exception. Messages come from codes and field
    values only, never from the exception's text."""
    refusal = find_refusal(exc)
    if refusal is not None:
        return refusal
    account = fields.azure_account_name
    container = fields.azure_container_name
    where = f"container {container!r} in storage account {account!r}"
    if isinstance(exc, HttpResponseError) and exc.response is not None:
        code = _error_code(exc)
        status = exc.status_code
        detail = str(getattr(exc, "message", "") or "").lower()
        if code in _AUTH_FAILED or (
            code == "AuthorizationFailure" and "failed to authenticate" in detail
        ):
            # Real Azure answers a bad signature with AuthenticationFailed; azurite (and
            # Azure for a malformed header) with AuthorizationFailure "Server failed to
            # authenticate the request". A firewall denial is AuthorizationFailure too, but
            # says "not authorized to perform this operation".
            return StoreError(
                "invalid_credentials",
                f"storage account {account!r} rejected the account key; check "
                "azure_account_key (key1 or key2 of that account) and azure_account_name",
                provider_code=code,
            )
        if code == "KeyBasedAuthenticationNotPermitted":
            return StoreError(
                "access_denied",
                f"storage account {account!r} does not allow shared key access; enable "
                "'Allow storage account key access' on the account",
                provider_code=code,
            )
        if code in _DENIED or code == "AuthorizationFailure" or (code is None and status == 403):
            return StoreError(
                "access_denied",
                f"not allowed to write to {where}; check the account's firewall and network "
                "rules allow this service, and that the key may create and delete blobs",
                provider_code=code or "403",
            )
        if code == "ContainerNotFound":
            return StoreError(
                "bucket_not_found",
                f"{where} does not exist; create it or fix azure_container_name",
                provider_code=code,
            )
        if code in ("ResourceNotFound", "AccountNotFound") or (code is None and status == 404):
            return StoreError(
                "bucket_not_found",
                f"{where} was not found at the blob endpoint; check azure_account_name, "
                "azure_container_name and azure_endpoint",
                provider_code=code or "404",
            )
        return StoreError(
            "provider_error",
            f"Azure Blob Storage answered HTTP {status} ({code or 'no error code'}) for "
            f"{where}",
            provider_code=code or str(status),
        )
    if isinstance(exc, ClientAuthenticationError):
        # Raised before sending (AzureSigningError): the key could not sign the request.
        return StoreError(
            "invalid_credentials",
            "the account key cannot sign requests; check azure_account_key",
            provider_code=type(exc).__name__,
        )
    if _is_timeout(exc):
        return StoreError(
            "timeout",
            f"no answer from {_host(fields)} in time; check the endpoint is reachable from "
            "this service",
            provider_code=type(exc).__name__,
        )
    if _is_tls(exc):
        return StoreError(
            "tls_error",
            f"TLS handshake with {_host(fields)} failed (certificate or protocol); check "
            "azure_endpoint, or the server's certificate",
            provider_code=type(exc).__name__,
        )
    if isinstance(exc, ServiceRequestError):
        return StoreError(
            "endpoint_unreachable",
            f"cannot connect to {_host(fields)}; check azure_account_name"
            + (" and azure_endpoint" if fields.azure_endpoint else "")
            + " and that the endpoint is reachable from this service",
            provider_code=type(exc).__name__,
        )
    return StoreError(
        "provider_error",
        f"the request to {_host(fields)} failed ({type(exc).__name__}), e.g. the connection "
        "dropped mid-request",
        provider_code=type(exc).__name__,
    )


def _host(fields: AzureFields) -> str:
    parts = urlsplit(fields.account_url)
    return parts.netloc or fields.account_url


@hookimpl
def destinations_register_types(register: Callable[[DestinationType], None]) -> None:
    register(
        DestinationType(
            name="azure",
            fields=AzureFields,
            open_store=AzureStore,
            prefix_field="azure_path_prefix",
            description="A container in Azure Blob Storage (storage account shared key).",
            endpoint_fields=("azure_endpoint",),
        )
    )
