"""The local type: no byte lands outside the destination's directory through a symbolic link
(at save, verify and delivery time), errors name the rule broken and never a server path or
what exists outside the local root, and over-long names are clear errors, not tracebacks."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from destinations import (
    InvalidDestination,
    ResultFile,
    ResultSet,
    StoreError,
    StoreOptions,
    VerificationFailed,
    deliver,
    parse_destination,
    verify,
)
from destinations.local import LocalFields, LocalStore, confined_to


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "outside"
    path.mkdir()
    (path / "keep.txt").write_text("outside")
    yield path
    assert files_under(path) == ["keep.txt"], "a byte landed outside the destination"
    assert (path / "keep.txt").read_text() == "outside"


def local(directory: Path | str, prefix: str = "") -> dict[str, object]:
    return {
        "name": "l",
        "enabled": True,
        "type": "local",
        "local_directory": str(directory),
        "local_path_prefix": prefix,
    }


def store_of(directory: Path) -> LocalStore:
    settings = parse_destination(local(directory)).settings
    assert isinstance(settings, LocalFields)
    return LocalStore(settings, StoreOptions())


def _result_set() -> ResultSet:
    return ResultSet("c-1", "n", "rs-1", [ResultFile("data.csv", stream=io.BytesIO(b"a,b\n"))])


# -- symbolic links reached through the prefix or the key ------------------------------------


@pytest.mark.parametrize("prefix", ["evil/x", "evil", "evil/%DATE%", "evil/x/%COLLECTION_ID%"])
def test_a_prefix_through_a_symlink_is_refused_at_save(
    root: Path, outside: Path, prefix: str
) -> None:
    (root / "evil").symlink_to(outside)
    with pytest.raises(InvalidDestination) as caught:
        parse_destination(local(root, prefix))
    message = caught.value.errors["local_path_prefix"]
    assert "symbolic link" in message
    assert str(root) not in message and str(outside) not in message


def test_a_symlink_deeper_in_the_prefix_is_refused_at_save(root: Path, outside: Path) -> None:
    (root / "a").mkdir()
    (root / "a" / "b").symlink_to(outside)
    with pytest.raises(InvalidDestination, match="symbolic link"):
        parse_destination(local(root, "a/b/c/%DATE%"))
    parse_destination(local(root, "a/c/%DATE%"))  # a sibling is fine


def test_a_symlink_made_after_save_is_refused_at_verify(root: Path, outside: Path) -> None:
    destination = parse_destination(local(root, "evil/x"))
    (root / "evil").symlink_to(outside)
    with pytest.raises(VerificationFailed) as caught:
        verify(destination, timeout=10)
    assert (caught.value.step, caught.value.code) == ("put", "access_denied")
    assert "symbolic link" in caught.value.message
    assert str(outside) not in caught.value.message and str(root) not in caught.value.message


def test_a_symlink_made_after_save_is_refused_at_delivery(root: Path, outside: Path) -> None:
    destination = parse_destination(local(root, "evil/x/%COLLECTION_ID%"))
    (root / "evil").symlink_to(outside)
    report = deliver(_result_set(), [destination])
    status = report.statuses[0]
    assert status.status == "failed"
    assert status.error is not None
    assert (status.error.code, status.error.step) == ("access_denied", "put")
    assert "symbolic link" in status.error.message
    assert str(outside) not in status.error.message


def test_a_symlink_to_a_directory_inside_is_refused_too(root: Path) -> None:
    # Not only escapes: the rule is "no symbolic link is followed", so it cannot be raced.
    (root / "real").mkdir()
    (root / "alias").symlink_to(root / "real")
    store = store_of(root)
    with pytest.raises(StoreError) as caught:
        store.put("alias/f.txt", io.BytesIO(b"x"), size=1, content_type=None)
    assert caught.value.code == "access_denied"
    assert caught.value.provider_code == "SymbolicLink"
    assert files_under(root / "real") == []


def test_a_dangling_symlink_is_not_created_through(root: Path, tmp_path: Path) -> None:
    target = tmp_path / "not-yet"
    (root / "d").symlink_to(target)
    with pytest.raises(StoreError) as caught:
        store_of(root).put("d/f.txt", io.BytesIO(b"x"), size=1, content_type=None)
    assert caught.value.code == "access_denied"
    assert not target.exists()


def test_a_symlink_as_the_file_name_is_replaced_not_written_through(
    root: Path, outside: Path
) -> None:
    (root / "x").mkdir()
    (root / "x" / "f.txt").symlink_to(outside / "keep.txt")
    store_of(root).put("x/f.txt", io.BytesIO(b"new"), size=3, content_type=None)
    assert not (root / "x" / "f.txt").is_symlink()
    assert (root / "x" / "f.txt").read_bytes() == b"new"


def test_delete_through_a_symlink_is_refused(root: Path, outside: Path) -> None:
    (root / "evil").symlink_to(outside)
    with pytest.raises(StoreError) as caught:
        store_of(root).delete("evil/keep.txt")
    assert caught.value.code == "access_denied"


def test_a_file_name_symlink_is_deleted_not_its_target(root: Path, outside: Path) -> None:
    (root / "link.txt").symlink_to(outside / "keep.txt")
    store_of(root).delete("link.txt")
    assert not (root / "link.txt").is_symlink()


def test_local_directory_swapped_for_a_symlink_after_save_is_refused(
    tmp_path: Path, outside: Path
) -> None:
    directory = tmp_path / "exports"
    directory.mkdir()
    store = store_of(directory)
    directory.rmdir()
    directory.symlink_to(outside)
    with pytest.raises(StoreError) as caught:
        store.put("f.txt", io.BytesIO(b"x"), size=1, content_type=None)
    assert caught.value.code == "access_denied"
    assert str(directory) not in caught.value.message


def test_writes_still_create_nested_directories(root: Path) -> None:
    store_of(root).put("a/b/c/f.txt", io.BytesIO(b"x"), size=1, content_type=None)
    assert (root / "a" / "b" / "c" / "f.txt").read_bytes() == b"x"
    store_of(root).delete("a/b/c/f.txt")
    store_of(root).delete("a/missing/f.txt")  # a missing directory: nothing to delete
    assert files_under(root) == ["a", "a/b", "a/b/c"]


# -- messages: the rule, never a server path nor what exists outside the root ----------------


def test_a_missing_directory_is_reported_without_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(InvalidDestination) as caught:
        parse_destination(local(missing))
    assert caught.value.errors["local_directory"] == (
        "is not an existing directory; create it first"
    )
    assert str(tmp_path) not in str(caught.value)


def test_inside_a_root_outside_reads_the_same_whether_it_exists_or_not(
    root: Path, tmp_path: Path
) -> None:
    (tmp_path / "exists").mkdir()
    (root / "sneaky").symlink_to(tmp_path / "exists")
    messages = {}
    with confined_to(root):
        for value in (
            str(tmp_path / "exists"),
            str(tmp_path / "does-not-exist"),
            "../exists",
            "../does-not-exist",
            "sneaky",
            "/",
            "/etc",
            "/no/such/dir",
        ):
            with pytest.raises(InvalidDestination) as caught:
                parse_destination(local(value))
            messages[value] = caught.value.errors["local_directory"]
    assert set(messages.values()) == {
        "must be a directory inside this server's local root (give a path relative to it)"
    }


def test_inside_a_root_relative_paths_resolve_under_it(root: Path) -> None:
    (root / "exports").mkdir()
    with confined_to(root):
        settings = parse_destination(local("exports")).settings
        assert settings.local_directory == str(root / "exports")  # type: ignore[attr-defined]
        assert parse_destination(local(str(root / "exports"))).settings == settings
        with pytest.raises(InvalidDestination) as caught:
            parse_destination(local("missing"))
        assert caught.value.errors["local_directory"] == (
            "is not an existing directory; create it first"
        )
        with pytest.raises(InvalidDestination):
            parse_destination(local("~"))  # not the server's home directory
    assert parse_destination(local(root)).settings.local_directory == str(root)  # type: ignore[attr-defined]


def test_store_errors_name_no_server_path(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    store = store_of(gone)
    gone.rmdir()
    with pytest.raises(StoreError) as caught:
        store.put("f.txt", io.BytesIO(b"x"), size=1, content_type=None)
    assert caught.value.code == "bucket_not_found"
    assert str(tmp_path) not in str(caught.value)
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "file").write_text("x")
    with pytest.raises(StoreError) as in_the_way:
        store.put("file/f.txt", io.BytesIO(b"x"), size=1, content_type=None)
    assert in_the_way.value.code == "provider_error"
    assert str(tmp_path) not in str(in_the_way.value)


# -- names longer than the file system allows ----------------------------------------------

LONG = "x" * 300


@pytest.mark.parametrize("make", [lambda t: str(t / LONG), lambda t: str(t / LONG / "sub")])
def test_a_too_long_local_directory_is_invalid_not_a_traceback(tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidDestination) as caught:
        parse_destination(local(make(tmp_path)))
    assert "longer than the file system allows" in caught.value.errors["local_directory"]
    with confined_to(tmp_path), pytest.raises(InvalidDestination) as rooted:
        parse_destination(local(LONG))
    assert "longer than the file system allows" in rooted.value.errors["local_directory"]


def test_a_too_long_prefix_component_is_invalid(root: Path) -> None:
    for prefix in (f"a/{LONG}/b", f"{LONG}/%DATE%"):
        with pytest.raises(InvalidDestination) as caught:
            parse_destination(local(root, prefix))
        assert "longer than the file system allows" in caught.value.errors["local_path_prefix"]


def test_a_too_long_key_component_is_a_store_error(root: Path) -> None:
    for key in (f"{LONG}.csv", f"a/{LONG}/f.csv"):
        with pytest.raises(StoreError) as caught:
            store_of(root).put(key, io.BytesIO(b"x"), size=1, content_type=None)
        assert caught.value.code == "provider_error"
        assert "longer than the file system allows" in caught.value.message
        assert str(root) not in str(caught.value)


def test_a_name_just_within_the_limit_is_written(root: Path) -> None:
    # The temporary file's name (".NAME.<32 hex>.part") is shortened to fit too.
    for name in ("y" * 255, "é" * 127):
        store_of(root).put(name, io.BytesIO(b"x"), size=1, content_type=None)
        assert (root / name).read_bytes() == b"x"
    assert sorted(p.name for p in root.iterdir()) == sorted(["y" * 255, "é" * 127])


def test_the_cli_reports_a_too_long_directory_with_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "destinations",
            "verify",
            "-p",
            "type=local",
            "-p",
            f"local_directory={tmp_path / LONG}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "longer than the file system allows" in done.stderr
