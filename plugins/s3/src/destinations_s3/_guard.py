"""The endpoint guard on botocore's HTTP stack (urllib3).

Every socket connect goes through core's :func:`~destinations.plugin.guarded_create_connection`
(resolve once, refuse non-public addresses, connect only to the checked ones), by overriding
the connection classes of each client's own pool managers: nothing global is patched.
botocore follows no HTTP redirects itself; its S3 region redirects and default endpoints are
new connections, so they are checked too.
"""

from __future__ import annotations

from typing import Any

from botocore.awsrequest import (
    AWSHTTPConnection,
    AWSHTTPConnectionPool,
    AWSHTTPSConnection,
    AWSHTTPSConnectionPool,
)

from destinations.http_guard import guarded_pool_classes

__all__ = ["guard_client"]


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
    pools.update(
        guarded_pool_classes(
            label,
            (AWSHTTPConnection, AWSHTTPSConnection),
            (AWSHTTPConnectionPool, AWSHTTPSConnectionPool),
        )
    )
