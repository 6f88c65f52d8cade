"""The ``azure`` store: azure-storage-blob over a guarded requests transport, and the
mapping of SDK exceptions to :class:`StoreError`. Imported the first time a store is opened."""

from __future__ import annotations

import contextvars
import functools
import logging
import re
import uuid
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, BinaryIO, Final
from urllib.parse import urlsplit

import requests
from azure.core.credentials import AzureSasCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    IncompleteReadError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import (
    BlobBlock,
    BlobClient,
    ContainerClient,
    ContentSettings,
    ExponentialRetry,
    StandardBlobTier,
)
from urllib3.util.retry import Retry

from destinations.plugin import (
    MAX_BODY_CHUNK,
    ByteCounter,
    ProgressCallback,
    Source,
    Store,
    StoreError,
    StoreOptions,
    classify_transport_error,
    current_counter,
    find_refusal,
    open_source,
    part_chunks,
    retry_part,
    sending_with,
    source_size,
    upload_progress,
)
from destinations.requests_guard import GuardedAdapter

from ._fields import AzureFields
from ._metadata import check_content_encoding, check_metadata

__all__ = ["AzureStore", "map_error"]

# Blocks staged at once (threads), at most; also the bound on memory: a block is read into
# memory only when one of these is free, so at most this many blocks of ``part_size``.
_MAX_BLOCK_THREADS = 4

#: Azure's limits for a block blob: committed blocks, and the size of one block.
MAX_BLOCKS: Final = 50_000
MAX_BLOCK_SIZE: Final = 4000 * 1024 * 1024


#: The per-operation keyword that carries a put's byte counter through azure-core's
#: pipeline to the transport (azure-core hands operation keywords no policy consumed to
#: ``HttpTransport.send``).
_COUNTER_KWARG: Final = "destinations_byte_counter"


class _PooledAdapter(GuardedAdapter):
    """A guarded requests adapter with azure-core's settings (no urllib3 retries, 64 KiB
    sends) that counts the body of a request sent with a byte counter."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("blocksize", MAX_BODY_CHUNK)
        super().init_poolmanager(*args, **kwargs)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        counter = current_counter()
        if counter is not None and request.body is not None:
            request.body = counter.body(request.body)  # type: ignore[assignment]
        return super().send(request, *args, **kwargs)


class _CountingTransport(RequestsTransport):  # type: ignore[misc]
    """azure-core's requests transport; a request sent with a byte counter (blob data:
    ``Put Blob``, ``Put Block``, not the ``Put Block List`` XML) has its body counted."""

    def send(self, request: Any, **kwargs: Any) -> Any:
        counter = kwargs.pop(_COUNTER_KWARG, None)
        if counter is not None and (
            request.method != "PUT" or "comp=blocklist" in urlsplit(request.url).query
        ):
            counter = None
        with sending_with(counter):
            return super().send(request, **kwargs)


def _transport(options: StoreOptions, guard_label: str) -> _CountingTransport:
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
    return _CountingTransport(
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


_SAS_SIGNATURE = re.compile(r"([?&]sig=)[^&\s\"']+", re.IGNORECASE)


class _RedactSasSignature(logging.Filter):
    """urllib3 logs each request line at DEBUG, query string included: with a SAS token
    that is its signature (``sig=``), a bearer secret. This filter, on urllib3's connection
    pool logger, replaces the value with ``REDACTED`` before any handler sees it (azure-core's
    own HTTP logging already redacts query parameters)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "sig=" in text.lower():
            record.msg, record.args = _SAS_SIGNATURE.sub(r"\1REDACTED", text), None
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_RedactSasSignature())


def _credential(fields: AzureFields) -> Any:
    """The SAS token (a string the SDK appends to every request URL, and redacts from its
    logs) or the shared key."""
    if fields.azure_sas_token is not None:
        return AzureSasCredential(fields.azure_sas_token.get_secret_value())
    assert fields.azure_account_key is not None
    return {
        "account_name": fields.azure_account_name,
        "account_key": fields.azure_account_key.get_secret_value(),
    }


class AzureStore(Store):
    """One container client (one connection pool) per store, reused across calls."""

    def __init__(self, fields: AzureFields, options: StoreOptions) -> None:
        self.fields = fields
        self.options = options
        self._max_concurrency = max(1, min(options.max_connections, _MAX_BLOCK_THREADS))
        tier = fields.azure_access_tier
        self._tier = None if tier is None else StandardBlobTier(tier)
        self._container = ContainerClient(
            fields.account_url,
            fields.azure_container_name,
            credential=_credential(fields),
            transport=_transport(
                options, "azure_endpoint" if fields.azure_endpoint else "the Azure blob endpoint"
            ),
            retry_policy=_retry_policy(options.retries),
            # upload_blob only sends what is below the threshold: always one Put Blob.
            max_single_put_size=max(0, options.multipart_threshold - 1),
        )

    def put(
        self,
        key: str,
        source: Source,
        *,
        size: int | None,
        content_type: str | None,
        content_encoding: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        progress = upload_progress()  # this context's: blocks are sent from other threads
        encoding = check_content_encoding(content_encoding)
        user_metadata = check_metadata(metadata)
        blob = self._container.get_blob_client(key)
        settings = (
            ContentSettings(content_type=content_type, content_encoding=encoding)
            if content_type or encoding
            else None
        )
        with self._errors("put"), open_source(source) as stream:
            if size is None:
                # The SDK would size a regular file by fstat, ignoring the stream's position.
                size = source_size(stream)
            if size is not None and size < self.options.multipart_threshold:
                counting: dict[str, Any] = {_COUNTER_KWARG: ByteCounter(progress, size)}
                blob.upload_blob(
                    stream,
                    length=size,
                    blob_type="BlockBlob",
                    overwrite=True,
                    content_settings=settings,
                    metadata=user_metadata,
                    standard_blob_tier=self._tier,  # Put Blob: the probe included
                    **counting,
                )
                return
            block_ids = self._stage_blocks(blob, stream, size, progress)
            # Put Block List: overwrites the blob, with the settings Put Blob would carry.
            retry_part(
                functools.partial(
                    blob.commit_block_list,
                    [BlobBlock(block_id) for block_id in block_ids],
                    content_settings=settings,
                    metadata=user_metadata,
                    standard_blob_tier=self._tier,
                ),
                map_error=self._part_error,
            )

    def _block_size(self, size: int | None) -> int:
        block = min(max(1, self.options.part_size), MAX_BLOCK_SIZE)
        if size is not None:
            block = max(block, -(-size // MAX_BLOCKS))
        return block

    def _stage_blocks(
        self, blob: BlobClient, stream: BinaryIO, size: int | None, progress: ProgressCallback
    ) -> list[str]:
        """Stage the source as blocks (Put Block), each through :func:`retry_part` so a
        transient failure re-sends that block alone; at most ``_max_concurrency`` at once.
        The block ids, in order."""
        block_size = self._block_size(size)
        ids: list[str] = []
        in_flight: set[Future[None]] = set()
        with ThreadPoolExecutor(
            max_workers=self._max_concurrency, thread_name_prefix="destinations-azure-block"
        ) as pool:
            try:
                chunks = part_chunks(stream, block_size, size)
                while True:
                    if len(in_flight) >= self._max_concurrency:
                        done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                        for future in done:
                            future.result()  # the first failure stops the upload
                    chunk = next(chunks, None)
                    if chunk is None:
                        break
                    if len(ids) >= MAX_BLOCKS:
                        raise StoreError(
                            "provider_error",
                            f"the stream needs more than {MAX_BLOCKS} blocks of {block_size} "
                            "bytes; raise the part size or pass the size so it can be chosen",
                            provider_code="BlockCountExceedsLimit",
                            transient=False,
                        )
                    # Ids of one length for every block of a blob (the SDK's own form).
                    block_id = f"{uuid.uuid4().int:048d}"
                    ids.append(block_id)
                    send = _BlockSender(blob, block_id, chunk, progress, size)
                    chunk = None  # the sender holds it: one reference, freed when sent
                    context = contextvars.copy_context()  # the delivery's retry policy
                    in_flight.add(
                        pool.submit(context.run, retry_part, send, map_error=self._part_error)
                    )
                    del send
                for future in wait(in_flight).done:
                    future.result()
            except BaseException:
                for future in in_flight:
                    future.cancel()
                raise
        return ids

    def _part_error(self, exc: Exception) -> BaseException:
        if isinstance(exc, AzureError):
            return map_error(exc, self.fields, self.options.timeout)
        return exc

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
        return _ErrorMapper(self.fields, step, self.options.timeout)


class _BlockSender:
    """One Put Block, repeatable: each call sends the block's bytes again.

    Its bytes are counted as they are written (:class:`ByteCounter`); an attempt after a
    failed one reports only bytes past the furthest the block already reported, so a put's
    progress adds up to its size even when a block was sent twice.
    """

    def __init__(
        self,
        blob: BlobClient,
        block_id: str,
        data: bytes,
        progress: ProgressCallback,
        size: int | None,
    ) -> None:
        self._blob, self._block_id, self._data = blob, block_id, data
        self._progress, self._size = progress, size
        self._reported = 0

    def __call__(self) -> None:
        sent = 0

        def report(nbytes: int) -> None:
            nonlocal sent
            sent += nbytes
            if sent > self._reported:
                self._progress(sent - self._reported)
                self._reported = sent

        counting: dict[str, Any] = {_COUNTER_KWARG: ByteCounter(report, self._size)}
        self._blob.stage_block(self._block_id, self._data, length=len(self._data), **counting)


class _ErrorMapper:
    """Context manager turning SDK exceptions into :class:`StoreError` (cause chained)."""

    def __init__(self, fields: AzureFields, step: str, timeout: float) -> None:
        self.fields = fields
        self.step = step
        self.timeout = timeout

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, AzureError):
            raise map_error(exc, self.fields, self.timeout) from exc
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

#: Azure error codes worth another attempt whatever their status: the service is busy or
#: throttling (503 ServerBusy, also for "Ingress/Egress is over the account limit"), it
#: failed or timed out internally (500 InternalError / OperationTimedOut), and checksums
#: Azure computed over a body that arrived corrupted (400 Md5Mismatch / Crc64Mismatch).
TRANSIENT_CODES: Final = frozenset(
    {
        "ServerBusy",
        "OperationTimedOut",
        "InternalError",
        "ServiceUnavailable",
        "Md5Mismatch",
        "Crc64Mismatch",
    }
)

#: Answers with a 5xx status that another attempt cannot fix: the service, or a gateway in
#: front of it, does not implement the request (azurite: 501 ``APINotImplemented``).
PERMANENT_CODES: Final = frozenset({"NotImplemented", "APINotImplemented"})

#: SDK exceptions for a connection dropped after the request went out (reset, closed
#: without an answer, body cut short): nothing is half-written (a blob or block list only
#: becomes visible when its request completes), so repeating the put is safe.
_DROPPED: Final = (ServiceResponseError, IncompleteReadError)


def _transient(code: str | None) -> bool | None:
    """The plugin's word on ``transient`` for an Azure error code, or None for the generic
    rule (HTTP 408/429/5xx transient, anything else permanent)."""
    if code in TRANSIENT_CODES:
        return True
    if code in PERMANENT_CODES:
        return False
    return None


def map_error(exc: AzureError, fields: AzureFields, timeout: float | None = None) -> StoreError:
    """The :class:`StoreError` for an SDK exception. Messages come from codes and field
    values only, never from the exception's text."""
    refusal = find_refusal(exc)
    if refusal is not None:
        return refusal
    if isinstance(exc, HttpResponseError) and exc.response is not None:
        return _http_error(exc, fields)
    if isinstance(exc, ClientAuthenticationError):
        # Raised before sending (AzureSigningError): the key could not sign the request.
        return StoreError(
            "invalid_credentials",
            "the account key cannot sign requests; check azure_account_key",
            provider_code=type(exc).__name__,
        )
    transport = classify_transport_error(
        exc,
        host=_host(fields),
        check="azure_endpoint" if fields.azure_endpoint else "azure_account_name",
        timeout=timeout,
    )
    if transport is not None and not (
        isinstance(exc, _DROPPED) and transport.code == "endpoint_unreachable"
    ):
        return transport
    if isinstance(exc, _DROPPED):
        # Sent, then cut before the answer: azure-core says so by the exception type (the
        # chain below it also holds the requests ConnectionError it was raised from).
        return StoreError(
            "provider_error",
            f"the connection to {_host(fields)} dropped mid-request ({type(exc).__name__}); "
            "nothing was stored, another attempt may succeed",
            provider_code=type(exc).__name__,
            transient=True,
        )
    return StoreError(
        "provider_error",
        f"the request to {_host(fields)} failed ({type(exc).__name__})",
        provider_code=type(exc).__name__,
        transient=False,
    )


def _http_error(exc: HttpResponseError, fields: AzureFields) -> StoreError:
    account = fields.azure_account_name
    container = fields.azure_container_name
    where = f"container {container!r} in storage account {account!r}"
    code = _error_code(exc)
    status = exc.status_code
    detail = str(getattr(exc, "message", "") or "").lower()
    sas = fields.azure_sas_token is not None
    if sas and (
        code in _AUTH_FAILED or (code == "AuthorizationFailure" and "authenticate" in detail)
    ):
        return StoreError(
            "invalid_credentials",
            f"storage account {account!r} rejected azure_sas_token ({code}): it is expired "
            "or not yet valid (se=/st=), revoked, or not signed by this account's key; "
            "generate a new container SAS",
            provider_code=code,
            status=status,
        )
    if sas and (code in _DENIED or (code is None and status == 403)):
        return StoreError(
            "access_denied",
            f"azure_sas_token may not write to {where} ({code or 403}): it needs create, "
            "write and delete permissions (sp=cwd) on this container",
            provider_code=code or "403",
            status=status,
        )
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
            status=status,
        )
    if code == "KeyBasedAuthenticationNotPermitted":
        return StoreError(
            "access_denied",
            f"storage account {account!r} does not allow shared key access; enable "
            "'Allow storage account key access' on the account",
            provider_code=code,
            status=status,
        )
    if code in _DENIED or code == "AuthorizationFailure" or (code is None and status == 403):
        return StoreError(
            "access_denied",
            f"not allowed to write to {where}; check the account's firewall and network "
            "rules allow this service, and that the key may create and delete blobs",
            provider_code=code or "403",
            status=status,
        )
    if code == "ContainerNotFound":
        return StoreError(
            "bucket_not_found",
            f"{where} does not exist; create it or fix azure_container_name",
            provider_code=code,
            status=status,
        )
    if code in ("ResourceNotFound", "AccountNotFound") or (code is None and status == 404):
        return StoreError(
            "bucket_not_found",
            f"{where} was not found at the blob endpoint; check azure_account_name, "
            "azure_container_name and azure_endpoint",
            provider_code=code or "404",
            status=status,
        )
    return StoreError(
        "provider_error",
        f"Azure Blob Storage answered HTTP {status} ({code or 'no error code'}) for {where}",
        provider_code=code or str(status),
        status=status,
        transient=_transient(code),
    )


def _host(fields: AzureFields) -> str:
    parts = urlsplit(fields.account_url)
    return parts.netloc or fields.account_url
