"""The endpoint guard: no connection to a loopback, private, link-local (cloud metadata),
unspecified, multicast or reserved address, and https only.

User-supplied endpoints (a type's ``endpoint_fields``) are checked twice:

- when saved (:func:`check_endpoint_scheme`, called by ``parse_destination``): https only;
- when connected (:func:`guarded_create_connection`): the host name is resolved *once*,
  every address it resolves to is checked, and the socket connects only to those checked
  addresses. DNS rebinding between save and use (or between a check and the connect)
  therefore gains nothing, and neither does a redirect: it is one more connection.

Plugins route their HTTP stack's socket connect through :func:`guarded_create_connection`
(for urllib3, by overriding a connection class's ``_new_conn``), so default provider
endpoints and redirects pass the same check. The operator lifts the whole guard (and
allows plain http) with ``DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS=1``, for local emulators and
tests. No SDK is imported here.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Iterable, Sequence
from typing import Final
from urllib.parse import urlsplit

from ._errors import EndpointNotAllowed, InvalidDestination, exception_chain

__all__ = [
    "ALLOW_PRIVATE_ENDPOINTS_ENV",
    "blocked_reason",
    "check_address",
    "check_endpoint_scheme",
    "check_host",
    "find_refusal",
    "guarded_create_connection",
    "private_endpoints_allowed",
    "refuse_plain_http",
]

ALLOW_PRIVATE_ENDPOINTS_ENV: Final = "DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS"
_HINT = "; only public https endpoints are allowed"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA = ipaddress.ip_address("169.254.169.254")
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local-use


def private_endpoints_allowed() -> bool:
    """Whether the operator lifted the guard (``DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS=1``).

    Read on every check, so it applies to connections made after it changes.
    """
    return os.environ.get(ALLOW_PRIVATE_ENDPOINTS_ENV, "").strip().lower() in ("1", "true")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, IPv4-compatible, NAT64 or 6to4 address."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or (ip.packed[:12] == bytes(12) and int(ip) > 1):
        return ipaddress.IPv4Address(ip.packed[12:])
    return ip.sixtofour


def blocked_reason(address: str | IPAddress) -> str | None:
    """Why connecting to ``address`` is refused (``"a loopback address"``…), or ``None``."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).partition("%")[0])
        inner = _embedded_ipv4(ip)
        if inner is not None:
            reason = blocked_reason(inner)
            return None if reason is None else f"{reason} in IPv6 form"
        if ip in _NAT64_LOCAL:
            return "a local-use NAT64 address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip == _METADATA:
        return "the link-local cloud metadata address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "a site-local address"
    if not ip.is_global:
        return "a special-purpose (non-public) address"
    return None


def check_address(address: str, *, host: str, label: str) -> None:
    """Raise :class:`EndpointNotAllowed` if ``address`` (what ``host`` resolved to) is not
    public. ``label`` names what was being reached (``"s3_endpoint"``)."""
    reason = blocked_reason(address)
    if reason is None:
        return
    shown = address.partition("%")[0]
    if _same_address(host, shown):
        message = f"{label} connects to {shown}, {reason}{_HINT}"
    else:
        message = f"{label} host {host} resolves to {shown}, {reason}{_HINT}"
    raise EndpointNotAllowed(message, address=shown, rule=reason)


def _same_address(host: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")) == ipaddress.ip_address(address)
    except ValueError:
        return False


def refuse_plain_http(host: str, *, label: str) -> None:
    """Refuse an unencrypted connection unless the operator lifted the guard."""
    if not private_endpoints_allowed():
        raise EndpointNotAllowed(
            f"{label}: a plain http connection to {host} was refused{_HINT}",
            address=host,
            rule="plain http",
        )


def check_host(host: str, port: int, *, label: str) -> None:
    """Resolve ``host`` and refuse it if any address is not public (unless allowed).

    For a connection whose final hop someone else makes (a CONNECT tunnel through the
    operator's proxy): the proxy resolves the name again, so this is a best effort.
    """
    if private_endpoints_allowed():
        return
    host = host.strip("[]")
    for *_, sockaddr in _resolve(host, port):
        check_address(str(sockaddr[0]), host=host, label=label)


def _resolve(host: str, port: int) -> list[tuple[int, int, int, tuple[object, ...]]]:
    infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    return [(family, kind, proto, tuple(addr)) for family, kind, proto, _, addr in infos]


def guarded_create_connection(
    address: tuple[str, int],
    timeout: object = None,
    source_address: tuple[str, int] | None = None,
    socket_options: Sequence[tuple[int, int, int | bytes]] | None = None,
    *,
    label: str = "the endpoint",
    plain_http: bool = False,
) -> socket.socket:
    """Like :func:`socket.create_connection`, but every address ``address``'s host resolves
    to is checked *before any* connect, and only those addresses are connected to.

    Raises :class:`EndpointNotAllowed` (not an :class:`OSError`, so HTTP stacks do not
    retry it as a network failure) when one is refused. ``timeout`` is applied when it is a
    number or ``None``; any other value (an HTTP library's "default" sentinel) leaves the
    socket's default. Name resolution errors are :class:`socket.gaierror`, as usual.
    ``plain_http``: the connection will carry unencrypted HTTP, refused too (after the
    address check, so the message names the more serious problem).
    """
    host, port = address
    host = host.strip("[]")
    infos = _resolve(host, port)
    if not infos:
        raise OSError(f"getaddrinfo returned no addresses for {host}")
    if not private_endpoints_allowed():
        for *_, sockaddr in infos:
            check_address(str(sockaddr[0]), host=host, label=label)
        if plain_http:
            refuse_plain_http(host, label=label)
    return _connect_first(infos, timeout, source_address, socket_options or ())


def _connect_first(
    infos: Iterable[tuple[int, int, int, tuple[object, ...]]],
    timeout: object,
    source_address: tuple[str, int] | None,
    socket_options: Iterable[tuple[int, int, int | bytes]],
) -> socket.socket:
    error: OSError | None = None
    for family, kind, proto, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            for level, option, value in socket_options:
                sock.setsockopt(level, option, value)
            if timeout is None or isinstance(timeout, int | float):
                sock.settimeout(timeout)
            if source_address is not None:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            error = exc
            sock.close()
    assert error is not None
    try:
        raise error
    finally:
        error = None  # break the reference cycle through the traceback


_HOST_NAME = re.compile(r"[A-Za-z0-9.-]{1,253}")


def check_endpoint_url(field: str, value: str, *, example: str, path: bool = False) -> str:
    """Validate a user-supplied endpoint URL field and return it normalised.

    ``http(s)://host[:port]`` (plus a path when ``path``), with no user name, password, query
    or fragment, a valid port, and a host name or IP literal. Returns the URL without a
    trailing ``/`` (``scheme://netloc`` when paths are not allowed). Messages name ``field``
    and show ``example``, never the value (it may carry a password or a SAS token). Whether
    https is required is :func:`check_endpoint_scheme`'s, at save time.
    """
    url = value.strip().rstrip("/")
    if not url:
        raise InvalidDestination({field: "required"})
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise InvalidDestination({field: f"must start with https:// ({example})"})
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise InvalidDestination({field: f"has an invalid port ({example})"})
    if not parts.hostname or "@" in parts.netloc:
        raise InvalidDestination(
            {field: f"must be {example}, with a host name and no user name or password"}
        )
    if parts.query or parts.fragment:
        raise InvalidDestination(
            {field: f"must not have a query string or fragment, such as a SAS token ({example})"}
        )
    if parts.path and not path:
        raise InvalidDestination({field: f"must be scheme://host[:port] with no path ({example})"})
    try:  # IPv6 literals must be bracketed; hostname strips the brackets
        ipaddress.ip_address(parts.hostname)
    except ValueError:
        if not _HOST_NAME.fullmatch(parts.hostname):
            raise InvalidDestination({field: f"has an invalid host name ({example})"}) from None
    return url if path else f"{parts.scheme}://{parts.netloc}"


def check_endpoint_scheme(field: str, url: str) -> None:
    """The save-time check of a user-supplied endpoint: https, unless the operator allows
    private endpoints (which also allows http). Raises :class:`InvalidDestination`."""
    scheme = urlsplit(url.strip()).scheme.lower()
    if scheme == "https" or (scheme == "http" and private_endpoints_allowed()):
        return
    raise InvalidDestination(
        {
            field: "must be an https:// URL (plain http is allowed only when the operator sets "
            f"{ALLOW_PRIVATE_ENDPOINTS_ENV}=1, for local development)"
        }
    )


def find_refusal(exc: BaseException) -> EndpointNotAllowed | None:
    """The :class:`EndpointNotAllowed` behind ``exc``, however an SDK wrapped it
    (:func:`~destinations.plugin.exception_chain`), or ``None``."""
    for current in exception_chain(exc):
        if isinstance(current, EndpointNotAllowed):
            return current
    return None
