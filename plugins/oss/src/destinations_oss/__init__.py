"""The ``oss`` type: an Alibaba Cloud OSS bucket, through Alibaba's own SDK (``oss2``).

Signing: V4 (``OSS4-HMAC-SHA256``, what Alibaba recommends), scoped to the region
``oss_region_id`` names without its ``oss-`` prefix (``oss-cn-hangzhou`` signs for
``cn-hangzhou``). Endpoint: ``https://<oss_region_id>.aliyuncs.com`` unless ``oss_endpoint``
overrides it (private/internal endpoints, test servers).

Uploads: a known size below ``multipart_threshold`` is one PutObject streamed from the source.
From the threshold on, or when the size is unknown, a multipart upload done by hand —
InitiateMultipartUpload, one UploadPart per ``part_size`` chunk read one at a time,
CompleteMultipartUpload, AbortMultipartUpload on any failure — so memory stays at one part and
streams of unknown length work (oss2's ``resumable_upload`` needs a file name and a size). An
unsized stream that ends within its first part is sent as one PutObject instead. oss2's CRC-64
check runs on every put, part and completion.

Timeouts: oss2 passes ``connect_timeout`` to requests as one number, which requests applies
both to connecting and to every socket read/write wait; it is ``StoreOptions.timeout``.

Retries: oss2 retries none of these calls (only its resumable helpers, unused here, retry
parts). ``StoreOptions.retries`` goes to urllib3 as connection-attempt retries only: a failed
connect has sent no byte of the body, so repeating it is safe even for a one-shot stream.
Anything later (a 5xx, a reset mid-body, a read timeout) is raised for core's retry policy.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO, Final
from urllib.parse import urlsplit

import oss2
import oss2.exceptions
import oss2.models
import requests
from pydantic import BaseModel, ConfigDict, Field, field_validator
from urllib3.util.retry import Retry

from destinations.plugin import (
    DestinationType,
    InvalidDestination,
    MiB,
    SecretStr,
    Source,
    Store,
    StoreError,
    StoreOptions,
    find_refusal,
    hookimpl,
    open_source,
)
from destinations.requests_guard import GuardedAdapter

__all__ = [
    "REGIONS",
    "OssFields",
    "OssStore",
    "default_endpoint",
    "destinations_register_types",
    "signing_region",
]

log = logging.getLogger("destinations.oss")

#: The regions the Destinations API accepts for ``oss_region_id``.
REGIONS: Final[tuple[str, ...]] = (
    "oss-cn-hangzhou",
    "oss-cn-shanghai",
    "oss-cn-qingdao",
    "oss-cn-beijing",
    "oss-cn-zhangjiakou",
    "oss-cn-huhehaote",
    "oss-cn-wulanchabu",
    "oss-cn-shenzhen",
    "oss-cn-heyuan",
    "oss-cn-guangzhou",
    "oss-cn-chengdu",
    "oss-cn-hongkong",
    "oss-us-west-1",
    "oss-us-east-1",
    "oss-ap-southeast-1",
    "oss-ap-southeast-2",
    "oss-ap-southeast-3",
    "oss-ap-southeast-5",
    "oss-ap-northeast-1",
    "oss-ap-south-1",
    "oss-eu-central-1",
    "oss-eu-west-1",
    "oss-me-east-1",
)

MIN_PART_SIZE: Final = 100 * 1024  # OSS rejects smaller non-final parts (EntityTooSmall)
MAX_PART_SIZE: Final = 5 * 1024 * MiB
MAX_PARTS: Final = 10_000

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_KEY_RE = re.compile(r"[!-~]+")  # printable ASCII, no spaces: what AccessKey pairs are made of
_HOST_RE = re.compile(r"[A-Za-z0-9.-]{1,253}")
# EC codes OSS returns for a V4 signature scoped to a region the bucket/endpoint is not in.
_REGION_ECS = frozenset({"0002-00000226", "0002-00000228"})


def default_endpoint(region_id: str) -> str:
    """The public endpoint of an OSS region, e.g. ``https://oss-cn-hangzhou.aliyuncs.com``."""
    return f"https://{region_id}.aliyuncs.com"


def signing_region(region_id: str) -> str:
    """The region a V4 signature is scoped to: the region id without ``oss-``."""
    return region_id.removeprefix("oss-")


def _check_key(field: str, value: str, what: str) -> str:
    if not value:
        raise InvalidDestination({field: "required"})
    if not _KEY_RE.fullmatch(value):
        raise InvalidDestination(
            {field: f"{what} must be printable ASCII without spaces or line breaks; "
                    "paste it again without surrounding whitespace"}
        )
    return value


class OssFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    oss_access_key: str = Field(
        description="AccessKey ID of a RAM user (or account) allowed oss:PutObject and "
        "oss:DeleteObject under the path prefix; shown masked to its last four characters."
    )
    oss_secret_key: SecretStr = Field(
        description="AccessKey secret paired with oss_access_key. Never shown again."
    )
    oss_bucket_name: str = Field(
        description="Bucket name: 3-63 lowercase letters, digits and hyphens, starting and "
        "ending with a letter or digit."
    )
    oss_region_id: str = Field(
        description="The bucket's region as OSS names it, e.g. oss-cn-hangzhou. One of: "
        + ", ".join(REGIONS)
        + "."
    )
    oss_path_prefix: str = Field(
        "",
        description="Path template for object keys, e.g. results/%COLLECTION_ID%/%DATE%.",
    )
    oss_endpoint: str | None = Field(
        None,
        description="Endpoint URL overriding https://<oss_region_id>.aliyuncs.com, e.g. an "
        "internal (VPC) endpoint. Optional.",
    )

    @field_validator("oss_access_key")
    @classmethod
    def _access_key(cls, value: str) -> str:
        return _check_key("oss_access_key", value.strip(), "the AccessKey ID")

    @field_validator("oss_secret_key")
    @classmethod
    def _secret_key(cls, value: SecretStr) -> SecretStr:
        _check_key("oss_secret_key", value.get_secret_value(), "the AccessKey secret")
        return value

    @field_validator("oss_bucket_name")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        value = value.strip()
        problem = None
        if not value:
            problem = "required"
        elif not 3 <= len(value) <= 63:
            problem = f"must be 3 to 63 characters long, not {len(value)}"
        elif not re.fullmatch(r"[a-z0-9-]+", value):
            problem = "may contain only lowercase letters, digits and hyphens"
        elif not _BUCKET_RE.fullmatch(value):
            problem = "must start and end with a lowercase letter or a digit"
        if problem is not None:
            shown = "" if not value else f" ({value[:70]!r})"
            raise InvalidDestination({"oss_bucket_name": f"{problem}{shown}"})
        return value

    @field_validator("oss_region_id")
    @classmethod
    def _region_id(cls, value: str) -> str:
        region = value.strip().lower()
        if region in REGIONS:
            return region
        if not region:
            problem = "required"
        elif f"oss-{region}" in REGIONS:
            problem = f"{value[:40]!r} needs the oss- prefix: use 'oss-{region}'"
        else:
            problem = f"{value[:40]!r} is not a supported OSS region"
        raise InvalidDestination(
            {"oss_region_id": f"{problem}; expected one of: {', '.join(REGIONS)}"}
        )

    @field_validator("oss_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("https", "http") or not parts.hostname:
            problem = "must be a URL such as https://oss-cn-hangzhou-internal.aliyuncs.com"
        elif parts.username is not None or parts.password is not None:
            problem = "must not contain a user name or password"
        elif parts.path not in ("", "/") or parts.query or parts.fragment:
            problem = "must be scheme://host[:port] with no path, query or fragment"
        elif not _HOST_RE.fullmatch(parts.hostname) and not _is_ip_literal(parts.hostname):
            problem = "has an invalid host name"
        else:
            return f"{parts.scheme}://{parts.netloc}"
        raise InvalidDestination({"oss_endpoint": problem})


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


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
        data = _read_up_to(self._stream, want)  # oss2's CRC adapter assumes full reads
        if len(data) < want:
            raise _ShortSourceError(self.len - self._left + len(data), self.len)
        self._left -= len(data)
        return data


def _read_up_to(stream: BinaryIO, n: int) -> bytes:
    """Read ``n`` bytes, fewer only at the end of the stream."""
    data = stream.read(n) or b""
    if len(data) == n or not data:
        return data
    pieces, got = [data], len(data)
    while got < n:
        more = stream.read(n - got)
        if not more:
            break
        pieces.append(more)
        got += len(more)
    return b"".join(pieces)


def _chunks(stream: BinaryIO, part_size: int, size: int | None) -> Iterator[bytes]:
    """The stream as ``part_size`` chunks (the last may be shorter), one in memory at a time."""
    sent = 0
    while size is None or sent < size:
        want = part_size if size is None else min(part_size, size - sent)
        chunk = _read_up_to(stream, want)
        got = len(chunk)
        sent += got
        if size is not None and got < want:
            raise _ShortSourceError(sent, size)
        if chunk:
            yield chunk
            chunk = b""  # drop it before reading the next one
        if got < want:
            return


class OssStore(Store):
    """One ``oss2.Bucket`` on a pooled ``oss2.Session``, reused across calls."""

    def __init__(self, fields: OssFields, options: StoreOptions) -> None:
        self.options = options
        self.bucket_name = fields.oss_bucket_name
        self.region_id = fields.oss_region_id
        self.endpoint = fields.oss_endpoint or default_endpoint(fields.oss_region_id)
        self.host = urlsplit(self.endpoint).hostname or self.endpoint
        retries = max(0, options.retries)
        retry = Retry(total=retries, connect=retries, read=False, status=0, other=0,
                      redirect=0, backoff_factor=0, raise_on_status=False)
        pool = max(1, options.max_connections)
        adapter = GuardedAdapter(
            guard_label="oss_endpoint" if fields.oss_endpoint else "the OSS endpoint",
            pool_connections=pool, pool_maxsize=pool, max_retries=retry,
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
    def put(self, key: str, source: Source, *, size: int | None, content_type: str | None) -> None:
        headers = {"Content-Type": content_type} if content_type else None
        try:
            with open_source(source) as stream:
                if size is not None and size < self.options.multipart_threshold:
                    self._bucket.put_object(key, _ExactReader(stream, size), headers=headers)
                else:
                    self._put_in_parts(key, stream, size, headers)
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
                    )
                result = self._bucket.upload_part(key, upload_id, number, chunk)
                parts.append(
                    oss2.models.PartInfo(number, result.etag, size=len(chunk), part_crc=result.crc)
                )
                chunk = b""  # one part in memory, not two, while the next is read
                chunk = next(chunks, b"")
            self._bucket.complete_multipart_upload(key, upload_id, parts)
        except BaseException:
            self._abort(key, upload_id)
            raise

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._bucket.abort_multipart_upload(key, upload_id)
        except (oss2.exceptions.OssError, requests.RequestException) as exc:
            # The original failure is what matters; a lifecycle rule can reap the parts.
            log.warning(
                "could not abort multipart upload of %r in bucket %r (%s); its parts stay "
                "until a lifecycle rule removes them", key, self.bucket_name, _brief(exc)
            )

    # -- errors -------------------------------------------------------------------------------
    def _error(self, exc: BaseException) -> StoreError:
        refusal = find_refusal(exc)
        if refusal is not None:
            return refusal
        return map_error(exc, bucket=self.bucket_name, region_id=self.region_id, host=self.host)


def _brief(exc: BaseException) -> str:
    """A short, secret-free description: the OSS code or the exception type."""
    code = getattr(exc, "code", None)
    return f"{code}" if isinstance(code, str) and code else type(exc).__name__


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps (causes, contexts, urllib3 reasons, exception args)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        linked = [e.__cause__, e.__context__, getattr(e, "reason", None),
                  getattr(e, "exception", None), *e.args]
        todo.extend(x for x in linked if isinstance(x, BaseException))


def _connection_error(exc: BaseException, host: str) -> StoreError:
    chain = list(_causes(exc))
    name = type(exc).__name__

    def has(*types: type[BaseException]) -> bool:
        return any(isinstance(e, types) for e in chain)

    if has(ssl.SSLError, requests.exceptions.SSLError):
        return StoreError(
            "tls_error",
            f"the TLS handshake with {host} failed (certificate not trusted, wrong host name, "
            "or the endpoint does not speak HTTPS); check oss_endpoint",
            provider_code="SSLError",
        )
    if has(requests.exceptions.Timeout, TimeoutError):
        return StoreError(
            "timeout",
            f"{host} did not answer in time; check that this server can reach it, or retry "
            "later",
            provider_code="ConnectTimeout" if has(requests.exceptions.ConnectTimeout)
            else "ReadTimeout",
        )
    if has(socket.gaierror):
        return StoreError(
            "endpoint_unreachable",
            f"the host name {host} could not be resolved; check oss_region_id and "
            "oss_endpoint",
            provider_code="NameResolutionError",
        )
    if has(ConnectionRefusedError):
        return StoreError(
            "endpoint_unreachable",
            f"{host} refused the connection; check oss_endpoint and that the network "
            "allows outbound HTTPS",
            provider_code="ConnectionRefused",
        )
    if has(requests.exceptions.ConnectionError, OSError):
        return StoreError(
            "endpoint_unreachable",
            f"the connection to {host} failed or was cut; check oss_endpoint and the network, "
            "or retry",
            provider_code=name,
        )
    return StoreError("provider_error", f"the request to {host} failed ({name})",
                      provider_code=name)


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


def map_error(exc: BaseException, *, bucket: str, region_id: str, host: str) -> StoreError:
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
        )
    if isinstance(exc, oss2.exceptions.RequestError):
        return _connection_error(exc.exception, host)
    if isinstance(exc, requests.RequestException):
        return _connection_error(exc, host)
    if isinstance(exc, oss2.exceptions.InconsistentError):
        return StoreError(
            "provider_error",
            "the CRC-64 OSS computed differs from the bytes sent (corrupted in transit); "
            "retry the upload",
            provider_code="InconsistentError",
        )
    if not isinstance(exc, oss2.exceptions.ServerError):
        name = type(exc).__name__
        return StoreError("provider_error", f"oss2 refused the request ({name})",
                          provider_code=name)
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
        )
    if code == "InvalidAccessKeyId":
        return StoreError(
            "invalid_credentials",
            "OSS does not know oss_access_key (deleted, disabled or mistyped); use an active "
            "AccessKey ID",
            provider_code=code,
        )
    if code == "SignatureDoesNotMatch":
        return StoreError(
            "invalid_credentials",
            "the request signature did not match: oss_secret_key is not the secret of "
            "oss_access_key; paste the AccessKey secret again",
            provider_code=code,
        )
    if code == "NoSuchBucket":
        return StoreError(
            "bucket_not_found",
            f"bucket {bucket!r} does not exist (in region {region_id}); create it or fix "
            "oss_bucket_name",
            provider_code=code,
        )
    if code == "AccessDenied":
        return StoreError(
            "access_denied",
            f"the credentials may not write to bucket {bucket!r}; grant them oss:PutObject "
            "and oss:DeleteObject on the path prefix (RAM policy or bucket policy)",
            provider_code=code,
        )
    if code in ("SecondLevelDomainForbidden", "NonStandardHostForbidden"):
        # Addressing style, not region: OSS wants <bucket>.<oss endpoint> as the host.
        return StoreError(
            "provider_error",
            f"OSS refuses requests addressed to {host}; leave oss_endpoint empty or set it to "
            "an OSS endpoint such as https://oss-cn-hangzhou-internal.aliyuncs.com",
            provider_code=code,
        )
    if code == "RequestTimeTooSkewed":
        return StoreError(
            "provider_error",
            "this server's clock is more than 15 minutes off; synchronise it (NTP)",
            provider_code=code,
        )
    what = f"{status} {code}".strip() if code else f"HTTP {status}"
    return StoreError("provider_error", f"OSS answered {what}", provider_code=provider_code)


@hookimpl
def destinations_register_types(register: Callable[[DestinationType], None]) -> None:
    register(
        DestinationType(
            name="oss",
            fields=OssFields,
            open_store=OssStore,
            prefix_field="oss_path_prefix",
            description="An Alibaba Cloud OSS bucket.",
            masked_fields=("oss_access_key",),
            endpoint_fields=("oss_endpoint",),
        )
    )
