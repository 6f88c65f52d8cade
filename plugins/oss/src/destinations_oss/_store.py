"""The ``oss`` store: oss2 over a guarded requests session, hand-driven multipart uploads,
and the mapping of oss2/requests failures to :class:`StoreError`. Imported the first time a
store is opened."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO, Final
from urllib.parse import urlsplit

import oss2
import oss2.exceptions
import oss2.models
import requests
from urllib3.util.retry import Retry

from destinations.plugin import (
    ByteCounter,
    MiB,
    Source,
    Store,
    StoreError,
    StoreOptions,
    classify_transport_error,
    current_counter,
    find_refusal,
    open_source,
    read_up_to,
    retry_part,
    sending_with,
    upload_progress,
)
from destinations.requests_guard import GuardedAdapter

from ._fields import _HOST_RE, OssFields, default_endpoint, signing_region
from ._metadata import check_content_encoding, metadata_headers

__all__ = ["MAX_PARTS", "MAX_PART_SIZE", "MIN_PART_SIZE", "OssStore", "map_error"]

log = logging.getLogger("destinations.oss")

MIN_PART_SIZE: Final = 100 * 1024  # OSS rejects smaller non-final parts (EntityTooSmall)
MAX_PART_SIZE: Final = 5 * 1024 * MiB
MAX_PARTS: Final = 10_000

# EC codes OSS returns for a V4 signature scoped to a region the bucket/endpoint is not in.
_REGION_ECS = frozenset({"0002-00000226", "0002-00000228"})

#: OSS error codes worth another attempt whatever their status: throttling and a busy
#: service (the 503 family), internal failures, and ``RequestTimeout``, which OSS answers
#: with HTTP 400 when the body did not arrive in time (the generic rule would call that
#: permanent).
TRANSIENT_CODES: Final = frozenset(
    {
        "ServerBusy",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "TotalQpsLimitExceeded",
        "UploadTrafficRateLimitExceeded",
        "DownloadTrafficRateLimitExceeded",
        "MetaOperationQpsLimitExceeded",
        "ActiveRequestLimitExceeded",
        "SlowDown",
        "Throttling",
    }
)

#: 5xx answers another attempt cannot fix: the service (or a gateway in front of it) does
#: not implement the request.
PERMANENT_CODES: Final = frozenset({"NotImplemented"})


class _ShortSourceError(Exception):
    def __init__(self, got: int, expected: int) -> None:
        super().__init__(got, expected)
        self.got, self.expected = got, expected


class _ExactReader:
    """Exactly ``size`` bytes of ``stream``, streamed; a short stream raises, never hangs
    (nor sends a body shorter than its Content-Length).

    ``len`` tells oss2 and requests the Content-Length without seeking the stream.
    """

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self._stream, self.len, self._left = stream, size, size

    def read(self, amt: int | None = None) -> bytes:
        want = self._left if amt is None or amt < 0 else min(amt, self._left)
        if want == 0:
            return b""
        data = read_up_to(self._stream, want)  # oss2's CRC adapter assumes full reads
        if len(data) < want:
            raise _ShortSourceError(self.len - self._left + len(data), self.len)
        self._left -= len(data)
        return data


def _chunks(stream: BinaryIO, part_size: int, size: int | None) -> Iterator[bytes]:
    """The stream as ``part_size`` chunks (the last may be shorter), one in memory at a time."""
    sent = 0
    while size is None or sent < size:
        want = part_size if size is None else min(part_size, size - sent)
        chunk = read_up_to(stream, want)
        got = len(chunk)
        sent += got
        if size is not None and got < want:
            raise _ShortSourceError(sent, size)
        if chunk:
            yield chunk
            chunk = b""  # drop it before reading the next one
        if got < want:
            return


class _CountingAdapter(GuardedAdapter):
    """A guarded requests adapter that counts the body of each PUT (PutObject, UploadPart)
    sent while a put's byte counter is current; other requests (initiate, the complete XML,
    abort, delete) are not blob data."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        counter = current_counter()
        if counter is not None and request.method == "PUT" and request.body is not None:
            request.body = counter.body(request.body)  # type: ignore[assignment]
        return super().send(request, *args, **kwargs)


class OssStore(Store):
    """One ``oss2.Bucket`` on a pooled ``oss2.Session``, reused across calls."""

    def __init__(self, fields: OssFields, options: StoreOptions) -> None:
        self.options = options
        self.bucket_name = fields.oss_bucket_name
        self.region_id = fields.oss_region_id
        self._upload_headers = fields.upload_headers()
        self.endpoint = fields.oss_endpoint or default_endpoint(fields.oss_region_id)
        self.host = urlsplit(self.endpoint).hostname or self.endpoint
        retries = max(0, options.retries)
        retry = Retry(
            total=retries,
            connect=retries,
            read=False,
            status=0,
            other=0,
            redirect=0,
            backoff_factor=0,
            raise_on_status=False,
        )
        pool = max(1, options.max_connections)
        adapter = _CountingAdapter(
            guard_label="oss_endpoint" if fields.oss_endpoint else "the OSS endpoint",
            pool_connections=pool,
            pool_maxsize=pool,
            max_retries=retry,
        )
        self._session = oss2.Session(adapter=adapter)
        auth = oss2.AuthV4(fields.oss_access_key, fields.oss_secret_key.get_secret_value())
        try:
            self._bucket = oss2.Bucket(
                auth,
                self.endpoint,
                self.bucket_name,
                session=self._session,
                connect_timeout=options.timeout,
                region=signing_region(self.region_id),
                app_name="destinations-oss",
            )
        except oss2.exceptions.OssError as exc:
            self.close()
            raise self._error(exc) from exc

    # -- the two primitives ---------------------------------------------------------------
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
        counter = ByteCounter(upload_progress(), size)
        headers = metadata_headers(metadata)
        headers.update(self._upload_headers)  # encryption, storage class: the probe too
        encoding = check_content_encoding(content_encoding)
        if content_type:
            headers["Content-Type"] = content_type
        if encoding:
            headers["Content-Encoding"] = encoding
        try:
            # Every request of this put is sent from this thread, in this context.
            with sending_with(counter), open_source(source) as stream:
                if size is not None and size < self.options.multipart_threshold:
                    self._bucket.put_object(
                        key, _ExactReader(stream, size), headers=headers or None
                    )
                else:
                    self._put_in_parts(key, stream, size, headers or None)
        except (oss2.exceptions.OssError, requests.RequestException, _ShortSourceError) as exc:
            raise self._error(exc) from exc

    def delete(self, key: str) -> None:
        try:
            self._bucket.delete_object(key)
        except oss2.exceptions.NoSuchKey:
            return  # OSS itself answers 204 for a missing key; some gateways say 404
        except (oss2.exceptions.OssError, requests.RequestException) as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        session = getattr(self, "_session", None)
        if session is not None:
            session.session.close()

    # -- multipart ------------------------------------------------------------------------
    def _part_size(self, size: int | None) -> int:
        part = min(max(self.options.part_size, MIN_PART_SIZE), MAX_PART_SIZE)
        if size is not None:
            part = max(part, -(-size // MAX_PARTS))
        return part

    def _put_in_parts(
        self, key: str, stream: BinaryIO, size: int | None, headers: dict[str, str] | None
    ) -> None:
        part_size = self._part_size(size)
        chunks = _chunks(stream, part_size, size)
        chunk = next(chunks, b"")
        if not chunk or (size is None and len(chunk) < part_size):
            self._bucket.put_object(key, chunk, headers=headers)  # it all fits in one part
            return
        upload_id: str = self._bucket.init_multipart_upload(key, headers=headers).upload_id
        try:
            parts = []
            number = 0
            while chunk:
                number += 1
                if number > MAX_PARTS:
                    raise StoreError(
                        "provider_error",
                        f"the stream needs more than {MAX_PARTS} parts of {part_size} bytes; "
                        "raise the part size or pass the size so it can be chosen",
                        provider_code="TooManyParts",
                        transient=False,
                    )
                # A transient failure re-sends this part alone (core's policy, contract v2).
                result = retry_part(
                    functools.partial(self._bucket.upload_part, key, upload_id, number, chunk),
                    map_error=self._part_error,
                )
                parts.append(
                    oss2.models.PartInfo(number, result.etag, size=len(chunk), part_crc=result.crc)
                )
                chunk = b""  # one part in memory, not two, while the next is read
                chunk = next(chunks, b"")
            retry_part(
                functools.partial(self._bucket.complete_multipart_upload, key, upload_id, parts),
                map_error=self._part_error,
            )
        except BaseException:
            self._abort(key, upload_id)
            raise

    def _part_error(self, exc: Exception) -> BaseException:
        if isinstance(exc, (oss2.exceptions.OssError, requests.RequestException)):
            return self._error(exc)
        return exc

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._bucket.abort_multipart_upload(key, upload_id)
        except (oss2.exceptions.OssError, requests.RequestException) as exc:
            # The original failure is what matters; a lifecycle rule can reap the parts.
            log.warning(
                "could not abort multipart upload of %r in bucket %r (%s); its parts stay "
                "until a lifecycle rule removes them",
                key,
                self.bucket_name,
                _brief(exc),
            )

    # -- errors -------------------------------------------------------------------------------
    def _error(self, exc: BaseException) -> StoreError:
        refusal = find_refusal(exc)
        if refusal is not None:
            return refusal
        return map_error(
            exc,
            bucket=self.bucket_name,
            region_id=self.region_id,
            host=self.host,
            timeout=self.options.timeout,
        )


def _brief(exc: BaseException) -> str:
    """A short, secret-free description: the OSS code or the exception type."""
    code = getattr(exc, "code", None)
    return f"{code}" if isinstance(code, str) and code else type(exc).__name__


def _connection_error(exc: BaseException, host: str, timeout: float | None) -> StoreError:
    transport = classify_transport_error(exc, host=host, check="oss_endpoint", timeout=timeout)
    if transport is not None:
        return transport
    name = type(exc).__name__
    return StoreError(
        "provider_error",
        f"the request to {host} failed ({name})",
        provider_code=name,
        transient=False,
    )


def _is_wrong_region(status: int, code: str, message: str, ec: str) -> bool:
    if status == 301 or code in ("PermanentRedirect", "InvalidRegion"):
        return True
    if ec in _REGION_ECS:
        return True
    text = message.lower()
    if code == "AccessDenied" and "specified endpoint" in text:
        return True
    about_signing = ("InvalidArgument", "SignatureDoesNotMatch", "AuthorizationHeaderMalformed")
    return code in about_signing and "region" in text


def map_error(
    exc: BaseException,
    *,
    bucket: str,
    region_id: str,
    host: str,
    timeout: float | None = None,
) -> StoreError:
    """Map an oss2/requests failure to core's codes. Messages never include ``str(exc)``:
    oss2 puts request ids and response details there."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, _ShortSourceError):
        return StoreError(
            "provider_error",
            f"the source gave {exc.got} bytes where {exc.expected} were announced; nothing "
            "was stored",
            provider_code="IncompleteBody",
            transient=False,
        )
    if isinstance(exc, oss2.exceptions.RequestError):
        return _connection_error(exc.exception, host, timeout)
    if isinstance(exc, requests.RequestException):
        return _connection_error(exc, host, timeout)
    if isinstance(exc, oss2.exceptions.InconsistentError):
        return StoreError(
            "provider_error",
            "the CRC-64 OSS computed differs from the bytes sent (corrupted in transit); "
            "retry the upload",
            provider_code="InconsistentError",
            transient=True,
        )
    if not isinstance(exc, oss2.exceptions.ServerError):
        name = type(exc).__name__
        return StoreError(
            "provider_error",
            f"oss2 refused the request ({name})",
            provider_code=name,
            transient=False,
        )
    status = int(exc.status)
    details: Mapping[str, Any] = exc.details or {}
    code = str(details.get("Code") or "")
    message = str(details.get("Message") or "")
    ec = str(details.get("EC") or exc.headers.get("x-oss-ec", "") or "")
    provider_code = code or f"HTTP{status}"
    if _is_wrong_region(status, code, message, ec):
        hint = ""
        named = str(details.get("Endpoint") or "")
        if _HOST_RE.fullmatch(named):
            hint = f" (OSS says to use {named})"
        return StoreError(
            "wrong_region",
            f"bucket {bucket!r} is not served by {host} in region {region_id}{hint}; set "
            "oss_region_id to the bucket's region (and oss_endpoint, if set, to an endpoint "
            "of that region)",
            provider_code=provider_code,
            status=status,
        )
    if code == "InvalidAccessKeyId":
        return StoreError(
            "invalid_credentials",
            "OSS does not know oss_access_key (deleted, disabled or mistyped); use an active "
            "AccessKey ID",
            provider_code=code,
            status=status,
        )
    if code == "SignatureDoesNotMatch":
        return StoreError(
            "invalid_credentials",
            "the request signature did not match: oss_secret_key is not the secret of "
            "oss_access_key; paste the AccessKey secret again",
            provider_code=code,
            status=status,
        )
    if code == "NoSuchBucket":
        return StoreError(
            "bucket_not_found",
            f"bucket {bucket!r} does not exist (in region {region_id}); create it or fix "
            "oss_bucket_name",
            provider_code=code,
            status=status,
        )
    if code == "AccessDenied":
        return StoreError(
            "access_denied",
            f"the credentials may not write to bucket {bucket!r}; grant them oss:PutObject "
            "and oss:DeleteObject on the path prefix (RAM policy or bucket policy)",
            provider_code=code,
            status=status,
        )
    if code in ("SecondLevelDomainForbidden", "NonStandardHostForbidden"):
        # Addressing style, not region: OSS wants <bucket>.<oss endpoint> as the host.
        return StoreError(
            "provider_error",
            f"OSS refuses requests addressed to {host}; leave oss_endpoint empty or set it to "
            "an OSS endpoint such as https://oss-cn-hangzhou-internal.aliyuncs.com",
            provider_code=code,
            status=status,
        )
    if code == "RequestTimeTooSkewed":
        return StoreError(
            "provider_error",
            "this server's clock is more than 15 minutes off; synchronise it (NTP)",
            provider_code=code,
            status=status,
        )
    what = f"{status} {code}".strip() if code else f"HTTP {status}"
    transient = True if code in TRANSIENT_CODES else False if code in PERMANENT_CODES else None
    return StoreError(
        "provider_error",
        f"OSS answered {what}",
        provider_code=provider_code,
        status=status,
        transient=transient,
    )
