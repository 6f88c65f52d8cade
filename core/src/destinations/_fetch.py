"""Outbound HTTP for user-supplied URLs: fetching a result file by URL, and posting webhooks.

Every connection is made by the endpoint guard (:mod:`destinations.http_guard`'s guarded
urllib3 pools): https only and no loopback, private, link-local or metadata address, unless
the operator allows private endpoints; redirects are new connections and are checked too.
Nothing here follows the environment's proxy settings.

A fetch is bounded in bytes and in total time, streams to a file in chunks (never whole in
memory), and raises :class:`~destinations.StoreError`: a 4xx answer is permanent, a 5xx,
429, 408, timeout or reset transient (core's one rule), so :func:`fetch_with_retries`
retries only those.
"""

from __future__ import annotations

import time
from typing import Final
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import HTTPError, MaxRetryError, TimeoutError as Urllib3Timeout

from ._errors import EndpointNotAllowed, StoreError, transient_status
from ._guard import find_refusal, private_endpoints_allowed
from ._retry import RetryPolicy, call_with_retries
from .http_guard import guarded_pool_classes

__all__ = [
    "FETCH_RETRY",
    "check_url",
    "fetch_to_file",
    "fetch_with_retries",
    "guarded_pool_manager",
]

_CHUNK: Final = 1024 * 1024
_USER_AGENT: Final = "destinations"
#: Attempts of one file URL: 5xx, timeouts and resets get three more, within the fetch time.
FETCH_RETRY: Final = RetryPolicy(attempts=4, initial=0.5, maximum=5.0, deadline=60.0)


def check_url(value: object, *, max_length: int = 2048) -> str | None:
    """Why ``value`` cannot be a user-supplied URL to fetch or post to, or None.

    https with a host and no user name or password (plain http only when the operator allows
    private endpoints). Never echoes the value: a URL may carry a token."""
    if not isinstance(value, str) or not value.strip():
        return "must be a non-empty https:// URL"
    if len(value) > max_length:
        return f"must be at most {max_length} characters"
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return "is not a valid URL (https://host/path)"
    allowed = ("https", "http") if private_endpoints_allowed() else ("https",)
    if parts.scheme.lower() not in allowed:
        return "must be an https:// URL"
    if not parts.hostname or parts.username is not None or parts.password is not None:
        return "must name a host, with no user name or password"
    if port == 0:
        return "has an invalid port"
    return None


def guarded_pool_manager(label: str, *, timeout: float, maxsize: int = 4) -> urllib3.PoolManager:
    """A urllib3 pool manager whose every connection passes the endpoint guard; ``label``
    names what is connected to in refusals (``"file url"``, ``"webhook_url"``)."""
    manager = urllib3.PoolManager(
        num_pools=8,
        maxsize=maxsize,
        timeout=urllib3.Timeout(connect=min(timeout, 10.0), read=timeout),
        retries=False,
        headers={"User-Agent": _USER_AGENT},
    )
    manager.pool_classes_by_scheme = guarded_pool_classes(label)
    return manager


def _transport_error(exc: BaseException, what: str) -> StoreError:
    refusal = find_refusal(exc)
    if refusal is not None:
        return EndpointNotAllowed(
            f"{what}: {refusal.message}", address=refusal.address, rule=refusal.rule
        )
    if isinstance(exc, MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, Urllib3Timeout | TimeoutError):
        return StoreError("timeout", f"{what}: no answer in time")
    return StoreError(
        "endpoint_unreachable", f"{what}: the connection failed ({type(exc).__name__})"
    )


def fetch_to_file(
    url: str,
    path: str,
    *,
    name: str,
    max_bytes: int,
    timeout: float,
    manager: urllib3.PoolManager | None = None,
) -> int:
    """Stream ``url`` into the file ``path``; returns its size. ``name`` (the result file's
    name, never the URL) is what messages call it. Raises :class:`StoreError`."""
    what = f"file {name!r}"
    own = manager is None
    pool = manager or guarded_pool_manager("file url", timeout=timeout)
    started = time.monotonic()
    try:
        try:
            response = pool.request(
                "GET", url, preload_content=False, redirect=True, retries=urllib3.Retry(
                    total=None, connect=0, read=0, status=0, other=0, redirect=3
                )
            )
        except (HTTPError, OSError, EndpointNotAllowed) as exc:
            raise _transport_error(exc, f"{what}: fetching its url failed") from exc
        try:
            if response.status >= 300:
                raise StoreError(
                    "provider_error",
                    f"{what}: fetching its url answered HTTP {response.status}",
                    status=response.status,
                    transient=transient_status(response.status),
                )
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise _too_large(what, max_bytes)
            size = 0
            with open(path, "wb") as out:
                for chunk in response.stream(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise _too_large(what, max_bytes)
                    if time.monotonic() - started > timeout:
                        raise StoreError(
                            "timeout", f"{what}: fetching its url took more than {timeout:g} s"
                        )
                    out.write(chunk)
            return size
        except StoreError:
            raise  # a timeout is also an OSError: not to be wrapped again
        except (HTTPError, OSError) as exc:
            raise _transport_error(exc, f"{what}: reading its url failed") from exc
        finally:
            if not response.closed:  # an error answer's body, or a stream cut short:
                response.close()  # not reusable, and its socket must close now
            response.release_conn()
    finally:
        if own:
            pool.clear()


def _too_large(what: str, max_bytes: int) -> StoreError:
    return StoreError(
        "provider_error", f"{what}: its url gives more than {max_bytes} bytes", transient=False
    )


def fetch_with_retries(
    url: str,
    path: str,
    *,
    name: str,
    max_bytes: int,
    timeout: float,
    policy: RetryPolicy = FETCH_RETRY,
) -> int:
    """:func:`fetch_to_file`, transient failures retried per ``policy`` (its deadline no
    longer than ``timeout``). The last failure is raised, saying how many attempts ran."""
    deadline = min(policy.deadline, timeout)
    policy = RetryPolicy(policy.attempts, policy.initial, policy.maximum, deadline)
    manager = guarded_pool_manager("file url", timeout=timeout)
    size = 0
    tried = 0

    def attempt(number: int) -> None:
        nonlocal size, tried
        tried = number
        size = fetch_to_file(
            url, path, name=name, max_bytes=max_bytes, timeout=timeout, manager=manager
        )

    try:
        call_with_retries(attempt, policy)
    except StoreError as exc:
        if tried > 1:
            exc.message = f"{exc.message} (after {tried} attempts)"
            exc.args = (exc.message,)
        raise
    finally:
        manager.clear()
    return size
