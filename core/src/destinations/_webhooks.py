"""Completion webhooks: signing an event, posting it through the endpoint guard, and when
to try again.

The receiver gets a ``POST`` with the event as a JSON body and three headers:

* ``X-Destinations-Timestamp``: Unix seconds when this attempt was signed;
* ``X-Destinations-Signature``: ``v1=`` + hex HMAC-SHA256, keyed with the account's webhook
  secret (the whole ``whsec_…`` string, UTF-8), over ``timestamp + "." + body`` (the raw
  body bytes);
* ``X-Destinations-Event``: the event id (the same on every attempt of one event, so a
  receiver can drop a duplicate).

An attempt has :data:`DEFAULT_TIMEOUT` seconds in all. A 2xx answer delivers the event; a
5xx, 408, 429, a timeout or a failed connection is tried again with exponential backoff
(:meth:`WebhookPolicy.next_wait`) until :attr:`WebhookPolicy.window` seconds after the first
attempt; any other answer (4xx, a redirect) and a refused URL fail the event at once. The
secret is never logged and never part of an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import random
import time
from dataclasses import dataclass
from typing import Final, final

import urllib3
from urllib3.exceptions import HTTPError

from ._errors import EndpointNotAllowed, transient_status
from ._fetch import _transport_error, guarded_pool_manager

__all__ = [
    "DEFAULT_TIMEOUT",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "AttemptResult",
    "WebhookPolicy",
    "WebhookSender",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER: Final = "X-Destinations-Signature"
TIMESTAMP_HEADER: Final = "X-Destinations-Timestamp"
EVENT_HEADER: Final = "X-Destinations-Event"
DEFAULT_TIMEOUT: Final = 5.0
_VERSION: Final = "v1="
_MAX_ANSWER: Final = 64 * 1024


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``X-Destinations-Signature`` value for ``body`` sent at ``timestamp``."""
    message = str(timestamp).encode() + b"." + body
    return _VERSION + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    tolerance: float = 300.0,
    now: float | None = None,
) -> bool:
    """What a receiver checks: the signature matches (compared in constant time) and the
    timestamp is within ``tolerance`` seconds of ``now`` (a replayed old event fails)."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)


@final
@dataclass(frozen=True, slots=True)
class WebhookPolicy:
    """Per-attempt ``timeout``; waits of ``initial * 2**(n-1)`` seconds (at most
    ``max_wait``, less up to 20 % jitter) after the n-th failed attempt, for ``window``
    seconds after the first."""

    timeout: float = DEFAULT_TIMEOUT
    initial: float = 10.0
    max_wait: float = 600.0
    window: float = 3600.0

    def next_wait(self, failed_attempts: int) -> float:
        wait = min(self.max_wait, self.initial * 2.0 ** max(failed_attempts - 1, 0))
        return float(wait * random.uniform(0.8, 1.0))


@final
@dataclass(frozen=True, slots=True)
class AttemptResult:
    """One POST: the HTTP status (None without an answer), why it failed (no secret, no
    resolved address), whether another attempt may succeed, and how long it took."""

    status_code: int | None
    error: str | None
    transient: bool
    seconds: float

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender:
    """Posts signed events through the guard (one pool manager, reused)."""

    def __init__(self, policy: WebhookPolicy | None = None) -> None:
        self.policy = policy or WebhookPolicy()
        self._manager = guarded_pool_manager("webhook_url", timeout=self.policy.timeout)

    def close(self) -> None:
        self._manager.clear()

    def post(self, url: str, body: str, secret: str, event_id: str) -> AttemptResult:
        data = body.encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret, timestamp, data),
            EVENT_HEADER: event_id,
        }
        started = time.monotonic()
        try:
            response = self._manager.request(
                "POST",
                url,
                body=data,
                headers=headers,
                redirect=False,
                retries=False,
                timeout=urllib3.Timeout(total=self.policy.timeout),
                preload_content=False,
            )
        except (HTTPError, OSError, EndpointNotAllowed) as exc:
            error = _transport_error(exc, "posting the event failed")
            return AttemptResult(
                None, error.message, error.transient, time.monotonic() - started
            )
        try:
            with contextlib.suppress(HTTPError, OSError):
                response.read(_MAX_ANSWER)  # the answer's body is not used; bounded
            status = response.status
        finally:
            if not response.closed:  # unread answer left: do not reuse the connection
                response.close()
            response.release_conn()
        seconds = time.monotonic() - started
        if 200 <= status < 300:
            return AttemptResult(status, None, False, seconds)
        return AttemptResult(
            status, f"the webhook answered HTTP {status}", transient_status(status), seconds
        )
