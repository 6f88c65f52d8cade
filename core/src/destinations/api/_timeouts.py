"""A request-line-and-headers timeout for uvicorn's h11 server, which has none of its own
(its ``timeout_keep_alive`` runs only between requests, and stops at the first byte of the
next one): a client that connects and sends nothing, or part of a request line or of its
headers, is dropped after ``header_timeout`` seconds.

This subclasses :class:`uvicorn.protocols.http.h11_impl.H11Protocol` and reads its
``cycle``, ``transport`` and ``loop`` attributes, overrides its ``connection_made``,
``data_received``, ``on_response_complete`` and ``connection_lost``, and reads
``RequestResponseCycle.response_complete``; uvicorn is capped below its next minor version
in pyproject.toml, and tests/security/test_round2_served.py checks that they still exist.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["HeaderTimeoutProtocol", "header_timeout_protocol"]


class HeaderTimeoutProtocol(H11Protocol):
    """h11, plus: the request line and headers of each request must arrive within
    :attr:`header_timeout` seconds of the connection (or of the first byte after the
    previous response), else the connection is closed."""

    header_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        self._waiting_since_cycle: Any = None
        super().connection_made(transport)
        self._arm()

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._waiting_since_cycle = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if self.cycle is self._waiting_since_cycle and self._idle():
            # No request has started since the timer was set: drop the connection.
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self._idle():
            self._arm()  # the first byte of a next request on a kept-alive connection
        super().data_received(data)
        if self._header_timer is not None and self.cycle is not self._waiting_since_cycle:
            self._disarm()  # the headers arrived: the request runs (the app times its body)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._idle() and not self.transport.is_closing():
            # Bytes of a next request may already wait in the parser (pipelined): they are
            # not "received" again, so time them from here.
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def header_timeout_protocol(header_timeout: float) -> type[HeaderTimeoutProtocol]:
    """A :class:`HeaderTimeoutProtocol` class with ``header_timeout`` (uvicorn's ``http=``
    takes a class)."""
    return type(
        "HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": header_timeout}
    )
