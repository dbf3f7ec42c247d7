"""Which hosts count as this machine: the only ones plain http:// or plain SMTP may reach."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str | None) -> bool:
    """localhost or a loopback IP: the only hosts plain http:// (or plain SMTP) may reach."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback  # ::ffff:127.0.0.1, as a dual-stack socket says
    return address.is_loopback
