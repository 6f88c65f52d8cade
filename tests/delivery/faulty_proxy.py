"""A loopback reverse proxy that injects faults into a chosen share of requests.

Built on the counting proxy (tests/emulators/servers.py): requests it lets through are
forwarded unchanged (so SigV4 signatures still match). For each request it draws from a
seeded ``random.Random`` (one draw per request, so the sequence of faults is fixed by the
seed) and then:

* ``error``: reads the request body and answers ``503`` with S3's ``SlowDown`` error XML;
* ``drop``: reads the request body and closes the connection without answering;
* ``slow``: forwards it, then waits ``delay`` seconds before relaying the answer;
* otherwise forwards it as is.

``error_when(method, path, query)`` (optional) answers ``error`` for exactly the requests it
returns true for, instead of drawing. ``bytes_in`` counts request body bytes (by
Content-Length) of every request, faulted or not: the bytes a client put on the wire.

``faults`` counts what was injected; ``requests`` records every request as the counting
proxy does (status ``503`` for errors, ``0`` for drops).
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Self
from urllib.parse import urlsplit

from tests.emulators.servers import (
    CountingProxy,
    RecordedRequest,
    _ProxyHandler,
    _ProxyServer,
)

__all__ = ["FaultyProxy"]

_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
    b"<RequestId>FAULTY0001</RequestId></Error>"
)


class _Sink:
    """Stands in for the upstream connection when a request body is only to be drained."""

    def send(self, data: bytes) -> None:
        pass


class _FaultyHandler(_ProxyHandler):
    server: _FaultyServer

    def _proxy(self) -> None:
        split_url = urlsplit(self.path)
        self.server.count_bytes(int(self.headers.get("Content-Length") or 0))
        fault = self.server.draw(self.command, split_url.path, split_url.query)
        if fault in ("error", "drop"):
            split = urlsplit(self.path)
            self._relay_request_body(_Sink())  # type: ignore[arg-type]
            self.close_connection = True
            if fault == "drop":
                self.server.record(RecordedRequest(self.command, split.path, split.query, 0))
                return
            self.server.record(RecordedRequest(self.command, split.path, split.query, 503))
            self.send_response_only(503, "Slow Down")
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(_SLOW_DOWN)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(_SLOW_DOWN)
            return
        self._slow = fault == "slow"
        super()._proxy()

    def _relay_response(self, resp: http.client.HTTPResponse) -> None:
        if getattr(self, "_slow", False):
            time.sleep(self.server.delay)
        super()._relay_response(resp)

    # The base class binds its own _proxy to these names.
    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _proxy


class _FaultyServer(_ProxyServer):
    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        seed: int,
        error: float,
        drop: float,
        slow: float,
        delay: float,
        error_when: Callable[[str, str, str], bool] | None = None,
    ) -> None:
        super().__init__(upstream_host, upstream_port)
        self.RequestHandlerClass = _FaultyHandler
        self.error_when = error_when
        self.bytes_in = 0
        self.rng = random.Random(seed)
        self.rates = (("error", error), ("drop", drop), ("slow", slow))
        self.delay = delay
        self.faults: Counter[str] = Counter()
        self._draw_lock = threading.Lock()

    def count_bytes(self, n: int) -> None:
        with self._draw_lock:
            self.bytes_in += n

    def draw(self, method: str, path: str, query: str) -> str | None:
        with self._draw_lock:
            if self.error_when is not None:
                if self.error_when(method, path, query):
                    self.faults["error"] += 1
                    return "error"
                return None
            x = self.rng.random()
            edge = 0.0
            for name, rate in self.rates:
                edge += rate
                if x < edge:
                    self.faults[name] += 1
                    return name
            return None


class FaultyProxy(CountingProxy):
    """A :class:`CountingProxy` that answers ``error`` share of requests with 503 SlowDown,
    drops ``drop`` share of connections and delays ``slow`` share by ``delay`` seconds."""

    def __init__(
        self,
        upstream: str,
        *,
        seed: int = 1,
        error: float = 0.0,
        drop: float = 0.0,
        slow: float = 0.0,
        delay: float = 0.2,
        error_when: Callable[[str, str, str], bool] | None = None,
    ) -> None:
        super().__init__(upstream)
        if error + drop + slow > 1:
            raise ValueError("the fault shares add up to more than 1")
        self._config: dict[str, Any] = {
            "seed": seed,
            "error": error,
            "drop": drop,
            "slow": slow,
            "delay": delay,
            "error_when": error_when,
        }

    def start(self) -> Self:
        if self._server is not None:
            return self
        server = _FaultyServer(self._upstream_host, self._upstream_port, **self._config)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"faulty-proxy-{server.server_address[1]}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    @property
    def bytes_in(self) -> int:
        server = self._require()
        assert isinstance(server, _FaultyServer)
        with server._draw_lock:
            return server.bytes_in

    @property
    def faults(self) -> Counter[str]:
        server = self._require()
        assert isinstance(server, _FaultyServer)
        with server._draw_lock:
            return Counter(server.faults)
