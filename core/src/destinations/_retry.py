"""Delivery's retry policy: which failures get another attempt, and when.

One definition, read by delivery, the Celery task and the file fetcher alike: a failure is
worth another attempt when it is a :class:`~destinations.StoreError` whose ``transient`` is
true. The plugin that raised it decided (it knows its provider's throttling codes); core's
generic rule covers what the plugin left open (see :class:`~destinations.StoreError`). No
provider's error code appears here.

Attempts are spaced by exponential backoff with full jitter (``tenacity``'s
``wait_random_exponential``), bounded in number and in total time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar, final

from ._errors import StoreError

__all__ = [
    "RetryPolicy",
    "call_with_retries",
    "is_transient",
    "part_retry_policy",
    "parts_spent",
    "retry_part",
    "retrying_parts",
]

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth another attempt (the one definition core retries by).

    A failure that :func:`retry_part` already retried until the policy ran out is not: the
    object is not sent again whole after its part was retried alone.
    """
    return isinstance(exc, StoreError) and exc.transient and not getattr(exc, _SPENT, False)


_SPENT = "_destinations_part_retries_spent"


@final
@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient failures are retried, per put (each file and the manifest).

    ``attempts``: most attempts in all (1 = never retry). Waits are drawn uniformly from
    ``[0, min(maximum, initial * 2**n)]`` (exponential backoff, full jitter). No wait starts
    that would end more than ``deadline`` seconds after the first attempt began.
    """

    attempts: int = 5
    initial: float = 0.5
    maximum: float = 20.0
    deadline: float = 300.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.initial < 0 or self.maximum < 0 or self.deadline < 0:
            raise ValueError("initial, maximum and deadline must not be negative")


#: Told of each failure that will be retried: (the failure, the next attempt's number, the
#: wait in seconds before it).
OnRetry = Callable[[BaseException, int, float], None]


def call_with_retries(
    attempt: Callable[[int], None],
    policy: RetryPolicy,
    *,
    attempts: int | None = None,
    on_retry: OnRetry | None = None,
) -> None:
    """Call ``attempt(n)`` (n = 1, 2, …) until it returns, retrying transient failures.

    The first attempt runs directly; only a transient failure builds the ``tenacity`` loop,
    which takes that failure as its first attempt. The result is the same as running every
    attempt through tenacity, without its cost (a few tens of microseconds) on the common
    path where the first attempt succeeds. ``attempts`` overrides the policy's count (1 for a
    source that cannot be rewound). The last failure is re-raised.
    """
    most = policy.attempts if attempts is None else attempts
    started = time.monotonic()
    try:
        attempt(1)
        return
    except Exception as exc:
        if most <= 1 or not is_transient(exc):
            raise
        first_failure: BaseException | None = exc

    from tenacity import (
        RetryCallState,
        Retrying,
        retry_if_exception,
        stop_after_attempt,
        stop_before_delay,
        wait_random_exponential,
    )

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is None:
            return
        exc = state.outcome.exception() if state.outcome is not None else None
        assert exc is not None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        on_retry(exc, state.attempt_number + 1, wait)

    def run(state_number: list[int]) -> None:
        nonlocal first_failure
        state_number[0] += 1
        if first_failure is not None:  # the attempt already made, replayed for tenacity
            failure, first_failure = first_failure, None
            raise failure
        attempt(state_number[0])

    retrying = Retrying(
        stop=stop_after_attempt(most)
        | stop_before_delay(policy.deadline - (time.monotonic() - started)),
        wait=wait_random_exponential(multiplier=policy.initial, max=policy.maximum),
        retry=retry_if_exception(is_transient),
        before_sleep=before_sleep,
        reraise=True,
    )
    retrying(run, [0])


_part_policy: ContextVar[RetryPolicy | None] = ContextVar(
    "destinations_part_retry_policy", default=None
)


@contextlib.contextmanager
def retrying_parts(policy: RetryPolicy | None) -> Iterator[None]:
    """Within the block, :func:`retry_part` retries with ``policy`` (None: never)."""
    token = _part_policy.set(policy)
    try:
        yield
    finally:
        _part_policy.reset(token)


def part_retry_policy() -> RetryPolicy | None:
    """The policy :func:`retry_part` would retry a part with now: core's policy for the
    running delivery, ``None`` outside one (e.g. during verification: one attempt).

    For plugins whose SDK or transport retries each part of a multipart upload itself:
    configure that retry from this policy (attempts, backoff, deadline) instead of driving
    the parts through :func:`retry_part`, then pass a failure that outlived it through
    :func:`parts_spent`.
    """
    return _part_policy.get()


def parts_spent(error: StoreError) -> StoreError:
    """``error``, marked (when transient, within a delivery) as the failure of a multipart
    upload whose parts were already retried with :func:`part_retry_policy`: delivery then
    does not send the whole object again. Returns ``error``, for ``raise parts_spent(e)``."""
    if _part_policy.get() is not None and error.transient:
        setattr(error, _SPENT, True)
    return error


def retry_part(
    call: Callable[[], T],
    *,
    map_error: Callable[[Exception], BaseException] | None = None,
) -> T:
    """Run one part of a multipart upload, retrying a transient failure of *that part*.

    For plugins that drive multipart uploads themselves: wrap each part's request (and the
    completion call) so a transient failure re-sends only that part, with core's retry
    policy for the running delivery (outside a delivery, e.g. during verification, there is
    one attempt). ``map_error`` turns an SDK exception into a :class:`StoreError` (your
    error mapper), so the plugin's ``transient`` decides. The call must be repeatable (send
    the same bytes again). When the retries run out, the last error is raised, marked so
    delivery does not send the whole object again.

    Capture nothing across threads: call it in the thread that runs ``put`` or hand the
    policy over with :func:`contextvars.copy_context`.
    """
    policy = _part_policy.get()
    result: list[T] = []

    def attempt(number: int) -> None:
        try:
            result.append(call())
        except Exception as exc:
            mapped = map_error(exc) if map_error is not None else exc
            if mapped is exc:
                raise
            raise mapped from exc

    try:
        if policy is None:
            attempt(1)
        else:
            call_with_retries(attempt, policy)
    except StoreError as exc:
        parts_spent(exc)  # within a delivery, a transient failure that outlived the policy
        raise
    return result[0]
