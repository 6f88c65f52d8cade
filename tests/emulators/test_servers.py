"""Tests of the local storage servers, the counting proxy and the pytest plugin.

Each server class is started here directly (module scope) so its start-up is measured; the
times are printed (see them with ``-s``), never asserted.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.emulators import servers
from tests.emulators.servers import (
    Azurite,
    CountingProxy,
    GcsEmulator,
    MotoServer,
    RecordedRequest,
    ServerProcess,
    ServerStartError,
    gcs_client,
    s3_client,
    wait_for_http,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _started(server: ServerProcess) -> ServerProcess:
    t0 = time.monotonic()
    server.start()
    elapsed = time.monotonic() - t0
    print(f"\n[startup] {server.name}: {elapsed * 1000:.0f} ms (pid {server.pid})")
    return server


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    _started(server)
    t0 = time.monotonic()
    server.enable_auth()
    print(f"[startup] moto enable_auth: {(time.monotonic() - t0) * 1000:.0f} ms")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def azurite_proc() -> Iterator[Azurite]:
    server = Azurite()
    _started(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gcs_proc() -> Iterator[GcsEmulator]:
    server = GcsEmulator()
    _started(server)
    try:
        yield server
    finally:
        server.stop()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _http_status(url: str) -> int:
    parts = url.split("/", 3)
    host, port = parts[2].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/" + (parts[3] if len(parts) > 3 else ""))
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------
# helpers


def test_free_port_is_bindable_loopback() -> None:
    port = servers.free_port()
    assert 0 < port < 65536


def test_wait_for_http_times_out_with_clear_error() -> None:
    port = servers.free_port()  # nothing listens there
    with pytest.raises(ServerStartError, match=r"did not answer .* within 0\.2s"):
        wait_for_http(f"http://127.0.0.1:{port}/", timeout=0.2, name="nothing")


class _DiesAtOnce(ServerProcess):
    name = "dies-at-once"

    def command(self, port: int) -> list[str]:
        code = "import sys; sys.stderr.write('boom-marker-%d\\n' % 7); sys.exit(3)"
        return [sys.executable, "-c", code]


def test_server_exiting_early_reports_code_and_log_tail() -> None:
    server = _DiesAtOnce()
    with pytest.raises(ServerStartError) as info:
        server.start()
    message = str(info.value)
    assert "exited with code 3" in message
    assert "boom-marker-7" in message
    assert not server.is_running()
    assert server.log_path is None  # log file cleaned up by stop()


# ------------------------------------------------------------------------------------------
# moto


def test_moto_answers_and_round_trips(moto: MotoServer) -> None:
    assert moto.endpoint.startswith("http://127.0.0.1:")
    assert _http_status(moto.endpoint + "/moto-api/") == 200
    assert moto.auth_enabled
    bucket = _name("moto")
    moto.create_bucket(bucket)
    client = moto.s3_client()
    try:
        client.put_object(Bucket=bucket, Key="dir/a.txt", Body=b"hello moto")
        body = client.get_object(Bucket=bucket, Key="dir/a.txt")["Body"].read()
        assert body == b"hello moto"
        client.delete_object(Bucket=bucket, Key="dir/a.txt")
        assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    finally:
        client.close()


def test_moto_create_bucket_outside_us_east_1(moto: MotoServer) -> None:
    bucket = _name("moto-eu")
    moto.create_bucket(bucket, region="eu-west-1")
    client = moto.s3_client(region="eu-west-1")
    try:
        assert client.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "eu-west-1"
    finally:
        client.close()


def test_moto_enable_auth_is_idempotent(moto: MotoServer) -> None:
    assert moto.credentials is not None
    assert moto.enable_auth() == moto.credentials


@pytest.mark.parametrize(
    ("which", "code"),
    [("wrong-secret", "SignatureDoesNotMatch"), ("unknown-key", "InvalidAccessKeyId")],
)
def test_moto_rejects_bad_credentials_after_enable_auth(
    moto: MotoServer, which: str, code: str
) -> None:
    from botocore.exceptions import ClientError

    assert moto.credentials is not None
    key, secret = moto.credentials
    bucket = _name("moto-auth")
    moto.create_bucket(bucket)  # the real pair works
    if which == "wrong-secret":
        secret = secret[:-4] + "XXXX"
    else:
        key = "AKIAUNKNOWNKEY000000"
    client = s3_client(moto.endpoint, key, secret)
    try:
        with pytest.raises(ClientError) as info:
            client.put_object(Bucket=bucket, Key="k", Body=b"x")
    finally:
        client.close()
    err = info.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert err["Error"]["Code"] == code


def test_moto_checks_the_signed_host_header(moto: MotoServer) -> None:
    """SigV4 signs Host: a request signed for another host:port is refused.

    This is why CountingProxy must forward the client's Host header unchanged.
    """
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    assert moto.credentials is not None
    credentials = Credentials(*moto.credentials)
    bucket = _name("moto-host")
    moto.create_bucket(bucket)

    def signed_get(host: str) -> int:
        req = AWSRequest(method="GET", url=f"http://{host}/{bucket}?list-type=2")
        S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(req)
        conn = http.client.HTTPConnection("127.0.0.1", moto.port, timeout=5)
        try:
            conn.request("GET", f"/{bucket}?list-type=2", headers=dict(req.headers.items()))
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    assert signed_get(f"127.0.0.1:{moto.port}") == 200
    assert signed_get("127.0.0.1:1") == 403


# ------------------------------------------------------------------------------------------
# azurite


def test_azurite_answers_and_round_trips(azurite_proc: Azurite) -> None:
    from azure.storage.blob import BlobServiceClient

    assert azurite_proc.account_name == "devstoreaccount1"
    assert azurite_proc.blob_endpoint == (f"http://127.0.0.1:{azurite_proc.port}/devstoreaccount1")
    container = _name("az")
    azurite_proc.create_container(container)
    with BlobServiceClient.from_connection_string(azurite_proc.connection_string) as svc:
        blob = svc.get_blob_client(container, "dir/a.txt")
        blob.upload_blob(b"hello azurite")
        assert blob.download_blob().readall() == b"hello azurite"
        blob.delete_blob()
        assert list(svc.get_container_client(container).list_blobs()) == []


def test_azurite_rejects_wrong_key(azurite_proc: Azurite) -> None:
    from azure.core.exceptions import HttpResponseError
    from azure.storage.blob import BlobServiceClient

    container = _name("az-auth")
    azurite_proc.create_container(container)
    wrong_key = base64.b64encode(b"\x01" * 64).decode()
    with (
        BlobServiceClient(
            azurite_proc.blob_endpoint,
            credential={"account_name": azurite_proc.account_name, "account_key": wrong_key},
        ) as svc,
        pytest.raises(HttpResponseError) as info,
    ):
        svc.get_blob_client(container, "x").upload_blob(b"x")
    assert info.value.status_code == 403
    assert getattr(info.value, "error_code", None) == "AuthorizationFailure"


def test_azurite_missing_binary_says_how_to_install(tmp_path: Path) -> None:
    server = Azurite(binary=tmp_path / "azurite-blob")
    with pytest.raises(ServerStartError, match=r"npm ci --prefix tests/emulators"):
        server.start()
    assert not server.is_running()
    assert server.log_path is None


# ------------------------------------------------------------------------------------------
# gcs emulator


def test_gcs_emulator_answers_and_round_trips(gcs_proc: GcsEmulator) -> None:
    assert gcs_proc.endpoint.startswith("http://127.0.0.1:")
    assert _http_status(gcs_proc.endpoint + "/storage/v1/b?project=p") == 200
    bucket = _name("gcs")
    gcs_proc.create_bucket(bucket)
    client = gcs_proc.client()
    try:
        blob = client.bucket(bucket).blob("dir/a.txt")
        blob.upload_from_string(b"hello gcs")
        assert blob.download_as_bytes() == b"hello gcs"
        blob.delete()
        assert list(client.list_blobs(bucket)) == []
    finally:
        client.close()


# ------------------------------------------------------------------------------------------
# counting proxy


def test_proxy_counts_put_and_delete_against_moto_with_auth(moto: MotoServer) -> None:
    assert moto.credentials is not None
    bucket = _name("proxy")
    moto.create_bucket(bucket)
    with CountingProxy(moto.endpoint) as proxy:
        client = s3_client(proxy.endpoint, *moto.credentials)  # signs for the proxy's host
        try:
            put = client.put_object(Bucket=bucket, Key="obj", Body=b"payload")
            delete = client.delete_object(Bucket=bucket, Key="obj")
        finally:
            client.close()
        assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert delete["ResponseMetadata"]["HTTPStatusCode"] == 204
        assert proxy.requests == [
            RecordedRequest("PUT", f"/{bucket}/obj", "", 200),
            RecordedRequest("DELETE", f"/{bucket}/obj", "", 204),
        ]
        assert proxy.count == 2
        proxy.reset()
        assert proxy.requests == []


def test_proxy_keeps_signature_checks_meaningful(moto: MotoServer) -> None:
    from botocore.exceptions import ClientError

    assert moto.credentials is not None
    bucket = _name("proxy-bad")
    moto.create_bucket(bucket)
    with CountingProxy(moto.endpoint) as proxy:
        client = s3_client(proxy.endpoint, moto.credentials[0], "not-the-secret")
        try:
            with pytest.raises(ClientError) as info:
                client.put_object(Bucket=bucket, Key="obj", Body=b"x")
        finally:
            client.close()
        assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
        assert [r.status for r in proxy.requests] == [403]


def test_proxy_streams_large_file_like_body_with_expect_continue(moto: MotoServer) -> None:
    import io

    assert moto.credentials is not None
    bucket = _name("proxy-big")
    moto.create_bucket(bucket)
    data = os.urandom(3 * 1024 * 1024)
    with CountingProxy(moto.endpoint) as proxy:
        client = s3_client(proxy.endpoint, *moto.credentials)
        try:
            # A file-like body makes botocore send "Expect: 100-continue".
            client.put_object(Bucket=bucket, Key="big", Body=io.BytesIO(data))
            assert client.get_object(Bucket=bucket, Key="big")["Body"].read() == data
            assert client.head_object(Bucket=bucket, Key="big")["ContentLength"] == len(data)
        finally:
            client.close()
        assert [(r.method, r.status) for r in proxy.requests] == [
            ("PUT", 200),
            ("GET", 200),
            ("HEAD", 200),
        ]


def test_proxy_works_for_azure_sdk(azurite_proc: Azurite) -> None:
    from azure.storage.blob import BlobServiceClient

    container = _name("az-proxy")
    azurite_proc.create_container(container)
    with (
        CountingProxy(azurite_proc.base_url) as proxy,
        BlobServiceClient(
            f"{proxy.endpoint}/{azurite_proc.account_name}",
            credential={
                "account_name": azurite_proc.account_name,
                "account_key": azurite_proc.account_key,
            },
        ) as svc,
    ):
        blob = svc.get_blob_client(container, "a")
        blob.upload_blob(b"abc")
        blob.delete_blob()
        path = f"/{azurite_proc.account_name}/{container}/a"
        assert [(r.method, r.path, r.status) for r in proxy.requests] == [
            ("PUT", path, 201),
            ("DELETE", path, 202),
        ]


def test_proxy_works_for_google_sdk(gcs_proc: GcsEmulator) -> None:
    bucket = _name("gcs-proxy")
    gcs_proc.create_bucket(bucket)
    with CountingProxy(gcs_proc.endpoint) as proxy:
        client = gcs_client(proxy.endpoint)  # background bucket-metadata GET switched off
        try:
            blob = client.bucket(bucket).blob("a")
            blob.upload_from_string(b"abc")
            assert blob.download_as_bytes() == b"abc"  # mediaLink names the proxy's Host
            blob.delete()
        finally:
            client.close()
        assert [(r.method, r.path, r.status) for r in proxy.requests] == [
            ("POST", f"/upload/storage/v1/b/{bucket}/o", 200),
            ("GET", f"/download/storage/v1/b/{bucket}/o/a", 200),
            ("DELETE", f"/storage/v1/b/{bucket}/o/a", 200),
        ]


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers with what it received: raw header lines and the raw (still framed) body."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_PUT(self) -> None:
        raw = b""
        if "chunked" in (self.headers.get("Transfer-Encoding") or ""):
            while True:
                line = self.rfile.readline()
                raw += line
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while True:
                        trailer = self.rfile.readline()
                        raw += trailer
                        if trailer == b"\r\n":
                            break
                    break
                raw += self.rfile.read(size + 2)
        else:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        payload = json.dumps(
            {
                "path": self.path,
                "headers": list(self.headers.items()),
                "raw_body": base64.b64encode(raw).decode(),
            }
        ).encode()
        self.send_response(207)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")  # make the proxy re-chunk
        self.end_headers()
        for i in range(0, len(payload), 10):
            piece = payload[i : i + 10]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")


def test_proxy_forwards_chunked_body_and_headers_byte_for_byte() -> None:
    echo = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    echo.daemon_threads = True
    thread = threading.Thread(
        target=echo.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        with CountingProxy(f"http://127.0.0.1:{echo.server_address[1]}") as proxy:
            raw_body = (
                b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-amz-checksum-crc32: AAAAAA==\r\n\r\n"
            )
            headers = [
                ("Host", "example-bucket.s3.test:1234"),
                ("X-Amz-Date", "20250101T000000Z"),
                ("x-MiXeD-Case", "v1"),
                ("Transfer-Encoding", "chunked"),
                ("Content-Encoding", "aws-chunked"),
            ]
            conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
            try:
                conn.putrequest(
                    "PUT", "/b/k%20ey?partNumber=1&x=%2F", skip_host=True, skip_accept_encoding=True
                )
                for name, value in headers:
                    conn.putheader(name, value)
                conn.endheaders()
                conn.send(raw_body)
                resp = conn.getresponse()
                echoed = json.loads(resp.read())
            finally:
                conn.close()
            assert resp.status == 207
            assert echoed["path"] == "/b/k%20ey?partNumber=1&x=%2F"
            assert [tuple(h) for h in echoed["headers"]] == headers
            assert base64.b64decode(echoed["raw_body"]) == raw_body
            assert proxy.requests == [
                RecordedRequest("PUT", "/b/k%20ey", "partNumber=1&x=%2F", 207)
            ]
    finally:
        echo.shutdown()
        echo.server_close()


def test_proxy_refuses_non_loopback_upstream() -> None:
    for upstream in (
        "http://10.0.0.1:80",
        "http://example.com:80",
        "https://127.0.0.1:1",
        "http://127.0.0.1:9/prefix",
    ):
        with pytest.raises(ValueError):
            CountingProxy(upstream)


def test_proxy_answers_502_when_upstream_is_down() -> None:
    with CountingProxy(f"http://127.0.0.1:{servers.free_port()}") as proxy:
        assert _http_status(proxy.endpoint + "/x?y=1") == 502
        assert proxy.requests == [RecordedRequest("GET", "/x", "y=1", 502)]


# ------------------------------------------------------------------------------------------
# the pytest plugin (run in a child pytest so its session start/stop is observable)

_PLUGIN_TEST = """
import json, os, pathlib

PIDS = pathlib.Path(os.environ["PIDS_FILE"])


def _note(name, pid):
    data = json.loads(PIDS.read_text()) if PIDS.exists() else {{}}
    data[name] = pid
    PIDS.write_text(json.dumps(data))


def test_moto(moto_server):
    _note("moto", moto_server.server.pid)
    moto_server.create_bucket("plugin-bucket")
    client = moto_server.s3_client()
    client.put_object(Bucket="plugin-bucket", Key="k", Body=b"v")
    assert client.get_object(Bucket="plugin-bucket", Key="k")["Body"].read() == b"v"
    client.close()
    assert moto_server.server.auth_enabled


def test_moto_same_session_instance(moto_server):
    assert json.loads(PIDS.read_text())["moto"] == moto_server.server.pid


def test_azurite(azurite):
    _note("azurite", azurite.pid)
    azurite.create_container("plugin-container")


def test_gcs(gcs_emulator):
    _note("gcs", gcs_emulator.pid)
    gcs_emulator.create_bucket("plugin-bucket")

{oss_test}
"""

_OSS_TEST = """
def test_oss(oss_double):
    assert oss_double.endpoint.startswith("http://127.0.0.1:")
"""


def _run_child_pytest(tmp_path: Path, test_source: str, conftest: str = "") -> tuple[int, str]:
    (tmp_path / "test_plugin_child.py").write_text(textwrap.dedent(test_source))
    (tmp_path / "conftest.py").write_text(textwrap.dedent(conftest))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env["PIDS_FILE"] = str(tmp_path / "pids.json")
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only our plugin: hypothesis alone costs ~1 s
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.emulators.fixtures",
            "-p",
            "no:cacheprovider",
            "-W",
            "error",
            "-q",
            "-rfEs",
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_plugin_fixtures_start_share_and_stop_servers(tmp_path: Path) -> None:
    has_oss = (REPO_ROOT / "tests" / "emulators" / "oss_double.py").exists()
    source = _PLUGIN_TEST.format(oss_test=_OSS_TEST if has_oss else "")
    code, output = _run_child_pytest(tmp_path, source)
    assert code == 0, output
    expected = 5 if has_oss else 4
    assert f"{expected} passed" in output, output
    pids = json.loads((tmp_path / "pids.json").read_text())
    assert set(pids) == {"moto", "azurite", "gcs"}
    assert [name for name, pid in pids.items() if _pid_alive(pid)] == []


def test_plugin_fails_not_skips_when_a_server_cannot_start(tmp_path: Path) -> None:
    conftest = """
        from pathlib import Path
        from tests.emulators import servers
        servers.AZURITE_BIN = Path("/nonexistent/azurite-blob")
    """
    source = """
        def test_uses_azurite(azurite):
            pass
    """
    code, output = _run_child_pytest(tmp_path, source, conftest)
    assert code == 1, output
    assert "skipped" not in output, output
    assert "1 error" in output, output
    assert "npm ci --prefix tests/emulators" in output, output


def test_proxy_stop_drops_kept_alive_client_connections(gcs_proc: GcsEmulator) -> None:
    proxy = CountingProxy(gcs_proc.endpoint).start()
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    try:
        conn.request("GET", "/storage/v1/b?project=p")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        proxy.stop()
        with pytest.raises((OSError, http.client.HTTPException)):
            conn.request("GET", "/storage/v1/b?project=p")
            conn.getresponse().read()
    finally:
        conn.close()
        proxy.stop()
