"""A killed local write leaves its temporary file; the next write into that directory removes
stale ones of exactly this project's naming, and nothing else."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from destinations import StoreError, StoreOptions, local as local_module, parse_destination
from destinations.local import STALE_TEMP_AGE, LocalFields, LocalStore

WRITER = """
import sys
from destinations import StoreOptions, parse_destination
from destinations.local import LocalStore
settings = parse_destination({"name": "w", "enabled": True, "type": "local",
                              "local_directory": sys.argv[1]}).settings
LocalStore(settings, StoreOptions()).put(sys.argv[2], sys.stdin.buffer, size=None,
                                         content_type=None)
"""


def store_of(directory: Path) -> LocalStore:
    settings = parse_destination(
        {"name": "l", "enabled": True, "type": "local", "local_directory": str(directory)}
    ).settings
    assert isinstance(settings, LocalFields)
    return LocalStore(settings, StoreOptions())


def temps(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def kill_a_writer_mid_file(directory: Path, key: str) -> Path:
    """Start a writer process, let it write part of a file, SIGKILL it; its temp file."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(directory), key],
        stdin=subprocess.PIPE,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert child.stdin is not None
    try:
        # More than one 1 MiB chunk, and no end of stream: the writer writes its first
        # chunk to the temp file, then waits for more.
        child.stdin.write(b"x" * (1024 * 1024 + 4096))
        child.stdin.flush()
        parent = directory.joinpath(*key.split("/")[:-1])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = temps(parent) if parent.is_dir() else []
            if found and (parent / found[0]).stat().st_size > 0:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the writer did not start writing in 30 s")
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        child.stdin.close()
    (left,) = temps(parent)
    return parent / left


def test_a_sigkilled_writer_leaves_a_temp_file_the_next_write_removes(tmp_path: Path) -> None:
    left = kill_a_writer_mid_file(tmp_path, "out/big.csv")
    assert left.name.startswith(".big.csv.") and left.name.endswith(".part")
    assert not (tmp_path / "out" / "big.csv").exists()  # never a partial file under its name

    store_of(tmp_path).put("out/other.csv", io.BytesIO(b"1"), size=1, content_type=None)
    assert left.exists(), "a recent temp file may belong to a live writer: it is kept"

    age(left, STALE_TEMP_AGE + 60)
    local_module._scanned.clear()  # a new process: this directory was never scanned
    store_of(tmp_path).put("out/again.csv", io.BytesIO(b"2"), size=1, content_type=None)
    assert not left.exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["again.csv", "other.csv"]


def test_only_stale_files_of_the_exact_naming_are_removed(tmp_path: Path) -> None:
    hexid = "0123456789abcdef" * 2
    stale = tmp_path / f".report.csv.{hexid}.part"
    keep = {
        f".report.csv.{hexid}.part.bak": "x",  # not the exact naming
        f"report.csv.{hexid}.part": "x",  # no leading dot
        f".report.csv.{hexid[:-1]}.part": "x",  # 31 hex digits
        f".report.csv.{hexid.upper()}.part": "x",  # upper case: not ours
        ".notes.part": "x",  # a customer's own file
        "data.csv": "x",
    }
    stale.write_text("partial")
    for name, text in keep.items():
        (tmp_path / name).write_text(text)
    directory_like = tmp_path / f".dir.{hexid}.part"
    directory_like.mkdir()
    link_like = tmp_path / f".link.{hexid}.part"
    link_like.symlink_to(tmp_path / "data.csv")
    for path in (stale, *(tmp_path / n for n in keep), directory_like, link_like):
        age(path, STALE_TEMP_AGE * 3)
    local_module._scanned.clear()

    store_of(tmp_path).put("new.csv", io.BytesIO(b"n"), size=1, content_type=None)

    assert not stale.exists()
    for name in keep:
        assert (tmp_path / name).exists(), name
    assert directory_like.is_dir() and link_like.is_symlink()
    assert (tmp_path / "data.csv").read_text() == "x"


def test_cleanup_is_per_directory(tmp_path: Path) -> None:
    hexid = "ab" * 16
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    in_a = tmp_path / "a" / f".f.{hexid}.part"
    in_b = tmp_path / "b" / f".f.{hexid}.part"
    for path in (in_a, in_b):
        path.write_text("partial")
        age(path, STALE_TEMP_AGE * 2)
    local_module._scanned.clear()
    store_of(tmp_path).put("a/g", io.BytesIO(b"g"), size=1, content_type=None)
    assert not in_a.exists() and in_b.exists()


def test_a_directory_is_scanned_at_most_once_per_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hexid = "cd" * 16
    store = store_of(tmp_path)
    local_module._scanned.clear()
    store.put("first", io.BytesIO(b"1"), size=1, content_type=None)  # scans
    later = tmp_path / f".late.{hexid}.part"
    later.write_text("partial")
    age(later, STALE_TEMP_AGE * 2)
    store.put("second", io.BytesIO(b"2"), size=1, content_type=None)
    assert later.exists()  # scanned a moment ago: not again for every file of a delivery
    monkeypatch.setattr(local_module, "_SCAN_INTERVAL", 0.0)
    store.put("third", io.BytesIO(b"3"), size=1, content_type=None)
    assert not later.exists()


def test_a_failed_write_removes_its_own_temp_file(tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: object) -> int:
            raise OSError("the source broke")

    with pytest.raises(StoreError):
        store_of(tmp_path).put("f.csv", io.BufferedReader(Broken()), size=None, content_type=None)
    assert list(tmp_path.iterdir()) == []
