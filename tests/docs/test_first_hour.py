"""Issue 13's items, each against the real thing: the HTTP app on SQLite (Starlette's test
client), the CLI as a process, prometheus-client's real registry, the JSON formatter."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import destinations
from destinations._logging import JsonFormatter, log_context
from destinations.api import create_api_key, create_app

CLI = [sys.executable, "-m", "destinations"]


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DESTINATIONS_")}
    return subprocess.run([*CLI, *args], cwd=cwd, env={**base, **(env or {})}, input=stdin,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[TestClient, str]:
    monkeypatch.delenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", raising=False)
    url = f"sqlite:///{tmp_path / 'api.db'}"
    (tmp_path / "root").mkdir()
    app = create_app(database_url=url, local_root=tmp_path / "root")
    key = create_api_key("acme", database_url=url)
    return TestClient(app), key


# -- messages ----------------------------------------------------------------------------


def test_unknown_type_has_no_install_hint_for_the_customer(api: tuple[TestClient, str]) -> None:
    client, key = api
    r = client.post(f"/destinations?api_key={key}", data={"name": "n", "type": "dropbox"})
    assert r.status_code == 400
    assert "pip" not in r.text and "install" not in r.text.replace("installed types", "")
    assert "unknown destination type 'dropbox'" in r.text
    assert destinations.UnknownType("s3", []).install_hint is not None
    assert "pip install destinations-s3" in str(destinations.UnknownType("s3", []).install_hint)
    assert destinations.UnknownType("dropbox", []).install_hint is None  # no invented names
    hint = destinations.UnknownType("s3compatible", []).install_hint or ""
    assert "destinations-s3 " in hint and "s3compatible " not in hint.split("distribution")[1]


def test_missing_api_key_says_missing(api: tuple[TestClient, str]) -> None:
    client, _ = api
    r = client.get("/destinations")
    assert r.status_code == 401 and "missing" in r.json()["request_info"]["message"]
    r = client.get("/destinations?api_key=dst_wrong")
    assert r.json()["request_info"]["message"] == "Supplied api_key is not valid"


def test_form_body_errors_name_the_field_and_the_cause(api: tuple[TestClient, str]) -> None:
    client, key = api
    form = {"content-type": "application/x-www-form-urlencoded"}
    r = client.post(f"/destinations?api_key={key}", headers=form,
                    content=b"name=n&type=local&local_path_prefix=%DATE%/x")
    message = r.json()["request_info"]["message"]
    assert r.status_code == 400 and "'local_path_prefix'" in message and "%25" in message
    r = client.post(f"/destinations?api_key={key}", headers=form,
                    content=b"name=n&type=s3&s3_secret_access_key=ab&cdhunter&s3_bucket_name=b")
    message = r.json()["request_info"]["message"]
    assert "'s3_secret_access_key'" in message and "%26" in message
    assert "cdhunter" not in message  # never the tail of a secret cut at '&'
    r = client.post(f"/destinations?api_key={key}", headers=form,
                    content=json.dumps({"name": "n", "type": "local"}).encode())
    assert "Content-Type: application/json" in r.json()["request_info"]["message"]


def test_plus_hint_only_for_form_bodies(api: tuple[TestClient, str]) -> None:
    client, key = api
    fields = {"name": "n", "type": "s3", "enabled": "false", "s3_access_key_id": "AKIAX",
              "s3_secret_access_key": "abc def", "s3_bucket_name": "bucket"}
    form = client.post(f"/destinations?api_key={key}", data=fields).json()["request_info"]
    assert "%2B" in form["errors"]["s3_secret_access_key"] and "%2B" in form["message"]
    body = client.post(f"/destinations?api_key={key}", json=fields).json()["request_info"]
    assert body["errors"]["s3_secret_access_key"] == "must not contain spaces"


# -- metrics and logs --------------------------------------------------------------------


def test_metrics_endpoint_counts_verifications_and_deliveries(
    api: tuple[TestClient, str], tmp_path: Path
) -> None:
    client, _ = api
    before = client.get("/metrics").text
    dest = destinations.parse_destination(
        {"name": "m", "type": "local", "enabled": True, "local_directory": str(tmp_path)})
    destinations.verify(dest)
    (tmp_path / "a.txt").write_text("hello")
    destinations.deliver(destinations.ResultSet("C", "N", "1", [
        destinations.ResultFile("a.txt", str(tmp_path / "a.txt"))]), [dest])
    text = client.get("/metrics").text
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")

    def value(body: str, sample: str) -> float:
        lines = [ln for ln in body.splitlines() if ln.startswith(sample + " ")]
        return float(lines[0].split()[-1]) if lines else 0.0

    ok = 'destinations_verifications_total{code="none",outcome="success",type="local"}'
    assert value(text, ok) == value(before, ok) + 1  # verify(); delivery does not verify
    done = 'destinations_deliveries_total{status="success",type="local"}'
    assert value(text, done) == value(before, done) + 1
    sent = 'destinations_delivered_bytes_total{type="local"}'
    assert value(text, sent) == value(before, sent) + 5
    assert 'destinations_upload_seconds_count{outcome="success",type="local"}' in text
    assert 'destinations_verify_step_seconds_bucket{le="0.005",step="put",type="local"}' in text


def test_json_log_lines_carry_request_and_account_and_no_key() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("destinations.test_first_hour")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with log_context(request_id="req-1", account_id=7):
            logger.info("GET /destinations?api_key=%s 200", "dst_" + "x" * 43)
        logger.info("outside\nof a request")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["request_id"] == "req-1" and first["account_id"] == 7
    assert "x" * 20 not in lines[0] and "[redacted]" in first["message"]
    assert second["request_id"] is None and second["message"] == "outside\nof a request"


# -- the CLI -----------------------------------------------------------------------------


def test_cli_vocabulary_and_deprecated_aliases(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"type": "local", "local_directory": str(tmp_path / "d")}))
    out = tmp_path / "out.json"
    r = cli("verify", "--spec", str(spec), "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["verified"] is True
    r = cli("verify", "--json", str(spec), cwd=tmp_path)
    assert r.returncode == 0 and "deprecated" in r.stderr and "--spec" in r.stderr
    r = cli("verify", "--spec", str(tmp_path / "nope.json"), cwd=tmp_path)
    assert r.returncode == 2 and "nope.json" in r.stderr and "Traceback" not in r.stderr
    r = cli("bench", "verify", "-n", "1", "--spec", str(spec), "--json", "-", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["cycles"] == 1 and "--output" in r.stderr
    r = cli("deliver", "missing.csv", "--collection-id", "C", "--collection-name", "N",
            "--result-set-id", "1", "--spec", str(spec), cwd=tmp_path)
    assert r.returncode == 2 and "missing.csv" in r.stderr and "Traceback" not in r.stderr


def test_stored_destination_by_id_for_verify_and_deliver_with_p(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    root = tmp_path / "root"
    root.mkdir()
    client = TestClient(create_app(database_url=url, local_root=root))
    key = create_api_key("acme", database_url=url)
    r = client.post(f"/destinations?api_key={key}",
                    json={"name": "stored", "type": "local", "enabled": True,
                          "local_directory": "."})
    assert r.status_code == 200, r.text
    stored = r.json()["destination"]["id"]
    r = cli("verify", "-d", stored, "--database-url", url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (tmp_path / "x").mkdir()
    (tmp_path / "f.txt").write_text("data")
    r = cli("deliver", "f.txt", "--collection-id", "C", "--collection-name", "N",
            "--result-set-id", "1", "-d", stored, "--database-url", url,
            "-p", "type=local", "-p", f"local_directory={tmp_path / 'x'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("success") == 2
    # From another directory: the relative database does not exist, and is not created.
    other = tmp_path / "elsewhere"
    other.mkdir()
    r = cli("deliver", str(tmp_path / "f.txt"), "--collection-id", "C", "--collection-name", "N",
            "--result-set-id", "1", "-d", stored, cwd=other)
    assert r.returncode == 2 and "does not exist" in r.stderr
    assert list(other.iterdir()) == []


def test_a_failed_delivery_prints_its_error_once(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("data")
    r = cli("deliver", "f.txt", "--collection-id", "C", "--collection-name", "N",
            "--result-set-id", "1", "-p", "type=s3compatible",
            "-p", "s3_endpoint=http://127.0.0.1:9", "-p", "s3_access_key_id=AKIAX",
            "-p", "s3_secret_access_key=abc", "-p", "s3_bucket_name=bucket", cwd=tmp_path,
            env={"DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS": "1"})
    assert r.returncode == 1
    both = r.stdout + r.stderr
    assert both.count("failed at") + both.count("at put of") == 1, both


def test_help_works_without_the_optional_extras(tmp_path: Path) -> None:
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('celery', 'kombu'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _Block())\n")
    env = {"PYTHONPATH": f"{block}:{os.environ.get('PYTHONPATH', '')}"}
    r = cli("worker", "--help", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "pip install 'destinations[celery]'" in r.stdout
    r = cli("worker", "--broker-url", "redis://127.0.0.1:1/0", cwd=tmp_path, env=env)
    assert r.returncode == 1 and "destinations[celery]" in r.stderr
    assert "DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS" in cli("serve", "--help", cwd=tmp_path).stdout


def test_keys_create_refuses_a_duplicate_and_prints_the_key_alone(tmp_path: Path) -> None:
    first = cli("keys", "create", "--name", "demo", cwd=tmp_path)
    assert first.returncode == 0 and first.stdout.count("\n") == 1
    assert first.stdout.startswith("dst_")
    again = cli("keys", "create", "--name", "demo", cwd=tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr and again.stdout == ""
    ok = cli("keys", "create", "--name", "demo", "--exist-ok", cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout == ""
    dup = cli("keys", "create", "--name", "demo", "--allow-duplicate", cwd=tmp_path)
    assert dup.returncode == 0 and dup.stdout.startswith("dst_") and dup.stdout != first.stdout


def test_unknown_type_on_the_cli_names_the_real_distribution(tmp_path: Path) -> None:
    r = cli("verify", "-p", "type=s3", cwd=tmp_path, env={"DESTINATIONS_DISABLE_PLUGINS": "s3"})
    assert r.returncode == 2 and "pip install destinations-s3 " in r.stderr
    r = cli("verify", "-p", "type=dropbox", cwd=tmp_path)
    assert r.returncode == 2 and "pip install" not in r.stderr


def test_doctor_exit_codes(tmp_path: Path) -> None:
    missing = cli("doctor", cwd=tmp_path)
    assert missing.returncode == 1 and "FAIL database" in missing.stdout
    assert not (tmp_path / "destinations.db").exists()  # doctor changes nothing
    url = f"sqlite:///{tmp_path / 'destinations.db'}"
    (tmp_path / "destinations-data").mkdir()
    TestClient(create_app(database_url=url, local_root=tmp_path / "destinations-data"))
    good = cli("doctor", "-o", "-", cwd=tmp_path)
    data: dict[str, Any] = json.loads(good.stdout)
    assert good.returncode == 0 and data["ok"] is True, good.stdout
    assert {c["name"] for c in data["checks"]} >= {"database", "encryption keys", "plugin s3",
                                                  "endpoint guard", "local root", "broker"}
    wrong = cli("doctor", cwd=tmp_path, env={
        "DESTINATIONS_ENCRYPTION_KEYS": "not-a-fernet-key"})
    assert wrong.returncode == 1 and "FAIL encryption keys" in wrong.stdout
    guard = cli("doctor", cwd=tmp_path, env={"DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS": "1"})
    assert "warn endpoint guard: OFF" in guard.stdout


def test_a_library_delivery_pays_for_no_metrics_a_process_that_exports_gets_them(
    tmp_path: Path,
) -> None:
    """deliver() in a process that exports no Prometheus metrics imports no prometheus-client;
    once the process uses it (serve's /metrics, a worker's port, the service's own exporter),
    the same delivery is counted."""
    import subprocess
    import sys

    (tmp_path / "out").mkdir()
    (tmp_path / "a.json").write_text("{}")
    code = f"""
import sys, destinations
{{prelude}}
dest = destinations.parse_destination({{{{"name": "n", "enabled": True, "type": "local",
    "local_directory": {str(tmp_path / "out")!r}}}}})
files = [destinations.ResultFile("a.json", {str(tmp_path / "a.json")!r})]
rs = destinations.ResultSet("c", "n", "r", files)
assert destinations.deliver(rs, [dest]).ok
loaded = "prometheus_client" in sys.modules
counted = None
if loaded:
    from prometheus_client import REGISTRY
    labels = {{{{"type": "local", "status": "delivered"}}}}
    counted = REGISTRY.get_sample_value("destinations_files_total", labels)
print(loaded, counted)
"""
    plain = subprocess.run(
        [sys.executable, "-c", code.format(prelude="")], capture_output=True, text=True
    )
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.split() == ["False", "None"]
    exporting = subprocess.run(
        [sys.executable, "-c", code.format(prelude="import prometheus_client")],
        capture_output=True,
        text=True,
    )
    assert exporting.returncode == 0, exporting.stderr
    assert exporting.stdout.split() == ["True", "1.0"]
