"""Verify-then-commit over any store: two operations, clear failures, nothing committed."""

import logging
import time

import pytest

from destinations import (
    CODES,
    VerificationFailed,
    needs_verification,
    parse_destination,
    verify,
    verify_then_commit,
)

SECRET = "tok-3xAmple-S3CRET"


def scripted_dest(**fields):
    return parse_destination(
        {"name": "n", "enabled": True, "type": "scripted", "scripted_token": SECRET, **fields}
    )


def test_probe_key_sits_before_the_first_token(scripted):
    report = verify(scripted_dest(scripted_path_prefix="/tenant-7//exports/%DATE%/%COLLECTION_ID%"))
    assert report.probe_key.startswith("tenant-7/exports/destinations-verify-")
    assert report.probe_key.endswith(".txt")
    assert scripted.calls == [("put", report.probe_key), ("delete", report.probe_key)]
    assert scripted.objects == {}


def test_probe_key_without_tokens_goes_under_the_prefix(scripted):
    report = verify(scripted_dest(scripted_path_prefix="my/prefix"))
    assert report.probe_key.startswith("my/prefix/destinations-verify-")


def test_probe_keys_are_unique(scripted):
    d = scripted_dest()
    assert verify(d).probe_key != verify(d).probe_key


@pytest.mark.parametrize("code", sorted(CODES))
def test_put_failure_carries_step_and_code_and_no_secret(scripted, code):
    with pytest.raises(VerificationFailed) as info:
        verify(scripted_dest(scripted_fail_put=code))
    exc = info.value
    assert (exc.step, exc.code, exc.provider_code, exc.probe_left) == (
        "put",
        code,
        "Scripted",
        False,
    )
    assert [c[0] for c in scripted.calls] == ["put"]  # no delete after a failed put
    assert SECRET not in f"{exc} {exc!r} {exc.message}"


def test_delete_failure_fails_and_says_where_the_probe_is(scripted):
    with pytest.raises(VerificationFailed) as info:
        verify(scripted_dest(scripted_fail_delete="access_denied"))
    exc = info.value
    assert (exc.step, exc.code, exc.probe_left) == ("delete", "access_denied", True)
    assert exc.probe_key in exc.message
    assert exc.probe_key in scripted.objects  # it really is still there


def test_delete_failure_can_be_a_warning(scripted, caplog):
    d = scripted_dest(scripted_fail_delete="access_denied", probe_delete_failure="warn")
    with caplog.at_level(logging.WARNING, logger="destinations"):
        report = verify(d)
    assert len(report.warnings) == 1 and report.probe_key in report.warnings[0]
    assert report.probe_key in caplog.text
    assert SECRET not in caplog.text


def test_unexpected_plugin_exception_is_provider_error_without_its_text(scripted):
    with pytest.raises(VerificationFailed) as info:
        verify(scripted_dest(scripted_fail_put="crash"))
    assert (info.value.code, info.value.provider_code) == ("provider_error", "RuntimeError")
    assert SECRET not in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)  # kept for the embedder's debugging


def test_one_overall_deadline(scripted):
    started = time.monotonic()
    with pytest.raises(VerificationFailed) as info:
        verify(scripted_dest(scripted_delay=2.0), timeout=0.2)
    assert time.monotonic() - started < 1.5
    assert (info.value.step, info.value.code) == ("put", "timeout")
    assert "0.2 s" in info.value.message


def test_report_times_add_up(scripted):
    r = verify(scripted_dest())
    assert r.total_seconds >= r.open_seconds + r.put_seconds + r.delete_seconds - 1e-6
    assert r.requests == 2 and r.destination_type == "scripted"


def test_when_verification_is_needed(scripted):
    base = scripted_dest()
    assert needs_verification(None, base)  # created enabled
    assert not needs_verification(None, base.updated({"enabled": False}))  # created disabled
    assert needs_verification(base.updated({"enabled": False}), base)  # re-enabled
    assert not needs_verification(base, base.updated({"name": "renamed"}))  # rename alone
    assert not needs_verification(base, base.updated({"manifest": True}))
    assert not needs_verification(base, base.updated({"enabled": False}))  # disabling
    assert needs_verification(base, base.updated({"scripted_token": "new"}))  # credentials
    assert needs_verification(base, base.updated({"scripted_path_prefix": "p"}))  # prefix


def test_commit_only_after_success(scripted):
    committed = []
    result = verify_then_commit(None, scripted_dest(), committed.append)
    assert len(committed) == 1 and result.verification is not None

    with pytest.raises(VerificationFailed):
        verify_then_commit(
            None, scripted_dest(scripted_fail_put="invalid_credentials"), committed.append
        )
    assert len(committed) == 1  # nothing committed on failure

    old = scripted_dest()
    scripted.calls.clear()
    renamed = verify_then_commit(old, old.updated({"name": "x"}), lambda d: d.name)
    assert renamed.value == "x" and renamed.verification is None and scripted.calls == []
