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
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
