"""Temporary credentials from STS AssumeRole for the ``s3`` type (``s3_role_arn``).

botocore's own mechanism does the work: an ``AssumeRoleCredentialFetcher`` calls AssumeRole,
and a ``DeferredRefreshableCredentials`` (both ``botocore.credentials``) holds the result
and refreshes it before it expires (botocore refreshes in the background 15 minutes before
expiry and blocks every request 10 minutes before it), so a delivery longer than a session
never signs with expired credentials.

One credentials object is kept per destination (its role, external ID, base credentials and
session name) in this process, so every store opened for the destination — each
verification, each delivery — shares it, and STS is called once per validity window
(sessions of :data:`DURATION_SECONDS`), not once per store or per file. The object holds
no credentials until the first request is signed: opening a store makes no STS call.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    Credentials,
    DeferredRefreshableCredentials,
)

from destinations.plugin import StoreError, StoreOptions

from ._guard import guard_client

__all__ = [
    "DURATION_SECONDS",
    "AssumeRoleSpec",
    "assumed_role_credentials",
    "default_chain_credentials",
    "forget_assumed_roles",
    "role_credentials",
    "session_name",
    "sts_client_factory",
    "sts_error",
]

#: Seconds each AssumeRole session lasts (STS's default; a role's maximum is at least this).
DURATION_SECONDS = 3600
#: Destinations whose credentials are kept at once; the least recently used go first.
_KEEP_MAX = 1024
_SESSION_PREFIX = "destinations-"

#: STS error codes meaning the base credentials themselves were refused.
_BASE_REFUSED = frozenset(
    {
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "ExpiredToken",
        "InvalidToken",
        "IncompleteSignature",
    }
)


_STS_TRANSIENT = frozenset({"Throttling", "ThrottlingException", "IDPCommunicationError"})


# What botocore's DEBUG logs show of temporary credentials: the AssumeRole answer's body
# (botocore.parsers), the canonical request (botocore.auth) and the prepared request's
# headers (botocore.endpoint), both with the session token.
_SECRETS_IN_LOGS = re.compile(
    r"(<(SecretAccessKey|SessionToken)>)[^<]*(</\2>)"
    r"|(x-amz-security-token:)[^\s\\]+"
    r"|('X-Amz-Security-Token': b?')[^']*(')",
    re.IGNORECASE,
)
_REDACTED_LOGGERS = ("botocore.parsers", "botocore.auth", "botocore.endpoint")


def _redact(match: re.Match[str]) -> str:
    if match.group(1):
        return f"{match.group(1)}***{match.group(3)}"
    if match.group(4):
        return f"{match.group(4)}***"
    return f"{match.group(5)}***{match.group(6)}"


class _RedactAssumedCredentials(logging.Filter):
    """botocore logs response bodies and signed requests at DEBUG: with assumed-role
    credentials those hold the temporary secret key and the session token. On botocore's
    loggers that do (:data:`_REDACTED_LOGGERS`), this filter formats each record and
    replaces those values with ``***`` before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        redacted = _SECRETS_IN_LOGS.sub(_redact, text)
        if redacted != text:
            record.msg, record.args = redacted, None
        return True


_redaction = _RedactAssumedCredentials()
for _name in _REDACTED_LOGGERS:
    logging.getLogger(_name).addFilter(_redaction)  # idempotent: filters are a set


def _now() -> datetime:
    """The clock refreshes are timed by (a seam tests move to reach the refresh window)."""
    return datetime.now(UTC)


def session_name(bucket: str, fingerprint: str) -> str:
    """``destinations-<bucket>-<hash>``: the RoleSessionName, which CloudTrail records and
    the role's policies can match (``aws:userid`` ends with it).

    It names this project and the destination: the plugin is given the destination's fields,
    not its stored id, so the hash (12 hex digits of SHA-256 over ``fingerprint``: role,
    external ID, base key id, bucket and prefix) identifies it. At most 64 characters of
    ``[\\w+=,.@-]``, as STS requires (bucket names use only ``[a-z0-9.-]``)."""
    digest = hashlib.sha256(fingerprint.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    head = f"{_SESSION_PREFIX}{bucket}"[: 64 - 13]
    return f"{head}-{digest}"


@dataclass(frozen=True, slots=True)
class AssumeRoleSpec:
    """What to assume and as whom.

    ``access_key_id``/``secret_access_key`` are the base credentials; both ``None`` means the
    SDK's default chain (environment, shared files, container or instance role), which the
    caller allows only when the operator set ``DESTINATIONS_ALLOW_DEFAULT_CREDENTIALS``.
    The repr never shows the secret.
    """

    role_arn: str
    external_id: str | None
    session_name: str
    access_key_id: str | None = None
    secret_access_key: str | None = None

    def __repr__(self) -> str:
        base = "default chain" if self.access_key_id is None else "access key pair"
        return (
            f"AssumeRoleSpec(role_arn={self.role_arn!r}, "
            f"session_name={self.session_name!r}, base={base})"
        )

    def cache_key(self) -> str:
        """A digest of everything that decides the credentials, the secret included (a
        destination with a wrong secret must not reuse another's session)."""
        parts = (
            self.role_arn,
            self.external_id or "",
            self.session_name,
            self.access_key_id or "",
            self.secret_access_key or "",
        )
        return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


class _NoCache(dict[str, Any]):
    """The fetcher's cache, kept empty: the refreshable credentials object is the cache, and
    its refresh must reach STS (a fetcher cache would hand back the same expiring session)."""

    def __setitem__(self, key: str, value: Any) -> None:
        return None


#: Creates the STS client the fetcher calls, from the base credentials' keyword arguments
#: (``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``).
StsClientFactory = Callable[..., Any]

_lock = threading.Lock()
_kept: OrderedDict[str, DeferredRefreshableCredentials] = OrderedDict()


def assumed_role_credentials(
    spec: AssumeRoleSpec,
    *,
    source: Credentials,
    sts_client: StsClientFactory,
) -> DeferredRefreshableCredentials:
    """The refreshable credentials of ``spec``, shared by every store of the destination.

    ``source``: the base credentials (``Credentials(key, secret)`` or the default chain's
    object). ``sts_client``: see :data:`StsClientFactory`; the first store of a destination
    supplies the one kept with it. Nothing is sent until the credentials are first used
    (``get_frozen_credentials()``, or a request signed with them); an STS refusal is raised
    then as botocore's ``ClientError`` with ``operation_name == "AssumeRole"`` — map it with
    :func:`sts_error`. Another engine (one that signs requests itself) can use the same object:
    ``get_frozen_credentials()`` returns ``access_key``, ``secret_key`` and ``token``, refreshed
    as needed, and is thread-safe.
    """
    key = spec.cache_key()
    with _lock:
        found = _kept.get(key)
        if found is not None:
            _kept.move_to_end(key)
            return found
        extra: dict[str, Any] = {
            "RoleSessionName": spec.session_name,
            "DurationSeconds": DURATION_SECONDS,
        }
        if spec.external_id is not None:
            extra["ExternalId"] = spec.external_id
        fetcher = AssumeRoleCredentialFetcher(
            client_creator=sts_client,
            source_credentials=source,
            role_arn=spec.role_arn,
            extra_args=extra,
            cache=_NoCache(),
        )
        credentials = DeferredRefreshableCredentials(
            refresh_using=fetcher.fetch_credentials,
            method="assume-role",
            time_fetcher=lambda: _now(),
        )
        _kept[key] = credentials
        while len(_kept) > _KEEP_MAX:
            _kept.popitem(last=False)
        return credentials


# --------------------------------------------------------------------------------------------
# the STS client and the base credentials

_sts_lock = threading.Lock()
_sts_session: Any = None
_default_lock = threading.Lock()
_default_chain: Any = None


def sts_client_factory(options: StoreOptions) -> StsClientFactory:
    """A factory of STS clients for :class:`AssumeRoleCredentialFetcher`: region
    ``us-east-1``, the store's timeout, ``options.retries`` retries, and the endpoint guard
    on every connection. The endpoint is AWS STS, or ``AWS_ENDPOINT_URL_STS`` /
    ``AWS_ENDPOINT_URL`` when set (boto3 reads them itself, as for S3). Its session reads no
    profile or ~/.aws file: the base credentials are passed in."""
    config = Config(
        connect_timeout=options.timeout,
        read_timeout=options.timeout,
        retries={"total_max_attempts": options.retries + 1, "mode": "standard"},
    )

    def create(service_name: str, **credentials: Any) -> Any:
        global _sts_session
        with _sts_lock:  # botocore sessions are not thread-safe; clients are
            if _sts_session is None:
                _sts_session = botocore.session.Session(
                    session_vars={
                        "profile": (None, None, None, None),
                        "config_file": (None, None, os.devnull, None),
                        "credentials_file": (None, None, os.devnull, None),
                    }
                )
            client = _sts_session.create_client(
                service_name, region_name="us-east-1", config=config, **credentials
            )
        guard_client(client, "the AWS STS endpoint")
        return client

    return create


def default_chain_credentials() -> Credentials:
    """The SDK's default credentials (environment, shared files, SSO, container or EC2
    instance role), resolved once per process; a ``StoreError`` when there are none."""
    global _default_chain
    with _default_lock:
        if _default_chain is None:
            _default_chain = botocore.session.Session().get_credentials()
        found = _default_chain
    if found is None:
        raise StoreError(
            "invalid_credentials",
            "s3_role_arn is set without s3_access_key_id and s3_secret_access_key, and this "
            "server has no AWS credentials of its own to assume the role with",
            provider_code="NoCredentials",
            transient=False,
        )
    credentials: Credentials = found
    return credentials


def role_credentials(
    *,
    role_arn: str,
    external_id: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    bucket: str,
    path_prefix: str,
    options: StoreOptions,
    allow_default_credentials: bool,
) -> DeferredRefreshableCredentials:
    """The assumed-role credentials of one ``s3`` destination (see the module docstring).

    Without a key pair the base credentials are the SDK's default chain, only when
    ``allow_default_credentials`` (the operator's ``DESTINATIONS_ALLOW_DEFAULT_CREDENTIALS``);
    otherwise a ``StoreError`` (``invalid_credentials``) naming the fields. Raises no STS
    error itself: those come with the first signed request."""
    if access_key_id is None or secret_access_key is None:
        if not allow_default_credentials:
            raise StoreError(
                "invalid_credentials",
                "s3_role_arn is set without s3_access_key_id and s3_secret_access_key: give "
                "the key pair to assume the role with (this server's own AWS credentials "
                "are used only where the operator sets DESTINATIONS_ALLOW_DEFAULT_CREDENTIALS)",
                provider_code="NoCredentials",
                transient=False,
            )
        source = default_chain_credentials()
        access_key_id = secret_access_key = None
    else:
        source = Credentials(access_key_id, secret_access_key)
    fingerprint = "\0".join((role_arn, external_id or "", access_key_id or "", bucket, path_prefix))
    spec = AssumeRoleSpec(
        role_arn=role_arn,
        external_id=external_id,
        session_name=session_name(bucket, fingerprint),
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
    )
    return assumed_role_credentials(spec, source=source, sts_client=sts_client_factory(options))


def forget_assumed_roles() -> None:
    """Drop every kept session (the next store of each destination calls STS again) and the
    default chain's credentials (resolved again on next use)."""
    global _default_chain
    with _lock:
        _kept.clear()
    with _default_lock:
        _default_chain = None


def sts_error(*, role_arn: str, status: int | None, code: str) -> StoreError:
    """The :class:`StoreError` for an AssumeRole refusal (``ClientError`` from STS).

    ``code`` is the STS error code (already checked to be a plain token). The messages
    name the fields to fix and never include the exception's text. ``provider_code`` is
    ``AssumeRole.<code>``, so an STS refusal is told apart from a storage one.
    """
    provider_code = f"AssumeRole.{code}"
    if code in _BASE_REFUSED:
        return StoreError(
            "invalid_credentials",
            f"AWS STS rejected the credentials used to assume role {role_arn!r} ({code}): "
            "check s3_access_key_id and s3_secret_access_key (or, without them, this "
            "server's own AWS credentials)",
            provider_code=provider_code,
            status=status,
            transient=False,
        )
    if code == "AccessDenied":
        # STS gives the same answer for a trust policy that does not name this principal,
        # a missing sts:AssumeRole permission of the base credentials, and a wrong or
        # missing external ID: the message lists all three.
        return StoreError(
            "access_denied",
            f"role {role_arn!r} cannot be assumed (AssumeRole AccessDenied): its trust policy "
            "must allow sts:AssumeRole to the principal of the base credentials, that "
            "principal needs sts:AssumeRole on the role, and when the trust policy requires "
            "sts:ExternalId, s3_external_id must match it exactly",
            provider_code=provider_code,
            status=status,
            transient=False,
        )
    if code == "RegionDisabledException":
        return StoreError(
            "access_denied",
            f"AWS STS is not activated in the region used to assume role {role_arn!r}; "
            "activate it in the account's IAM settings",
            provider_code=provider_code,
            status=status,
            transient=False,
        )
    if code in ("ValidationError", "MalformedPolicyDocument", "PackedPolicyTooLarge"):
        return StoreError(
            "access_denied",
            f"AWS STS refused to assume role {role_arn!r} ({code}): check s3_role_arn and "
            "s3_external_id, and that the role's maximum session duration is at least "
            f"{DURATION_SECONDS // 60} minutes",
            provider_code=provider_code,
            status=status,
            transient=False,
        )
    transient = (
        True if code in ("Throttling", "ThrottlingException", "IDPCommunicationError") else None
    )
    return StoreError(
        "provider_error",
        f"AWS STS could not assume role {role_arn!r}: HTTP {status} {code}",
        provider_code=provider_code,
        status=status,
        transient=transient,
    )
