"""A store for anything that speaks the S3 protocol, built on boto3.

:class:`S3ProtocolStore` takes explicit parameters (not a field model) so other plugins reuse
it: ``destinations-gcs`` drives Google's XML API with HMAC keys through it.
"""

from __future__ import annotations

import contextvars
import functools
import io
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, BinaryIO, Final, Literal

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
from s3transfer.utils import (  # type: ignore[import-untyped]
    ChunksizeAdjuster,
    set_default_checksum_algorithm,
    signal_not_transferring,
    signal_transferring,
)

from destinations.plugin import (
    ProgressCallback,
    SecretStr,
    Source,
    Store,
    StoreError,
    StoreOptions,
    classify_transport_error,
    find_refusal,
    open_source,
    part_chunks,
    progress_granule,
    read_exactly,
    retry_part,
    source_size,
    upload_progress,
)

from ._assume import sts_error
from ._guard import guard_client
from ._labels import (
    Labels,
    service_error,
)
from ._options import UploadOptions

__all__ = ["AddressingStyle", "ChecksumMode", "Labels", "S3ProtocolStore"]

AddressingStyle = Literal["auto", "path", "virtual"]
ChecksumMode = Literal["when_supported", "when_required"]

_SAFE_REGION = re.compile(r"[a-z0-9-]{1,63}")
_SAFE_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")

log = logging.getLogger("destinations.s3")

#: S3's limit on the parts of one multipart upload.
MAX_PARTS: Final = 10_000

# Parts sent at once, at most (threads). A part read from a stream is held in memory until
# sent and the next one is read only when a slot is free, so a stream's upload holds at most
# this many parts; parts of a file are read from disk as they are sent.
_MAX_PART_THREADS: Final = 4


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
    ``PutObject`` (through s3transfer, for its progress hooks); larger or unsized ones are a
    multipart upload driven here, each ``UploadPart`` and the completion through
    :func:`~destinations.plugin.retry_part`, so a transient failure re-sends that part alone.

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
        # Bodies of PutObject/UploadPart read for signing or checksums are not progress
        # (s3transfer's own handlers, registered once whoever registers them first).
        events.register_first(
            "request-created.s3", signal_not_transferring, unique_id="s3upload-not-transferring"
        )
        events.register_last(
            "request-created.s3", signal_transferring, unique_id="s3upload-transferring"
        )
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
        self._concurrency = max(1, min(options.max_connections, _MAX_PART_THREADS))
        self._osutil = OSUtils()

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
        try:
            if size is None and isinstance(source, str | os.PathLike):
                size = source_size(source)
            if size is not None and size < self.options.multipart_threshold:
                # Read first, so a source that gives more or fewer bytes than announced
                # writes nothing; then one PutObject.
                with open_source(source) as stream:
                    data = read_exactly(stream, size)
                self._put_whole(key, data, extra, progress)
            elif isinstance(source, str | os.PathLike):
                assert size is not None
                self._put_file_in_parts(key, os.fspath(source), size, extra, progress)
            else:
                self._put_stream_in_parts(key, source, size, extra, progress)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc) from exc

    # -- uploads -----------------------------------------------------------------------------

    def _put_whole(
        self, key: str, data: bytes, extra: dict[str, Any], progress: ProgressCallback
    ) -> None:
        """One PutObject (s3transfer sends it, with its checksum defaults and body hooks)."""
        metered = _MeteredOSUtils(progress, progress_granule(len(data)))
        with create_transfer_manager(
            self._client, self._transfer_config, osutil=metered
        ) as manager:
            manager.upload(io.BytesIO(data), self.bucket, key, extra_args=extra or None).result()

    def _part_size(self, size: int | None) -> int:
        """``options.part_size`` within S3's limits (5 MiB to 5 GiB), doubled until a known
        size fits in 10,000 parts (s3transfer's rule)."""
        adjusted: int = ChunksizeAdjuster().adjust_chunksize(self.options.part_size, size)
        return adjusted

    def _put_file_in_parts(
        self, key: str, path: str, size: int, extra: dict[str, Any], progress: ProgressCallback
    ) -> None:
        """Parts read from disk by range as they are sent (and again when re-sent)."""
        actual = os.stat(path).st_size
        if actual != size:
            more = "more than" if actual > size else f"only {actual} of"
            raise StoreError(
                "provider_error",
                f"the source gave {more} the {size} bytes announced; nothing was written",
                provider_code="IncompleteBody",
                transient=False,
            )
        part_size = self._part_size(size)

        def ranges() -> Iterator[Callable[[], Any]]:
            for start in range(0, size, part_size):
                length = min(part_size, size - start)
                yield functools.partial(
                    self._osutil.open_file_chunk_reader, path, start, length, []
                )

        self._put_in_parts(key, ranges(), size, extra, progress)

    def _put_stream_in_parts(
        self,
        key: str,
        stream: BinaryIO,
        size: int | None,
        extra: dict[str, Any],
        progress: ProgressCallback,
    ) -> None:
        """Parts read from the stream one at a time (until EOF when unsized), each held in
        memory until sent; an unsized stream shorter than one part is one PutObject."""
        part_size = self._part_size(size)
        chunks = part_chunks(stream, part_size, size)
        first = next(chunks, None)
        if first is None or (size is None and len(first) < part_size):
            self._put_whole(key, first or b"", extra, progress)
            return

        def bodies(first: bytes | None) -> Iterator[Callable[[], Any]]:
            chunk = first
            while chunk is not None:
                yield _BytesBody(chunk, self._osutil)
                chunk = None  # the body holds it: freed once sent
                chunk = next(chunks, None)

        self._put_in_parts(key, bodies(first), size, extra, progress)

    def _put_in_parts(
        self,
        key: str,
        bodies: Iterator[Callable[[], Any]],
        size: int | None,
        extra: dict[str, Any],
        progress: ProgressCallback,
    ) -> None:
        """CreateMultipartUpload (with every setting a PutObject carries), UploadPart for
        each body (at most ``_concurrency`` at once), CompleteMultipartUpload; each part and
        the completion through :func:`retry_part`. On failure the upload is aborted."""
        create_args = dict(extra)
        if self._client.meta.config.request_checksum_calculation == "when_supported":
            set_default_checksum_algorithm(create_args)  # CRC32 per part, as s3transfer does
        algorithm = create_args.get("ChecksumAlgorithm")
        part_args = {"ChecksumAlgorithm": algorithm} if algorithm else {}
        upload_id: str = self._client.create_multipart_upload(
            Bucket=self.bucket, Key=key, **create_args
        )["UploadId"]
        granule = progress_granule(size)
        parts: dict[int, dict[str, Any]] = {}
        in_flight: set[Future[dict[str, Any]]] = set()

        def collect(done: set[Future[dict[str, Any]]]) -> None:
            for future in done:
                part = future.result()  # the first failure stops the upload
                parts[part["PartNumber"]] = part

        try:
            with ThreadPoolExecutor(
                max_workers=self._concurrency, thread_name_prefix="destinations-s3-part"
            ) as pool:
                try:
                    number = 0
                    while True:
                        if len(in_flight) >= self._concurrency:
                            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                            collect(done)
                        body = next(bodies, None)  # read only when a slot is free
                        if body is None:
                            break
                        number += 1
                        if number > MAX_PARTS:
                            raise StoreError(
                                "provider_error",
                                f"the stream needs more than {MAX_PARTS} parts of "
                                f"{self._part_size(size)} bytes; raise the part size or pass "
                                "the size so it can be chosen",
                                provider_code="TooManyParts",
                                transient=False,
                            )
                        send = _PartSender(
                            self._client,
                            {"Bucket": self.bucket, "Key": key, "UploadId": upload_id},
                            number,
                            body,
                            part_args,
                            progress,
                            granule,
                        )
                        body = None
                        context = contextvars.copy_context()  # the delivery's retry policy
                        in_flight.add(
                            pool.submit(context.run, retry_part, send, map_error=self._part_error)
                        )
                        del send
                    collect(wait(in_flight).done)
                except BaseException:
                    for future in in_flight:
                        future.cancel()
                    raise
            ordered = [parts[n] for n in sorted(parts)]
            retry_part(
                lambda: self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": ordered},
                ),
                map_error=self._part_error,
            )
        except BaseException:
            self._abort(key, upload_id)
            raise

    def _part_error(self, exc: Exception) -> BaseException:
        if isinstance(exc, ClientError | BotoCoreError):
            return self._error(exc)
        return exc

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError) as exc:
            # The original failure is what matters; a lifecycle rule can reap the parts.
            log.warning(
                "could not abort the multipart upload of %r in bucket %r (%s); its parts "
                "stay until a lifecycle rule removes them",
                key,
                self.bucket,
                _error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__,
            )

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
        code = _error_code(exc)
        raw_status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        status = raw_status if isinstance(raw_status, int) else None
        if exc.operation_name == "AssumeRole":  # the credentials' refresh, not the bucket
            return sts_error(role_arn=self._role_arn or "?", status=status, code=code)
        return service_error(
            self.labels, self.bucket, self.region, code, status, self._bucket_region(exc)
        )

    @staticmethod
    def _bucket_region(exc: ClientError) -> str | None:
        """The bucket's region when the answer names it (a header or the error body)."""
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        found = headers.get("x-amz-bucket-region") or exc.response.get("Error", {}).get("Region")
        return found if isinstance(found, str) and _SAFE_REGION.fullmatch(found) else None


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
    checksum) are not progress. A body rewound and sent again (or a part's next attempt,
    sharing ``furthest``) reports only bytes past the furthest point already reported, so the
    reports add up to the object's size. A read of
    more than ``granule`` bytes returns ``granule`` (a short read, which every reader of a
    request body handles), so reports come at least every ``granule`` bytes.
    """

    def __init__(
        self,
        chunk: Any,
        progress: ProgressCallback,
        granule: int,
        furthest: _Furthest | None = None,
    ) -> None:
        self._chunk = chunk
        self._progress = progress
        self._granule = granule
        self._sending = False
        # Shared by the bodies of one part's attempts: a re-sent part is not counted twice.
        self._furthest = _Furthest() if furthest is None else furthest

    def read(self, amount: int | None = None) -> bytes:
        if amount is not None and amount > self._granule:
            amount = self._granule
        data: bytes = self._chunk.read(amount)
        if self._sending and data:
            position: int = self._chunk.tell()
            if position > self._furthest.at:
                self._progress(position - self._furthest.at)
                self._furthest.at = position
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


class _Furthest:
    """How far into one part progress has been reported (shared by its attempts)."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at = 0


class _BytesBody:
    """Opens a part held in memory as a fresh s3transfer chunk reader, per attempt."""

    def __init__(self, data: bytes, osutil: OSUtils) -> None:
        self._data, self._osutil = data, osutil

    def __call__(self) -> Any:
        n = len(self._data)
        return self._osutil.open_file_chunk_reader_from_fileobj(
            fileobj=io.BytesIO(self._data), chunk_size=n, full_file_size=n, callbacks=[]
        )


class _PartSender:
    """One UploadPart, repeatable (each call opens the part's body afresh); returns the
    part's entry for CompleteMultipartUpload."""

    def __init__(
        self,
        client: Any,
        upload: Mapping[str, str],
        number: int,
        open_body: Callable[[], Any],
        part_args: Mapping[str, str],
        progress: ProgressCallback,
        granule: int,
    ) -> None:
        self._client, self._upload, self._number = client, upload, number
        self._open_body, self._part_args = open_body, part_args
        self._progress, self._granule = progress, granule
        self._furthest = _Furthest()

    def __call__(self) -> dict[str, Any]:
        body = _MeteredBody(self._open_body(), self._progress, self._granule, self._furthest)
        with body:
            response = self._client.upload_part(
                **self._upload, PartNumber=self._number, Body=body, **self._part_args
            )
        part: dict[str, Any] = {"ETag": response["ETag"], "PartNumber": self._number}
        algorithm = self._part_args.get("ChecksumAlgorithm")
        if algorithm:
            member = f"Checksum{algorithm.upper()}"
            if member in response:
                part[member] = response[member]  # CompleteMultipartUpload wants it back
        return part


def _error_code(exc: ClientError) -> str:
    raw = exc.response.get("Error", {}).get("Code")
    if isinstance(raw, str) and _SAFE_CODE.fullmatch(raw):
        return raw
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(status) if status else "Unknown"
