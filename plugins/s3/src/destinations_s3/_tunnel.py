"""The endpoint guard for a client whose connections Python cannot reach: a local tunnel.

obstore (Rust: reqwest, hyper, rustls) opens its sockets itself and offers no connect-time
hook. It does take an HTTP proxy, so the native engine is told to use this one: a CONNECT
proxy listening on 127.0.0.1 inside this process. For every connection the client wants
(the first, each new one of its pool, a redirect's), it sends ``CONNECT host:port``; the
tunnel connects with core's :func:`~destinations.plugin.guarded_create_connection` (resolve
once, refuse any non-public address, connect only to the checked ones) and then relays
bytes, TLS included, unread. A refused or failed connect is answered with an HTTP error and
remembered for the store that asked, so its error mapper raises the guard's own
:class:`~destinations.EndpointNotAllowed` (or the transport error) instead of a proxy
failure. A plain-http request (not CONNECT) is never forwarded: it is checked and refused.

Each store gets a ticket, sent as the proxy user name (``Proxy-Authorization``): a
connection without a known ticket is refused, so no other local process can use the tunnel
as a relay, and every connection is checked under the label of the store that made it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from destinations.plugin import (
    EndpointNotAllowed,
    guarded_create_connection,
    private_endpoints_allowed,
    refuse_plain_http,
)

__all__ = ["GuardTunnel", "Ticket", "tunnel"]

_HEAD_MAX = 16 * 1024
_RELAY_CHUNK = 256 * 1024


@dataclass(eq=False)
class Ticket:
    """One store's pass through the tunnel, and what went wrong on its connections."""

    token: str
    label: str
    timeout: float
    failures: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    connects: int = 0  # connections the tunnel made for this ticket (tests read it)

    def failure_count(self) -> int:
        with self.lock:
            return len(self.failures)

    def failure_since(self, mark: int) -> BaseException | None:
        """The first failure recorded after ``mark`` (a :meth:`failure_count`), a refusal
        first."""
        with self.lock:
            recent = self.failures[mark:]
        refusal = next((f for f in recent if isinstance(f, EndpointNotAllowed)), None)
        return refusal if refusal is not None else (recent[0] if recent else None)

    def _record(self, exc: BaseException) -> None:
        with self.lock:
            self.failures.append(exc)
            del self.failures[:-64]  # bounded; marks beyond the trim see the newest


class GuardTunnel:
    """The process's CONNECT tunnel (started on first use; a forked child starts its own)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tickets: dict[str, Ticket] = {}
        self._listener: socket.socket | None = None
        self._pid = 0
        self.port = 0

    # -- tickets -----------------------------------------------------------------------------

    def issue(self, label: str, timeout: float) -> Ticket:
        self._ensure_running()
        ticket = Ticket(secrets.token_urlsafe(18), label, timeout)
        with self._lock:
            self._tickets[ticket.token] = ticket
        return ticket

    def revoke(self, ticket: Ticket) -> None:
        with self._lock:
            self._tickets.pop(ticket.token, None)

    def proxy_url(self, ticket: Ticket) -> str:
        return f"http://{ticket.token}:x@127.0.0.1:{self.port}"

    # -- server ------------------------------------------------------------------------------

    def _ensure_running(self) -> None:
        with self._lock:
            if self._listener is not None and self._pid == os.getpid():
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", 0))
            listener.listen(128)
            self._listener, self._pid = listener, os.getpid()
            self.port = listener.getsockname()[1]
            self._tickets = {}
            thread = threading.Thread(
                target=self._accept, args=(listener,), name="destinations-s3-tunnel", daemon=True
            )
            thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(
                target=self._serve, args=(conn,), name="destinations-s3-tunnel-conn", daemon=True
            ).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.settimeout(30)
            head, rest = _read_head(client)
            if head is None:
                return
            method, target, headers = head
            ticket = self._ticket(headers)
            if ticket is None:
                client.sendall(_reply(407, "Proxy Authentication Required"))
                return
            host, port = _target(method, target)
            if method != "CONNECT":
                # Plain http through the tunnel: checked, then refused (the guard is on,
                # or the store would not use the tunnel); never forwarded.
                try:
                    if host:
                        guarded_check(host, port or 80, ticket.label)
                    refuse_plain_http(host or "?", label=ticket.label)
                except EndpointNotAllowed as exc:
                    ticket._record(exc)
                client.sendall(_reply(403, "Forbidden"))
                return
            try:
                upstream = guarded_create_connection(
                    (host, port), ticket.timeout, label=ticket.label
                )
            except EndpointNotAllowed as exc:
                ticket._record(exc)
                client.sendall(_reply(403, "Forbidden"))
                return
            except OSError as exc:
                ticket._record(exc)
                status = (
                    (504, "Gateway Timeout")
                    if isinstance(exc, TimeoutError)
                    else (
                        502,
                        "Bad Gateway",
                    )
                )
                client.sendall(_reply(*status))
                return
            with ticket.lock:
                ticket.connects += 1
            upstream.settimeout(None)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.settimeout(None)
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
            back = threading.Thread(
                target=_relay,
                args=(upstream, client),
                name="destinations-s3-tunnel-relay",
                daemon=True,
            )
            back.start()
            _relay(client, upstream)
            back.join()
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()

    def _ticket(self, headers: dict[str, str]) -> Ticket | None:
        value = headers.get("proxy-authorization", "")
        scheme, _, encoded = value.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user = base64.b64decode(encoded, validate=True).decode("ascii").partition(":")[0]
        except (ValueError, UnicodeDecodeError):
            return None
        with self._lock:
            return self._tickets.get(user)


def guarded_check(host: str, port: int, label: str) -> None:
    """The guard's address check alone (no connect), for a request that will be refused."""
    if private_endpoints_allowed():
        return
    from destinations.plugin import check_host

    check_host(host, port, label=label)


def _read_head(sock: socket.socket) -> tuple[tuple[str, str, dict[str, str]] | None, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > _HEAD_MAX:
            return None, b""
        chunk = sock.recv(4096)
        if not chunk:
            return None, b""
        data += chunk
    raw, _, rest = data.partition(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None, b""
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return (parts[0].upper(), parts[1], headers), rest


def _target(method: str, target: str) -> tuple[str, int]:
    """``(host, port)`` of a CONNECT authority or an absolute-form URL ("" if none)."""
    if method != "CONNECT":
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(target)
            return parts.hostname or "", parts.port or 80
        except ValueError:
            return "", 0
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return target.strip("[]"), 443
    return host.strip("[]"), int(port)


def _reply(status: int, reason: str) -> bytes:
    return f"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()


def _relay(source: socket.socket, sink: socket.socket) -> None:
    """Copy ``source`` to ``sink`` until end of stream, then half-close ``sink``."""
    buffer = bytearray(_RELAY_CHUNK)
    view = memoryview(buffer)
    recv_into: Callable[[memoryview], int] = source.recv_into
    try:
        while True:
            n = recv_into(view)
            if not n:
                break
            sink.sendall(view[:n])
    except OSError:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)
        return
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


tunnel = GuardTunnel()
