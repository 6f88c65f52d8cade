"""The command line, run as a real process."""

import json
import os
import subprocess
import sys


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "destinations", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
    )


def test_types_lists_local_with_its_fields():
    out = cli("types")
    assert out.returncode == 0, out.stderr
    assert "local:" in out.stdout
    assert "local_directory" in out.stdout and "required" in out.stdout
    data = json.loads(cli("types", "--json").stdout)
    local = next(t for t in data if t["type"] == "local")
    assert [f["name"] for f in local["fields"]] == ["local_directory", "local_path_prefix"]


def test_verify_success_exit_0(tmp_path):
    out = cli(
        "verify",
        "-p",
        "type=local",
        "-p",
        f"local_directory={tmp_path}",
        "-p",
        "local_path_prefix=out/%DATE%",
    )
    assert out.returncode == 0, out.stderr
    assert "verified local destination" in out.stdout
    assert not any(tmp_path.rglob("destinations-verify-*"))  # the probe was deleted


def test_verify_from_json_file_and_stdin(tmp_path):
    spec = {"name": "j", "enabled": True, "type": "local", "local_directory": str(tmp_path)}
    path = tmp_path / "d.json"
    path.write_text(json.dumps(spec))
    assert cli("verify", "--json", str(path)).returncode == 0
    assert cli("verify", "--json", "-", stdin=json.dumps(spec)).returncode == 0


def test_verify_invalid_input_exit_2_names_fields(tmp_path):
    out = cli(
        "verify",
        "-p",
        "type=local",
        "-p",
        "local_directory=/does/not/exist",
        "-p",
        "local_path_prefix=%NOPE%",
    )
    assert out.returncode == 2
    assert "local_directory" in out.stderr and "local_path_prefix" in out.stderr
    assert cli("verify").returncode == 2  # nothing given
    assert cli("verify", "-p", "novalue").returncode == 2


def test_verify_failure_exit_1_with_code_and_step(tmp_path):
    # A file where the directory tree must go: the put fails with a provider error.
    (tmp_path / "out").write_text("not a directory")
    out = cli(
        "verify",
        "-p",
        "type=local",
        "-p",
        f"local_directory={tmp_path}",
        "-p",
        "local_path_prefix=out/%DATE%",
    )
    assert out.returncode == 1, out.stdout
    assert "step=put" in out.stderr and "code=provider_error" in out.stderr
