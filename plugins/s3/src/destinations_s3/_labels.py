"""What both S3 engines share and that needs no SDK: how messages name the provider, the S3
error codes each core code comes from, and the wrong-region message."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CREDENTIAL_CODES",
    "DENIED_CODES",
    "REGION_CODES",
    "TRANSIENT_CODES",
    "Labels",
    "region_message",
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
