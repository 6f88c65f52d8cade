"""The endpoint guard: no connection to an address that is not globally reachable (the IANA
special-purpose registries' table in :data:`SPECIAL_BLOCKS`: loopback, private, link-local,
cloud metadata, multicast, reserved…), and https only.

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
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from ._errors import EndpointNotAllowed, InvalidDestination, exception_chain

__all__ = [
    "ALLOW_PRIVATE_ENDPOINTS_ENV",
    "EMBEDDED",
    "PUBLIC",
    "REFUSED",
    "SPECIAL_BLOCKS",
    "SpecialBlock",
    "blocked_reason",
    "check_address",
    "check_endpoint_scheme",
    "check_host",
    "find_refusal",
    "guarded_create_connection",
    "private_endpoints_allowed",
    "refuse_plain_http",
    "special_block",
    "switch_on",
]

ALLOW_PRIVATE_ENDPOINTS_ENV: Final = "DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS"
_HINT = "; only public https endpoints are allowed"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: How a block of :data:`SPECIAL_BLOCKS` is treated.
REFUSED: Final = "refused"  # not globally reachable: never connected to
PUBLIC: Final = "public"  # globally reachable (an exception inside a refused block)
EMBEDDED: Final = "embedded"  # carries an IPv4 address: that address decides


@dataclass(frozen=True, slots=True)
class SpecialBlock:
    """One row of the guard's address table.

    ``rule`` is what an address in the block is, as a refusal names it (``"a loopback
    address"``); ``source`` the document that defines the block. For ``EMBEDDED`` blocks,
    ``ipv4_shift`` says where the IPv4 address sits (bits to shift right before taking the
    low 32).
    """

    network: IPNetwork
    verdict: str
    rule: str
    source: str
    ipv4_shift: int = 0


def _block(cidr: str, verdict: str, rule: str, source: str, *, ipv4_shift: int = 0) -> SpecialBlock:
    return SpecialBlock(ipaddress.ip_network(cidr), verdict, rule, source, ipv4_shift)


_DOCUMENTATION = "a documentation address"
_PRIVATE = "a private address"
_IETF = "an IETF protocol assignment address"
_BENCHMARKING = "a benchmarking address"
_METADATA_RULE = "the link-local cloud metadata address"
_RESERVED_V6 = "a reserved address (outside IPv6 global unicast space)"

#: The guard's address table: every block of the IANA IPv4 and IPv6 Special-Purpose Address
#: Registries (https://www.iana.org/assignments/iana-ipv4-special-registry, revision of
#: 2020-09-04; https://www.iana.org/assignments/iana-ipv6-special-registry, revision of
#: 2024-10-22) whose "Globally Reachable" is False, the registries' globally reachable blocks
#: inside those (PUBLIC), then what the registries leave out: multicast, IPv6 site-local and
#: the space the IANA IPv6 Address Space registry keeps "Reserved by IETF", the IPv6 forms
#: that embed an IPv4 address, and cloud metadata and platform addresses. The most specific
#: block containing an address decides; an address in no block is public. A registry entry
#: whose "Globally Reachable" is N/A is treated as its enclosing block is (Teredo,
#: 192.0.0.170/31), except 6to4, whose embedded IPv4 address decides. Deliberately not
#: ``ipaddress``'s ``is_private``/``is_global``: their tables change between CPython patch
#: releases, and this table must not.
SPECIAL_BLOCKS: Final[tuple[SpecialBlock, ...]] = (
    # -- IANA IPv4 Special-Purpose Address Registry
    _block("0.0.0.0/8", REFUSED, "a 'this network' address", "RFC 791"),
    _block("0.0.0.0/32", REFUSED, "an unspecified address", "RFC 1122"),
    _block("10.0.0.0/8", REFUSED, _PRIVATE, "RFC 1918"),
    _block("100.64.0.0/10", REFUSED, "a shared (carrier-grade NAT) address", "RFC 6598"),
    _block("127.0.0.0/8", REFUSED, "a loopback address", "RFC 1122"),
    _block("169.254.0.0/16", REFUSED, "a link-local address", "RFC 3927"),
    _block("172.16.0.0/12", REFUSED, _PRIVATE, "RFC 1918"),
    _block("192.0.0.0/24", REFUSED, _IETF, "RFC 6890"),
    _block("192.0.0.0/29", REFUSED, "an IPv4 service continuity (DS-Lite) address", "RFC 7335"),
    _block("192.0.0.8/32", REFUSED, "the IPv4 dummy address", "RFC 7600"),
    _block("192.0.0.9/32", PUBLIC, "the PCP anycast address", "RFC 7723"),
    _block("192.0.0.10/32", PUBLIC, "the TURN anycast address", "RFC 8155"),
    _block("192.0.0.170/31", REFUSED, "a NAT64/DNS64 discovery address", "RFC 8880"),
    _block("192.0.2.0/24", REFUSED, _DOCUMENTATION, "RFC 5737"),
    _block("192.31.196.0/24", PUBLIC, "an AS112-v4 address", "RFC 7535"),
    _block("192.52.193.0/24", PUBLIC, "an AMT address", "RFC 7450"),
    _block("192.168.0.0/16", REFUSED, _PRIVATE, "RFC 1918"),
    _block("192.175.48.0/24", PUBLIC, "a direct delegation AS112 address", "RFC 7534"),
    _block("198.18.0.0/15", REFUSED, _BENCHMARKING, "RFC 2544"),
    _block("198.51.100.0/24", REFUSED, _DOCUMENTATION, "RFC 5737"),
    _block("203.0.113.0/24", REFUSED, _DOCUMENTATION, "RFC 5737"),
    _block("240.0.0.0/4", REFUSED, "a reserved address", "RFC 1112"),
    _block("255.255.255.255/32", REFUSED, "the limited broadcast address", "RFC 919"),
    # -- IANA IPv6 Special-Purpose Address Registry
    _block("::1/128", REFUSED, "a loopback address", "RFC 4291"),
    _block("::/128", REFUSED, "an unspecified address", "RFC 4291"),
    _block("::ffff:0:0/96", EMBEDDED, "an IPv4-mapped address", "RFC 4291"),
    _block("64:ff9b::/96", EMBEDDED, "a NAT64 address", "RFC 6052"),
    _block("64:ff9b:1::/48", REFUSED, "a local-use NAT64 address", "RFC 8215"),
    _block("100::/64", REFUSED, "a discard-only address", "RFC 6666"),
    _block("2001::/23", REFUSED, _IETF, "RFC 2928"),
    _block("2001::/32", REFUSED, "a Teredo tunnel address", "RFC 4380"),
    _block("2001:1::1/128", PUBLIC, "the PCP anycast address", "RFC 7723"),
    _block("2001:1::2/128", PUBLIC, "the TURN anycast address", "RFC 8155"),
    _block("2001:1::3/128", PUBLIC, "the DNS-SD SRP anycast address", "RFC 9665"),
    _block("2001:2::/48", REFUSED, _BENCHMARKING, "RFC 5180"),
    _block("2001:3::/32", PUBLIC, "an AMT address", "RFC 7450"),
    _block("2001:4:112::/48", PUBLIC, "an AS112-v6 address", "RFC 7535"),
    _block("2001:10::/28", REFUSED, "a deprecated ORCHID address", "RFC 4843"),
    _block("2001:20::/28", PUBLIC, "an ORCHIDv2 address", "RFC 7343"),
    _block("2001:30::/28", PUBLIC, "a drone remote ID address", "RFC 9374"),
    _block("2001:db8::/32", REFUSED, _DOCUMENTATION, "RFC 3849"),
    _block("2002::/16", EMBEDDED, "a 6to4 address", "RFC 3056", ipv4_shift=80),
    _block("2620:4f:8000::/48", PUBLIC, "a direct delegation AS112 address", "RFC 7534"),
    _block("3fff::/20", REFUSED, _DOCUMENTATION, "RFC 9637"),
    _block("5f00::/16", REFUSED, "a segment routing (SRv6) SID", "RFC 9602"),
    _block("fc00::/7", REFUSED, "a unique-local (private) address", "RFC 4193"),
    _block("fe80::/10", REFUSED, "a link-local address", "RFC 4291"),
    # -- not in the special-purpose registries, and not public either
    _block("224.0.0.0/4", REFUSED, "a multicast address", "RFC 5771"),
    _block("ff00::/8", REFUSED, "a multicast address", "RFC 4291"),
    _block("fec0::/10", REFUSED, "a site-local address", "RFC 3879"),
    _block("::/96", EMBEDDED, "an IPv4-compatible address", "RFC 4291"),
    *(
        _block(cidr, REFUSED, _RESERVED_V6, "IANA IPv6 Address Space")
        for cidr in (
            *("::/8", "100::/8", "200::/7", "400::/6", "800::/5", "1000::/4", "4000::/3"),
            *("6000::/3", "8000::/3", "a000::/3", "c000::/3", "e000::/4", "f000::/5"),
            *("f800::/6", "fe00::/9"),
        )
    ),
    # -- cloud metadata and platform addresses (most inside a refused block already; named
    #    so a refusal says what they are)
    _block("169.254.169.254/32", REFUSED, _METADATA_RULE, "AWS, GCP, Azure, OCI"),
    _block("169.254.170.2/32", REFUSED, "a cloud metadata address (ECS credentials)", "AWS"),
    _block("169.254.170.23/32", REFUSED, "a cloud metadata address (EKS pod identity)", "AWS"),
    _block("169.254.0.23/32", REFUSED, "a cloud metadata address", "Tencent Cloud"),
    _block("100.100.100.200/32", REFUSED, "a cloud metadata address", "Alibaba Cloud"),
    _block("168.63.129.16/32", REFUSED, "a cloud platform (WireServer) address", "Azure"),
    _block("fd00:ec2::254/128", REFUSED, "a cloud metadata address", "AWS"),
    _block("fd00:ec2::23/128", REFUSED, "a cloud metadata address (EKS pod identity)", "AWS"),
    _block("fd20:ce::254/128", REFUSED, "a cloud metadata address", "GCP"),
)

_BY_VERSION: Final[dict[int, tuple[SpecialBlock, ...]]] = {
    version: tuple(
        sorted(
            (b for b in SPECIAL_BLOCKS if b.network.version == version),
            key=lambda b: b.network.prefixlen,
            reverse=True,
        )
    )
    for version in (4, 6)
}


def switch_on(value: object) -> bool:
    """The settings' rule for a switch: ``1`` or ``true`` (any case, spaces around) turn it
    on; anything else (unset, empty, an unknown word) leaves it off."""
    return isinstance(value, str) and value.strip().lower() in ("1", "true")


def private_endpoints_allowed() -> bool:
    """Whether the operator lifted the guard (``DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS=1``).

    Read from the environment on every check, so it applies to connections made after it
    changes. It is the value :func:`destinations._settings.settings` gives
    (``allow_private_endpoints``: same variable, same rule, tested), read alone: one lookup
    (about 1 µs) instead of the whole settings object's (21 variables, about 25 µs, and
    pydantic-settings imported on the first check), since stores ask on every request.
    """
    return switch_on(os.environ.get(ALLOW_PRIVATE_ENDPOINTS_ENV))


def special_block(address: str | IPAddress) -> SpecialBlock | None:
    """The most specific block of :data:`SPECIAL_BLOCKS` holding ``address``, or ``None``."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    for block in _BY_VERSION[ip.version]:  # most specific first
        if ip in block.network:
            return block
    return None


def blocked_reason(address: str | IPAddress) -> str | None:
    """Why connecting to ``address`` is refused (``"a loopback address"``…), or ``None``."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ipaddress.IPv6Address(int(ip))  # without a %scope
    block = special_block(ip)
    if block is None or block.verdict == PUBLIC:
        return None
    if block.verdict == EMBEDDED:
        inner = ipaddress.IPv4Address((int(ip) >> block.ipv4_shift) & 0xFFFFFFFF)
        reason = blocked_reason(inner)
        return None if reason is None else f"{reason} in IPv6 form"
    return block.rule


def check_address(address: str, *, host: str, label: str) -> None:
    """Raise :class:`EndpointNotAllowed` if ``address`` (what ``host`` resolved to) is not
    public. ``label`` names what was being reached (``"s3_endpoint"``).

    The message names the address only when the user wrote it (an IP literal); for a host
    name it says which rule was broken, never what the name resolved to (an internal
    address is not the tenant's to learn). ``.address`` and ``.rule`` keep both for logs.
    """
    reason = blocked_reason(address)
    if reason is None:
        return
    shown = address.partition("%")[0]
    if _same_address(host, shown):
        message = f"{label} connects to {shown}, {reason}{_HINT}"
    else:
        message = (
            f"{label} host {host} resolves to an address that is not public (every address "
            f"a name resolves to must be public){_HINT}"
        )
    raise EndpointNotAllowed(message, address=shown, rule=reason)


def _same_address(host: str, address: str) -> bool:
    try:
        literal = host.strip("[]").partition("%")[0]  # a scope is not part of the address
        return ipaddress.ip_address(literal) == ipaddress.ip_address(address)
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
