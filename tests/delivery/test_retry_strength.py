"""The retry policy (destinations._retry) as documented: what is transient, how many attempts,
their numbers and waits, the deadline, and a part retried alone (``retry_part``)."""

from __future__ import annotations

import time

import pytest

from destinations import RetryPolicy, StoreError
from destinations._retry import (
    call_with_retries,
    is_transient,
    part_retry_policy,
    parts_spent,
    retry_part,
    retrying_parts,
)


def transient(n: int = 0) -> StoreError:
    return StoreError("provider_error", f"slow down #{n}", status=503)


def permanent() -> StoreError:
    return StoreError("access_denied", "no", status=403)


class Attempts:
    """An attempt function that fails with the given exceptions, then succeeds."""

    def __init__(self, *failures: BaseException, seconds: float = 0.0) -> None:
        self.failures = list(failures)
        self.numbers: list[int] = []
        self.seconds = seconds

    def __call__(self, number: int) -> None:
        self.numbers.append(number)
        time.sleep(self.seconds)
        if self.failures:
            raise self.failures.pop(0)


FAST = RetryPolicy(attempts=5, initial=0.001, maximum=0.002, deadline=30)


# -- is_transient and the policy's own checks ------------------------------------------------

def test_only_a_transient_store_error_is_worth_another_attempt() -> None:
    assert is_transient(transient())
    assert not is_transient(permanent())
    assert not is_transient(StoreError("timeout", "t", transient=False))
    assert is_transient(StoreError("provider_error", "p", transient=True))
    assert not is_transient(TimeoutError("not a StoreError"))
    assert not is_transient(ValueError("x"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, "attempts must be at least 1"),
        ({"attempts": -3}, "attempts must be at least 1"),
        ({"initial": -0.1}, "initial, maximum and deadline must not be negative"),
        ({"maximum": -1}, "initial, maximum and deadline must not be negative"),
        ({"deadline": -1}, "initial, maximum and deadline must not be negative"),
    ],
)
def test_a_policy_refuses_impossible_values(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_the_boundary_values_are_allowed() -> None:
    policy = RetryPolicy(attempts=1, initial=0, maximum=0, deadline=0)
    assert (policy.attempts, policy.initial, policy.maximum, policy.deadline) == (1, 0, 0, 0)


def test_the_default_policy() -> None:
    assert RetryPolicy() == RetryPolicy(attempts=5, initial=0.5, maximum=20.0, deadline=300.0)


# -- call_with_retries ------------------------------------------------------------------------

def test_a_first_success_is_one_attempt_numbered_one() -> None:
    calls = Attempts()
    seen: list[object] = []
    call_with_retries(calls, FAST, on_retry=lambda *a: seen.append(a))
    assert calls.numbers == [1] and seen == []


def test_transient_failures_are_retried_with_numbered_attempts_and_reported() -> None:
    first, second = transient(1), transient(2)
    calls = Attempts(first, second)
    seen: list[tuple[BaseException, int, float]] = []
    call_with_retries(calls, FAST, on_retry=lambda e, n, w: seen.append((e, n, w)))
    assert calls.numbers == [1, 2, 3]
    assert [(e, n) for e, n, _ in seen] == [(first, 2), (second, 3)]
    assert all(0 <= w <= FAST.maximum for _, _, w in seen)


def test_retries_work_without_an_observer() -> None:
    calls = Attempts(transient(), transient())
    call_with_retries(calls, FAST)
    assert calls.numbers == [1, 2, 3]


def test_a_permanent_failure_is_raised_at_once() -> None:
    error = permanent()
    calls = Attempts(error)
    with pytest.raises(StoreError) as info:
        call_with_retries(calls, FAST)
    assert info.value is error and calls.numbers == [1]


def test_a_permanent_failure_after_a_transient_one_stops_the_retries() -> None:
    error = permanent()
    calls = Attempts(transient(), error, transient())
    with pytest.raises(StoreError) as info:
        call_with_retries(calls, FAST)
    assert info.value is error and calls.numbers == [1, 2]


def test_an_exception_that_is_not_a_store_error_is_never_retried() -> None:
    calls = Attempts(ConnectionResetError("raw"))
    with pytest.raises(ConnectionResetError):
        call_with_retries(calls, FAST)
    assert calls.numbers == [1]


def test_attempts_are_bounded_and_the_last_failure_is_raised() -> None:
    failures = [transient(n) for n in range(1, 10)]
    calls = Attempts(*failures)
    seen: list[int] = []
    policy = RetryPolicy(attempts=3, initial=0.001, maximum=0.001)
    with pytest.raises(StoreError) as info:
        call_with_retries(calls, policy, on_retry=lambda e, n, w: seen.append(n))
    assert calls.numbers == [1, 2, 3]
    assert info.value is failures[2]
    assert seen == [2, 3]


def test_one_attempt_in_the_policy_means_no_retry() -> None:
    error = transient()
    calls = Attempts(error)
    with pytest.raises(StoreError) as info:
        call_with_retries(calls, RetryPolicy(attempts=1))
    assert info.value is error and calls.numbers == [1]


def test_the_attempts_override_wins_over_the_policy() -> None:
    # 1 for a source that cannot be rewound, whatever the policy says.
    calls = Attempts(transient(), transient())
    with pytest.raises(StoreError):
        call_with_retries(calls, FAST, attempts=1)
    assert calls.numbers == [1]
    calls = Attempts(*(transient(n) for n in range(9)))
    with pytest.raises(StoreError):
        call_with_retries(calls, RetryPolicy(attempts=1), attempts=2)
    assert calls.numbers == [1, 2]


def test_waits_are_capped_by_the_maximum() -> None:
    waits: list[float] = []
    policy = RetryPolicy(attempts=6, initial=5.0, maximum=0.003)
    calls = Attempts(*(transient() for _ in range(5)))
    started = time.monotonic()
    call_with_retries(calls, policy, on_retry=lambda e, n, w: waits.append(w))
    assert len(waits) == 5 and all(0 <= w <= 0.003 for w in waits)
    assert time.monotonic() - started < 2


def test_no_wait_with_a_zero_initial_delay() -> None:
    waits: list[float] = []
    calls = Attempts(transient(), transient())
    call_with_retries(
        calls, RetryPolicy(attempts=3, initial=0, maximum=10),
        on_retry=lambda e, n, w: waits.append(w),
    )
    assert waits == [0.0, 0.0]


def test_the_deadline_counts_from_the_first_attempt() -> None:
    # Each attempt takes 0.3 s; the deadline is 0.5 s after the first attempt began. The
    # second attempt (0.3-0.6 s) may start, a third may not.
    calls = Attempts(*(transient(n) for n in range(9)), seconds=0.3)
    policy = RetryPolicy(attempts=9, initial=0, maximum=0, deadline=0.5)
    with pytest.raises(StoreError):
        call_with_retries(calls, policy)
    assert calls.numbers == [1, 2]


def test_a_zero_deadline_allows_only_the_first_attempt() -> None:
    calls = Attempts(transient(), transient())
    with pytest.raises(StoreError):
        call_with_retries(calls, RetryPolicy(attempts=5, initial=0, maximum=0, deadline=0))
    assert calls.numbers == [1]


# -- retry_part -------------------------------------------------------------------------------

class Part:
    def __init__(self, *failures: Exception, result: str = "etag-1") -> None:
        self.failures = list(failures)
        self.calls = 0
        self.result = result

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.result


def test_outside_a_delivery_a_part_gets_one_attempt_and_stays_retryable() -> None:
    error = transient()
    part = Part(error)
    with pytest.raises(StoreError) as info:
        retry_part(part)
    assert info.value is error and part.calls == 1
    assert is_transient(info.value)  # the whole put may still be retried by its caller
    assert retry_part(Part()) == "etag-1"


def test_within_a_delivery_a_transient_part_failure_resends_only_the_part() -> None:
    part = Part(transient(), transient(), result="etag-3")
    with retrying_parts(FAST):
        assert retry_part(part) == "etag-3"
    assert part.calls == 3


def test_a_part_whose_retries_ran_out_is_not_sent_whole_again() -> None:
    part = Part(*(transient(n) for n in range(9)))
    policy = RetryPolicy(attempts=2, initial=0, maximum=0)
    with retrying_parts(policy), pytest.raises(StoreError) as info:
        retry_part(part)
    assert part.calls == 2
    assert info.value.transient is True  # still the plugin's word ...
    assert not is_transient(info.value)  # ... but delivery does not retry the object


def test_a_permanent_part_failure_is_raised_at_once_and_not_marked() -> None:
    error = permanent()
    part = Part(error)
    with retrying_parts(FAST), pytest.raises(StoreError) as info:
        retry_part(part)
    assert info.value is error and part.calls == 1
    assert not hasattr(error, "_destinations_part_retries_spent")


def test_map_error_turns_an_sdk_exception_into_the_plugins_word() -> None:
    sdk = ConnectionResetError("reset by peer")

    def mapper(exc: Exception) -> BaseException:
        assert exc is sdk
        return StoreError("endpoint_unreachable", "the connection was reset")

    part = Part(sdk)
    with pytest.raises(StoreError) as info:
        retry_part(part, map_error=mapper)
    assert info.value.code == "endpoint_unreachable" and info.value.__cause__ is sdk

    part = Part(ConnectionResetError("again"), result="ok")
    with retrying_parts(FAST):
        assert retry_part(part, map_error=lambda e: StoreError("timeout", "t")) == "ok"
    assert part.calls == 2


def test_a_mapper_that_keeps_the_exception_raises_it_unchained() -> None:
    error = transient()
    with pytest.raises(StoreError) as info:
        retry_part(Part(error), map_error=lambda e: e)
    assert info.value is error and info.value.__cause__ is None


def test_the_part_policy_ends_with_its_block() -> None:
    with retrying_parts(FAST):
        with retrying_parts(None):
            part = Part(transient())
            with pytest.raises(StoreError):
                retry_part(part)
            assert part.calls == 1
        part = Part(transient())
        assert retry_part(part) == "etag-1" and part.calls == 2
    part = Part(transient())
    with pytest.raises(StoreError):
        retry_part(part)
    assert part.calls == 1


def test_the_part_policy_is_restored_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), retrying_parts(FAST):
        raise RuntimeError("inside")
    part = Part(transient())
    with pytest.raises(StoreError):
        retry_part(part)
    assert part.calls == 1


def test_the_reported_wait_is_drawn_from_the_backoff_and_really_waited() -> None:
    waits: list[float] = []
    policy = RetryPolicy(attempts=4, initial=0.05, maximum=0.05)
    calls = Attempts(*(transient(n) for n in range(3)))
    started = time.monotonic()
    call_with_retries(calls, policy, on_retry=lambda e, n, w: waits.append(w))
    elapsed = time.monotonic() - started
    assert len(waits) == 3 and all(0 <= w <= 0.05 for w in waits)
    assert any(w > 0 for w in waits)  # full jitter over [0, 0.05]: three zeros do not happen
    assert elapsed >= sum(waits) - 1e-3


# -- part_retry_policy / parts_spent (for transports that retry each part themselves) --------


def test_part_retry_policy_is_the_deliverys_policy_and_none_outside() -> None:
    assert part_retry_policy() is None
    with retrying_parts(FAST):
        assert part_retry_policy() is FAST
        with retrying_parts(None):
            assert part_retry_policy() is None
        assert part_retry_policy() is FAST
    assert part_retry_policy() is None


def test_parts_spent_marks_a_transient_failure_within_a_delivery_only() -> None:
    outside = transient()
    assert parts_spent(outside) is outside and is_transient(outside)  # one attempt: retry whole
    with retrying_parts(FAST):
        inside = transient()
        assert parts_spent(inside) is inside
        error = permanent()
        assert parts_spent(error) is error
    assert inside.transient is True and not is_transient(inside)
    assert not hasattr(error, "_destinations_part_retries_spent")
