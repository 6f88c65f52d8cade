"""The built-in local type passes the shared conformance suite."""

from pathlib import Path

import pytest

from destinations import StoreOptions, parse_destination
from destinations.local import LocalStore
from destinations.testing import StoreConformance


class CallCounter:
    """No network here: a 'request' is a put or delete reaching the store."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        for name in ("put", "delete"):
            original = getattr(LocalStore, name)

            def wrapper(store, *args, _original=original, _name=name, **kwargs):
                self.calls.append(_name)
                return _original(store, *args, **kwargs)

            monkeypatch.setattr(LocalStore, name, wrapper)

    def reset(self) -> None:
        self.calls.clear()

    def count(self) -> int:
        return len(self.calls)


class TestLocalConformance(StoreConformance):
    # Files have no Content-Type, Content-Encoding or user metadata: the local type accepts
    # the arguments and keeps only the bytes (documented in destinations.local).
    stores_metadata = False

    @pytest.fixture
    def store_options(self) -> StoreOptions:
        return StoreOptions(multipart_threshold=1024 * 1024, part_size=1024 * 1024)

    @pytest.fixture
    def root(self, tmp_path: Path) -> Path:
        root = tmp_path / "bucket"
        root.mkdir()
        return root

    @pytest.fixture
    def destination(self, root):
        return parse_destination(
            {
                "name": "local",
                "enabled": True,
                "type": "local",
                "local_directory": str(root),
                "local_path_prefix": "conformance/%COLLECTION_ID%",
            }
        )

    @pytest.fixture
    def missing_bucket_destination(self, tmp_path: Path):
        gone = tmp_path / "gone"
        gone.mkdir()
        d = parse_destination(
            {"name": "gone", "enabled": True, "type": "local", "local_directory": str(gone)}
        )
        gone.rmdir()  # removed after it was saved
        return d

    @pytest.fixture
    def read_object(self, root: Path):
        def read(key: str) -> bytes | None:
            path = root.joinpath(*key.split("/"))
            return path.read_bytes() if path.is_file() else None

        return read

    @pytest.fixture
    def list_keys(self, root: Path):
        def keys(prefix: str) -> list[str]:
            return sorted(
                str(p.relative_to(root))
                for p in root.rglob("*")
                if p.is_file() and str(p.relative_to(root)).startswith(prefix)
            )

        return keys

    @pytest.fixture
    def request_counter(self, monkeypatch):
        return CallCounter(monkeypatch)

    # The local type has no credentials: the test does not apply, so it is not collected.
    test_verify_bad_credentials = None


def test_local_writes_are_atomic_and_leave_no_temp_files(tmp_path: Path):
    import io

    store = LocalStore(
        parse_destination(
            {"name": "l", "enabled": True, "type": "local", "local_directory": str(tmp_path)}
        ).settings,
        StoreOptions(),
    )
    store.put("a/b.json", io.BytesIO(b"12345"), size=5, content_type=None)
    from destinations import StoreError

    with pytest.raises(StoreError) as info:  # a short stream is refused and nothing is left
        store.put("a/c.json", io.BytesIO(b"123"), size=5, content_type=None)
    assert info.value.provider_code == "IncompleteBody"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.json"]


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a"])
def test_local_refuses_keys_that_escape(tmp_path: Path, key: str):
    import io

    from destinations import StoreError

    store = LocalStore(
        parse_destination(
            {"name": "l", "enabled": True, "type": "local", "local_directory": str(tmp_path)}
        ).settings,
        StoreOptions(),
    )
    with pytest.raises(StoreError):
        store.put(key, io.BytesIO(b"x"), size=1, content_type=None)
