"""The endpoint guard on this plugin's HTTP stack (requests over urllib3).

Every socket connect goes through core's :func:`~destinations.plugin.guarded_create_connection`
(resolve once, refuse non-public addresses, connect only to the checked ones), by overriding
the urllib3 connection classes of this plugin's own pool managers: nothing global is patched.
Redirects and default endpoints are new connections, so they are checked too.
"""

from __future__ import annotations

import functools
import socket
from typing import Any, ClassVar

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from destinations.plugin import check_host, guarded_create_connection, refuse_plain_http

__all__ = ["GuardedAdapter", "guarded_pool_classes"]


class _GuardedConnection(HTTPConnection):
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
def guarded_pool_classes(label: str) -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 pool classes (by scheme) whose connections pass the endpoint guard; ``label``
    names the endpoint in refusals (``"oss_endpoint"``)."""
    attrs = {"guard_label": label}
    http = type("GuardedHTTPConnection", (_GuardedConnection,), attrs)
    https = type("GuardedHTTPSConnection", (_GuardedConnection, HTTPSConnection), attrs)
    return {
        "http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
        "https": type(
            "GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https}
        ),
    }


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections pass the endpoint guard."""

    def __init__(self, *args: Any, guard_label: str, **kwargs: Any) -> None:
        self.guard_label = guard_label  # before super().__init__, which builds the pools
        super().__init__(*args, **kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = guarded_pool_classes(self.guard_label)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = guarded_pool_classes(self.guard_label)
        return manager
