"""A third-party plugin, built and installed from a temporary folder, works with no change to
core: it is listed, verified and delivered to, found only through its entry point. It decides
which of its own errors are transient (contract v2), round-trips content_encoding and
metadata, and a second distribution that ships only an observer is called on delivery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

PYPROJECT = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "destinations-memo"
version = "0.0.1"

[project.entry-points.destinations]
memo = "destinations_memo"

[tool.hatch.build.targets.wheel]
packages = ["src/destinations_memo"]
"""

MODULE = '''
"""A third party's storage type: objects are files in a folder, with a token to check.

Keys containing "throttle" answer the store's own throttling code (``MemoBusy``, transient)
for their first two attempts; keys containing "permanent" answer ``MemoBroken`` with HTTP
status 503 but marked permanent. Every attempt is counted in ``<folder>/.attempts``.
"""
import json
import threading
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr

import destinations
from destinations.plugin import DestinationType, Store, StoreError, StoreOptions, open_source


class MemoFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    memo_folder: str
    memo_token: SecretStr
    memo_path_prefix: str = ""


class MemoStore(Store):
    def __init__(self, fields: MemoFields, options: StoreOptions) -> None:
        if fields.memo_token.get_secret_value() != "let-me-in":
            raise StoreError("invalid_credentials", "memo_token is wrong")
        self.root = Path(fields.memo_folder)

    _counting = threading.Lock()  # files are put from several threads at once

    def _attempt(self, key: str) -> int:
        counts = self.root / ".attempts"
        with self._counting:
            seen = json.loads(counts.read_text()) if counts.exists() else {}
            seen[key] = seen.get(key, 0) + 1
            counts.write_text(json.dumps(seen))
        return seen[key]

    def put(self, key, source, *, size, content_type, content_encoding=None, metadata=None):
        attempt = self._attempt(key)
        if "throttle" in key and attempt <= 2:
            raise StoreError("provider_error", "memo is busy", provider_code="MemoBusy",
                             status=400, transient=True)
        if "permanent" in key:
            raise StoreError("provider_error", "memo is broken", provider_code="MemoBroken",
                             status=503, transient=False)
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_source(source) as stream, open(target, "wb") as out:
            while chunk := stream.read(65536):
                out.write(chunk)
        meta = {"content_type": content_type, "content_encoding": content_encoding,
                "metadata": dict(metadata or {})}
        target.with_name(target.name + ".meta").write_text(json.dumps(meta))

    def delete(self, key):
        (self.root / key).unlink(missing_ok=True)
        (self.root / (key + ".meta")).unlink(missing_ok=True)


@destinations.hookimpl
def destinations_register_types(register: Callable[[DestinationType], None]) -> None:
    register(DestinationType(name="memo", fields=MemoFields, open_store=MemoStore,
                             prefix_field="memo_path_prefix", description="memo test type"))
'''

OBSERVER_PYPROJECT = """
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "destinations-memo-observer"
version = "0.0.1"

[project.entry-points."destinations.observers"]
memo-log = "destinations_memo_observer"

[tool.hatch.build.targets.wheel]
packages = ["src/destinations_memo_observer"]
"""

OBSERVER = '''
"""Only an observer: writes one line per finished destination to $MEMO_OBSERVER_LOG."""
import json
import os

import destinations


@destinations.hookimpl
def destinations_delivery_finished(result_set, status):
    with open(os.environ["MEMO_OBSERVER_LOG"], "a") as log:
        log.write(json.dumps([result_set.result_set_id, status.destination.name,
                              status.status]) + "\\n")


@destinations.hookimpl
def destinations_file_delivered(key):
    raise RuntimeError("an observer that breaks must not stop the others")
'''

USE_IT = """
import json, sys
import destinations

folder, data = sys.argv[1], sys.argv[2]
out = {"types": destinations.available_types()}
params = {"name": "m", "enabled": True, "type": "memo", "memo_folder": folder,
          "memo_token": "let-me-in", "memo_path_prefix": "sets/%RESULT_SET_ID%"}
dest = destinations.parse_destination(params)
out["probe"] = destinations.verify(dest).probe_key
try:
    destinations.verify(destinations.parse_destination({**params, "memo_token": "nope"}))
except destinations.VerificationFailed as exc:
    out["bad_token"] = [exc.step, exc.code]
quick = destinations.RetryPolicy(attempts=4, initial=0.01, maximum=0.02)
files = [
    destinations.ResultFile("data.json", data, content_encoding="identity",
                            metadata={"origin": "test-suite", "rows": "3"}),
    destinations.ResultFile("throttle.json", data),
]
report = destinations.deliver(destinations.ResultSet("c1", "Daily", "rs7", files), [dest],
                              retry=quick)
out["delivered"] = [(s.status, s.keys) for s in report]
broken = destinations.parse_destination({**params, "name": "p", "memo_path_prefix": "permanent"})
report = destinations.deliver(
    destinations.ResultSet("c1", "Daily", "rs8", [destinations.ResultFile("d.json", data)]),
    [broken], retry=quick)
out["permanent"] = [(s.status, s.error.provider_code, s.error.transient) for s in report]
print(json.dumps(out))
"""


def _install(project: Path, site: Path) -> None:
    # A real install (wheel built from its pyproject, entry points recorded in its
    # dist-info), into a folder of its own so the test environment is left as it was.
    # --no-build-isolation --no-index: hatchling comes from the test environment; nothing is
    # downloaded.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
            str(site),
            str(project),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_plugin_installed_from_a_temporary_folder_is_listed_verified_and_used(
    tmp_path: Path,
) -> None:
    project = tmp_path / "destinations-memo"
    (project / "src" / "destinations_memo").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "src" / "destinations_memo" / "__init__.py").write_text(textwrap.dedent(MODULE))
    site = tmp_path / "site"
    _install(project, site)
    observer = tmp_path / "destinations-memo-observer"
    (observer / "src" / "destinations_memo_observer").mkdir(parents=True)
    (observer / "pyproject.toml").write_text(OBSERVER_PYPROJECT)
    (observer / "src" / "destinations_memo_observer" / "__init__.py").write_text(
        textwrap.dedent(OBSERVER)
    )
    _install(observer, site)
    assert list(site.glob("destinations_memo-0.0.1.dist-info/entry_points.txt"))

    observed = tmp_path / "observed.jsonl"
    env = {**os.environ, "PYTHONPATH": str(site), "MEMO_OBSERVER_LOG": str(observed)}
    folder = tmp_path / "bucket"
    folder.mkdir()
    data = tmp_path / "data.json"
    data.write_bytes(b'{"rows": 3}')
    run = subprocess.run(
        [sys.executable, "-c", USE_IT, str(folder), str(data)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert "memo" in out["types"] and "local" in out["types"]
    assert out["probe"].startswith("sets/destinations-verify-")
    assert out["bad_token"] == ["put", "invalid_credentials"]
    assert out["delivered"] == [["success", ["sets/rs7/data.json", "sets/rs7/throttle.json"]]]
    assert (folder / "sets" / "rs7" / "data.json").read_bytes() == b'{"rows": 3}'
    # content_encoding and metadata reached the store as given
    meta = json.loads((folder / "sets" / "rs7" / "data.json.meta").read_text())
    assert meta == {
        "content_type": "application/json",
        "content_encoding": "identity",
        "metadata": {"origin": "test-suite", "rows": "3"},
    }
    attempts = json.loads((folder / ".attempts").read_text())
    # its own throttling code, marked transient, was retried by deliver: 2 failures + 1 success
    assert attempts["sets/rs7/throttle.json"] == 3
    # a code it marked permanent was not retried, though the HTTP status was 503
    assert out["permanent"] == [["failed", "MemoBroken", False]]
    assert attempts["permanent/d.json"] == 1
    # the observer-only distribution was loaded from its entry point and called (its broken
    # file hook did not stop anything)
    lines = [json.loads(line) for line in observed.read_text().splitlines()]
    assert lines == [["rs7", "m", "success"], ["rs8", "p", "failed"]]
    assert "RuntimeError" in run.stderr and "an observer that breaks" not in run.stderr
    assert not list(folder.rglob("destinations-verify-*"))  # the probe was deleted

    listed = subprocess.run(
        [sys.executable, "-m", "destinations", "types"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "memo: memo test type" in listed.stdout
    assert "memo_token" in listed.stdout and "secret" in listed.stdout

    # Without the folder on the path the type is simply not there: nothing in core knows it.
    bare = subprocess.run(
        [sys.executable, "-c", "import destinations; print(destinations.available_types())"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "memo" not in bare.stdout
