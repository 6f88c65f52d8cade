"""The seed's own create example (its curl form body, and the JSON body of its Python and
node variants), for type=s3, against moto with auth on, reached through boto3's standard
AWS_ENDPOINT_URL_S3 — in-process on SQLite and PostgreSQL, and through a real server process."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.emulators.fixtures import MotoHandle
from tests.emulators.servers import free_port

BUCKET = "mys3bucket"  # the seed's bucket name
PREFIX = "my path prefix"  # the seed's s3_path_prefix


def seed_params(moto: MotoHandle, **overrides: Any) -> dict[str, Any]:
    """The seed's parameters, with moto's real IAM key pair in place of its placeholders."""
    return {
        "name": "my first s3 destination",
        "type": "s3",
        "enabled": "true",
        "s3_access_key_id": moto.access_key_id,
        "s3_secret_access_key": moto.secret_access_key,
        "s3_bucket_name": BUCKET,
        "s3_path_prefix": PREFIX,
        **overrides,
    }


@pytest.fixture
def moto_s3(moto_server: MotoHandle, monkeypatch: pytest.MonkeyPatch) -> MotoHandle:
    client = moto_server.s3_client()
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):  # shared server
        client.create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server.endpoint)
    monkeypatch.setenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", "1")
    return moto_server


def objects_under_prefix(moto: MotoHandle) -> list[str]:
    listing = moto.s3_client().list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)
    return [o["Key"] for o in listing.get("Contents", [])]


def test_seed_curl_example_form_encoded(
    client: TestClient, api_key: str, moto_s3: MotoHandle
) -> None:
    response = client.post(f"/destinations?api_key={api_key}", data=seed_params(moto_s3))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["request_info"] == {"success": True}
    destination = body["destination"]
    assert destination["id"] and destination["type"] == "s3"
    assert destination["s3_access_key_id"] == "****" + moto_s3.access_key_id[-4:]
    assert moto_s3.secret_access_key not in response.text
    assert destination["last_verified_at"] is not None
    assert objects_under_prefix(moto_s3) == []  # the probe was put and deleted


def test_seed_json_example_and_disabled_variant(
    client: TestClient, api_key: str, moto_s3: MotoHandle
) -> None:
    body = {**seed_params(moto_s3), "enabled": True}  # JSON booleans, as the Python example
    response = client.post(f"/destinations?api_key={api_key}", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["destination"]["enabled"] is True
    # The PHP example creates it disabled: no verification, so even a wrong secret is saved.
    disabled = {**seed_params(moto_s3, enabled="false", s3_secret_access_key="not-the-secret")}
    response = client.post(f"/destinations?api_key={api_key}", data=disabled)
    assert response.status_code == 200, response.text
    assert response.json()["destination"]["last_verified_at"] is None


def test_seed_example_with_a_wrong_secret_is_a_connectivity_problem(
    client: TestClient, api_key: str, moto_s3: MotoHandle
) -> None:
    params = seed_params(moto_s3, s3_secret_access_key="wrong-secret-value-123")
    response = client.post(f"/destinations?api_key={api_key}", data=params)
    assert response.status_code == 400
    info = response.json()["request_info"]
    assert info["success"] is False and info["connectivity_problem"] is True
    assert (info["step"], info["code"]) == ("put", "invalid_credentials")
    assert "wrong-secret-value-123" not in response.text
    listed = client.get(f"/destinations?api_key={api_key}").json()
    assert listed["destinations"] == []  # nothing stored


def _request(url: str, data: bytes | None = None, json_body: bool = False) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"} if json_body else {}
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_seed_example_through_a_real_server_process(tmp_path: Path, moto_s3: MotoHandle) -> None:
    cli = [sys.executable, "-m", "destinations"]
    env = {**os.environ}  # carries AWS_ENDPOINT_URL_S3 and the private-endpoint switch
    key_run = subprocess.run(
        [*cli, "keys", "create", "--name", "seed"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    api_key = key_run.stdout.splitlines()[-1]
    port = free_port()
    server = subprocess.Popen(
        [*cli, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}/destinations?api_key={api_key}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _ = _request(base)
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, "server exited early"
                assert time.monotonic() < deadline, "server did not answer within 30 s"
                time.sleep(0.1)
        assert status == 200
        form = urllib.parse.urlencode(seed_params(moto_s3)).encode()
        status, body = _request(base, form)
        assert status == 200, body
        assert body["request_info"] == {"success": True} and body["destination"]["id"]
        status, body = _request(
            base, json.dumps({**seed_params(moto_s3), "enabled": True}).encode(), json_body=True
        )
        assert status == 200, body
        status, body = _request(base)
        assert body["usage"] == {"used": 2, "limit": 50, "available": 48}
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=15)
    assert moto_s3.secret_access_key not in output
    assert objects_under_prefix(moto_s3) == []
