"""The shared conformance suite every storage plugin runs against a real server.

Subclass :class:`StoreConformance` in your plugin's tests and supply the fixtures; pytest
collects the inherited tests (name your class ``Test…``)::

    from destinations.testing import StoreConformance

    class TestMyStoreConformance(StoreConformance):
        @pytest.fixture
        def destination(self, my_server): ...          # an enabled, writable Destination
        @pytest.fixture
        def bad_credentials_destination(self, my_server): ...  # same, with a wrong secret
        @pytest.fixture
        def missing_bucket_destination(self, my_server): ...   # a bucket that does not exist
        @pytest.fixture
        def read_object(self, my_server): ...   # key -> bytes, or None when absent
        @pytest.fixture
        def list_keys(self, my_server): ...     # prefix -> keys under it
        @pytest.fixture
        def request_counter(self, my_proxy): ... # RequestCounter seen by the server/proxy
        @pytest.fixture
        def read_object_meta(self, my_server): ... # key -> ObjectMeta, or None when absent

Read back through an independent client (the raw SDK), not through the store under test.
Requires pytest (``pip install destinations[testing]``).

``read_object_meta`` (every type whose store keeps object metadata: all remote types) is a
callable ``key -> ObjectMeta | None``, reading the object's headers from the real server
(a HEAD / get-properties call of the raw SDK). It returns ``None`` when there is no object at
``key``, else a dict with exactly these keys::

    {
        "content_type": "text/csv" or None,      # the stored Content-Type
        "content_encoding": "gzip" or None,      # the stored Content-Encoding, None if unset
        "metadata": {"origin": "conformance"},   # user metadata: names without the
    }                                             # x-amz-meta-/x-goog-meta-/x-ms-meta-/
                                                  # x-oss-meta- prefix, {} when there is none

Compare nothing yourself: return what the server says; the suite lower-cases metadata names
before comparing (S3, OSS and GCS's XML API return them lower-case). The suite's metadata
names are lower-case ASCII letters only and its values printable ASCII, which every provider
accepts (Azure wants C# identifiers, OSS no underscores). Only ``content_type`` may differ
in parameters the server adds (``; charset=...``): the suite compares the media type.

A type whose store does not keep metadata (the built-in ``local`` type) sets the class
attribute ``stores_metadata = False`` and provides no ``read_object_meta``; the suite then
only checks that ``put`` accepts ``content_encoding`` and ``metadata`` and stores the bytes.
"""

from __future__ import annotations

import gzip
import io
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar, Protocol, TypedDict

import pytest

from ._errors import VerificationFailed
from ._spec import Destination
from ._store import MiB, Store, StoreOptions
from ._verify import open_store, verify

__all__ = ["ObjectMeta", "RequestCounter", "StoreConformance", "secret_values"]


class ObjectMeta(TypedDict):
    """What ``read_object_meta`` returns for an object (see the module docstring)."""

    content_type: str | None
    content_encoding: str | None
    metadata: dict[str, str]


class RequestCounter(Protocol):
    """Counts storage requests as the server (or a proxy in front of it) saw them."""

    def reset(self) -> None: ...

    def count(self) -> int: ...


def secret_values(destination: Destination) -> list[str]:
    """Every secret of ``destination`` in clear, to assert it appears nowhere."""
    params = destination.to_params(reveal_secrets=True)
    return [
        str(params[name]) for name in destination.destination_type.secret_fields if params.get(name)
    ]


class _OneByteAtATime(io.RawIOBase):
    """A non-seekable stream of unknown size, like a socket or a pipe."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        chunk = self._buf.read(min(len(b), 64 * 1024))
        b[: len(chunk)] = chunk
        return len(chunk)


#: The metadata the suite stores: lower-case ASCII letter names, printable ASCII values.
CONFORMANCE_METADATA: dict[str, str] = {"origin": "conformance", "resultset": "rs-42 a/b=c"}


def _media_type(content_type: str | None) -> str | None:
    return None if content_type is None else content_type.split(";")[0].strip().lower()


class StoreConformance:
    """Tests every plugin passes. Override ``store_options`` to shrink the threshold.

    ``stores_metadata``: whether the store keeps Content-Type, Content-Encoding and user
    metadata (then provide ``read_object_meta``); ``False`` only for types that document
    they do not (``local``).
    """

    stores_metadata: ClassVar[bool] = True

    @pytest.fixture
    def store_options(self) -> StoreOptions:
        return StoreOptions(multipart_threshold=5 * MiB, part_size=5 * MiB, timeout=30.0)

    @pytest.fixture
    def store(self, destination: Destination, store_options: StoreOptions) -> Iterator[Store]:
        with open_store(destination, store_options) as store:
            yield store

    @pytest.fixture
    def key_prefix(self, destination: Destination) -> str:
        base = destination.template.probe_prefix
        return f"{base}conformance-{uuid.uuid4().hex[:12]}/"

    # --- put / delete -------------------------------------------------------------

    def test_put_small_stream_round_trip(
        self, store: Store, key_prefix: str, read_object: Callable[[str], bytes | None]
    ) -> None:
        key = key_prefix + "small.json"
        body = b'{"hello": "world"}\n'
        store.put(key, io.BytesIO(body), size=len(body), content_type="application/json")
        assert read_object(key) == body

    def test_put_empty(
        self, store: Store, key_prefix: str, read_object: Callable[[str], bytes | None]
    ) -> None:
        key = key_prefix + "empty.csv"
        store.put(key, io.BytesIO(b""), size=0, content_type="text/csv")
        assert read_object(key) == b""

    def test_put_from_path(
        self,
        store: Store,
        key_prefix: str,
        tmp_path: Path,
        read_object: Callable[[str], bytes | None],
    ) -> None:
        path = tmp_path / "data.jsonl"
        body = b"".join(b'{"n": %d}\n' % i for i in range(1000))
        path.write_bytes(body)
        store.put(key_prefix + "data.jsonl", path, size=len(body), content_type=None)
        store.put(key_prefix + "data-str.jsonl", str(path), size=len(body), content_type=None)
        assert read_object(key_prefix + "data.jsonl") == body
        assert read_object(key_prefix + "data-str.jsonl") == body

    def test_put_larger_than_multipart_threshold(
        self,
        store: Store,
        store_options: StoreOptions,
        key_prefix: str,
        tmp_path: Path,
        read_object: Callable[[str], bytes | None],
    ) -> None:
        size = store_options.multipart_threshold + store_options.part_size // 2 + 1
        body = os.urandom(size)
        path = tmp_path / "big.bin"
        path.write_bytes(body)
        store.put(key_prefix + "big.bin", path, size=size, content_type=None)
        assert read_object(key_prefix + "big.bin") == body

    def test_put_unsized_stream(
        self,
        store: Store,
        store_options: StoreOptions,
        key_prefix: str,
        read_object: Callable[[str], bytes | None],
    ) -> None:
        body = os.urandom(store_options.multipart_threshold + 12345)
        stream = io.BufferedReader(_OneByteAtATime(body))  # type: ignore[type-var]
        store.put(key_prefix + "piped.bin", stream, size=None, content_type=None)
        assert read_object(key_prefix + "piped.bin") == body

    def test_put_overwrites(
        self, store: Store, key_prefix: str, read_object: Callable[[str], bytes | None]
    ) -> None:
        key = key_prefix + "twice.txt"
        store.put(key, io.BytesIO(b"first"), size=5, content_type="text/plain")
        store.put(key, io.BytesIO(b"second"), size=6, content_type="text/plain")
        assert read_object(key) == b"second"

    def test_unicode_and_space_keys(
        self, store: Store, key_prefix: str, read_object: Callable[[str], bytes | None]
    ) -> None:
        key = key_prefix + "Köln daten/résumé ✓.csv"
        store.put(key, io.BytesIO(b"a,b\n"), size=4, content_type="text/csv")
        assert read_object(key) == b"a,b\n"

    def test_delete(
        self, store: Store, key_prefix: str, read_object: Callable[[str], bytes | None]
    ) -> None:
        key = key_prefix + "gone.txt"
        store.put(key, io.BytesIO(b"x"), size=1, content_type="text/plain")
        store.delete(key)
        assert read_object(key) is None

    def test_delete_missing_key_is_not_an_error(
        self, store: Store, key_prefix: str, read_object: Callable[[str], bytes | None]
    ) -> None:
        store.delete(key_prefix + "never-written.txt")
        assert read_object(key_prefix + "never-written.txt") is None

    # --- content type, encoding and metadata -------------------------------------------

    def _meta_reader(self, request: pytest.FixtureRequest) -> Callable[[str], ObjectMeta | None]:
        reader: Callable[[str], ObjectMeta | None] = request.getfixturevalue("read_object_meta")
        return reader

    def test_put_stores_content_type_encoding_and_metadata(
        self,
        store: Store,
        store_options: StoreOptions,
        key_prefix: str,
        tmp_path: Path,
        read_object: Callable[[str], bytes | None],
        request: pytest.FixtureRequest,
    ) -> None:
        small = gzip.compress(b"a,b\n1,2\n" * 100)
        big = os.urandom(store_options.multipart_threshold + 1)
        path = tmp_path / "big.csv.gz"
        path.write_bytes(big)
        cases = (("small.csv", io.BytesIO(small), len(small)), ("big.csv", path, len(big)))
        for name, source, size in cases:
            store.put(
                key_prefix + name,
                source,
                size=size,
                content_type="text/csv",
                content_encoding="gzip",
                metadata=CONFORMANCE_METADATA,
            )
        if not self.stores_metadata:
            assert read_object(key_prefix + "small.csv") == small
            assert read_object(key_prefix + "big.csv") == big
            return
        read_meta = self._meta_reader(request)
        for name, _, _ in cases:  # one request, and the multipart/resumable path
            meta = read_meta(key_prefix + name)
            assert meta is not None, name
            assert _media_type(meta["content_type"]) == "text/csv", name
            assert meta["content_encoding"] == "gzip", name
            got = {k.lower(): v for k, v in meta["metadata"].items()}
            assert got == CONFORMANCE_METADATA, name

    def test_put_without_encoding_or_metadata_stores_none(
        self,
        store: Store,
        key_prefix: str,
        read_object: Callable[[str], bytes | None],
        request: pytest.FixtureRequest,
    ) -> None:
        key = key_prefix + "plain.json"
        store.put(key, io.BytesIO(b"{}"), size=2, content_type="application/json")
        if not self.stores_metadata:
            assert read_object(key) == b"{}"
            return
        read_meta = self._meta_reader(request)
        meta = read_meta(key)
        assert meta is not None
        assert _media_type(meta["content_type"]) == "application/json"
        assert meta["content_encoding"] in (None, "")
        assert meta["metadata"] == {}
        assert read_meta(key_prefix + "never-written.json") is None

    # --- verification ---------------------------------------------------------------

    def test_verify_succeeds_and_leaves_no_probe(
        self, destination: Destination, list_keys: Callable[[str], list[str]]
    ) -> None:
        report = verify(destination, timeout=30)
        assert report.probe_key.startswith(destination.template.probe_prefix)
        assert report.probe_key.rsplit("/", 1)[-1].startswith("destinations-verify-")
        assert report.warnings == ()
        assert report.total_seconds >= report.put_seconds + report.delete_seconds
        left = [
            k for k in list_keys(destination.template.probe_prefix) if "destinations-verify-" in k
        ]
        assert left == []

    def test_verify_makes_exactly_two_requests(
        self, destination: Destination, request_counter: RequestCounter
    ) -> None:
        verify(destination, timeout=30)  # warm-up: plugin import, DNS, any one-time setup
        request_counter.reset()
        verify(destination, timeout=30)
        assert request_counter.count() == 2

    def test_verify_bad_credentials(
        self,
        bad_credentials_destination: Destination,
        list_keys: Callable[[str], list[str]],
    ) -> None:
        with pytest.raises(VerificationFailed) as info:
            verify(bad_credentials_destination, timeout=30)
        assert (info.value.step, info.value.code) == ("put", "invalid_credentials")
        assert info.value.probe_left is False
        text = f"{info.value} {info.value!r} {info.value.message}"
        for secret in secret_values(bad_credentials_destination):
            assert secret not in text

    def test_verify_missing_bucket(self, missing_bucket_destination: Destination) -> None:
        with pytest.raises(VerificationFailed) as info:
            verify(missing_bucket_destination, timeout=30)
        assert (info.value.step, info.value.code) == ("put", "bucket_not_found")

    def test_repr_hides_secrets(self, destination: Destination) -> None:
        text = f"{destination!r} {destination} {destination.to_params()}"
        secrets = secret_values(destination)
        for secret in secrets:
            assert secret not in text
