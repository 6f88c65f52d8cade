"""What the built-in plugins would otherwise each write themselves (exported by
:mod:`destinations.plugin`):

- :func:`classify_transport_error`: a ``requests`` / ``urllib3`` / ``botocore`` / ``ssl`` /
  ``socket`` failure, found anywhere in an SDK's exception chain, as core's ``timeout``,
  ``tls_error`` or ``endpoint_unreachable`` :class:`~destinations.StoreError`;
- :class:`LimitedReader`: a stream that refuses to give more than a known number of bytes;
- :func:`progress_granule`: how many bytes may pass between two progress reports;
- :data:`AccessKeyId`, :data:`Secret`, :data:`PathPrefix`: annotated pydantic field types
  with a description, limits and errors naming the field.

No SDK is imported here: library exceptions are recognised by their class names and modules.
"""

from __future__ import annotations

import errno
import io
import re
import socket
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, BinaryIO, Final, Literal

from pydantic import AfterValidator, Field, SecretStr, ValidationInfo

from ._errors import InvalidDestination, StoreError, exception_chain
from ._guard import find_refusal
from ._template import MAX_KEY_BYTES

__all__ = [
    "AccessKeyId",
    "InvalidMetadata",
    "LimitedReader",
    "MetadataRules",
    "PathPrefix",
    "Secret",
    "SourceTooLarge",
    "classify_transport_error",
    "part_chunks",
    "progress_granule",
    "read_up_to",
]

# --------------------------------------------------------------------------------------------
# transport failures

_Kind = Literal["timeout", "tls", "dns", "refused", "connect", "dropped"]

#: Library exception classes by (top-level package, class name). Each chain element is
#: classified by the first class of its MRO found here, so a subclass listed before its base
#: wins (urllib3 2's NewConnectionError derives from ConnectTimeoutError, requests'
#: ConnectTimeout from ConnectionError).
_LIBRARY_KINDS: Final[dict[tuple[str, str], _Kind]] = {
    # requests
    ("requests", "ConnectTimeout"): "timeout",
    ("requests", "ReadTimeout"): "timeout",
    ("requests", "Timeout"): "timeout",
    ("requests", "SSLError"): "tls",
    ("requests", "ProxyError"): "connect",
    ("requests", "ChunkedEncodingError"): "dropped",
    ("requests", "ConnectionError"): "connect",
    # urllib3
    ("urllib3", "NameResolutionError"): "dns",
    ("urllib3", "NewConnectionError"): "connect",
    ("urllib3", "ConnectTimeoutError"): "timeout",
    ("urllib3", "ReadTimeoutError"): "timeout",
    ("urllib3", "TimeoutError"): "timeout",
    ("urllib3", "SSLError"): "tls",
    ("urllib3", "ProxyError"): "connect",
    ("urllib3", "IncompleteRead"): "dropped",
    ("urllib3", "InvalidChunkLength"): "dropped",
    ("urllib3", "ProtocolError"): "dropped",
    # botocore (wraps the urllib3 error, which is then found too)
    ("botocore", "ConnectTimeoutError"): "timeout",
    ("botocore", "ReadTimeoutError"): "timeout",
    ("botocore", "SSLError"): "tls",
    ("botocore", "ProxyConnectionError"): "connect",
    ("botocore", "EndpointConnectionError"): "connect",
    ("botocore", "ConnectionClosedError"): "dropped",
    ("botocore", "ResponseStreamingError"): "dropped",
}

#: errno values of a connect that found no route.
_NO_ROUTE: Final = frozenset(
    getattr(errno, name)
    for name in ("ENETUNREACH", "EHOSTUNREACH", "ENETDOWN", "EHOSTDOWN")
    if hasattr(errno, name)
)
#: getaddrinfo errors meaning "this name does not exist" (as opposed to "try again").
_NO_SUCH_NAME: Final = frozenset(
    getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, name)
)

#: Which kind wins when a chain holds several (a TLS read that timed out is a timeout).
_PRIORITY: Final[tuple[_Kind, ...]] = ("timeout", "tls", "dns", "refused", "connect", "dropped")


def _stdlib_kind(exc: BaseException) -> _Kind | None:
    # ssl and http.client are looked up, not imported: an exception of theirs exists only if
    # something loaded them (importing them here would cost every first store ~9 ms).
    ssl = sys.modules.get("ssl")
    client = sys.modules.get("http.client")
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
        return "timeout"
    if ssl is not None and isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return "tls"
    if isinstance(exc, socket.gaierror | socket.herror):
        return "dns"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionError) or (
        client is not None and isinstance(exc, client.IncompleteRead)
    ):
        # reset, aborted, broken pipe, RemoteDisconnected: the connection was cut
        return "dropped"
    if isinstance(exc, OSError) and exc.errno in _NO_ROUTE:
        return "connect"
    return None


def _library_kind(exc: BaseException) -> _Kind | None:
    for cls in type(exc).__mro__:
        package = cls.__module__.partition(".")[0]
        kind = _LIBRARY_KINDS.get((package, cls.__name__))
        if kind is not None:
            return kind
    return None


def _kinds(chain: Iterable[BaseException]) -> dict[_Kind, BaseException]:
    """The first (outermost) exception of each kind in the chain."""
    found: dict[_Kind, BaseException] = {}
    for exc in chain:
        if isinstance(exc, StoreError):
            continue  # already mapped (and it is a TimeoutError/ConnectionError itself)
        kind = _library_kind(exc) or _stdlib_kind(exc)
        if kind is not None:
            found.setdefault(kind, exc)
    return found


def classify_transport_error(
    exc: BaseException,
    *,
    host: str,
    check: str | None = None,
    timeout: float | None = None,
) -> StoreError | None:
    """Core's error for a transport failure anywhere in ``exc``'s chain, else ``None``.

    Call it from an error mapper after handling errors that carry an HTTP response (those
    are the provider's to map). Looks through :func:`~destinations.plugin.exception_chain`
    for stdlib (``socket``, ``ssl``, ``http.client``) exceptions and, by class name and
    module without importing them, ``requests``, ``urllib3`` and ``botocore`` ones:

    ========================================================  =========================  =====
    found                                                     code                       transient
    ========================================================  =========================  =====
    the endpoint guard's refusal (:func:`find_refusal`)       ``endpoint_not_allowed``   no
    connect or read timeout                                   ``timeout``                yes
    TLS handshake or certificate failure                      ``tls_error``              no
    host name that does not exist (``EAI_NONAME``)            ``endpoint_unreachable``   no
    name resolution that failed otherwise (``EAI_AGAIN``)     ``endpoint_unreachable``   yes
    connection refused, no route, proxy failure               ``endpoint_unreachable``   yes
    connection reset / closed / cut mid-response              ``endpoint_unreachable``   yes
    ========================================================  =========================  =====

    When several are in one chain the first row wins (the refusal always does). ``host``
    names the endpoint in messages (``"Amazon S3 at https://s3.amazonaws.com"``); ``check``
    is what the user should check (``"s3_endpoint"``); ``timeout`` the configured seconds,
    to quote. ``provider_code`` is the class name of the exception that decided. Messages
    never contain ``str(exc)`` (it can echo request details).
    """
    refusal = find_refusal(exc)
    if refusal is not None:
        return refusal
    found = _kinds(exception_chain(exc))
    kind = next((k for k in _PRIORITY if k in found), None)
    if kind is None:
        return None
    decider = found[kind]
    name = type(decider).__name__
    fix = f"check {check} and that" if check else "check that"
    if kind == "timeout":
        lowered = name.lower()
        phase = " (connect timeout)" if "connect" in lowered else ""
        phase = " (read timeout)" if "read" in lowered else phase
        within = f" within {timeout:g} s" if timeout is not None else " in time"
        return StoreError(
            "timeout",
            f"{host} did not answer{within}{phase}; {fix} it is reachable from this server",
            provider_code=name,
            transient=True,
        )
    if kind == "tls":
        return StoreError(
            "tls_error",
            f"the TLS connection to {host} failed (certificate not trusted, wrong host name, "
            f"or the endpoint does not speak HTTPS); {fix} it has a certificate this server "
            "trusts",
            provider_code=name,
            transient=False,
        )
    if kind == "dns":
        gai = next((e for e in exception_chain(exc) if isinstance(e, socket.gaierror)), None)
        missing = gai is not None and gai.errno in _NO_SUCH_NAME
        return StoreError(
            "endpoint_unreachable",
            f"the host name of {host} could not be resolved; {fix} the name is right",
            provider_code=name,
            transient=not missing,
        )
    if kind == "refused":
        return StoreError(
            "endpoint_unreachable",
            f"{host} refused the connection; {fix} the service is running and reachable from "
            "this server",
            provider_code=name,
            transient=True,
        )
    if kind == "connect":
        return StoreError(
            "endpoint_unreachable",
            f"could not connect to {host}; {fix} the service is reachable from this server",
            provider_code=name,
            transient=True,
        )
    return StoreError(
        "endpoint_unreachable",
        f"the connection to {host} was closed before the request completed; another attempt "
        "may succeed",
        provider_code=name,
        transient=True,
    )


# --------------------------------------------------------------------------------------------
# a size-limited reader


class SourceTooLarge(StoreError):
    """A :class:`LimitedReader`'s stream gave more than its limit (code ``provider_error``,
    ``provider_code`` ``IncompleteBody`` like :func:`read_exactly`'s, never transient:
    another attempt reads the same source)."""

    def __init__(self, limit: int, what: str) -> None:
        super().__init__(
            "provider_error",
            f"{what} gave more than the {limit} bytes announced; the upload was stopped",
            provider_code="IncompleteBody",
            transient=False,
        )
        self.limit = limit


class LimitedReader(io.RawIOBase):
    """``stream``, refusing to give more than ``limit`` bytes.

    Reading past ``limit`` raises :class:`SourceTooLarge` as soon as the extra byte is seen
    (so an SDK uploading it fails before completing an object bigger than announced). With
    ``exact=True``, an end of stream before ``limit`` bytes raises it too (``IncompleteBody``,
    "only N of M bytes"). ``what`` names the stream in messages (``"the source"``,
    ``"the download of report.csv"``). ``tell()`` counts from where ``stream`` was; the
    reader is not seekable. Wrap it in :class:`io.BufferedReader` if an SDK wants one.
    Closing the reader does not close ``stream``.
    """

    def __init__(
        self, stream: BinaryIO, limit: int, *, exact: bool = False, what: str = "the source"
    ) -> None:
        super().__init__()
        if limit < 0:
            raise ValueError("limit must not be negative")
        self._stream = stream
        self.limit = limit
        self.exact = exact
        self.what = what
        self.count = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.count

    def read(self, size: int | None = -1, /) -> bytes:
        if size == 0:
            return b""
        left = self.limit - self.count
        if size is None or size < 0:
            chunks: list[bytes] = []
            got = 0
            while got <= left:
                chunk = self._stream.read(left + 1 - got)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            data = b"".join(chunks)
        else:
            # Up to the limit; at the limit, one byte to see whether the stream has more.
            data = self._stream.read(min(size, left) if left > 0 else 1)
        if len(data) > left:
            raise SourceTooLarge(self.limit, self.what)
        self.count += len(data)
        if self.exact and self.count < self.limit and not data:
            raise StoreError(
                "provider_error",
                f"{self.what} gave only {self.count} of the {self.limit} bytes announced; the "
                "upload was stopped",
                provider_code="IncompleteBody",
                transient=False,
            )
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any, /) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:  # the wrapped stream is the caller's to close
        super().close()


# --------------------------------------------------------------------------------------------
# progress granularity

#: Most bytes between two progress reports, and the step for a source of unknown size.
PROGRESS_MAX_STEP: Final = 8 * 1024 * 1024
PROGRESS_UNSIZED_STEP: Final = 256 * 1024


def progress_granule(size: int | None) -> int:
    """Most bytes a store may send between two progress reports: 1 % of ``size``, at most
    8 MiB (core's contract), at least 1; 256 KiB when the size is unknown. A store that
    meters reads caps each read at this many bytes."""
    if size is None:
        return PROGRESS_UNSIZED_STEP
    return max(1, min(PROGRESS_MAX_STEP, size // 100))


# --------------------------------------------------------------------------------------------
# annotated field types

#: Longest access key id accepted (AWS documents 128).
ACCESS_KEY_ID_MAX: Final = 128
#: Longest secret accepted; real ones are 30-40 characters.
SECRET_MAX: Final = 1024


def _field(info: ValidationInfo) -> str:
    return info.field_name or "value"


def _check_access_key_id(value: str, info: ValidationInfo) -> str:
    field = _field(info)
    key = value.strip()
    if not key:
        raise InvalidDestination({field: "required"})
    if len(key) > ACCESS_KEY_ID_MAX or not key.isascii() or not key.isprintable() or " " in key:
        raise InvalidDestination(
            {
                field: f"must be an access key id: up to {ACCESS_KEY_ID_MAX} printable ASCII "
                "characters, no spaces"
            }
        )
    return key


def _check_secret(value: SecretStr, info: ValidationInfo) -> SecretStr:
    # Never echo any part of the value: only its shape is described.
    field = _field(info)
    secret = value.get_secret_value().strip()
    if not secret:
        raise InvalidDestination({field: "required"})
    if len(secret) > SECRET_MAX:
        raise InvalidDestination({field: f"must be at most {SECRET_MAX} characters long"})
    if " " in secret:
        # Secrets often hold "+", which an unencoded form body turns into a space; the HTTP
        # API adds that hint to this message for form bodies only (a JSON body keeps "+").
        raise InvalidDestination({field: "must not contain spaces"})
    if not secret.isascii() or not secret.isprintable():
        raise InvalidDestination(
            {field: "must be printable ASCII characters (no line breaks or tabs)"}
        )
    return SecretStr(secret)


def _check_path_prefix(value: str, info: ValidationInfo) -> str:
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise InvalidDestination(
            {
                _field(info): f"is {size} UTF-8 bytes; a path template can be at most "
                f"{MAX_KEY_BYTES} (the longest object key)"
            }
        )
    return value


#: An access key id: surrounding whitespace stripped, 1-128 printable ASCII characters
#: without spaces. Add it to ``masked_fields``; a model-level ``Field(description=...)``
#: replaces the generic description.
AccessKeyId = Annotated[
    str,
    AfterValidator(_check_access_key_id),
    Field(
        description="Access key id of the credentials that write here. Shown masked (last 4 "
        "characters).",
        json_schema_extra={"minLength": 1, "maxLength": ACCESS_KEY_ID_MAX},
    ),
]

#: A secret (key, HMAC secret): surrounding whitespace stripped, 1-1024 printable ASCII
#: characters without spaces (the API explains a '+' that arrived as a space). Never
#: echoed in an error.
Secret = Annotated[
    SecretStr,
    AfterValidator(_check_secret),
    Field(
        description="Secret paired with the access key id. Never shown again once saved.",
        json_schema_extra={"minLength": 1, "maxLength": SECRET_MAX},
    ),
]

#: A path template (compiled by core: name it in ``DestinationType.prefix_field``), at most
#: 1024 UTF-8 bytes, the longest object key. Defaults are the model's: ``PathPrefix = ""``.
PathPrefix = Annotated[
    str,
    AfterValidator(_check_path_prefix),
    Field(
        description="Path template for object keys, e.g. 'exports/%COLLECTION_ID%/%DATE%'. "
        "Tokens: %COLLECTION_ID%, %COLLECTION_NAME%, %RESULT_SET_ID%, %DATE%, %YEAR%, "
        "%MONTH%, %DAY%, %HOUR%.",
        json_schema_extra={"maxLength": MAX_KEY_BYTES},
    ),
]


# -- user metadata and Content-Encoding, checked before anything is sent ---------------------

# Printable ASCII; no leading or trailing space (HTTP would strip it, so it would not
# round-trip).
_HEADER_VALUE = re.compile(r"(?:[!-~](?:[ -~]*[!-~])?)?")


class InvalidMetadata(StoreError, ValueError):
    """``content_encoding`` or ``metadata`` the provider would refuse (code
    ``provider_error``, ``provider_code`` ``InvalidMetadata``, never transient), raised before
    any request. Also a :class:`ValueError`."""

    def __init__(self, message: str) -> None:
        super().__init__(
            "provider_error", message, provider_code="InvalidMetadata", transient=False
        )


@dataclass(frozen=True)
class MetadataRules:
    """What a provider accepts as user metadata and Content-Encoding.

    ``name`` (a regex a name must match in full) and ``name_rule`` (how to say it);
    ``case_rule`` explains why two names differing only in case are refused; at most
    ``limit`` bytes counting ``prefix`` + name + value per entry (``prefix``: the header
    prefix when the provider counts it, else ``""``), or below ``limit`` when
    ``limit_inclusive`` is false. Values must be printable ASCII without leading or trailing
    spaces (HTTP strips them).
    """

    provider: str
    name: re.Pattern[str]
    name_rule: str
    case_rule: str
    limit: int
    prefix: str = ""
    limit_inclusive: bool = True

    def check_content_encoding(self, value: str | None) -> str | None:
        """``value`` if it can be stored as Content-Encoding; None for None or ""."""
        if not value:
            return None
        if not _HEADER_VALUE.fullmatch(value):
            raise InvalidMetadata(
                f"content_encoding {value[:40]!r} is not a valid header value: use printable "
                "ASCII with no leading or trailing space (e.g. 'gzip')"
            )
        return value

    def check(self, metadata: Mapping[str, str] | None) -> dict[str, str]:
        """``metadata`` checked (a copy; empty when there is none)."""
        if not metadata:
            return {}
        seen: dict[str, str] = {}
        total = 0
        for name, value in metadata.items():
            if not isinstance(name, str) or not self.name.fullmatch(name):
                raise InvalidMetadata(
                    f"metadata name {str(name)[:40]!r} is not allowed: {self.provider} "
                    f"metadata names {self.name_rule}"
                )
            folded = name.lower()
            if folded in seen:
                raise InvalidMetadata(
                    f"metadata names {seen[folded]!r} and {name!r} differ only in case; "
                    f"{self.case_rule}"
                )
            seen[folded] = name
            if not isinstance(value, str) or not _HEADER_VALUE.fullmatch(value):
                raise InvalidMetadata(
                    f"metadata value of {name!r} is not allowed: use printable ASCII with no "
                    "leading or trailing space (percent- or base64-encode anything else)"
                )
            total += len(self.prefix) + len(name) + len(value)
        over = total > self.limit if self.limit_inclusive else total >= self.limit
        if over:
            counted = (
                f"{self.prefix} header names plus values" if self.prefix else ("names plus values")
            )
            most = "at most" if self.limit_inclusive else "less than"
            raise InvalidMetadata(
                f"metadata takes {total} bytes ({counted}); {self.provider} allows {most} "
                f"{self.limit}"
            )
        return dict(metadata)


# -- reading a source in parts -----------------------------------------------------------------


def read_up_to(stream: Any, n: int) -> bytes:
    """Read ``n`` bytes from ``stream``, fewer only at its end (streams may return short
    reads before the end: this keeps reading)."""
    data: bytes = stream.read(n) or b""
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


def part_chunks(stream: BinaryIO, part_size: int, size: int | None) -> Iterator[bytes]:
    """``stream`` as ``part_size`` chunks (the last may be shorter), read one at a time, for
    a plugin that drives a multipart upload itself; with a known ``size`` exactly that many
    bytes, else :class:`SourceTooLarge`/``IncompleteBody`` (raised before the upload is
    completed)."""
    reader: Any = stream if size is None else LimitedReader(stream, size, exact=True)
    left = size
    while left is None or left > 0:
        want = part_size if left is None else min(part_size, left)
        chunk = read_up_to(reader, want)
        got = len(chunk)
        if chunk:
            yield chunk
        chunk = b""  # not held while the next one is read
        if left is not None:
            left -= got
        if got < want:
            return
    reader.read(1)  # at the announced size: raises when the source has more
