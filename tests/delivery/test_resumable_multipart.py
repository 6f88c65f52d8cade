"""Resumable multipart: a transient failure of one part re-sends only that part (and the
completion call), counted in bytes on the wire by the fault-injecting proxy."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from destinations import ResultFile, ResultSet, RetryPolicy, StoreOptions, deliver
from destinations.plugin import MiB
from tests.delivery.conftest import oss_destination, oss_reader
from tests.delivery.faulty_proxy import FaultyProxy
from tests.emulators.oss_double import OssDouble

SIZE = 64 * MiB + 12345
PART = 8 * MiB
OPTIONS = StoreOptions(timeout=20.0, multipart_threshold=PART, part_size=PART)
RETRY = RetryPolicy(attempts=4, initial=0.01, maximum=0.02)


class _FailOnce:
    """Fail the first request for part ``number`` of a multipart upload, once."""

    def __init__(self, number: int) -> None:
        self.marker = f"partNumber={number}"
        self.failed = False
        self.lock = threading.Lock()

    def __call__(self, method: str, path: str, query: str) -> bool:
        with self.lock:
            if method == "PUT" and self.marker in query.split("&") and not self.failed:
                self.failed = True
                return True
            return False


def test_oss_resends_only_the_failed_part(tmp_path: Path, oss_double: OssDouble) -> None:
    data = os.urandom(SIZE)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    rs = ResultSet("c", "n", "rs-resume", [ResultFile("big.bin", path)])
    with FaultyProxy(oss_double.endpoint, error_when=_FailOnce(3)) as proxy:
        dest = oss_destination(oss_double, oss_endpoint=proxy.endpoint, oss_path_prefix="resume")
        (status,) = deliver(rs, [dest], options=OPTIONS, retry=RETRY)
        sent = proxy.bytes_in
        parts = [r for r in proxy.requests if "partNumber=" in r.query]
        faults = proxy.faults["error"]
    assert status.status == "success", status.error
    assert faults == 1
    assert len(parts) == -(-SIZE // PART) + 1  # every part once, part 3 twice
    assert SIZE < sent <= SIZE + 2 * PART, f"{sent - SIZE} bytes sent beyond the file"
    stored = oss_reader(oss_double)(status.keys[0])
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
    assert not any("; attempt" in e.text for e in status.log)  # the object was not resent


def test_a_part_that_keeps_failing_fails_the_file_without_resending_it_whole(
    tmp_path: Path, oss_double: OssDouble
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(3 * PART))

    def part_two(method: str, path: str, query: str) -> bool:
        return method == "PUT" and "partNumber=2" in query.split("&")

    rs = ResultSet("c", "n", "rs-spent", [ResultFile("big.bin", path)])
    with FaultyProxy(oss_double.endpoint, error_when=part_two) as proxy:
        dest = oss_destination(oss_double, oss_endpoint=proxy.endpoint, oss_path_prefix="spent")
        (status,) = deliver(rs, [dest], options=OPTIONS, retry=RETRY)
        parts = [r.query for r in proxy.requests if "partNumber=" in r.query]
    assert status.status == "failed"
    assert status.error is not None and status.error.transient
    # part 1 once, part 2 `attempts` times, nothing after: the file was not sent again whole
    assert len(parts) == 1 + RETRY.attempts


def test_verification_makes_one_attempt_per_part(oss_double: OssDouble) -> None:
    """Outside a delivery there is no retry policy: retry_part calls once."""
    from destinations.plugin import StoreError, retry_part

    calls = []

    def flaky() -> None:
        calls.append(1)
        raise StoreError("provider_error", "busy", status=503)

    try:
        retry_part(flaky)
    except StoreError as exc:
        assert exc.transient
    assert calls == [1]
