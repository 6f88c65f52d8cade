"""The endpoint guard for plugins whose SDK speaks HTTP through urllib3 (requests, botocore).

Every socket connect goes through :func:`~destinations.plugin.guarded_create_connection`
(resolve once, refuse non-public addresses, connect only to the checked ones) by overriding the
connection classes of the plugin's *own* pool managers: nothing global is patched. Redirects,
region redirects and default endpoints are new connections, so they are checked too.

This module imports urllib3; core never imports it, a plugin whose SDK already brings urllib3
does (botocore: :func:`guarded_pool_classes` with its own connection classes; requests:
:class:`destinations.requests_guard.GuardedAdapter`).
"""

from __future__ import annotations

import functools
import socket
from typing import ClassVar

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from ._guard import check_host, guarded_create_connection, refuse_plain_http

__all__ = ["GuardedConnection", "guarded_pool_classes"]


class GuardedConnection(HTTPConnection):
    """Mixin for a urllib3 connection class: its socket is made by the guard."""

    guard_label: ClassVar[str] = "the endpoint"

    def _new_conn(self) -> socket.socket:
        tls = isinstance(self, HTTPSConnection)
        if self._tunnel_host is not None or self.proxy is not None:
            # Through the operator's proxy: it makes the last hop, so the target is checked
            # here (best effort) and the proxy itself is trusted.
            if self._tunnel_host is None:
                refuse_plain_http(self.host, label=self.guard_label)
            else:
                check_host(self._tunnel_host, self._tunnel_port or 443, label=self.guard_label)
            return super()._new_conn()
        try:
            return guarded_create_connection(
                (self._dns_host, self.port),
                self.timeout,
                source_address=self.source_address,
                socket_options=self.socket_options,
                label=self.guard_label,
                plain_http=not tls,
            )
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
            ) from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc


@functools.cache
def guarded_pool_classes(
    label: str,
    connections: tuple[type[HTTPConnection], type[HTTPConnection]] = (
        HTTPConnection,
        HTTPSConnection,
    ),
    pools: tuple[type[HTTPConnectionPool], type[HTTPConnectionPool]] = (
        HTTPConnectionPool,
        HTTPSConnectionPool,
    ),
) -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 pool classes by scheme whose connections pass the guard.

    ``label`` names the endpoint in refusals (``"oss_endpoint"``); ``connections`` and
    ``pools`` are the (http, https) classes the SDK uses (botocore has its own subclasses).
    """
    out: dict[str, type[HTTPConnectionPool]] = {}
    for scheme, conn, pool in zip(("http", "https"), connections, pools, strict=True):
        guarded = type(f"Guarded{conn.__name__}", (GuardedConnection, conn), {"guard_label": label})
        out[scheme] = type(f"Guarded{pool.__name__}", (pool,), {"ConnectionCls": guarded})
    return out
