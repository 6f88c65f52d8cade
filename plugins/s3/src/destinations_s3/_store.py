"""A store for anything that speaks the S3 protocol, built on boto3.

:class:`S3ProtocolStore` takes explicit parameters (not a field model) so other plugins reuse
it: ``destinations-gcs`` drives Google's XML API with HMAC keys through it.
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import boto3.session
import botocore.session
from boto3.s3.transfer import (
    OSUtils,
    TransferConfig,
    create_transfer_manager,
)
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.credentials import CredentialProvider, CredentialResolver, Credentials
from botocore.exceptions import BotoCoreError, ClientError

from destinations.plugin import (
    LimitedReader,
    ProgressCallback,
    SecretStr,
    Source,
    Store,
    StoreError,
    StoreOptions,
    classify_transport_error,
    find_refusal,
    open_source,
    progress_granule,
    read_exactly,
    upload_progress,
)

from ._assume import sts_error
from ._guard import guard_client
from ._labels import (
    CREDENTIAL_CODES,
    DENIED_CODES,
    REGION_CODES,
    TRANSIENT_CODES,
    Labels,
    region_message,
)
from ._options import UploadOptions

__all__ = ["AddressingStyle", "ChecksumMode", "Labels", "S3ProtocolStore"]

AddressingStyle = Literal["auto", "path", "virtual"]
ChecksumMode = Literal["when_supported", "when_required"]

_CREDENTIAL_CODES = CREDENTIAL_CODES
_DENIED_CODES = DENIED_CODES
_REGION_CODES = REGION_CODES
_TRANSIENT_CODES = TRANSIENT_CODES
_SAFE_REGION = re.compile(r"[a-z0-9-]{1,63}")
_SAFE_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


# --------------------------------------------------------------------------------------------
# one isolated botocore session for the process

_session_lock = threading.Lock()
_session: Any = None
_loader: Any = None  # the shared session's service model loader (its models stay loaded)


def _boto3_session() -> Any:
    """A boto3 session over a private botocore session that reads no profile or ~/.aws file.

    Keys always come from the destination. Environment variables still apply, which is how
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` and ``AWS_CA_BUNDLE`` reach the ``s3``
    type. Shared so the S3 service model is loaded once, not per store. Call it with
    ``_session_lock`` held.
    """
    global _session, _loader
    if _session is None:
        core = botocore.session.Session(
            session_vars={
                "profile": (None, None, None, None),
                "config_file": (None, None, os.devnull, None),
                "credentials_file": (None, None, os.devnull, None),
            }
        )
        _loader = core.get_component("data_loader")
        _session = boto3.session.Session(botocore_session=core)
    return _session


def _session_with(credentials: Credentials) -> Any:
    """A boto3 session whose clients sign with ``credentials`` (a botocore ``Credentials``,
    e.g. the refreshable ones of an assumed role), sharing the process session's loaded
    service models. Call it with ``_session_lock`` held."""
    _boto3_session()
    core = botocore.session.Session(
        session_vars={
            "profile": (None, None, None, None),
            "config_file": (None, None, os.devnull, None),
            "credentials_file": (None, None, os.devnull, None),
        }
    )
    core.register_component("data_loader", _loader)
    core.register_component(
        "credential_provider", CredentialResolver([_GivenCredentials(credentials)])
    )
    return boto3.session.Session(botocore_session=core)


class _GivenCredentials(CredentialProvider):  # type: ignore[misc]
    """A credential provider that returns the credentials it was given."""

    METHOD = "destinations"

    def __init__(self, credentials: Credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> Credentials:
        return self._credentials


def _header_adder(headers: Mapping[str, str]) -> Any:
    """A ``before-sign`` handler adding ``headers`` to the request (so they are signed)."""

    def add(request: Any, **_: Any) -> None:
        for name, value in headers.items():
            request.headers[name] = value

    return add


# --------------------------------------------------------------------------------------------
# bucket regions learned from redirects, so the next store for that bucket goes straight there

_HINTS_MAX = 1024
_hints_lock = threading.Lock()
_region_hints: dict[tuple[str, str], str] = {}


def _remember_region(endpoint: str, bucket: str, region: str) -> None:
    with _hints_lock:
        _region_hints.pop((endpoint, bucket), None)
        _region_hints[(endpoint, bucket)] = region
        while len(_region_hints) > _HINTS_MAX:
            del _region_hints[next(iter(_region_hints))]


class S3ProtocolStore(Store):
    """Objects in one bucket of an S3-protocol service; one boto3 client per store.

    ``endpoint_url=None`` means AWS (or ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` when
    set: boto3 reads them itself). ``region`` is what requests are signed for; a bucket found
    elsewhere is retried once in its own region when the error names it (botocore's
    redirect), and the region is remembered for later stores of the same bucket.
    ``checksums="when_required"`` turns off the default CRC checksums that many S3-compatible
    services reject. Puts below ``options.multipart_threshold`` with a known size are one
    ``PutObject``; larger or unsized ones use boto3's managed multipart transfer.

    ``credentials``: a botocore ``Credentials`` object (e.g. the refreshable ones of an
    assumed role, :func:`destinations_s3._assume.role_credentials`) to sign with instead of
    ``access_key_id``/``secret_access_key`` (then pass ``None`` for both); ``role_arn``
    names the role in the messages of STS refusals. ``upload``: the
    :class:`~destinations_s3._options.UploadOptions` every put sends (encryption, ACL,
    storage class as boto3 ``ExtraArgs``; ``raw_headers`` added to ``PutObject`` and
    ``CreateMultipartUpload`` before signing), the verification probe included.
    """

    def __init__(
        self,
        *,
        bucket: str,
        access_key_id: str | None,
        secret_access_key: str | SecretStr | None,
        endpoint_url: str | None,
        region: str,
        options: StoreOptions,
        addressing_style: AddressingStyle = "auto",
        checksums: ChecksumMode = "when_supported",
        labels: Labels | None = None,
        credentials: Credentials | None = None,
        upload: UploadOptions | None = None,
        role_arn: str | None = None,
    ) -> None:
        if isinstance(secret_access_key, SecretStr):
            secret_access_key = secret_access_key.get_secret_value()
        self.bucket = bucket
        self.region = region
        self.options = options
        self.labels = labels or Labels()
        self.upload = upload or UploadOptions()
        self._role_arn = role_arn
        config = Config(
            connect_timeout=options.timeout,
            read_timeout=options.timeout,
            retries={"total_max_attempts": options.retries + 1, "mode": "standard"},
            max_pool_connections=options.max_connections,
            s3={"addressing_style": addressing_style},
            request_checksum_calculation=checksums,
            response_checksum_validation=checksums,
        )
        with _session_lock:  # boto3/botocore sessions are not thread-safe; clients are
            if credentials is not None:
                self._client = _session_with(credentials).client(
                    "s3", region_name=region, endpoint_url=endpoint_url, config=config
                )
            else:
                self._client = _boto3_session().client(
                    "s3",
                    aws_access_key_id=access_key_id,
                    aws_secret_access_key=secret_access_key,
                    aws_session_token=None,
                    region_name=region,
                    endpoint_url=endpoint_url,
                    config=config,
                )
        guard_client(self._client, self.labels.endpoint or f"the {self.labels.provider} endpoint")
        self.endpoint: str = self._client.meta.endpoint_url
        events = self._client.meta.events
        events.register("before-endpoint-resolution.s3", self._apply_region_hint)
        events.register("after-call.s3", self._learn_region)
        events.register("before-call.s3", self._one_region_lookup)
        raw_headers = dict(self.upload.raw_headers or {})
        if raw_headers:
            add = _header_adder(raw_headers)
            for operation in ("PutObject", "CreateMultipartUpload"):
                events.register(f"before-sign.s3.{operation}", add)
        self._local = threading.local()
        self._transfer_config = TransferConfig(
            multipart_threshold=options.multipart_threshold,
            multipart_chunksize=options.part_size,
            max_concurrency=options.max_connections,
            use_threads=options.max_connections > 1,
            preferred_transfer_client="classic",
        )

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
        progress = upload_progress()  # captured here: transfer threads call it
        extra: dict[str, Any] = {}
        if content_type:
            extra["ContentType"] = content_type
        if content_encoding:
            extra["ContentEncoding"] = content_encoding
        if metadata:
            extra["Metadata"] = dict(metadata)
        extra.update(self.upload.extra_args())  # the same on the probe and on deliveries
        fileobj: str | Any
        try:
            if size is not None and size < self.options.multipart_threshold:
                # Read first, so a source that gives more or fewer bytes than announced
                # writes nothing; then one PutObject (the transfer manager sends it, for
                # its progress callbacks).
                with open_source(source) as stream:
                    fileobj = io.BytesIO(read_exactly(stream, size))
            elif isinstance(source, str | os.PathLike):
                # By name, so parts are read from disk as they are sent, never whole.
                fileobj = os.fspath(source)
            elif size is not None:
                # A stream of announced size: read one part at a time, and never more (or
                # fewer) bytes than announced.
                fileobj = LimitedReader(source, size, exact=True)
            else:
                fileobj = source  # unsized (seekable or not): read one part at a time
            metered = _MeteredOSUtils(progress, progress_granule(size))
            with create_transfer_manager(
                self._client, self._transfer_config, osutil=metered
            ) as manager:
                manager.upload(fileobj, self.bucket, key, extra_args=extra or None).result()
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc) from exc

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            # S3 answers 204 for a missing key; some S3-compatible services answer 404.
            if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return
            raise self._error(exc) from exc
        except BotoCoreError as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        self._client.close()

    # -- region redirects --------------------------------------------------------------------

    def _apply_region_hint(
        self, builtins: dict[str, Any], params: Mapping[str, Any], **_: Any
    ) -> None:
        if params.get("Bucket") == self.bucket:
            region = _region_hints.get((self.endpoint, self.bucket))
            if region is not None:
                builtins["AWS::Region"] = region

    def _learn_region(self, http_response: Any, context: Mapping[str, Any], **_: Any) -> None:
        redirect = context.get("s3_redirect") or {}
        if redirect.get("redirected") and redirect.get("bucket") == self.bucket:
            region = (context.get("signing") or {}).get("region")
            if region and http_response is not None and http_response.status_code < 300:
                _remember_region(self.endpoint, self.bucket, region)

    def _one_region_lookup(self, model: Any, **_: Any) -> tuple[Any, dict[str, Any]] | None:
        """Allow botocore one HeadBucket region lookup per operation.

        When a redirect does not name the region, botocore asks HeadBucket; if that answers
        a redirect without the region too, botocore asks again, recursively, until
        RecursionError (a misbehaving or non-AWS server). This store never calls HeadBucket
        itself, so a second one in a row answers "301" here without a request.
        """
        if model.name != "HeadBucket":
            self._local.looked_up = False
            return None
        if not getattr(self._local, "looked_up", False):
            self._local.looked_up = True
            return None
        metadata = {"HTTPStatusCode": 301, "HTTPHeaders": {}}
        return AWSResponse(self.endpoint, 301, {}, None), {
            "Error": {"Code": "301", "Message": "Moved Permanently"},
            "ResponseMetadata": metadata,
        }

    # -- errors ------------------------------------------------------------------------------

    def _error(self, exc: Exception) -> StoreError:
        """Map a boto error to a StoreError. Messages are built from codes and field names;
        ``str(exc)`` is never used (it can echo request details)."""
        refusal = find_refusal(exc)
        if refusal is not None:
            return refusal
        if isinstance(exc, ClientError):
            return self._client_error(exc)
        lab = self.labels
        where = f"{lab.provider} at {self.endpoint}"
        transport = classify_transport_error(
            exc, host=where, check=lab.endpoint, timeout=self.options.timeout
        )
        if transport is not None:
            return transport
        name = type(exc).__name__
        return StoreError(
            "provider_error", f"the request to {where} failed ({name})", provider_code=name
        )

    def _client_error(self, exc: ClientError) -> StoreError:
        lab = self.labels
        code = _error_code(exc)
        raw_status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        status = raw_status if isinstance(raw_status, int) else None
        if exc.operation_name == "AssumeRole":  # the credentials' refresh, not the bucket
            return sts_error(role_arn=self._role_arn or "?", status=status, code=code)
        bucket = self.bucket
        if code in _CREDENTIAL_CODES:
            return StoreError(
                "invalid_credentials",
                f"{lab.provider} rejected the credentials ({code}): check {lab.access_key_id} "
                f"and {lab.secret}",
                provider_code=code,
                status=status,
                transient=False,
            )
        if code in _DENIED_CODES or (code in ("403", "Forbidden") and status == 403):
            return StoreError(
                "access_denied",
                f"the credentials may not write to bucket {bucket!r} ({code}): grant them "
                f"{lab.permissions} on the bucket under the path prefix",
                provider_code=code,
                status=status,
                transient=False,
            )
        if code == "NoSuchBucket":
            return StoreError(
                "bucket_not_found",
                f"bucket {bucket!r} does not exist at {lab.provider}; check {lab.bucket} "
                "(buckets are never created automatically)",
                provider_code=code,
                status=status,
                transient=False,
            )
        if code in _REGION_CODES or status == 301:
            return StoreError(
                "wrong_region",
                self._region_message(exc),
                provider_code=code,
                status=status,
                transient=False,
            )
        return StoreError(
            "provider_error",
            f"{lab.provider} refused the request for bucket {bucket!r}: HTTP {status} {code}",
            provider_code=code,
            status=status,
            # throttling and server-side failures by code; anything else by its status
            transient=True if code in _TRANSIENT_CODES else None,
        )

    def _region_message(self, exc: ClientError) -> str:
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        found = headers.get("x-amz-bucket-region") or exc.response.get("Error", {}).get("Region")
        region = found if isinstance(found, str) and _SAFE_REGION.fullmatch(found) else None
        return region_message(self.labels, self.bucket, self.region, region)


class _MeteredOSUtils(OSUtils):  # type: ignore[misc]
    """s3transfer's file utilities, with every request body it opens metered (one per put).

    s3transfer aggregates its own progress callbacks to 256 KiB, more than 1 % of a file
    under 25 MiB; the bodies it builds for PutObject/UploadPart are wrapped instead, so
    progress is what the HTTP layer actually reads for sending, as finely as needed.
    """

    def __init__(self, progress: ProgressCallback, granule: int) -> None:
        super().__init__()
        self._progress = progress
        self._granule = granule

    def open_file_chunk_reader(self, *args: Any, **kwargs: Any) -> _MeteredBody:
        chunk = super().open_file_chunk_reader(*args, **kwargs)
        return _MeteredBody(chunk, self._progress, self._granule)

    def open_file_chunk_reader_from_fileobj(self, *args: Any, **kwargs: Any) -> _MeteredBody:
        chunk = super().open_file_chunk_reader_from_fileobj(*args, **kwargs)
        return _MeteredBody(chunk, self._progress, self._granule)


class _MeteredBody:
    """One request body (s3transfer's ``ReadFileChunk``) that reports bytes read for sending.

    Reads while the body is not being sent (s3transfer signals it: botocore reading it for a
    checksum) are not progress. A body rewound and sent again reports only bytes past the
    furthest point already reported, so the reports add up to the object's size. A read of
    more than ``granule`` bytes returns ``granule`` (a short read, which every reader of a
    request body handles), so reports come at least every ``granule`` bytes.
    """

    def __init__(self, chunk: Any, progress: ProgressCallback, granule: int) -> None:
        self._chunk = chunk
        self._progress = progress
        self._granule = granule
        self._sending = False
        self._reported = 0

    def read(self, amount: int | None = None) -> bytes:
        if amount is not None and amount > self._granule:
            amount = self._granule
        data: bytes = self._chunk.read(amount)
        if self._sending and data:
            position: int = self._chunk.tell()
            if position > self._reported:
                self._progress(position - self._reported)
                self._reported = position
        return data

    def seek(self, where: int, whence: int = 0) -> None:
        self._chunk.seek(where, whence)

    def tell(self) -> int:
        position: int = self._chunk.tell()
        return position

    def signal_transferring(self) -> None:
        self._sending = True
        self._chunk.signal_transferring()

    def signal_not_transferring(self) -> None:
        self._sending = False
        self._chunk.signal_not_transferring()

    def enable_callback(self) -> None:
        self._sending = True
        self._chunk.enable_callback()

    def disable_callback(self) -> None:
        self._sending = False
        self._chunk.disable_callback()

    def close(self) -> None:
        self._chunk.close()

    def __len__(self) -> int:
        return len(self._chunk)

    def __enter__(self) -> _MeteredBody:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunk)


def _error_code(exc: ClientError) -> str:
    raw = exc.response.get("Error", {}).get("Code")
    if isinstance(raw, str) and _SAFE_CODE.fullmatch(raw):
        return raw
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(status) if status else "Unknown"
