"""The endpoint guard's address rules, save-time scheme check and error plumbing."""

from __future__ import annotations

import socket

import pytest

from destinations import EndpointNotAllowed, InvalidDestination, StoreError
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
