"""A third-party plugin, built and installed from a temporary folder, works with no change to
core: it is listed, verified and delivered to, found only through its entry point."""

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
"""A third party's storage type: objects are files in a folder, with a token to check."""
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

    def put(self, key, source, *, size, content_type):
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_source(source) as stream, open(target, "wb") as out:
            while chunk := stream.read(65536):
                out.write(chunk)

    def delete(self, key):
        (self.root / key).unlink(missing_ok=True)


@destinations.hookimpl
def destinations_register_types(register: Callable[[DestinationType], None]) -> None:
    register(DestinationType(name="memo", fields=MemoFields, open_store=MemoStore,
                             prefix_field="memo_path_prefix", description="memo test type"))
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
report = destinations.deliver(
    destinations.ResultSet("c1", "Daily", "rs7", [destinations.ResultFile("data.json", data)]),
    [dest],
)
out["delivered"] = [(s.status, s.keys) for s in report]
print(json.dumps(out))
"""


def test_a_plugin_installed_from_a_temporary_folder_is_listed_verified_and_used(
    tmp_path: Path,
) -> None:
    project = tmp_path / "destinations-memo"
    (project / "src" / "destinations_memo").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "src" / "destinations_memo" / "__init__.py").write_text(textwrap.dedent(MODULE))
    site = tmp_path / "site"
    # A real install (wheel built from its pyproject, entry point recorded in its
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
    assert list(site.glob("destinations_memo-0.0.1.dist-info/entry_points.txt"))

    env = {**os.environ, "PYTHONPATH": str(site)}
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
    assert out["delivered"] == [["success", ["sets/rs7/data.json"]]]
    assert (folder / "sets" / "rs7" / "data.json").read_bytes() == b'{"rows": 3}'
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
