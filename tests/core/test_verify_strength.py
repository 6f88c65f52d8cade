"""Verification's documented details that the mutation run showed no test pinned: the store
options a probe runs with, the probe object itself, the deadline during the delete step, the
store always closed, failures while opening, and the verification metrics."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import ClassVar

import pytest
from prometheus_client import REGISTRY
from pydantic import BaseModel, ConfigDict

import destinations
from destinations import (
    StoreError,
    VerificationFailed,
    needs_verification,
    parse_destination,
    verify,
    verify_then_commit,
)
from destinations.plugin import DestinationType, Source, Store, StoreOptions, open_source


class ProbeFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    probe_path_prefix: str = ""
    probe_open: str = ""  # "store_error" or "crash": opening the store fails
    probe_put: str = ""  # "base": a BaseException that is not an Exception
    probe_delete_delay: float = 0.0
    probe_delete_crash: bool = False


class ProbeStore(Store):
    """Records what verification hands it: options, each put's arguments and body, closes."""

    opened: ClassVar[list[StoreOptions]] = []
    puts: ClassVar[list[dict[str, object]]] = []
    deletes: ClassVar[list[str]] = []
    closed: ClassVar[int] = 0
    lock = threading.Lock()

    def __init__(self, fields: ProbeFields, options: StoreOptions) -> None:
        if fields.probe_open == "store_error":
            raise StoreError("invalid_credentials", "the key was refused")
        if fields.probe_open == "crash":
            raise KeyError("secret-ish detail")
        self.fields = fields
        with self.lock:
            ProbeStore.opened.append(options)

    def put(self, key: str, source: Source, *, size: int | None, content_type: str | None) -> None:
        if self.fields.probe_put == "base":
            raise KeyboardInterrupt
        with open_source(source) as f:
            body = f.read()
        with self.lock:
            ProbeStore.puts.append(
                {"key": key, "size": size, "content_type": content_type, "body": body}
            )

    def delete(self, key: str) -> None:
        time.sleep(self.fields.probe_delete_delay)
        if self.fields.probe_delete_crash:
            raise OSError("unmapped")
        with self.lock:
            ProbeStore.deletes.append(key)

    def close(self) -> None:
        with self.lock:
            ProbeStore.closed += 1


@destinations.hookimpl
def destinations_register_types(register: Callable[[DestinationType], None]) -> None:
    register(
        DestinationType(
            name="probe",
            fields=ProbeFields,
            open_store=ProbeStore,
            prefix_field="probe_path_prefix",
            description="test-only: records what verification sends",
        )
    )


@pytest.fixture
def probe() -> type[ProbeStore]:
    destinations.register_plugin(sys.modules[__name__], name="tests.verify_strength")
    ProbeStore.opened.clear()
    ProbeStore.puts.clear()
    ProbeStore.deletes.clear()
    ProbeStore.closed = 0
    return ProbeStore


def dest(**fields: object) -> destinations.Destination:
    return parse_destination({"name": "probe one", "enabled": True, "type": "probe", **fields})


def verifications(code: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "destinations_verifications_total", {"type": "probe", "outcome": outcome, "code": code}
    )
    return value or 0.0


def step_count(step: str) -> float:
    value = REGISTRY.get_sample_value(
        "destinations_verify_step_seconds_count", {"type": "probe", "step": step}
    )
    return value or 0.0


def test_the_probe_runs_with_the_deadline_and_no_sdk_retries(probe: type[ProbeStore]) -> None:
    verify(dest(), timeout=7.5)
    (options,) = probe.opened
    assert (options.timeout, options.retries) == (7.5, 0)


def test_given_options_keep_their_other_settings_but_not_their_retries(
    probe: type[ProbeStore],
) -> None:
    verify(dest(), timeout=4.0, options=StoreOptions(timeout=99.0, retries=3, max_connections=3))
    (options,) = probe.opened
    assert (options.timeout, options.retries, options.max_connections) == (4.0, 0, 3)


def test_the_probe_object_says_what_it_is(probe: type[ProbeStore]) -> None:
    report = verify(dest(probe_path_prefix="tenant/%DATE%"))
    (put,) = probe.puts
    body = put["body"]
    assert isinstance(body, bytes)
    assert put["key"] == report.probe_key and put["content_type"] == "text/plain"
    assert put["size"] == len(body)
    text = body.decode()
    assert text.startswith(f"destinations verification probe {report.probe_key}\n")
    assert text.endswith("; safe to delete\n")
    assert probe.deletes == [report.probe_key]
    assert report.probe_key.startswith("tenant/destinations-verify-")
    assert len(report.probe_key) == len("tenant/destinations-verify-") + 32 + len(".txt")


def test_the_store_is_closed_after_success_and_after_a_failure(probe: type[ProbeStore]) -> None:
    verify(dest())
    assert probe.closed == 1
    with pytest.raises(KeyboardInterrupt):
        verify(dest(probe_put="base"))
    assert probe.closed == 2


def test_a_base_exception_in_the_probe_reaches_the_caller(probe: type[ProbeStore]) -> None:
    # Not swallowed into a report, not turned into a verification failure.
    with pytest.raises(KeyboardInterrupt):
        verify(dest(probe_put="base"))
    assert probe.deletes == []


def test_a_store_error_while_opening_fails_the_put_step(probe: type[ProbeStore]) -> None:
    with pytest.raises(VerificationFailed) as info:
        verify(dest(probe_open="store_error"))
    exc = info.value
    assert (exc.step, exc.code, exc.probe_left) == ("put", "invalid_credentials", False)
    assert exc.message == "the key was refused"
    assert isinstance(exc.__cause__, StoreError)


def test_an_unexpected_exception_while_opening_names_only_its_type(
    probe: type[ProbeStore],
) -> None:
    with pytest.raises(VerificationFailed) as info:
        verify(dest(probe_open="crash"))
    exc = info.value
    assert (exc.step, exc.code, exc.provider_code) == ("put", "provider_error", "KeyError")
    assert exc.message == "the probe plugin raised an unexpected KeyError"
    assert "secret-ish" not in str(exc)


def test_the_deadline_during_delete_says_the_probe_may_be_left(probe: type[ProbeStore]) -> None:
    started = time.monotonic()
    with pytest.raises(VerificationFailed) as info:
        verify(dest(probe_delete_delay=1.5), timeout=0.3)
    assert time.monotonic() - started < 1.2
    exc = info.value
    assert (exc.step, exc.code, exc.probe_left) == ("delete", "timeout", True)
    assert exc.error.transient is True
    assert exc.message == (
        "no answer within 0.3 s during the delete step; check that the endpoint is reachable "
        f"from this server; a probe object may have been left at {exc.probe_key!r}"
    )


def test_the_deadline_during_put_does_not_claim_a_probe_was_left() -> None:
    from tests.core import fakeplugin

    fakeplugin.install()
    d = parse_destination(
        {"name": "n", "enabled": True, "type": "scripted", "scripted_token": "t",
         "scripted_delay": 1.5}
    )
    with pytest.raises(VerificationFailed) as info:
        verify(d, timeout=0.25)
    exc = info.value
    assert (exc.step, exc.probe_left) == ("put", False)
    assert exc.message == (
        "no answer within 0.25 s during the put step; check that the endpoint is reachable "
        "from this server"
    )


def test_the_delete_failure_says_how_to_fix_it() -> None:
    from tests.core import fakeplugin

    fakeplugin.install()
    d = parse_destination(
        {"name": "n", "enabled": True, "type": "scripted", "scripted_token": "t",
         "scripted_fail_delete": "access_denied"}
    )
    with pytest.raises(VerificationFailed) as info:
        verify(d)
    exc = info.value
    assert exc.message == (
        f"scripted access_denied. The probe object was left at {exc.probe_key!r}: delete it "
        "by hand, and give the credentials permission to delete objects under the path "
        "prefix (or set probe_delete_failure=warn for a write-only or retention-locked bucket)"
    )
    assert exc.provider_code == "Scripted"


def test_the_delete_warning_is_logged_with_the_destination_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.core import fakeplugin

    fakeplugin.install()
    d = parse_destination(
        {"name": "warned one", "enabled": True, "type": "scripted", "scripted_token": "t",
         "scripted_fail_delete": "access_denied", "probe_delete_failure": "warn"}
    )
    with caplog.at_level("WARNING", logger="destinations.verify"):
        report = verify(d)
    (record,) = [r for r in caplog.records if r.name == "destinations.verify"]
    assert record.levelname == "WARNING"
    assert record.getMessage() == f"verification of 'warned one': {report.warnings[0]}"


def test_report_steps_are_measured_and_add_up(probe: type[ProbeStore]) -> None:
    r = verify(dest(probe_delete_delay=0.05))
    assert r.open_seconds >= 0 and r.put_seconds >= 0
    assert 0.05 <= r.delete_seconds < 5
    assert r.total_seconds == pytest.approx(
        r.open_seconds + r.put_seconds + r.delete_seconds, abs=1e-9
    )
    assert r.warnings == () and r.destination_type == "probe"


def test_each_verification_is_counted_by_outcome_and_code(probe: type[ProbeStore]) -> None:
    ok, failed = verifications("none", "success"), verifications("invalid_credentials", "failed")
    steps = {s: step_count(s) for s in ("connect", "put", "delete", "total")}
    verify(dest())
    with pytest.raises(VerificationFailed):
        verify(dest(probe_open="store_error"))
    assert verifications("none", "success") == ok + 1
    assert verifications("invalid_credentials", "failed") == failed + 1
    # Step timings are recorded for the successful one only.
    assert {s: step_count(s) - steps[s] for s in steps} == dict.fromkeys(steps, 1.0)


def test_a_change_of_type_or_from_disabled_needs_verification(probe: type[ProbeStore]) -> None:
    from tests.core import fakeplugin

    fakeplugin.install()
    scripted = parse_destination(
        {"name": "n", "enabled": True, "type": "scripted", "scripted_token": "t"}
    )
    probe_dest = dest()
    assert needs_verification(scripted, probe_dest)
    assert needs_verification(None, probe_dest)
    assert needs_verification(probe_dest.updated({"enabled": False}), probe_dest)
    assert not needs_verification(probe_dest, probe_dest)
    assert not needs_verification(None, probe_dest.updated({"enabled": False}))


def test_verify_then_commit_passes_its_deadline_on(probe: type[ProbeStore]) -> None:
    committed = verify_then_commit(None, dest(), lambda d: d.name, timeout=3.25)
    assert committed.value == "probe one"
    assert committed.verification is not None
    assert [o.timeout for o in probe.opened] == [3.25]


def test_a_hung_probe_does_not_keep_the_process_alive() -> None:
    # The CLI verifying an endpoint that never answers must exit after the deadline, even
    # though the probe's thread is still waiting.
    import subprocess

    code = (
        "from tests.core import fakeplugin; fakeplugin.install()\n"
        "from destinations import parse_destination, verify, VerificationFailed\n"
        "d = parse_destination({'name': 'n', 'enabled': True, 'type': 'scripted',"
        " 'scripted_token': 't', 'scripted_delay': 60})\n"
        "try:\n    verify(d, timeout=0.2)\nexcept VerificationFailed as e:\n    print(e.code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "timeout")


def test_put_and_open_failures_name_the_probe_key(probe: type[ProbeStore]) -> None:
    for fields in ({"probe_open": "store_error"}, {"probe_open": "crash"}):
        with pytest.raises(VerificationFailed) as info:
            verify(dest(**fields))
        assert info.value.probe_key.startswith("destinations-verify-")
    from tests.core import fakeplugin

    fakeplugin.install()
    d = parse_destination({"name": "n", "enabled": True, "type": "scripted",
                           "scripted_token": "t", "scripted_fail_put": "access_denied"})
    with pytest.raises(VerificationFailed) as info:
        verify(d)
    assert info.value.probe_key.startswith("destinations-verify-")


def test_an_unmapped_delete_failure_names_the_plugin(probe: type[ProbeStore]) -> None:
    with pytest.raises(VerificationFailed) as info:
        verify(dest(probe_delete_crash=True))
    exc = info.value
    assert (exc.step, exc.code, exc.provider_code, exc.probe_left) == (
        "delete", "provider_error", "OSError", True)
    assert exc.message.startswith("the probe plugin raised an unexpected OSError. The probe")
