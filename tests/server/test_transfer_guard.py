"""The transfers' guard against server-side request forgery: which addresses are refused, how
the allow-list opens them, and that names are judged by what they resolve to."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from livefile.impl_server.transfer_guard import AddressPolicy, TransferError, parse_networks
from livefile.impl_websocket import preflight

REFUSED = {
    "127.0.0.1": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "169.254.169.254": "link-local",  # cloud metadata services
    "100.64.0.1": "non-public",  # shared address space (CGNAT)
    "0.0.0.0": "unspecified",
    "240.0.0.1": "reserved",
    "224.0.0.1": "multicast",
    "239.1.1.1": "multicast",
    "::1": "loopback",
    "::": "unspecified",
    "fe80::1": "link-local",
    "fc00::1": "private",
    "ff02::1": "multicast",
    "::ffff:127.0.0.1": "loopback",  # IPv4-mapped
    "2002:7f00:1::": "loopback (embedded in 2002:7f00:1::)",  # 6to4 of 127.0.0.1
    "64:ff9b::a00:1": "private (embedded in 64:ff9b::a00:1)",  # NAT64 of 10.0.0.1
}


@pytest.mark.parametrize(("address", "kind"), REFUSED.items())
def test_addresses_that_are_not_public_are_refused(address: str, kind: str) -> None:
    assert AddressPolicy().refusal(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888"])
def test_public_unicast_addresses_are_allowed(address: str) -> None:
    assert AddressPolicy().refusal(ipaddress.ip_address(address)) is None


def test_the_allow_list_opens_exactly_its_networks() -> None:
    policy = AddressPolicy(parse_networks("10.1.0.0/16, ::1/128"))
    assert policy.refusal(ipaddress.ip_address("10.1.200.3")) is None
    assert policy.refusal(ipaddress.ip_address("::1")) is None
    assert policy.refusal(ipaddress.ip_address("10.2.0.1")) == "private"
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) == "loopback"


async def test_a_name_is_judged_by_the_addresses_it_resolves_to() -> None:
    with pytest.raises(TransferError) as refused:
        await AddressPolicy().resolve("localhost", 80)
    assert refused.value.code == "address_refused"
    allowed = AddressPolicy(parse_networks("127.0.0.0/8, ::1/128"))
    addresses = await allowed.resolve("localhost", 80)
    assert ipaddress.ip_address("127.0.0.1") in addresses


async def test_an_ip_literal_is_checked_without_resolution() -> None:
    with pytest.raises(TransferError) as refused:
        await AddressPolicy().resolve("169.254.169.254", 80)
    assert refused.value.code == "address_refused"
    assert await AddressPolicy().resolve("8.8.8.8", 80) == [ipaddress.ip_address("8.8.8.8")]


async def test_a_name_that_does_not_resolve_is_unreachable() -> None:
    with pytest.raises(TransferError) as failed:
        await AddressPolicy().resolve("no-such-host.invalid", 80)
    assert failed.value.code == "unreachable"


def test_a_bad_allow_list_is_refused_at_start_naming_it() -> None:
    flags = {"transfer_allowed_networks": "--transfer-allowed-networks"}
    given = {"transfer_allowed_networks": "127.0.0.0/8,10.0.0.1/8"}
    with pytest.raises(preflight.StartupProblem) as problem:
        preflight.load_settings(given, preflight.Origins(flags, given))
    assert problem.value.exit_status == preflight.USAGE
    assert "--transfer-allowed-networks" in str(problem.value)
    assert "10.0.0.1/8" in str(problem.value)


async def test_a_name_resolving_to_any_refused_address_is_refused_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A name whose records mix a public address with an internal one (the DNS answer stands in
    # for a resolver the attacker controls).
    async def answer(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [(2, 1, 6, "", ("8.8.8.8", port)), (2, 1, 6, "", ("10.0.0.5", port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", answer)
    with pytest.raises(TransferError) as refused:
        await AddressPolicy().resolve("mixed.example", 80)
    assert refused.value.code == "address_refused"
    assert "10.0.0.5" in refused.value.message
