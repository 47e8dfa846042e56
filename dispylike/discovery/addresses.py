"""Which local addresses to use and where to broadcast (psutil, no guessing from hostnames)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Interface:
    name: str
    address: str
    broadcast: str | None      # IPv4 only
    index: int


def interfaces() -> list[Interface]:
    """IPv4 and IPv6 (global or ULA) addresses of interfaces that are up, loopback last."""
    stats = psutil.net_if_stats()
    out = []
    for name, addrs in psutil.net_if_addrs().items():
        if name not in stats or not stats[name].isup:
            continue
        try:
            index = socket.if_nametoindex(name)
        except OSError:
            continue
        for a in addrs:
            if a.family == socket.AF_INET:
                out.append(Interface(name, a.address, a.broadcast, index))
            elif a.family == socket.AF_INET6 and not a.address.startswith('fe80'):
                out.append(Interface(name, a.address.split('%')[0], None, index))
    return sorted(out, key=lambda i: is_loopback(i.address))


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def is_routable_ip(address: str) -> bool:
    """An IP address (not a name that did not resolve) that is not loopback."""
    try:
        return not ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def primary_address() -> str:
    """An address to advertise when none is given: the first non-loopback IPv4 address.

    (The host name may resolve to 127.0.1.1 on Debian, which no peer can reach.)
    """
    for iface in interfaces():
        if ':' not in iface.address and not is_loopback(iface.address):
            return iface.address
    return '127.0.0.1'
