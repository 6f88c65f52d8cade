"""The endpoint guard on botocore's HTTP stack (urllib3).

Every socket connect goes through core's :func:`~destinations.plugin.guarded_create_connection`
(resolve once, refuse non-public addresses, connect only to the checked ones), by overriding
the connection classes of each client's own pool managers: nothing global is patched.
botocore follows no HTTP redirects itself; its S3 region redirects and default endpoints are
new connections, so they are checked too.
"""

from __future__ import annotations

import functools
import socket
from typing import Any, ClassVar

from botocore.awsrequest import (
    AWSHTTPConnection,
    AWSHTTPConnectionPool,
    AWSHTTPSConnection,
    AWSHTTPSConnectionPool,
)
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from destinations.plugin import check_host, guarded_create_connection, refuse_plain_http

__all__ = ["guard_client", "guarded_pool_classes"]


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
    http = type("GuardedAWSHTTPConnection", (_GuardedConnection, AWSHTTPConnection), attrs)
    https = type("GuardedAWSHTTPSConnection", (_GuardedConnection, AWSHTTPSConnection), attrs)
    return {
        "http": type(
            "GuardedAWSHTTPConnectionPool", (AWSHTTPConnectionPool,), {"ConnectionCls": http}
        ),
        "https": type(
            "GuardedAWSHTTPSConnectionPool", (AWSHTTPSConnectionPool,), {"ConnectionCls": https}
        ),
    }


def guard_client(client: Any, label: str) -> None:
    """Make every connection of a boto3/botocore ``client`` pass the endpoint guard.

    botocore offers no public hook for its connection classes, so this swaps them in the
    client's HTTP session (one dict its pool managers share, present since botocore 1.11).
    It fails closed: if botocore changes that shape, opening a store fails instead of
    connecting unguarded.
    """
    http_session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    pools = getattr(http_session, "_pool_classes_by_scheme", None)
    if not isinstance(pools, dict) or set(pools) != {"http", "https"}:
        raise RuntimeError(
            "this botocore version does not expose its connection pool classes; the endpoint "
            "guard cannot be attached (install a botocore version destinations-s3 supports)"
        )
    pools.update(guarded_pool_classes(label))
