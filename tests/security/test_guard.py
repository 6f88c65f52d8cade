"""The endpoint guard's address rules, save-time scheme check and error plumbing."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from destinations import EndpointNotAllowed, InvalidDestination, StoreError, _guard
from destinations._guard import (
    blocked_reason,
    check_address,
    check_endpoint_scheme,
    find_refusal,
    guarded_create_connection,
)
from tests.security.conftest import Recorder

BLOCKED = {
    "127.0.0.1": "loopback",
    "127.255.255.254": "loopback",
    "::1": "loopback",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "10.0.0.1": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "100.64.0.1": "carrier-grade NAT",
    "169.254.169.254": "cloud metadata",
    "169.254.1.1": "link-local",
    "fe80::1": "link-local",
    "fe80::1%1": "link-local",
    "fc00::1": "private",
    "fd00:ec2::254": "cloud metadata",
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "",
    "198.18.0.1": "",
    "192.0.2.1": "",
    "::ffff:127.0.0.1": "loopback address in IPv6 form",
    "::ffff:169.254.169.254": "metadata address in IPv6 form",
    "::ffff:10.0.0.1": "private address in IPv6 form",
    "::127.0.0.1": "loopback address in IPv6 form",
    "64:ff9b::7f00:1": "loopback address in IPv6 form",
    "64:ff9b::a9fe:a9fe": "metadata address in IPv6 form",
    "64:ff9b:1::1": "NAT64",
    "2002:7f00:1::1": "loopback address in IPv6 form",
    "2002:a00:1::1": "private address in IPv6 form",
}
PUBLIC = ["8.8.8.8", "52.216.0.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize(("address", "rule"), sorted(BLOCKED.items()))
def test_blocked_addresses(address: str, rule: str) -> None:
    reason = blocked_reason(address)
    assert reason is not None
    assert rule in reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses(address: str) -> None:
    assert blocked_reason(address) is None


def test_refusal_is_a_store_error_but_not_an_oserror() -> None:
    # HTTP stacks retry or re-wrap OSErrors as "connection failed"; this must pass through.
    assert issubclass(EndpointNotAllowed, StoreError)
    assert not issubclass(EndpointNotAllowed, OSError)


def test_guarded_connect_checks_before_connecting(
    recorder: Recorder, guard_on: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(EndpointNotAllowed) as caught:
        guarded_create_connection(("127.0.0.1", recorder.port), 2, label="s3_endpoint")
    assert caught.value.code == "endpoint_not_allowed"
    assert str(caught.value.message).startswith(
        "s3_endpoint connects to 127.0.0.1, a loopback address"
    )
    # A name with one public and one loopback answer: refused before any connect.
    real = socket.getaddrinfo

    def fake(host: str, *args: object, **kwargs: object) -> list[object]:
        if host == "mixed.test":
            return [*real("8.8.8.8", *args), *real("127.0.0.1", *args)]  # type: ignore[arg-type]
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(EndpointNotAllowed) as caught:
        guarded_create_connection(("mixed.test", recorder.port), 2)
    assert "mixed.test resolves to an address that is not public" in caught.value.message
    assert "127.0.0.1" not in str(caught.value)  # the rule, not what the name resolved to
    assert caught.value.address == "127.0.0.1"  # kept for the operator's log
    assert caught.value.rule == "a loopback address"
    assert recorder.accepted == []


@pytest.mark.parametrize(
    "address", ["10.0.0.1", "169.254.169.254", "fd00:ec2::254", "100.64.0.1", "127.0.0.1"]
)
def test_a_refused_host_name_does_not_reveal_what_it_resolves_to(address: str) -> None:
    # check_address only classifies: nothing is connected to.
    with pytest.raises(EndpointNotAllowed) as caught:
        check_address(address, host="priv.test", label="s3_endpoint")
    text = str(caught.value)
    assert address not in text
    assert caught.value.rule not in text  # not even the kind of address it found
    assert caught.value.message == (
        "s3_endpoint host priv.test resolves to an address that is not public (every "
        "address a name resolves to must be public); only public https endpoints are allowed"
    )
    # An IP literal the user wrote may be named, with the rule it breaks.
    with pytest.raises(EndpointNotAllowed) as literal:
        check_address(address, host=address, label="s3_endpoint")
    assert literal.value.message == (
        f"s3_endpoint connects to {address}, {literal.value.rule}; only public https "
        "endpoints are allowed"
    )


def test_allow_env_lifts_the_guard(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", "1")
    guarded_create_connection(("127.0.0.1", recorder.port), 2, plain_http=True).close()
    check_endpoint_scheme("s3_endpoint", "http://127.0.0.1:9000")


def test_plain_http_is_refused_at_save_and_at_connect(guard_on: None) -> None:
    with pytest.raises(InvalidDestination) as caught:
        check_endpoint_scheme("s3_endpoint", "http://s3.example.com")
    assert "https" in caught.value.errors["s3_endpoint"]
    with pytest.raises(EndpointNotAllowed, match="plain http"):
        guarded_create_connection(("8.8.8.8", 80), 2, plain_http=True)  # refused pre-connect


def test_find_refusal_digs_through_wrappers() -> None:
    refusal = EndpointNotAllowed("x", address="127.0.0.1", rule="a loopback address")
    try:
        try:
            raise refusal
        except EndpointNotAllowed as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        wrapper = ValueError(outer)
    assert find_refusal(wrapper) is refusal
    assert find_refusal(ValueError("nothing")) is None


# -- the connect path: what guarded_create_connection hands to the socket --------------------


@pytest.fixture
def allow_private(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", "1")


@pytest.mark.usefixtures("allow_private")
def test_connect_applies_options_timeout_and_source_address(recorder: Recorder) -> None:
    keepalive = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    with guarded_create_connection(
        ("[127.0.0.1]", recorder.port), 2.5, ("127.0.0.3", 0), keepalive
    ) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.gettimeout() == 2.5
        assert sock.getsockname()[0] == "127.0.0.3"
        assert sock.type == socket.SOCK_STREAM
    with guarded_create_connection(("127.0.0.1", recorder.port), None) as sock:
        assert sock.gettimeout() is None
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


@pytest.mark.usefixtures("allow_private")
def test_an_http_library_sentinel_timeout_keeps_the_socket_default(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "_GLOBAL_DEFAULT_TIMEOUT", object(), raising=False)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(7.0)
    try:
        with guarded_create_connection(("127.0.0.1", recorder.port), object()) as sock:
            assert sock.gettimeout() == 7.0
    finally:
        socket.setdefaulttimeout(previous)


@pytest.mark.usefixtures("allow_private")
def test_connect_tries_each_checked_address_in_turn(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo

    def two(host: str, *args: object, **kwargs: object) -> list[object]:
        if host == "two.test":  # a loopback address with nothing listening, then the recorder
            return [*real("127.0.0.2", *args), *real("127.0.0.1", *args)]  # type: ignore[arg-type]
        if host == "none.test":
            return [*real("127.0.0.2", *args)]  # type: ignore[arg-type]
        if host == "empty.test":
            return []
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", two)
    with guarded_create_connection(("two.test", recorder.port), 2) as sock:
        assert sock.getpeername() == ("127.0.0.1", recorder.port)
    with pytest.raises(ConnectionRefusedError):  # the last failure, as socket.create_connection
        guarded_create_connection(("none.test", recorder.port), 2)
    with pytest.raises(OSError, match=r"no addresses for empty\.test"):
        guarded_create_connection(("empty.test", recorder.port), 2)


def test_resolve_asks_for_stream_sockets_only() -> None:
    infos = _guard._resolve("127.0.0.1", 80)
    assert infos and {kind for _, kind, _, _ in infos} == {socket.SOCK_STREAM}


def test_plain_http_is_refused_after_the_address_check_naming_the_label(
    recorder: Recorder, guard_on: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The address is let through (a stand-in public server), so only the http rule applies.
    monkeypatch.setattr(_guard, "blocked_reason", lambda address: None)
    guarded_create_connection(("127.0.0.1", recorder.port), 2).close()  # https by default
    with pytest.raises(EndpointNotAllowed) as caught:
        guarded_create_connection(("127.0.0.1", recorder.port), 2, plain_http=True)
    assert caught.value.message == (
        "the endpoint: a plain http connection to 127.0.0.1 was refused; only public https "
        "endpoints are allowed"
    )
    assert len(recorder.accepted) <= 1


def test_a_scoped_address_is_shown_without_its_scope() -> None:
    with pytest.raises(EndpointNotAllowed) as caught:
        check_address("fe80::1%eth0", host="fe80::1%eth0", label="s3_endpoint")
    assert caught.value.address == "fe80::1"
    assert caught.value.message.startswith("s3_endpoint connects to fe80::1, a link-local")


def test_special_block_reads_strings_and_addresses() -> None:
    block = _guard.special_block("10.1.2.3")
    assert block is not None and block.rule == "a private address"
    assert _guard.special_block(ipaddress.ip_address("10.1.2.3")) == block
    assert _guard.special_block("8.8.8.8") is None


def test_check_host_resolves_and_checks_every_address(
    guard_on: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo
    asked: list[tuple[object, object]] = []

    def fake(host: str, port: object, *args: object, **kwargs: object) -> list[object]:
        asked.append((host, port))
        if host == "public.test":
            return real("8.8.8.8", port, *args)  # type: ignore[arg-type]
        if host == "mixed.test":
            return [*real("8.8.8.8", port, *args), *real("10.0.0.1", port, *args)]  # type: ignore[arg-type]
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", fake)  # nothing is connected to here
    _guard.check_host("[public.test]", 8443, label="proxy")
    assert asked[-1] == ("public.test", 8443)
    with pytest.raises(EndpointNotAllowed) as caught:
        _guard.check_host("mixed.test", 443, label="s3_endpoint")
    assert caught.value.message.startswith("s3_endpoint host mixed.test resolves to an address")
    assert (caught.value.address, caught.value.rule) == ("10.0.0.1", "a private address")
    monkeypatch.setenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", "1")
    _guard.check_host("mixed.test", 443, label="s3_endpoint")  # lifted: not even resolved


@pytest.mark.parametrize(
    ("value", "allowed"),
    [("1", True), ("true", True), ("TRUE", True), (" True ", True), ("", False), ("0", False)],
)
def test_the_allow_switch_values(
    value: str, allowed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS", value)
    assert _guard.private_endpoints_allowed() is allowed
    monkeypatch.delenv("DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS")
    assert _guard.private_endpoints_allowed() is False


def test_https_passes_the_save_time_check_and_http_is_refused_by_name(guard_on: None) -> None:
    check_endpoint_scheme("s3_endpoint", "https://s3.example.com")
    check_endpoint_scheme("s3_endpoint", " HTTPS://s3.example.com")
    with pytest.raises(InvalidDestination) as caught:
        check_endpoint_scheme("s3_endpoint", "http://s3.example.com")
    assert caught.value.errors == {
        "s3_endpoint": "must be an https:// URL (plain http is allowed only when the operator "
        "sets DESTINATIONS_ALLOW_PRIVATE_ENDPOINTS=1, for local development)"
    }
    with pytest.raises(EndpointNotAllowed) as refused:
        _guard.refuse_plain_http("s3.example.com", label="s3_endpoint")
    assert (refused.value.address, refused.value.rule) == ("s3.example.com", "plain http")
