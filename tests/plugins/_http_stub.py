"""A loopback HTTP stub that answers storage requests (S3 XML or GCS JSON API) from a script.

For what the real local servers cannot produce: region redirects, 5xx, slow answers, and a
record of the request headers (signing region, checksum headers). Each request is recorded
as a :class:`StubRequest`; ``answer(request) -> (status, headers, body)`` decides the reply.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

__all__ = ["Reply", "StubRequest", "StubServer", "s3_error"]

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/")


@dataclass(frozen=True)
class StubRequest:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body_size: int

    @property
    def signing_region(self) -> str | None:
        match = _SCOPE.search(self.headers.get("authorization", ""))
        return match.group(1) if match else None


Reply = tuple[int, Mapping[str, str], bytes]


def s3_error(status: int, code: str, **fields: str) -> Reply:
    extra = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>stub says {code}</Message>{extra}<RequestId>stub</RequestId></Error>"
    ).encode()
    return status, {"Content-Type": "application/xml"}, body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        remaining = size
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                break
            remaining -= len(chunk)
        split = urlsplit(self.path)
        request = StubRequest(
            self.command,
            split.path,
            split.query,
            {k.lower(): v for k, v in self.headers.items()},
            size,
        )
        with self.server.lock:
            self.server.requests.append(request)
        status, headers, body = self.server.answer(request)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answer: Callable[[StubRequest], Reply]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer
        self.lock = threading.Lock()
        self.requests: list[StubRequest] = []


class StubServer:
    def __init__(self, answer: Callable[[StubRequest], Reply]) -> None:
        self._server = _Server(answer)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[StubRequest]:
        with self._server.lock:
            return list(self._server.requests)

    def reset(self) -> None:
        with self._server.lock:
            self._server.requests.clear()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
