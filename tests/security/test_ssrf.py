"""SSRF: user-supplied endpoints never reach loopback, private, link-local or metadata
addresses, however spelled, resolved, rebound or redirected to.

Network rule (EMULATORS.md): loopback cases run here against a listener that records every
accepted connection; private, link-local and metadata cases run in a child process inside
an empty network namespace (``unshare -n``), where a broken guard would show as
``endpoint_unreachable`` instead of sending a packet anywhere.

Figure: connections recorded = 0 over every spelling x type.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from destinations import _guard
from tests.security.conftest import Recorder
from tests.security.ssrf_cases import ENDPOINT_TYPES, attempt
from tests.tls import STAND_IN_PUBLIC, self_signed

pytestmark = pytest.mark.usefixtures("guard_on")

LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "localhost",
    "0.0.0.0",
    "[::1]",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "[::ffff:127.0.0.1]",
    "127.1",
    "[::ffff:7f00:1]",
]
# oss2 itself rejects IPv6-literal endpoints before any connection (a ClientError).
OSS2_REFUSES = {"[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]"}
TYPES = sorted(ENDPOINT_TYPES)


def _assert_refused(outcome: dict[str, str], type_name: str, spelling: str) -> None:
    if type_name == "oss" and spelling in OSS2_REFUSES:
        assert outcome["code"] == "provider_error", outcome
    else:
        assert outcome["code"] == "endpoint_not_allowed", outcome


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
@pytest.mark.parametrize("type_name", TYPES)
def test_loopback_spellings_make_no_connection(
    type_name: str, spelling: str, recorder: Recorder
) -> None:
    outcome = attempt(type_name, f"https://{spelling}:{recorder.port}")
    _assert_refused(outcome, type_name, spelling)
    assert recorder.accepted == []


@pytest.mark.parametrize("type_name", TYPES)
def test_a_name_resolving_to_loopback_makes_no_connection(
    type_name: str, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo

    def fake(host: object, port: object, *args: object, **kwargs: object) -> object:
        if str(host).endswith("loopback.test"):
            return real("127.0.0.1", port, *args, **kwargs)  # type: ignore[arg-type]
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    outcome = attempt(type_name, f"https://loopback.test:{recorder.port}")
    assert outcome["code"] == "endpoint_not_allowed", outcome
    assert "loopback.test resolves to an address that is not public" in outcome["message"]
    assert "127.0.0.1" not in outcome["message"]
    assert recorder.accepted == []


# -- redirects ---------------------------------------------------------------------------------



@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path, "redirector", STAND_IN_PUBLIC, ca=True)


@pytest.fixture
def redirector(
    tls_files: tuple[Path, Path],
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[tuple[str, list[str]]]:
    """An https server on 127.0.0.2 answering every request with a 307 to the recorder."""
    cert_file, key_file = tls_files
    target = request.param.format(port=recorder.port)
    seen: list[str] = []

    class Redirect(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append(self.command)
            # Read the body first: answering and closing while a client still writes it makes
            # the client fail on the write (a TLS EOF or reset) before it reads the redirect,
            # by chance. A client waiting for 100-continue sends no body: none is read then.
            length = int(self.headers.get("Content-Length") or 0)
            if length and self.headers.get("Expect", "").lower() != "100-continue":
                self.rfile.read(length)
            self.send_response(307)
            self.send_header("Location", target + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PUT = do_POST = do_GET = do_DELETE = do_HEAD = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((STAND_IN_PUBLIC, 0), Redirect)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    real = _guard.blocked_reason
    monkeypatch.setattr(
        _guard,
        "blocked_reason",
        lambda address: None if str(address) == STAND_IN_PUBLIC else real(address),
    )
    for name in ("REQUESTS_CA_BUNDLE", "AWS_CA_BUNDLE"):
        monkeypatch.setenv(name, str(cert_file))
    try:
        yield f"https://{STAND_IN_PUBLIC}:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "redirector",
    ["http://127.0.0.1:{port}", "https://127.0.0.1:{port}", "https://[::ffff:127.0.0.1]:{port}"],
    indirect=True,
)
@pytest.mark.parametrize("type_name", TYPES)
def test_redirects_to_loopback_make_no_connection(
    type_name: str, redirector: tuple[str, list[str]], recorder: Recorder
) -> None:
    url, seen = redirector
    outcome = attempt(type_name, url)
    assert seen, "the redirector was never reached"
    assert recorder.accepted == []
    if type_name in ("s3compatible", "gcs"):
        # botocore follows no HTTP redirect (only S3 region redirects, to the same endpoint)
        assert outcome["code"] != "ok", outcome
    else:
        assert outcome["code"] == "endpoint_not_allowed", outcome
        assert "127.0.0.1, a loopback address" in outcome["message"]


# -- private, link-local, metadata and rebinding: only inside an empty network namespace -------

PRIVATE = [
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "[fe80::1]",
    "100.64.0.1",
    "[fc00::1]",
    "[::ffff:169.254.169.254]",
    "[64:ff9b::a9fe:a9fe]",
    "169.254.170.2",
    "[fd00:ec2::254]",
]


def _in_empty_netns(cases: list[tuple[str, str]], rebind: tuple[str, str]) -> list[dict[str, str]]:
    if shutil.which("unshare") is None:
        pytest.fail("unshare is needed (util-linux) to test non-loopback addresses safely")
    spec = json.dumps({"cases": cases, "rebind": rebind})
    env = {k: v for k, v in os.environ.items() if k != "DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS"}
    done = subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "tests.security.ssrf_cases", spec],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcomes: list[dict[str, str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return outcomes


def test_private_link_local_and_metadata_addresses_are_refused_in_an_empty_netns() -> None:
    cases = [(t, f"https://{host}:443") for t in TYPES for host in PRIVATE]
    outcomes = _in_empty_netns(cases, ("8.8.8.8", "127.0.0.1"))
    assert len(outcomes) == len(cases)
    wrong = [
        o
        for o in outcomes
        if o["code"] != "endpoint_not_allowed"
        and not (o["type"] == "oss" and "[" in o["url"] and o["code"] == "provider_error")
    ]
    assert wrong == []  # endpoint_unreachable here would mean the guard let a connect through


def test_dns_rebinding_between_save_and_connect_is_refused_in_an_empty_netns() -> None:
    # rebind.test answers 8.8.8.8 to the save-time look-up, then 127.0.0.1 to the connection.
    cases = [(t, "https://rebind.test:443") for t in TYPES]
    outcomes = _in_empty_netns(cases, ("8.8.8.8", "127.0.0.1"))
    for outcome in outcomes:
        assert outcome["code"] == "endpoint_not_allowed", outcome
        assert "rebind.test resolves to an address that is not public" in outcome["message"]
        assert "127.0.0.1" not in outcome["message"]


def test_a_name_resolving_to_a_private_address_is_not_revealed_in_an_empty_netns() -> None:
    # priv.rebind.test answers 10.0.0.1 (and 169.254.169.254) every time: the refusal names
    # the rule, never the internal address.
    for internal in ("10.0.0.1", "169.254.169.254"):
        cases = [(t, "https://priv.rebind.test:443") for t in TYPES]
        outcomes = _in_empty_netns(cases, (internal, internal))
        assert len(outcomes) == len(cases)
        for outcome in outcomes:
            assert outcome["code"] == "endpoint_not_allowed", outcome
            assert "priv.rebind.test resolves to an address that is not public" in (
                outcome["message"]
            )
            assert internal not in outcome["message"], outcome
