"""The native engine: an S3-protocol store on obstore (Rust's ``object_store``).

Same contract as the boto3 engine (:class:`~destinations_s3._store.S3ProtocolStore`), at a
fraction of its per-request cost: signing, HTTP and multipart run in Rust without the GIL.

- Endpoint guard. obstore connects by itself, so while the guard is on every connection goes
  through the in-process tunnel of :mod:`destinations_s3._tunnel` (``CONNECT``, checked by
  core's ``guarded_create_connection``: resolve once, refuse non-public addresses, connect
  only to the checked ones; redirects are new connections through the same tunnel). Before
  the first request the endpoint's host is also checked in Python, so a refused endpoint is
  refused even where the tunnel could not be reached. With the guard lifted by the operator
  (``DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS=1``) the client connects directly; the switch is
  read on every call, as the guard reads it on every connect.
- Retries: exactly ``options.retries`` (core passes 0; core's retry layer decides), except
  within a multipart upload during a delivery: there obstore retries each request of the
  upload (a part, the completion call) itself, configured from core's part policy
  (:func:`~destinations.plugin.part_retry_policy`: attempts, backoff, deadline), so a failed
  part is sent again alone, as ``retry_part`` does for the other plugins. obstore retries
  what fails with a 5xx or a broken connection; a failure it did not retry (a 429, a read
  timeout of a part) is left to core, which sends the object again. A failure that outlived
  the part retries is marked (:func:`~destinations.plugin.parts_spent`) so delivery does not
  resend the whole object, and obstore aborts the upload.
- Uploads: below ``options.multipart_threshold`` with a known size, one ``PutObject`` of the
  bytes read (exactly the announced size, else nothing is written); otherwise a multipart
  upload fed one chunk at a time from the path or stream, with at most
  ``_PARTS_IN_FLIGHT_BYTES`` of parts buffered (so memory stays flat whatever the size).
  A store runs one multipart upload at a time (its parts go in parallel): obstore holds each
  part's bytes until the part is sent, so eight large files at once held eight uploads' parts
  (256 MiB for 8 x 28 MiB) and cost more CPU in page faults, for no faster delivery on either
  server measured. Other puts (single ``PutObject`` uploads) do not wait for it; a stream of
  unknown size waiting for its turn holds the first part it read (to tell a single put from a
  multipart upload).
- Byte progress: reported as obstore takes bytes from the source for sending, in steps of at
  most :func:`~destinations.plugin.progress_granule`. For multipart uploads that leads the
  network by at most the parts in flight; a single ``PutObject`` is taken whole before its
  request starts (obstore offers no callback from the socket).
- Errors: mapped to the same codes as the boto3 engine from the HTTP status and the S3 error
  code in the response (regex-checked; obstore's message text is never quoted), transport
  failures through core's ``classify_transport_error``.

:func:`native_unsupported` says when this engine cannot serve a destination (the open
functions then use boto3).
"""

from __future__ import annotations

import contextvars
import functools
import io
import os
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from destinations.plugin import (
    MiB,
    Source,
    SourceTooLarge,
    Store,
    StoreError,
    StoreOptions,
    check_host,
    classify_transport_error,
    find_refusal,
    open_source,
    part_retry_policy,
    parts_spent,
    private_endpoints_allowed,
    progress_granule,
    read_exactly,
    read_file_exactly,
    refuse_plain_http,
    upload_progress,
)

from ._labels import (
    Labels,
    service_error,
)

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3CredentialProvider

    from destinations import RetryPolicy

    from ._tunnel import Ticket

__all__ = ["ENGINE_ENV", "NativeS3Store", "native_unsupported", "open_native"]

#: ``auto`` (default): native where it can serve, else boto3; ``boto3`` or ``native`` to pin.
ENGINE_ENV = "DESTINATIONS_S3_ENGINE"

#: Parts of a multipart upload buffered at once, at most (bytes).
_PARTS_IN_FLIGHT_BYTES = 32 * MiB
#: Reads from a stream or file, when no progress is asked for.
_READ_STEP = 1 * MiB

# AWS_* variables obstore would read (all its constructors read the environment) that this
# store overrides explicitly, or that obstore ignores; any other one present (a checksum,
# encryption, request-payer, S3 Express or credentials-endpoint setting…) would change the
# requests, so the boto3 engine is used instead.
_HARMLESS_AWS_ENV = frozenset(
    {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",  # credentials come from the destination (credential_provider)
        "AWS_SECURITY_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT",  # the explicit endpoint wins (AWS_ENDPOINT_URL_S3 would not)
        "AWS_ENDPOINT_URL",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CA_BUNDLE",  # read here, given as root_certificate
        "AWS_ALLOW_HTTP",
        "AWS_ALLOW_INVALID_CERTIFICATES",
        "AWS_SKIP_SIGNATURE",
        "AWS_UNSIGNED_PAYLOAD",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
        "AWS_PROXY_URL",
        "AWS_PROXY_EXCLUDES",
        "AWS_PROXY_CA_CERTIFICATE",
        "AWS_TIMEOUT",
        "AWS_CONNECT_TIMEOUT",
        "AWS_READ_TIMEOUT",
        "AWS_BUCKET",
        "AWS_BUCKET_NAME",
    }
)

# obstore attribute names: metadata under one of these names would not be user metadata.
_RESERVED_ATTRIBUTES = frozenset(
    {
        "content-disposition",
        "content-encoding",
        "content-language",
        "content-type",
        "cache-control",
        "storage-class",
    }
)

_STATUS = re.compile(r"non-2xx status code: (\d{3})")
_CODE = re.compile(r"<Code>([A-Za-z0-9_.-]{1,64})</Code>")
_REGION = re.compile(r"<Region>([a-z0-9-]{1,63})</Region>")
_KIND = re.compile(r"kind: (Connect|Request|Timeout|Interrupted|Decode|Unknown)")
_TLS = re.compile(
    r"(?i)invalid ?peer ?certificate|InvalidCertificate|UnknownIssuer|certificate verify|"
    r"corrupt message|InvalidContentType|tls handshake|HandshakeFailure|AlertReceived"
)
_DNS = re.compile(r"(?i)dns error|failed to lookup address|Name or service not known")
_REFUSED = re.compile(r"(?i)connection refused|ConnectionRefused")
_TIMED_OUT = re.compile(r"(?i)timed out|TimedOut|deadline has elapsed|operation timed out")

_MISSING_ETAG = "source: MissingEtag"
_BARE_REDIRECT = "inner: BareRedirect"


class ReadTimeoutError(TimeoutError):
    """An obstore read timeout, named as the boto3 engine's (and core's classifier) name it."""


class ConnectTimeoutError(TimeoutError):
    """An obstore connect timeout."""


_NO_PROGRESS = contextvars.Context().run(upload_progress)  # the callback outside a delivery


def native_unsupported(
    *,
    access_key_id: str | None,
    secret_access_key: object,
    endpoint_url: str | None,
    upload_headers: Mapping[str, str] | None = None,
    role_arn: str | None = None,
) -> str | None:
    """Why the native engine cannot serve this destination (``None``: it can).

    ``DESTINATIONS_S3_ENGINE=boto3`` pins boto3 and ``native`` pins this engine where it can
    serve at all.
    """
    choice = os.environ.get(ENGINE_ENV, "auto").strip().lower() or "auto"
    if choice == "boto3":
        return f"{ENGINE_ENV}=boto3"
    if role_arn or not access_key_id or secret_access_key is None:
        return "an assumed role (STS AssumeRole) or credentials that are not a key pair"
    if upload_headers:
        return "encryption, ACL or storage-class options (sent by the boto3 engine)"
    if endpoint_url is None:
        return "AWS's own endpoints (bucket region discovery and redirects)"
    try:
        import obstore  # noqa: F401
    except ImportError:
        return "obstore is not installed"
    if choice == "native":
        return None
    if os.environ.get("AWS_CA_BUNDLE"):
        # rustls (webpki) verifies stricter than OpenSSL: it refuses, say, a CA certificate
        # serving as the server's own, which OpenSSL accepts. A bundle keeps boto3's rules.
        return "a custom CA bundle (AWS_CA_BUNDLE), verified as boto3 (OpenSSL) does"
    extra = sorted(
        name for name in os.environ if name.startswith("AWS_") and name not in _HARMLESS_AWS_ENV
    )
    if extra:
        return f"environment variables obstore would read ({', '.join(extra[:3])})"
    return None


class NativeS3Store(Store):
    """Objects in one bucket of an S3-protocol service at ``endpoint_url``, path-style.

    Parameters as :class:`~destinations_s3.S3ProtocolStore`'s for the same destination.
    """

    engine = "native"

    def __init__(
        self,
        *,
        bucket: str,
        access_key_id: str,
        secret_access_key: Any,
        endpoint_url: str,
        region: str,
        options: StoreOptions,
        labels: Labels | None = None,
    ) -> None:
        if hasattr(secret_access_key, "get_secret_value"):
            secret_access_key = secret_access_key.get_secret_value()
        self.bucket = bucket
        self.region = region
        self.options = options
        self.labels = labels or Labels()
        self.endpoint = endpoint_url.rstrip("/")
        parts = urlsplit(self.endpoint)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._guard_label = self.labels.endpoint or f"the {self.labels.provider} endpoint"
        credentials: dict[str, Any] = {
            "access_key_id": access_key_id,
            "secret_access_key": secret_access_key,
            "token": None,
            "expires_at": None,
        }

        def given() -> dict[str, Any]:
            return credentials

        self._credentials = given  # never in a repr or a message
        self._lock = threading.Lock()
        #: obstore stores by (tunnel URL or None for direct, part retry policy or None)
        self._stores: dict[tuple[str | None, RetryPolicy | None], Any] = {}
        self._ticket: Ticket | None = None
        self._host_checked = False
        self._fallback: Store | None = None
        budget = _PARTS_IN_FLIGHT_BYTES // max(1, options.part_size)
        self._parts = max(1, min(options.max_connections, budget))
        #: Held for the whole of each multipart upload: one at a time (see the module docs).
        self._multipart_turn = threading.Lock()

    def __repr__(self) -> str:
        return f"<NativeS3Store bucket={self.bucket!r} endpoint={self.endpoint!r}>"

    # -- clients -----------------------------------------------------------------------------

    def _build(self, proxy_url: str | None, parts: RetryPolicy | None) -> Any:
        from obstore.store import S3Store

        timeout = f"{max(1, round(self.options.timeout * 1000))}ms"
        client: dict[str, Any] = {
            "allow_http": not self._https,
            "allow_invalid_certificates": False,
            "connect_timeout": timeout,
            "read_timeout": timeout,
            # a whole request (one part) may take longer than one read: a generous bound
            "timeout": f"{max(300, round(self.options.timeout * 20))}s",
            "pool_max_idle_per_host": str(max(1, self.options.max_connections)),
        }
        ca_bundle = os.environ.get("AWS_CA_BUNDLE")
        if ca_bundle:
            client["root_certificate"] = Path(ca_bundle).read_bytes()
        if proxy_url is not None:
            client["proxy_url"] = proxy_url
        return S3Store(
            self.bucket,
            endpoint=self.endpoint,
            region=self.region,
            virtual_hosted_style_request=False,
            skip_signature=False,
            disable_bulk_delete=True,  # one DELETE per key, never POST ?delete
            # https protects the body; over plain http the payload hash is signed (as boto3)
            unsigned_payload=self._https,
            client_options=cast("ClientConfig", client),
            retry_config=cast("RetryConfig", _retry_config(parts, self.options.retries)),
            credential_provider=cast("S3CredentialProvider", self._credentials),
        )

    def _client(
        self, parts: RetryPolicy | None = None, *, build: bool = True
    ) -> tuple[Any, Ticket | None]:
        """The obstore store for this call: direct while the guard is lifted, else through
        the tunnel (the endpoint's host checked first, once). ``parts``: the store retrying
        each request of a multipart upload with that policy (built once per policy).
        ``build=False``: only the check and the tunnel's ticket (the store is ``None``)."""
        proxy_url: str | None = None
        ticket: Ticket | None = None
        if not private_endpoints_allowed():
            if not self._host_checked:
                check_host(self._host, self._port, label=self._guard_label)
                self._host_checked = True
            if not self._https:
                refuse_plain_http(self._host, label=self._guard_label)
            from ._tunnel import tunnel

            if self._ticket is None:
                with self._lock:
                    if self._ticket is None:
                        self._ticket = tunnel.issue(self._guard_label, self.options.timeout)
            ticket = self._ticket
            proxy_url = tunnel.proxy_url(ticket)
        if not build:
            return None, ticket
        slot = (proxy_url, parts)
        store = self._stores.get(slot)
        if store is None:
            with self._lock:
                store = self._stores.get(slot)
                if store is None:
                    store = self._stores[slot] = self._build(proxy_url, parts)
        return store, ticket

    def _boto3(self) -> Store:
        """The boto3 engine for the same destination, for what obstore cannot express (a
        metadata name obstore reserves, a key ``object_store`` would normalise)."""
        if self._fallback is None:
            from ._store import S3ProtocolStore

            creds = self._credentials()
            self._fallback = S3ProtocolStore(
                bucket=self.bucket,
                access_key_id=creds["access_key_id"],
                secret_access_key=creds["secret_access_key"],
                endpoint_url=self.endpoint,
                region=self.region,
                options=self.options,
                addressing_style="path",
                checksums="when_required",
                labels=self.labels,
            )
        return self._fallback

    # -- Store -------------------------------------------------------------------------------

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
        def by_boto3(body: Source, length: int | None) -> None:
            self._boto3().put(
                key,
                body,
                size=length,
                content_type=content_type,
                content_encoding=content_encoding,
                metadata=metadata,
            )

        if not _native_key(key) or any(k.lower() in _RESERVED_ATTRIBUTES for k in metadata or ()):
            by_boto3(source, size)
            return
        import obstore

        progress = upload_progress()
        metered = progress is not _NO_PROGRESS
        attributes: dict[str, str] = {}
        if content_type:
            attributes["Content-Type"] = content_type
        if content_encoding:
            attributes["Content-Encoding"] = content_encoding
        if metadata:
            attributes.update(metadata)
        # The endpoint is checked first; the store for one PutObject is built only when one is
        # sent (below): a multipart upload runs on a store of its own and never needs it.
        _, ticket = self._client_or_raise(build=False)
        mark = ticket.failure_count() if ticket is not None else 0
        threshold = self.options.multipart_threshold
        try:
            if size is not None and size < threshold and isinstance(source, str | os.PathLike):
                head = read_file_exactly(source, size)
            else:
                meter = progress if metered else None
                read = self._head_or_multipart(obstore, key, source, size, attributes, meter)
                if read is None:
                    return  # sent as a multipart upload
                head = read
            store, _ = self._client_or_raise()
            data: Any = _slices(head, progress) if metered and head else head
            again = functools.partial(by_boto3, io.BytesIO(head), len(head))
            self._put_one(obstore, store, key, data, attributes, again)
        except StoreError:
            raise
        except Exception as exc:
            raise self._error(exc, ticket, mark) from None

    def _head_or_multipart(
        self,
        obstore: Any,
        key: str,
        source: Source,
        size: int | None,
        attributes: Any,
        meter: Any,
    ) -> bytes | None:
        """The whole body, when it is one PutObject (below the threshold); else it is sent
        here as a multipart upload, read chunk by chunk, and ``None`` is returned."""
        threshold = self.options.multipart_threshold
        with open_source(source) as stream:
            if size is not None and size < threshold:
                return read_exactly(stream, size)
            if size is None:
                pieces = _read_pieces(stream, threshold, _step(None, meter))
                if sum(map(len, pieces)) < threshold:
                    return b"".join(pieces)  # a single piece is not copied
                body = _chunks(stream, None, meter, pieces)  # larger: multipart, head first
            else:
                body = _chunks(stream, size, meter, [])
            self._multipart(obstore, key, body, attributes)
            return None

    @staticmethod
    def _put_one(
        obstore: Any,
        store: Any,
        key: str,
        data: Any,
        attributes: Any,
        again: Callable[[], None],
    ) -> None:
        """One PutObject of ``data`` (bytes, or slices of them)."""
        try:
            obstore.put(store, key, data, attributes=attributes, use_multipart=False)
        except Exception as exc:
            if _MISSING_ETAG in str(exc):  # a 2xx without ETag: written
                return
            if _BARE_REDIRECT not in str(exc):
                raise
            # A redirect (wrong region): obstore keeps neither its body nor its headers;
            # the boto3 engine asks the same request (``again``) and reads them.
            again()

    def _multipart(self, obstore: Any, key: str, body: Any, attributes: Any) -> None:
        """A multipart upload whose requests obstore retries with core's part policy (none
        outside a delivery); a failure that outlived those retries is not sent whole again."""
        policy = part_retry_policy()
        store, ticket = self._client_or_raise(policy)
        mark = ticket.failure_count() if ticket is not None else 0
        try:
            with self._multipart_turn:
                obstore.put(
                    store,
                    key,
                    body,
                    attributes=attributes,
                    use_multipart=True,
                    chunk_size=self.options.part_size,
                    max_concurrency=self._parts,
                )
        except Exception as exc:
            error = self._error(exc, ticket, mark)
            if policy is not None and policy.attempts > 1 and _retried_by_obstore(error):
                parts_spent(error)
            raise error from None

    def delete(self, key: str) -> None:
        if not _native_key(key):
            self._boto3().delete(key)
            return
        import obstore

        store, ticket = self._client_or_raise()
        mark = ticket.failure_count() if ticket is not None else 0
        try:
            obstore.delete(store, key)
        except Exception as exc:
            if _BARE_REDIRECT in str(exc):
                self._boto3().delete(key)  # as for puts: boto3 reads the redirect
                return
            error = self._error(exc, ticket, mark)
            # S3 answers 204 for a missing key; some S3-compatible services answer 404.
            if error.status == 404 and error.provider_code in ("NoSuchKey", "404", "NotFound"):
                return
            raise error from None

    def close(self) -> None:
        with self._lock:
            if self._ticket is not None:
                from ._tunnel import tunnel

                tunnel.revoke(self._ticket)
            self._stores.clear()
            fallback, self._fallback = self._fallback, None
        if fallback is not None:
            fallback.close()

    def _client_or_raise(
        self, parts: RetryPolicy | None = None, *, build: bool = True
    ) -> tuple[Any, Ticket | None]:
        try:
            return self._client(parts, build=build)
        except StoreError:
            raise
        except OSError as exc:  # the pre-flight look-up of the endpoint's host
            raise self._transport(exc) from None

    # -- errors ------------------------------------------------------------------------------

    def _error(self, exc: BaseException, ticket: Ticket | None, mark: int) -> StoreError:
        """A StoreError for an obstore failure. Messages are built from codes and field
        names; obstore's text (it names the URL, and can carry a response body) is only
        searched for the status, the S3 error code and the transport failure's kind."""
        refusal = find_refusal(exc)
        if refusal is not None:
            return refusal
        if isinstance(exc, SourceTooLarge | StoreError):
            return exc
        if ticket is not None:
            failed = ticket.failure_since(mark)
            if failed is not None:  # the tunnel refused or could not connect
                return find_refusal(failed) or self._transport(failed)
        text = str(exc)
        status_match = _STATUS.search(text)
        if status_match is not None:
            status = int(status_match.group(1))
            code_match = _CODE.search(text)
            code = code_match.group(1) if code_match else str(status)
            region = _REGION.search(text)
            return self._service_error(code, status, region.group(1) if region else None)
        return self._transport(_as_stdlib(text, exc))

    def _transport(self, exc: BaseException) -> StoreError:
        lab = self.labels
        where = f"{lab.provider} at {self.endpoint}"
        found = classify_transport_error(
            exc, host=where, check=lab.endpoint, timeout=self.options.timeout
        )
        if found is not None:
            return found
        name = type(exc).__name__
        return StoreError(
            "provider_error", f"the request to {where} failed ({name})", provider_code=name
        )

    def _service_error(self, code: str, status: int, region: str | None) -> StoreError:
        return service_error(self.labels, self.bucket, self.region, code, status, region)


def _retry_config(parts: RetryPolicy | None, retries: int) -> dict[str, Any]:
    """obstore's retry settings: ``retries`` (core passes 0), or core's part policy."""
    if parts is None:
        return {"max_retries": max(0, retries)}
    return {
        "max_retries": parts.attempts - 1,
        "retry_timeout": timedelta(seconds=parts.deadline),
        "backoff": {
            "init_backoff": timedelta(seconds=parts.initial),
            "max_backoff": timedelta(seconds=max(parts.initial, parts.maximum)),
            "base": 2,
        },
    }


def _retried_by_obstore(error: StoreError) -> bool:
    """Whether obstore retries a request that failed this way (a 5xx answer, a connection
    refused or dropped); it does not retry a 429 or a timed-out upload request."""
    if error.status is not None:
        return error.status >= 500
    return error.code == "endpoint_unreachable"


def _native_key(key: str) -> bool:
    """Whether ``object_store`` takes ``key`` as it is (no empty, ``.`` or ``..`` segment)."""
    return bool(key) and all(part not in ("", ".", "..") for part in key.split("/"))


def _as_stdlib(text: str, exc: BaseException) -> BaseException:
    """The stdlib exception equivalent to an obstore transport failure, for core's
    classifier (obstore raises its own classes; their Debug text names the cause)."""
    kind = _KIND.search(text)
    if _TLS.search(text):
        return ssl.SSLError("tls")
    if (kind and kind.group(1) == "Timeout") or _TIMED_OUT.search(text):
        if kind and kind.group(1) == "Connect":
            return ConnectTimeoutError("timed out")
        return ReadTimeoutError("timed out")
    if _DNS.search(text):
        return socket.gaierror(socket.EAI_NONAME, "name not known")
    if _REFUSED.search(text):
        return ConnectionRefusedError("refused")
    if kind and kind.group(1) in ("Connect", "Request", "Interrupted"):
        return ConnectionResetError("connection closed")
    return exc


def _incomplete(size: int) -> StoreError:
    return StoreError(
        "provider_error",
        f"the source did not give the {size} bytes announced; nothing was written",
        provider_code="IncompleteBody",
        transient=False,
    )


def _slices(data: bytes, progress: Any) -> Iterator[memoryview]:
    """``data`` in steps of at most the progress granule, reported as obstore takes them."""
    step = progress_granule(len(data))
    view = memoryview(data)
    for start in range(0, len(data), step):
        piece = view[start : start + step]
        progress(len(piece))
        yield piece


def _step(size: int | None, progress: Any) -> int:
    """How much one read takes: at most a progress step when progress is reported."""
    return progress_granule(size) if progress is not None else _READ_STEP


def _read_pieces(stream: Any, n: int, step: int) -> list[bytes]:
    """Up to ``n`` bytes of ``stream`` (fewer only at its end) as they were read, pieces of
    at most ``step`` bytes, not joined (no copy)."""
    pieces: list[bytes] = []
    got = 0
    while got < n:
        piece = stream.read(min(step, n - got))
        if not piece:
            break
        pieces.append(piece)
        got += len(piece)
    return pieces


def _chunks(stream: Any, size: int | None, progress: Any, head: list[bytes]) -> Iterator[bytes]:
    """The source as chunks (``head``, pieces already read, first), exactly ``size`` bytes
    when announced, with progress reported as each one is taken."""
    step = _step(size, progress)
    for piece in head:
        if progress is not None:
            progress(len(piece))
        yield piece
    if size is None:
        while chunk := stream.read(step):
            if progress is not None:
                progress(len(chunk))
            yield chunk
        return
    left = size
    while left > 0:
        chunk = stream.read(min(step, left))
        if not chunk:
            raise _incomplete(size)
        left -= len(chunk)
        if progress is not None:
            progress(len(chunk))
        yield chunk
    if stream.read(1):
        raise StoreError(
            "provider_error",
            f"the source gave more than the {size} bytes announced; nothing was written",
            provider_code="IncompleteBody",
            transient=False,
        )


def open_native(
    *,
    bucket: str,
    access_key_id: str | None,
    secret_access_key: Any,
    endpoint_url: str | None,
    region: str,
    options: StoreOptions,
    labels: Labels,
    upload_headers: Mapping[str, str] | None = None,
    role_arn: str | None = None,
) -> NativeS3Store | None:
    """A :class:`NativeS3Store` for this destination, or ``None`` where the native engine
    cannot serve it (:func:`native_unsupported`): the caller then opens the boto3 engine."""
    if (
        native_unsupported(
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            endpoint_url=endpoint_url,
            upload_headers=upload_headers,
            role_arn=role_arn,
        )
        is not None
    ):
        return None
    assert access_key_id is not None and endpoint_url is not None
    return NativeS3Store(
        bucket=bucket,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        endpoint_url=endpoint_url,
        region=region,
        options=options,
        labels=labels,
    )
