"""Destinations of every type with a user-supplied endpoint, pointed at a given URL, and a
verification that reports its outcome. Shared by the in-process tests and the child process
run in an empty network namespace (``python -m tests.security.ssrf_cases``)."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable
from typing import Any

from destinations import VerificationFailed, parse_destination, verify

ENDPOINT_TYPES: dict[str, Callable[[str], dict[str, Any]]] = {
    "s3compatible": lambda url: {
        "type": "s3compatible",
        "s3_endpoint": url,
        "s3_bucket_name": "bucket",
        "s3_access_key_id": "AKIDEXAMPLE",
        "s3_secret_access_key": "secretsecret",
        "s3_region": "us-east-1",
    },
    "gcs": lambda url: {
        "type": "gcs",
        "gcs_endpoint": url,
        "gcs_bucket_name": "bucket",
        "gcs_access_key": "GOOGEXAMPLE",
        "gcs_secret_key": "secretsecret",
    },
    "azure": lambda url: {
        "type": "azure",
        "azure_endpoint": url + "/acct",
        "azure_account_name": "acct",
        "azure_container_name": "cont",
        "azure_account_key": "c2VjcmV0c2VjcmV0c2VjcmV0",
    },
    "oss": lambda url: {
        "type": "oss",
        "oss_endpoint": url,
        "oss_bucket_name": "bucket",
        "oss_region_id": "oss-cn-hangzhou",
        "oss_access_key": "AKIDEXAMPLE",
        "oss_secret_key": "secretsecret",
    },
}


def attempt(type_name: str, url: str, timeout: float = 20.0) -> dict[str, str]:
    """Verify a ``type_name`` destination at ``url``: ``{"code", "message"}`` (code "ok" if
    it somehow succeeded, "invalid" if it was refused when parsed)."""
    params = {"name": "ssrf", "enabled": True, **ENDPOINT_TYPES[type_name](url)}
    try:
        destination = parse_destination(params)
    except ValueError as exc:
        return {"code": "invalid", "message": str(exc)}
    try:
        verify(destination, timeout=timeout)
    except VerificationFailed as exc:
        return {"code": exc.code, "message": exc.message}
    return {"code": "ok", "message": ""}


def _rebinding_getaddrinfo(first: str, then: str) -> None:
    """``rebind.test`` answers ``first`` once, then ``then``: what a DNS-rebinding attacker
    serves to a check at save time and to the connection afterwards."""
    real = socket.getaddrinfo
    calls = {"n": 0}

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if str(host).endswith("rebind.test"):
            calls["n"] += 1
            return real(first if calls["n"] == 1 else then, port, *args, **kwargs)
        return real(host, port, *args, **kwargs)

    socket.getaddrinfo = fake  # type: ignore[assignment]


def main() -> None:
    """Child mode: argv[1] is JSON ``{"cases": [[type, url], …], "rebind": [first, then]}``;
    prints one JSON list of outcomes."""
    spec = json.loads(sys.argv[1])
    out = []
    for type_name, url in spec["cases"]:
        if "rebind.test" in url:
            _rebinding_getaddrinfo(*spec["rebind"])
            socket.getaddrinfo("rebind.test", 443)  # the "save-time" look-up: public
        out.append({"type": type_name, "url": url, **attempt(type_name, url, timeout=3.0)})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
