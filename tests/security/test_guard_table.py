"""The endpoint guard's address table against an independent copy of the IANA IPv4 and IPv6
Special-Purpose Address Registries (plus what they leave out), block by block: the first,
a middle and the last address of every block, and the neighbours just outside it.

No address here is connected to: these are pure table look-ups.
"""

from __future__ import annotations

import ipaddress

import pytest

from destinations._guard import SPECIAL_BLOCKS, blocked_reason

REFUSED, PUBLIC, EMBEDDED = "refused", "public", "embedded"

# (block, verdict, a word the refusal must contain), typed from the registries, not from the
# module: https://www.iana.org/assignments/iana-ipv4-special-registry (2020-09-04) and
# https://www.iana.org/assignments/iana-ipv6-special-registry (2024-10-22).
IPV4_REGISTRY = [
    ("0.0.0.0/8", REFUSED, "this network"),
    ("0.0.0.0/32", REFUSED, "unspecified"),
    ("10.0.0.0/8", REFUSED, "private"),
    ("100.64.0.0/10", REFUSED, "carrier-grade NAT"),
    ("127.0.0.0/8", REFUSED, "loopback"),
    ("169.254.0.0/16", REFUSED, "link-local"),
    ("172.16.0.0/12", REFUSED, "private"),
    ("192.0.0.0/24", REFUSED, "IETF protocol assignment"),
    ("192.0.0.0/29", REFUSED, "DS-Lite"),
    ("192.0.0.8/32", REFUSED, "dummy"),
    ("192.0.0.9/32", PUBLIC, ""),  # PCP anycast: globally reachable
    ("192.0.0.10/32", PUBLIC, ""),  # TURN anycast: globally reachable
    ("192.0.0.170/31", REFUSED, "NAT64/DNS64 discovery"),
    ("192.0.2.0/24", REFUSED, "documentation"),
    ("192.31.196.0/24", PUBLIC, ""),
    ("192.52.193.0/24", PUBLIC, ""),
    ("192.168.0.0/16", REFUSED, "private"),
    ("192.175.48.0/24", PUBLIC, ""),
    ("198.18.0.0/15", REFUSED, "benchmarking"),
    ("198.51.100.0/24", REFUSED, "documentation"),
    ("203.0.113.0/24", REFUSED, "documentation"),
    ("240.0.0.0/4", REFUSED, "reserved"),
    ("255.255.255.255/32", REFUSED, "broadcast"),
]
IPV6_REGISTRY = [
    ("::1/128", REFUSED, "loopback"),
    ("::/128", REFUSED, "unspecified"),
    ("::ffff:0:0/96", EMBEDDED, ""),
    ("64:ff9b::/96", EMBEDDED, ""),
    ("64:ff9b:1::/48", REFUSED, "local-use NAT64"),
    ("100::/64", REFUSED, "discard-only"),
    ("2001::/23", REFUSED, "IETF protocol assignment"),
    ("2001::/32", REFUSED, "Teredo"),  # N/A in the registry: its enclosing block's False
    ("2001:1::1/128", PUBLIC, ""),
    ("2001:1::2/128", PUBLIC, ""),
    ("2001:1::3/128", PUBLIC, ""),
    ("2001:2::/48", REFUSED, "benchmarking"),
    ("2001:3::/32", PUBLIC, ""),
    ("2001:4:112::/48", PUBLIC, ""),
    ("2001:10::/28", REFUSED, "ORCHID"),
    ("2001:20::/28", PUBLIC, ""),
    ("2001:30::/28", PUBLIC, ""),
    ("2001:db8::/32", REFUSED, "documentation"),
    ("2002::/16", EMBEDDED, ""),  # 6to4: N/A in the registry; the IPv4 inside decides
    ("2620:4f:8000::/48", PUBLIC, ""),
    ("3fff::/20", REFUSED, "documentation"),
    ("5f00::/16", REFUSED, "SRv6"),
    ("fc00::/7", REFUSED, "unique-local"),
    ("fe80::/10", REFUSED, "link-local"),
]
NOT_IN_THE_REGISTRIES = [
    ("224.0.0.0/4", REFUSED, "multicast"),  # RFC 5771
    ("ff00::/8", REFUSED, "multicast"),  # RFC 4291
    ("fec0::/10", REFUSED, "site-local"),  # RFC 3879, deprecated
    ("::/96", EMBEDDED, ""),  # IPv4-compatible, deprecated (RFC 4291)
    # the IANA IPv6 Address Space registry's "Reserved by IETF": all but 2000::/3 and the
    # blocks above
    *(
        (cidr, REFUSED, "reserved")
        for cidr in (
            *("::/8", "100::/8", "200::/7", "400::/6", "800::/5", "1000::/4", "4000::/3"),
            *("6000::/3", "8000::/3", "a000::/3", "c000::/3", "e000::/4", "f000::/5"),
            *("f800::/6", "fe00::/9"),
        )
    ),
    # cloud metadata and platform addresses
    ("169.254.169.254/32", REFUSED, "metadata"),  # AWS, GCP, Azure, OCI, DigitalOcean
    ("169.254.170.2/32", REFUSED, "metadata"),  # AWS ECS task credentials
    ("169.254.170.23/32", REFUSED, "metadata"),  # AWS EKS pod identity
    ("169.254.0.23/32", REFUSED, "metadata"),  # Tencent Cloud
    ("100.100.100.200/32", REFUSED, "metadata"),  # Alibaba Cloud
    ("168.63.129.16/32", REFUSED, "WireServer"),  # Azure platform address (public range)
    ("fd00:ec2::254/128", REFUSED, "metadata"),  # AWS IMDS over IPv6
    ("fd00:ec2::23/128", REFUSED, "metadata"),  # AWS EKS pod identity over IPv6
    ("fd20:ce::254/128", REFUSED, "metadata"),  # GCP metadata over IPv6
]
TABLE = IPV4_REGISTRY + IPV6_REGISTRY + NOT_IN_THE_REGISTRIES
_NETWORKS = [(ipaddress.ip_network(cidr), verdict, word) for cidr, verdict, word in TABLE]
_SHIFT = {"2002::/16": 80}  # where the IPv4 address sits in an EMBEDDED block (else low 32)


def expected(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[str, str]:
    """The oracle: (verdict, word) by the most specific block of TABLE, read as integer ranges;
    an EMBEDDED block passes the question to the IPv4 address inside."""
    value = int(address)
    best: tuple[int, str, str, str] | None = None
    for network, verdict, word in _NETWORKS:
        if network.version != address.version:
            continue
        first = int(network.network_address)
        if first <= value <= first + network.num_addresses - 1 and (
            best is None or network.prefixlen > best[0]
        ):
            best = (network.prefixlen, verdict, word, str(network))
    if best is None:
        return PUBLIC, ""
    _, verdict, word, cidr = best
    if verdict == EMBEDDED:
        inner = ipaddress.IPv4Address((value >> _SHIFT.get(cidr, 0)) & 0xFFFFFFFF)
        inner_verdict, inner_word = expected(inner)
        return inner_verdict, inner_word
    return verdict, word


def _probes(cidr: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    network = ipaddress.ip_network(cidr)
    first = int(network.network_address)
    last = first + network.num_addresses - 1
    top = 2**network.max_prefixlen - 1
    values = {first, (first + last) // 2, last}
    values |= {v for v in (first - 1, last + 1) if 0 <= v <= top}  # neighbours outside
    kind = ipaddress.IPv4Address if network.version == 4 else ipaddress.IPv6Address
    return [kind(v) for v in sorted(values)]


def test_the_guard_table_is_the_registry_table() -> None:
    mine = {(str(b.network), b.verdict) for b in SPECIAL_BLOCKS}
    assert mine == {(cidr, verdict) for cidr, verdict, _ in TABLE}
    assert len(SPECIAL_BLOCKS) == len(TABLE)  # no block twice
    shifts = {str(b.network): b.ipv4_shift for b in SPECIAL_BLOCKS if b.verdict == EMBEDDED}
    assert shifts == {cidr: _SHIFT.get(cidr, 0) for cidr, v, _ in TABLE if v == EMBEDDED}


@pytest.mark.parametrize(("cidr", "verdict", "word"), TABLE, ids=[row[0] for row in TABLE])
def test_every_block_first_middle_last_and_neighbours(cidr: str, verdict: str, word: str) -> None:
    for address in _probes(cidr):
        want, want_word = expected(address)
        reason = blocked_reason(address)
        assert (reason is None) == (want == PUBLIC), (str(address), reason, want)
        if reason is not None:
            assert want_word.lower() in reason.lower(), (str(address), reason, want_word)
        assert blocked_reason(str(address)) == reason  # a string is read the same


@pytest.mark.parametrize(("cidr", "verdict", "word"), IPV4_REGISTRY + NOT_IN_THE_REGISTRIES[:1])
def test_ipv4_blocks_in_every_ipv6_form(cidr: str, verdict: str, word: str) -> None:
    network = ipaddress.ip_network(cidr)
    for inner in (network.network_address, network.broadcast_address):
        packed = int(inner)
        forms = [
            ipaddress.IPv6Address((0xFFFF << 32) | packed),  # ::ffff:a.b.c.d
            ipaddress.IPv6Address(packed) if packed > 1 else None,  # ::a.b.c.d
            ipaddress.IPv6Address((0x64FF9B << 96) | packed),  # 64:ff9b::a.b.c.d
            ipaddress.IPv6Address((0x2002 << 112) | (packed << 80) | 1),  # 2002:ab:cd::1
        ]
        v4_reason = blocked_reason(inner)
        for form in filter(None, forms):
            reason = blocked_reason(form)
            if v4_reason is None:
                assert reason is None, (str(form), reason)
            else:
                assert reason == f"{v4_reason} in IPv6 form", (str(form), reason)
        assert (v4_reason is None) == (expected(inner)[0] == PUBLIC)


PUBLIC_SAMPLES = ["8.8.8.8", "1.1.1.1", "52.216.0.1", "2606:4700::1111", "2a00:1450:4001::1"]


def test_public_samples_and_their_ipv6_forms_pass() -> None:
    for text in PUBLIC_SAMPLES:
        assert blocked_reason(text) is None
    for form in ("::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "::8.8.8.8"):
        assert blocked_reason(form) is None, form


def test_a_scope_id_does_not_hide_the_block() -> None:
    assert blocked_reason("fe80::1%eth0") == blocked_reason("fe80::1")
    assert blocked_reason("fe80::1%1") is not None
    assert blocked_reason("2606:4700::1111%2") is None


@pytest.fixture
def no_ipaddress_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ipaddress``'s classification properties raise: the guard must not read them (their
    answers differ between CPython patch releases, e.g. 192.0.0.0/24 and 3fff::/20)."""

    def boom(self: object) -> bool:
        raise AssertionError("the guard read an ipaddress classification flag")

    for cls in (ipaddress.IPv4Address, ipaddress.IPv6Address):
        for name in (
            "is_private",
            "is_global",
            "is_reserved",
            "is_loopback",
            "is_link_local",
            "is_multicast",
            "is_unspecified",
            "is_site_local",
            "ipv4_mapped",
            "sixtofour",
            "teredo",
        ):
            if hasattr(cls, name):
                monkeypatch.setattr(cls, name, property(boom))


@pytest.mark.usefixtures("no_ipaddress_flags")
def test_the_guard_reads_no_ipaddress_classification() -> None:
    samples = [row[0].split("/")[0] for row in TABLE] + PUBLIC_SAMPLES
    samples += ["::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe", "2002:a00:1::1", "fe80::1%1"]
    for text in samples:
        blocked_reason(text)  # raises if a flag is read
    assert blocked_reason("3fff::1") == "a documentation address"
    assert blocked_reason("192.0.0.100") == "an IETF protocol assignment address"


# Where Python 3.11.7's ipaddress and the registries disagree: the guard follows the table.
DISAGREEMENTS = {
    "3fff::1": False,  # documentation (RFC 9637): is_global True on 3.11.7
    "168.63.129.16": False,  # Azure WireServer: a public range, but a platform endpoint
    "2001:20::1": True,  # ORCHIDv2: globally reachable, is_private True on 3.11.7
    "2001:30::1": True,  # drone remote ID: globally reachable, is_private True on 3.11.7
    "2001:4:112::1": True,  # AS112-v6: globally reachable, is_private True on 3.11.7
    "2001:1::3": True,  # DNS-SD SRP anycast: globally reachable
    "192.0.0.9": True,  # PCP anycast inside 192.0.0.0/24
}


@pytest.mark.parametrize(("address", "public"), sorted(DISAGREEMENTS.items()))
def test_the_table_decides_where_ipaddress_disagrees(address: str, public: bool) -> None:
    assert (blocked_reason(address) is None) is public
