"""Loopback servers for the delivery tests: a file server (scripted failures, a gate that
holds requests) and a webhook receiver that checks every signature and counts events."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from destinations._webhooks import (
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_signature,
)


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class FileServer:
    """``GET /<name>`` answers ``files[name]``; ``fail[name]`` is a list of statuses to
    answer first (one per request); ``gate`` holds requests for names in ``gated`` until
    it is set. ``requests`` counts requests per name."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.fail: dict[str, list[int]] = defaultdict(list)
        self.gated: set[str] = set()
        self.gate = threading.Event()
        self.requests: Counter[str] = Counter()
        self.waiting: Counter[str] = Counter()
        owner = self

        class Handler(_Quiet):
            def do_GET(self) -> None:
                name = self.path.lstrip("/").split("?")[0]
                owner.requests[name] += 1
                if name in owner.gated:
                    owner.waiting[name] += 1
                    owner.gate.wait(60)
                if owner.fail[name]:
                    status = owner.fail[name].pop(0)
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = owner.files.get(name)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the client may be gone (SIGKILL)
                    self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()


class Receiver:
    """A webhook receiver on loopback. Each POST is checked against ``secret`` (the
    signature over ``timestamp.body``); ``script`` is a list of statuses to answer first,
    then 200. Keeps every request and counts accepted (2xx) events per delivery id."""

    def __init__(self) -> None:
        self.secret: str | None = None
        self.script: list[int] = []
        self.received: list[dict[str, Any]] = []
        self.accepted: Counter[str] = Counter()
        self.bad_signatures = 0
        self._lock = threading.Lock()
        owner = self

        class Handler(_Quiet):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                timestamp = self.headers.get(TIMESTAMP_HEADER, "")
                signature = self.headers.get(SIGNATURE_HEADER, "")
                secret = owner.secret or ""
                good = verify_signature(secret, timestamp, body, signature)
                event = json.loads(body)
                with owner._lock:
                    status = owner.script.pop(0) if owner.script else 200
                    if not good:
                        owner.bad_signatures += 1
                        status = 401
                    owner.received.append(
                        {
                            "event": event,
                            "event_id": self.headers.get(EVENT_HEADER),
                            "timestamp": timestamp,
                            "signature": signature,
                            "body": body,
                            "good": good,
                            "status": status,
                            "at": time.monotonic(),
                        }
                    )
                    if 200 <= status < 300:
                        owner.accepted[event["delivery"]["id"]] += 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/destinations"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def wait_for(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail with its last value."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"not done after {timeout} s: {value!r}")
        time.sleep(interval)
        value = check()
    return value
