"""A loopback reverse proxy that records every request's headers (and small bodies).

:class:`RecordingProxy` is :class:`~tests.emulators.servers.CountingProxy` (same forwarding,
same counting) that also keeps, for each request, its method, path, query, headers and — when
it has a ``Content-Length`` of at most :data:`BODY_LIMIT` bytes — its body. It is how a test
asserts exactly which headers a client sent (the probe put and the data puts) where the
server behind ignores them, and what form parameters went to an API such as STS AssumeRole.
"""

from __future__ import annotations

import http.client
import threading
from typing import Any, NamedTuple, Self
from urllib.parse import parse_qs, urlsplit

from tests.emulators.servers import CountingProxy, _ProxyHandler, _ProxyServer

__all__ = ["BODY_LIMIT", "RecordedExchange", "RecordingProxy"]

#: Bodies up to this many bytes are kept; larger ones are relayed without being recorded.
BODY_LIMIT = 64 * 1024


class RecordedExchange(NamedTuple):
    method: str
    path: str
    query: str
    headers: dict[str, str]  # names lower-cased
    body: bytes | None  # None: not recorded (chunked or larger than BODY_LIMIT)

    def form(self) -> dict[str, str]:
        """The body as ``application/x-www-form-urlencoded`` fields (first value of each)."""
        if not self.body:
            return {}
        return {k: v[0] for k, v in parse_qs(self.body.decode("utf-8")).items()}


class _RecordingHandler(_ProxyHandler):
    server: _RecordingServer

    def _relay_request_body(self, upstream: http.client.HTTPConnection) -> None:
        split = urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        length = int(self.headers.get("Content-Length") or 0)
        body: bytes | None = None
        if "chunked" not in te and length <= BODY_LIMIT:
            body = self.rfile.read(length) if length else b""
            if len(body) != length:
                raise ConnectionError("client closed mid-body")
        # Recorded before the request goes upstream, so before the client has its answer.
        self.server.keep(RecordedExchange(self.command, split.path, split.query, headers, body))
        if body is None:
            super()._relay_request_body(upstream)
        elif body:
            upstream.send(body)


class _RecordingServer(_ProxyServer):
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__(upstream_host, upstream_port)
        self.RequestHandlerClass = _RecordingHandler
        self._kept_lock = threading.Lock()
        self._kept: list[RecordedExchange] = []

    def keep(self, entry: RecordedExchange) -> None:
        with self._kept_lock:
            self._kept.append(entry)

    def exchanges(self) -> list[RecordedExchange]:
        with self._kept_lock:
            return list(self._kept)

    def clear(self) -> None:
        super().clear()
        with self._kept_lock:
            self._kept.clear()


class RecordingProxy(CountingProxy):
    """A :class:`CountingProxy` that also records headers and small bodies (see module)."""

    def start(self) -> Self:
        if self._server is not None:
            return self
        server = _RecordingServer(self._upstream_host, self._upstream_port)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"recording-proxy-{server.server_address[1]}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    @property
    def exchanges(self) -> list[RecordedExchange]:
        """What was sent since start or the last ``reset()``, in arrival order."""
        server: Any = self._require()
        found: list[RecordedExchange] = server.exchanges()
        return found

    def sent(self, method: str, *, query_has: str | None = None) -> list[RecordedExchange]:
        """The exchanges of ``method`` (and, if given, whose query contains ``query_has``)."""
        return [
            e
            for e in self.exchanges
            if e.method == method and (query_has is None or query_has in e.query)
        ]
