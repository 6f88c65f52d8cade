"""The task message and the status table, without a broker."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from destinations import ResultFile, ResultSet
from destinations.celery import FileRef, ReferenceUnavailable, ResultSetRef
from destinations.persistence import make_engine, read_delivery_statuses, record_status, upgrade


def test_message_round_trip_is_json_with_references_only(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(b"{}\n")
    rs = ResultSet("c", "Name", "42", [ResultFile("a.jsonl", tmp_path / "a.jsonl")])
    now = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    message = ResultSetRef.from_result_set(rs, now).to_message()
    assert message == {
        "collection_id": "c",
        "collection_name": "Name",
        "result_set_id": "42",
        "now": "2026-01-02T01:04:05.678901+00:00",
        "files": [
            {
                "name": "a.jsonl",
                "path": str(tmp_path / "a.jsonl"),
                "content_type": "application/x-ndjson",
            }
        ],
    }
    back = ResultSetRef.from_message(message)
    assert back.now == now.astimezone(UTC)
    assert back.to_message() == message


def test_streams_and_unsafe_references_are_refused() -> None:
    rs = ResultSet("c", "n", "1", [ResultFile("s.bin", stream=io.BytesIO(b"x"))])
    with pytest.raises(ValueError, match="stream"):
        ResultSetRef.from_result_set(rs, datetime.now(UTC))
    with pytest.raises(ValueError, match="credentials"):
        FileRef("a", url="https://user:pw@files.example/a")
    with pytest.raises(ValueError, match="http"):
        FileRef("a", url="file:///etc/passwd")
    with pytest.raises(ValueError, match="absolute"):
        FileRef("a", path="relative/a")


def test_paths_outside_the_shared_root_are_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    (tmp_path / "root").mkdir()
    ref = ResultSetRef("c", "n", "1", datetime.now(UTC), [FileRef("o.txt", path=str(outside))])
    with (
        pytest.raises(ReferenceUnavailable, match="outside") as info,
        ref.open(shared_root=tmp_path / "root"),
    ):
        pass
    assert not info.value.transient


def test_statuses_upsert_count_attempts_and_filter_by_account(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}")
    upgrade(engine)
    common = {"result_set_id": "r1", "destination_id": "d1", "collection_id": "c"}
    record_status(engine, status="queued", account_id=7, **common)
    record_status(engine, status="delivering", started=True, **common)
    record_status(engine, status="delivering", started=True, **common)
    record_status(engine, status="success", keys=["k"], bytes=3, seconds=0.5, **common)
    record_status(engine, status="skipped", account_id=8, **{**common, "destination_id": "d2"})
    (row,) = read_delivery_statuses(engine, "r1", account_id=7)
    assert (row.status, row.attempts, row.keys, row.bytes, row.account_id) == (
        "success",
        2,
        ("k",),
        3,
        7,
    )
    assert row.to_dict()["status"] == "success"
    assert [r.destination_id for r in read_delivery_statuses(engine, "r1")] == ["d1", "d2"]
    assert [r.destination_id for r in read_delivery_statuses(engine, status="skipped")] == ["d2"]
    engine.dispose()
