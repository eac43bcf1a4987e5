"""Which addresses a remote transfer may connect to: the guard against server-side request
forgery (a client making the server fetch from its own network).

Only globally routable unicast addresses are allowed by default: loopback, private, shared
(CGNAT), link-local, multicast, unspecified, reserved and documentation ranges are refused, and
so is an IPv6 address that embeds a refused IPv4 one (IPv4-mapped, 6to4, Teredo, NAT64). The
operator's allow-list (``LIVEFILE_TRANSFER_ALLOWED_NETWORKS``) names networks that are allowed
whatever they are.

The check is made on the addresses a name resolves to — never on the name — and the transfer
then connects to exactly those addresses (see ``transfer_http.py``), so a name that resolves
differently a moment later (DNS rebinding) cannot slip a refused address in between.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class TransferError(Exception):
    """Why a transfer failed: ``code`` is the ``error.code`` of its FAILED status."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """``"127.0.0.0/8, ::1/128"`` → the networks; raises ``ValueError`` naming a bad one (a
    network with host bits set, such as ``10.0.0.1/8``, is refused rather than guessed)."""
    networks = []
    for part in text.split(","):
        if part := part.strip():
            try:
                networks.append(ipaddress.ip_network(part))
            except ValueError as exc:
                raise ValueError(f"not a CIDR network: {part!r} ({exc})") from None
    return tuple(networks)


@dataclass(frozen=True)
class AddressPolicy:
    """Refuses every address that is not globally routable unicast, unless ``allowed`` holds it."""

    allowed: tuple[IPNetwork, ...] = ()

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` is refused, or None when the transfer may connect to it."""
        if any(address in network for network in self.allowed):
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return self.refusal(address.ipv4_mapped)  # the same host, written as IPv6
        if address.is_multicast:
            return "multicast"
        if not address.is_global:
            return _kind(address)
        for embedded in _embedded_ipv4(address):
            why = self.refusal(embedded)
            if why is not None:
                return f"{why} (embedded in {address})"
        return None

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """The addresses of ``host`` to connect to, every one of them allowed. Raises
        ``TransferError``: ``unreachable`` when the name does not resolve, ``address_refused``
        when any address it resolves to is refused (a name that also points inside is not
        trusted with the others)."""
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError) as exc:
                raise TransferError("unreachable", f"cannot resolve {host}: {exc}") from None
            # A scoped IPv6 address ("fe80::1%eth0") is link-local: refused without its scope.
            addresses = _unique(
                ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos
            )
        for address in addresses:
            why = self.refusal(address)
            if why is not None:
                raise TransferError(
                    "address_refused",
                    f"{host} resolves to {address}, a {why} address; transfers only go to public"
                    " addresses unless LIVEFILE_TRANSFER_ALLOWED_NETWORKS allows it",
                )
        return addresses


def _kind(address: IPAddress) -> str:
    # Python counts the unspecified and reserved ranges as private too: the narrower name first.
    for kind in ("loopback", "unspecified", "link_local", "reserved", "private"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return "non-public"


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [address.sixtofour]
    if address.teredo is not None:
        found.append(address.teredo[1])
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return [embedded for embedded in found if embedded is not None]


def _unique(addresses: Iterable[IPAddress]) -> list[IPAddress]:
    return list(dict.fromkeys(addresses))
