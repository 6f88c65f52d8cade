"""`destinations deliver`: inline and stored destinations, exit codes, progress."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from destinations.cli import main

RS = ["--collection-id", "c1", "--collection-name", "Daily", "--result-set-id", "rs9"]


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    a = tmp_path / "in" / "a.json"
    b = tmp_path / "in" / "b.csv"
    a.parent.mkdir()
    a.write_text(json.dumps({"a": 1}))
    b.write_text("x,y\n1,2\n")
    return [str(a), str(b)]


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_deliver_inline_local_exit_0(tmp_path: Path, files: list[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = run(
        "deliver", *files, *RS,
        "-p", "type=local", "-p", f"local_directory={out}",
        "-p", "local_path_prefix=%COLLECTION_NAME%/%RESULT_SET_ID%", "-p", "manifest=true",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "success  local" in result.output and "3 object(s)" in result.output
    assert (out / "Daily/rs9/a.json").read_text() == '{"a": 1}'
    assert (out / "Daily/rs9/b.csv").read_text() == "x,y\n1,2\n"
    manifest = json.loads((out / "Daily/rs9/manifest-rs9.json").read_text())
    assert [f["key"] for f in manifest["files"]] == ["Daily/rs9/a.json", "Daily/rs9/b.csv"]


def test_deliver_failure_exit_1_and_disabled_exit_0(tmp_path: Path, files: list[str]) -> None:
    out = tmp_path / "out"
    (out / "a.json").mkdir(parents=True)  # the put of a.json cannot replace a directory
    params = ["-p", "type=local", "-p", f"local_directory={out}"]
    result = run("deliver", *files, *RS, *params)
    assert result.exit_code == 1
    assert "failed   local" in result.output and "'a.json'" in result.output

    result = run("deliver", *files, *RS, *params, "-p", "enabled=false")
    assert result.exit_code == 0
    assert "skipped  local" in result.output


@pytest.mark.parametrize(
    "extra",
    [
        [],  # no destination at all
        ["-p", "type=local", "-d", "abc"],  # both kinds
        ["-p", "type=local"],  # invalid destination (no local_directory)
        ["-p", "type=nosuchtype"],
        ["--database-url", "sqlite://", "-p", "type=local"],
    ],
)
def test_deliver_bad_input_exit_2(files: list[str], extra: list[str]) -> None:
    result = CliRunner().invoke(main, ["deliver", *files, *RS, *extra])
    assert result.exit_code == 2, result.output


def test_deliver_missing_file_or_option_exit_2(tmp_path: Path, files: list[str]) -> None:
    params = ["-p", "type=local", "-p", f"local_directory={tmp_path}"]
    assert CliRunner().invoke(main, ["deliver", "nope.csv", *RS, *params]).exit_code == 2
    assert CliRunner().invoke(main, ["deliver", *files, *RS[:4], *params]).exit_code == 2
    dup = tmp_path / "in2" / "a.json"
    dup.parent.mkdir()
    dup.write_text("{}")
    result = CliRunner().invoke(main, ["deliver", *files, str(dup), *RS, *params])
    assert result.exit_code == 2 and "same key" in result.output


def test_deliver_stored_destination(
    tmp_path: Path, files: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.orm import Session

    from destinations.persistence import (
        DestinationRow,
        create_account,
        load_secret_box,
        make_engine,
        new_destination_id,
        upgrade,
        utcnow,
    )

    monkeypatch.delenv("DESTINATIONS_ENCRYPTION_KEYS", raising=False)
    url = f"sqlite:///{tmp_path / 'api.db'}"
    out = tmp_path / "stored"
    out.mkdir()
    engine = make_engine(url)
    upgrade(engine)
    create_account(engine, "ops")
    box = load_secret_box(None, url)
    dest_id = new_destination_id()
    with Session(engine) as session, session.begin():
        session.add(
            DestinationRow(
                id=dest_id, account_id=1, name="stored local", type="local", enabled=True,
                params={"local_directory": str(out), "local_path_prefix": "s", "manifest": False},
                secrets=box.encrypt({}), version=1, created_at=utcnow(), updated_at=utcnow(),
            )
        )  # fmt: skip
    engine.dispose()

    result = run("deliver", *files, *RS, "--destination", dest_id, "--database-url", url)
    assert result.exit_code == 0, result.output
    assert f"({dest_id})" in result.output
    assert (out / "s" / "b.csv").read_text() == "x,y\n1,2\n"

    result = CliRunner().invoke(
        main, ["deliver", *files, *RS, "--destination", "nosuchid", "--database-url", url]
    )
    assert result.exit_code == 2 and "nosuchid" in result.output


def test_progress_bar_counts_bytes_and_files_and_never_moves_back() -> None:
    import io

    from destinations import DeliveryProgress, parse_destination
    from destinations.cli import _ProgressBar

    dest = parse_destination(
        {"name": "n", "enabled": True, "type": "local", "local_directory": "."}
    )

    def event(key: str, sent: int, total: int, attempt: int = 1) -> DeliveryProgress:
        return DeliveryProgress(dest, key, key, sent, total, attempt)

    out = io.StringIO()
    with _ProgressBar(300, 2, out=out) as bar:
        bar.update(event("a", 100, 200))
        bar.update(event("a", 0, 200, attempt=2))  # a retry starts again at zero
        bar.update(event("a", 150, 200, attempt=2))
        assert bar.shown == 150
        bar.update(event("a", 200, 200, attempt=2))
        bar.update(event("b", 100, 100))
        assert bar.shown == 300
    final = out.getvalue().rsplit("\r", 1)[-1]
    assert "300/300" in final and "2/2 files" in final, final
