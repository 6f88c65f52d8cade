"""`destinations keys create` and `destinations serve` as a real server process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.testclient import TestClient

from destinations.cli import main

CLI = str(Path(sys.executable).with_name("destinations"))


def test_keys_create_prints_a_working_key_on_its_last_line(
    app: Starlette, database_url: str
) -> None:
    result = CliRunner().invoke(main, ["keys", "create", "--name", "acme",
                                       "--database-url", database_url])
    assert result.exit_code == 0, result.output
    key = result.output.rstrip("\n").splitlines()[-1]
    assert key.startswith("dst_") and " " not in key
    response = TestClient(app).get("/destinations", params={"api_key": key})
    assert response.status_code == 200, response.text


def test_types_imports_no_web_or_database_library() -> None:
    # (cryptography is left out: cloud SDKs such as azure-storage-blob import it themselves.)
    code = (
        "import sys; from click.testing import CliRunner; from destinations.cli import main; "
        "r = CliRunner().invoke(main, ['types']); assert r.exit_code == 0, r.output; "
        "print([m for m in ('starlette', 'sqlalchemy', 'alembic', 'uvicorn', "
        "'destinations.api') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _call(method: str, url: str, data: bytes | None = None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serve_runs_a_real_server_with_the_embedded_defaults(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESTINATIONS_")}
    key_run = subprocess.run([CLI, "keys", "create", "--name", "demo"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, check=True, timeout=60)
    api_key = key_run.stdout.splitlines()[-1]
    port = _free_port()
    server = subprocess.Popen([CLI, "serve", "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = _call("GET", f"{base}/destinations?api_key={api_key}")
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, "server exited early"
                assert time.monotonic() < deadline, "server did not answer within 30 s"
                time.sleep(0.1)
        assert status == 200 and body["destinations"] == []
        assert (tmp_path / "destinations-data").is_dir()
        # The seed's curl example, form-encoded, with the local type.
        form = urllib.parse.urlencode({"name": "my first local destination", "type": "local",
                                       "enabled": "true", "local_directory": "."}).encode()
        status, body = _call("POST", f"{base}/destinations?api_key={api_key}", form)
        assert status == 200, body
        assert body["request_info"] == {"success": True}
        status, body = _call("POST", f"{base}/destinations?api_key=wrong", form)
        assert status == 401
        # The account's own subtree (ROOT/<account id>), and no file left in it.
        assert [p.name for p in (tmp_path / "destinations-data").iterdir()] == ["1"]
        assert [p for p in (tmp_path / "destinations-data").rglob("*") if not p.is_dir()] == []
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=15)
    assert "destinations.db.key" in output and "0600" in output
    assert oct((tmp_path / "destinations.db.key").stat().st_mode & 0o777) == "0o600"
    # The database file too: it holds the accounts' key hashes and the encrypted secrets.
    assert oct((tmp_path / "destinations.db").stat().st_mode & 0o777) == "0o600"
    # The access log shows each request, with the api_key blanked: it is a credential.
    assert '"GET /destinations?api_key=[redacted] HTTP/1.1" 200' in output
    assert api_key not in output
