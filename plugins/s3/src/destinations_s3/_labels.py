"""What both S3 engines share and that needs no SDK: how messages name the provider, the S3
error codes each core code comes from, and the wrong-region message."""

from __future__ import annotations

from dataclasses import dataclass

from destinations.plugin import StoreError

__all__ = [
    "CREDENTIAL_CODES",
    "DENIED_CODES",
    "REGION_CODES",
    "TRANSIENT_CODES",
    "Labels",
    "region_message",
    "service_error",
]

CREDENTIAL_CODES = frozenset(
    {
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "InvalidSecurity",
    }
)
DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled"})
REGION_CODES = frozenset(
    {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
)
#: Codes worth another attempt: throttling, the service failing or timing out waiting for
#: the body, and bodies corrupted in transit (S3, and the S3-compatible services and GCS's
#: XML API that answer with S3's codes). Any other code is transient only by its HTTP status
#: (core's generic rule: 408, 429, 5xx).
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeoutException",
        "BadDigest",
        "XAmzContentSHA256Mismatch",
    }
)


@dataclass(frozen=True, slots=True)
class Labels:
    """How error messages name the provider, its fields and the permissions it needs."""

    provider: str = "Amazon S3"
    access_key_id: str = "s3_access_key_id"
    secret: str = "s3_secret_access_key"
    bucket: str = "s3_bucket_name"
    endpoint: str | None = None
    region: str | None = None
    permissions: str = "s3:PutObject and s3:DeleteObject (plus s3:AbortMultipartUpload)"


def region_message(lab: Labels, bucket: str, signed_for: str, region: str | None) -> str:
    """The wrong_region message: ``region`` is where the service said the bucket is (already
    checked to be a region name), or ``None``."""
    if region is None:
        head = (
            f"bucket {bucket!r} is not in region {signed_for!r} and {lab.provider} "
            "did not say which region it is in"
        )
        fix = (
            f"set {lab.region} to the bucket's region"
            if lab.region
            else ("check that the bucket is in a standard AWS region (not China or GovCloud)")
        )
    else:
        head = f"bucket {bucket!r} is in region {region!r}, not {signed_for!r}"
        fix = (
            f"set {lab.region} to {region!r}"
            if lab.region
            else (
                "the request could not be redirected there; check that the bucket is in a "
                "standard AWS region (not China or GovCloud)"
            )
        )
    return f"{head}: {fix}"


def service_error(
    lab: Labels, bucket: str, signed_for: str, code: str, status: int | None, region: str | None
) -> StoreError:
    """The StoreError for an S3 error answer: ``code`` (the S3 error code, or the status as
    text), ``status``, and ``region`` (the bucket's region when the answer named it; requests
    were signed for ``signed_for``). One mapping for both engines."""
    if code in CREDENTIAL_CODES:
        return StoreError(
            "invalid_credentials",
            f"{lab.provider} rejected the credentials ({code}): check {lab.access_key_id} "
            f"and {lab.secret}",
            provider_code=code,
            status=status,
            transient=False,
        )
    if code in DENIED_CODES or (code in ("403", "Forbidden") and status == 403):
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
    if code in REGION_CODES or status == 301:
        return StoreError(
            "wrong_region",
            region_message(lab, bucket, signed_for, region),
            provider_code=code,
            status=status,
            transient=False,
        )
    return StoreError(
        "provider_error",
        f"{lab.provider} refused the request for bucket {bucket!r}: HTTP {status} {code}",
        provider_code=code,
        status=status,
        transient=True if code in TRANSIENT_CODES else None,
    )
