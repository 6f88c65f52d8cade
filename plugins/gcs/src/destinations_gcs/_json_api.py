"""The service-account path: google-cloud-storage over the JSON API.

Imported only when a destination uses ``gcs_service_account_json``, so HMAC users never load
google-cloud-storage (and service-account users never load boto3).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, BinaryIO, ParamSpec, TypeVar

import google.auth.exceptions
import requests
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry, exponential_sleep_generator, retry_target
from google.auth.transport.requests import AuthorizedSession, Request as AuthRequest
from google.cloud import storage
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
from google.oauth2 import service_account

from destinations.plugin import (
    ProgressCallback,
    Source,
    Store,
    StoreError,
    StoreOptions,
    classify_transport_error,
    find_refusal,
    open_source,
    part_retry_policy,
    parts_spent,
    progress_granule,
    read_exactly,
    upload_progress,
)
from destinations.requests_guard import GuardedAdapter

from . import DEFAULT_ENDPOINT

if TYPE_CHECKING:
    from destinations import RetryPolicy

__all__ = ["GcsJsonStore", "chunk_size_for"]

# Resumable upload chunks must be multiples of 256 KiB.
_CHUNK_QUANTUM = 256 * 1024
# google-cloud-storage sends an upload of known size up to 8 MiB as one multipart request;
# without a size it always uses a resumable session, which is what a put at or above the
# threshold must do.
_SINGLE_REQUEST_MAX = 8 * 1024 * 1024
#: JSON API error reasons worth another attempt whatever the status (GCS answers some rate
#: limits with 403). Other errors are transient by status only (core's generic rule).
_TRANSIENT_REASONS = frozenset(
    {"rateLimitExceeded", "userRateLimitExceeded", "backendError", "internalError"}
)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/")
_SAFE_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_PERMISSIONS = "storage.objects.create and storage.objects.delete (e.g. roles/storage.objectUser)"

_P = ParamSpec("_P")
_R = TypeVar("_R")


@functools.lru_cache(maxsize=64)
def _credentials(key_json: str) -> service_account.Credentials:
    """One credentials object per key, so its OAuth token is reused across stores."""
    info = json.loads(key_json)
    credentials: service_account.Credentials = (
        service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=["https://www.googleapis.com/auth/devstorage.read_write"]
        )
    )
    return credentials


def chunk_size_for(part_size: int) -> int:
    """``part_size`` rounded up to a multiple of 256 KiB."""
    return max(_CHUNK_QUANTUM, -(-part_size // _CHUNK_QUANTUM) * _CHUNK_QUANTUM)


class _FromHere(io.RawIOBase):
    """A stream seen from its current position: ``tell()`` starts at 0.

    Resumable uploads need ``tell()`` (and the stream at 0); pipes and sockets have neither.
    Seeking works only if the underlying stream can, or to where it already is.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        try:
            self._origin: int | None = stream.tell() if stream.seekable() else None
        except (OSError, ValueError):
            self._origin = None
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._origin is not None

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence == io.SEEK_END:
            if self._origin is None:
                raise io.UnsupportedOperation("stream is not seekable")
            offset = self._stream.seek(0, io.SEEK_END) - self._origin
        if offset != self._pos:
            if self._origin is None:
                raise io.UnsupportedOperation("stream is not seekable")
            self._stream.seek(self._origin + offset)
        self._pos = offset
        return offset

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Meter:
    """Byte progress of one put, fed by the HTTP session as request bodies are read."""

    def __init__(self, callback: ProgressCallback, size: int | None) -> None:
        self.callback = callback
        self.size = size
        self.granule = progress_granule(size)
        self._lock = threading.Lock()
        self._reported = 0

    def reached(self, position: int) -> None:
        """``position`` bytes of the object have been read for sending (re-sends do not
        count twice: only bytes past the furthest position reported are)."""
        with self._lock:
            new = position - self._reported
            if new <= 0:
                return
            self._reported = position
        self.callback(new)


_active_meter: ContextVar[_Meter | None] = ContextVar("destinations_gcs_meter", default=None)


class _MeteredBody(io.RawIOBase):
    """A request body (bytes) read out at most ``granule`` bytes at a time, telling the meter
    where in the object each read got to: ``start`` + bytes read for a resumable chunk, or
    the same share of ``size`` for a multipart body (its metadata part is a few hundred
    bytes, so the share is within them of the data actually sent)."""

    def __init__(self, body: bytes, meter: _Meter, start: int, scale: float) -> None:
        super().__init__()
        self._body = memoryview(body)
        self._meter = meter
        self._start = start
        self._scale = scale
        self._pos = 0

    def readable(self) -> bool:
        return True

    def __len__(self) -> int:
        return len(self._body)

    def read(self, size: int | None = -1, /) -> bytes:
        left = len(self._body) - self._pos
        n = left if size is None or size < 0 else min(size, left)
        n = min(n, self._meter.granule)
        data = bytes(self._body[self._pos : self._pos + n])
        self._pos += n
        if n:
            self._meter.reached(self._start + int(self._pos * self._scale))
        return data

    def readinto(self, buffer: Any, /) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _MeteredSession(AuthorizedSession):
    """The store's authorized session; while a put runs in this context, each upload
    request's body is metered (google-cloud-storage has no progress callback, and its
    resumable chunks are at least 256 KiB, more than 1 % of a file under 25 MiB)."""

    def send(self, request: Any, **kwargs: Any) -> Any:
        meter = _active_meter.get()
        body = request.body
        if meter is not None and isinstance(body, bytes) and body:
            placed = _placement(request, len(body), meter.size)
            if placed is not None:
                request.body = _MeteredBody(body, meter, *placed)
        return super().send(request, **kwargs)


def _placement(request: Any, length: int, size: int | None) -> tuple[int, float] | None:
    """Where a request body's bytes lie in the object: (start, scale), or None when the
    request carries no object data (the JSON that starts a resumable upload)."""
    match = _CONTENT_RANGE.match(request.headers.get("Content-Range", ""))
    if match is not None:
        return int(match.group(1)), 1.0
    if "uploadType=multipart" in (request.url or "") and size is not None:
        return 0, size / length
    return None


def _at_most(retries: int, transient: Callable[[Exception], bool]) -> Callable[[Exception], bool]:
    """A retry predicate that says yes to at most ``retries`` transient failures."""
    left = retries

    def predicate(exc: Exception) -> bool:
        nonlocal left
        if left <= 0 or not transient(exc):
            return False
        left -= 1
        return True

    return predicate


class _ChunkRetry(Retry):
    """Core's part policy as google-cloud-storage's retry of a resumable upload.

    The library wraps each request of the upload in the retry on its own: the request that
    starts the session, then each chunk. A failed chunk is sent again from the copy of it the
    library holds in memory, with the same ``Content-Range`` (GCS ignores re-sent bytes it
    had already persisted), so one chunk is re-sent, never the object, and the source is
    never read twice. Each wrapped request gets ``attempts`` of its own, as
    :func:`~destinations.plugin.retry_part` gives each part (a predicate counting down would
    share them across the upload): waits drawn from ``[0, min(maximum, initial * 2**n)]``
    (full jitter), none starting that would end ``deadline`` seconds after the request's
    first attempt began.
    """

    def __init__(self, policy: RetryPolicy, transient: Callable[[Exception], bool]) -> None:
        super().__init__(
            predicate=transient,
            initial=policy.initial,
            maximum=policy.maximum,
            multiplier=2.0,
            timeout=policy.deadline,
        )
        self.policy = policy
        self.transient = transient

    def __call__(
        self, func: Callable[_P, _R], on_error: Callable[[Exception], Any] | None = None
    ) -> Callable[_P, _R]:
        policy, transient = self.policy, self.transient

        @functools.wraps(func)
        def with_retries(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            result: _R = retry_target(
                functools.partial(func, *args, **kwargs),
                _at_most(policy.attempts - 1, transient),
                exponential_sleep_generator(policy.initial, policy.maximum, multiplier=2.0),
                timeout=policy.deadline,
                on_error=on_error,
            )
            return result

        return with_retries


class GcsJsonStore(Store):
    """Objects in one bucket through google-cloud-storage, authenticated as a service account.

    Below ``multipart_threshold`` with a known size: one multipart upload request. At or above
    it, or unsized: a resumable upload in ``part_size`` chunks (rounded up to 256 KiB).
    """

    def __init__(
        self,
        *,
        bucket: str,
        service_account_json: str,
        endpoint: str | None,
        options: StoreOptions,
        kms_key_name: str | None = None,
        storage_class: str | None = None,
    ) -> None:
        self.bucket_name = bucket
        self.kms_key_name = kms_key_name
        self.storage_class = storage_class
        self.endpoint = endpoint or DEFAULT_ENDPOINT
        self.options = options
        try:
            credentials = _credentials(service_account_json)
        except (ValueError, KeyError, TypeError) as exc:  # the private key does not parse
            raise StoreError(
                "invalid_credentials",
                "the private_key in gcs_service_account_json cannot be read; paste the key "
                "file exactly as downloaded",
                provider_code=type(exc).__name__,
            ) from None
        # token_uri comes from the user's key file: its session is guarded as well.
        self._token_session = token_session = requests.Session()
        token_adapter = GuardedAdapter(
            guard_label="token_uri in gcs_service_account_json", max_retries=0
        )
        token_session.mount("https://", token_adapter)
        token_session.mount("http://", token_adapter)
        self._http = _MeteredSession(  # type: ignore[no-untyped-call]
            credentials,
            refresh_timeout=options.timeout,
            auth_request=AuthRequest(session=token_session),
        )
        adapter = GuardedAdapter(
            guard_label="the Google Cloud Storage endpoint"
            if self.endpoint == DEFAULT_ENDPOINT
            else "gcs_endpoint",
            pool_connections=1,
            pool_maxsize=options.max_connections,
            max_retries=0,
        )
        self._http.mount("https://", adapter)
        self._http.mount("http://", adapter)
        self._client = storage.Client(
            # None makes the client use a placeholder instead of asking the environment.
            project=json.loads(service_account_json).get("project_id") or None,
            credentials=credentials,
            _http=self._http,
            client_options={"api_endpoint": self.endpoint},
        )
        # google-cloud-storage >= 3.11 fetches bucket metadata (storage.buckets.get) in a
        # background thread on the first object call of every client, for tracing attributes:
        # an extra request per store that needs a permission we do not ask for
        # (googleapis/google-cloud-python#17650). The only opt-outs are a process-wide
        # environment variable or this per-client attribute, which the library itself treats
        # as optional; a constructor flag is proposed upstream (#18203).
        if getattr(self._client, "_bucket_metadata_cache", None) is not None:
            self._client._bucket_metadata_cache = None
        self._bucket = self._client.bucket(bucket)
        self._chunk_size = chunk_size_for(options.part_size)
        self._timeout = (options.timeout, options.timeout)

    def _retry(self) -> Retry | None:
        """At most ``options.retries`` retries of transient failures within one call."""
        if self.options.retries <= 0:
            return None
        predicate = _at_most(self.options.retries, lambda e: self._error(e, "retry").transient)
        return Retry(predicate=predicate, initial=0.5, maximum=8.0, timeout=None)

    def _chunk_retry(self) -> Retry | None:
        """The retry of a resumable upload's requests: core's part policy within a delivery
        (each chunk retried alone, see :class:`_ChunkRetry`), ``options.retries`` outside."""
        policy = part_retry_policy()
        if policy is None:
            return self._retry()
        if policy.attempts <= 1:
            return None
        return _ChunkRetry(policy, self._chunk_transient)

    def _chunk_transient(self, exc: Exception) -> bool:
        # A checksum mismatch is reported on the final chunk of an object already finalized
        # with the wrong bytes: sending that chunk again cannot mend it, the whole object can.
        return not isinstance(exc, DataCorruption) and self._error(exc, "put").transient

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
        blob = self._new_blob(key)
        if content_encoding:
            blob.content_encoding = content_encoding
        if metadata:
            blob.metadata = dict(metadata)
        single = size if size is not None and size < self.options.multipart_threshold else None
        try:
            with open_source(source) as stream, self._metering(size):
                if single is not None:
                    body = read_exactly(stream, single)
                    blob.upload_from_file(
                        io.BytesIO(body),
                        size=single,
                        content_type=content_type,
                        timeout=self._timeout,
                        retry=self._retry(),
                    )
                else:
                    big = size is not None and size > _SINGLE_REQUEST_MAX
                    blob.upload_from_file(
                        io.BufferedReader(_FromHere(stream), buffer_size=_CHUNK_QUANTUM),
                        size=size if big else None,
                        content_type=content_type,
                        timeout=self._timeout,
                        retry=self._chunk_retry(),
                    )
        except StoreError:
            raise
        except Exception as exc:
            error = self._error(exc, "put")
            if single is None and not isinstance(exc, DataCorruption):
                # Each chunk was retried with core's part policy: not the whole object again.
                raise parts_spent(error) from exc
            raise error from exc

    def _new_blob(self, key: str) -> storage.Blob:
        """A blob carrying the destination's CMEK key (``kmsKeyName`` on the upload URL) and
        storage class (``storageClass`` in the object resource sent with the upload): every
        put, the verification probe included."""
        blob = self._bucket.blob(key, chunk_size=self._chunk_size, kms_key_name=self.kms_key_name)
        if self.storage_class is not None:
            blob.storage_class = self.storage_class
        return blob

    @contextlib.contextmanager
    def _metering(self, size: int | None) -> Iterator[None]:
        token = _active_meter.set(_Meter(upload_progress(), size))
        try:
            yield
        finally:
            _active_meter.reset(token)

    def delete(self, key: str) -> None:
        try:
            self._bucket.blob(key).delete(timeout=self._timeout, retry=self._retry())
        except api_exceptions.NotFound:
            return
        except Exception as exc:
            raise self._error(exc, "delete") from exc

    def close(self) -> None:
        self._client.close()
        self._token_session.close()

    def _error(self, exc: Exception, op: str) -> StoreError:
        """Messages are built from status codes and field names, never from ``str(exc)``."""
        refusal = find_refusal(exc)
        if refusal is not None:
            return refusal
        if isinstance(exc, api_exceptions.RetryError) and isinstance(exc.cause, Exception):
            exc = exc.cause
        where = f"Google Cloud Storage at {self.endpoint}"
        name = type(exc).__name__
        if isinstance(exc, google.auth.exceptions.RefreshError):
            return StoreError(
                "invalid_credentials",
                "Google did not issue a token for the service account in "
                "gcs_service_account_json; the key may be deleted, disabled or not this "
                "account's: create a new key and paste it",
                provider_code=_refresh_code(exc),
                transient=False,
            )
        if isinstance(exc, google.auth.exceptions.TransportError):
            token = "the token endpoint (token_uri) of the service account"
            return classify_transport_error(
                exc, host=token, check="token_uri", timeout=self.options.timeout
            ) or StoreError(
                "endpoint_unreachable",
                f"could not reach {token}; check that it is reachable from this server",
                provider_code=name,
            )
        if isinstance(exc, api_exceptions.GoogleAPICallError | InvalidResponse):
            return self._status_error(exc, op)
        if isinstance(exc, DataCorruption):
            return StoreError(
                "provider_error",
                f"the checksum {where} computed does not match the bytes sent; retry",
                provider_code=name,
                transient=True,  # corrupted in transit: the same bytes again may arrive whole
            )
        transport = classify_transport_error(
            exc, host=where, check="gcs_endpoint", timeout=self.options.timeout
        )
        if transport is not None:
            return transport
        return StoreError(
            "provider_error",
            f"the request to {where} failed ({name})",
            provider_code=name,
        )

    def _status_error(self, exc: Exception, op: str) -> StoreError:
        where = f"Google Cloud Storage at {self.endpoint}"
        status, code = _status_and_code(exc)
        if code in _TRANSIENT_REASONS:
            return StoreError(
                "provider_error",
                f"{where} asked to slow down or failed on its side (HTTP {status or '?'} "
                f"{code}); another attempt may succeed",
                provider_code=code,
                status=status,
                transient=True,
            )
        if status == 401:
            return StoreError(
                "invalid_credentials",
                f"{where} rejected the service account's token; check gcs_service_account_json",
                provider_code=code,
                status=status,
                transient=False,
            )
        if status == 403:
            return StoreError(
                "access_denied",
                f"the service account may not write to bucket {self.bucket_name!r}: grant it "
                f"{_PERMISSIONS} on the bucket",
                provider_code=code,
                status=status,
                transient=False,
            )
        if status == 404 and op == "put":
            return StoreError(
                "bucket_not_found",
                f"bucket {self.bucket_name!r} does not exist; check gcs_bucket_name (buckets "
                "are never created automatically)",
                provider_code=code,
                status=status,
                transient=False,
            )
        return StoreError(
            "provider_error",
            f"{where} refused the request for bucket {self.bucket_name!r}: HTTP "
            f"{status or '?'} {code}",
            provider_code=code,
            status=status,  # transient by status: 408, 429, 5xx (core's generic rule)
        )


def _status_and_code(exc: Exception) -> tuple[int | None, str]:
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        status = int(exc.code) if exc.code is not None else None
        reason = exc.reason
        errors = list(exc.errors) or _response_errors(exc.response)
        if not reason and errors:
            first = errors[0]
            reason = first.get("reason") if isinstance(first, Mapping) else None
        code = reason if isinstance(reason, str) and _SAFE_CODE.fullmatch(reason) else None
        return status, code or (str(status) if status else type(exc).__name__)
    if isinstance(exc, InvalidResponse):
        status = getattr(exc.response, "status_code", None)
        return status, str(status) if status else type(exc).__name__
    return None, type(exc).__name__


def _response_errors(response: Any) -> list[Any]:
    """``error.errors`` of a JSON API error body (uploads raise without parsing it)."""
    try:
        errors = response.json()["error"]["errors"]
    except Exception:  # no response, not JSON, or another shape: no reason to report
        return []
    return errors if isinstance(errors, list) else []


def _refresh_code(exc: google.auth.exceptions.RefreshError) -> str:
    for arg in exc.args[1:]:
        if isinstance(arg, Mapping):
            error = arg.get("error")
            if isinstance(error, str) and _SAFE_CODE.fullmatch(error):
                return error
    return "RefreshError"
