"""``metrics.listen``: ``<address>:<port>`` text, and whether the address is loopback.

Pure text and address arithmetic (no socket is opened, no name resolved):
used by the config schema (``nvdp_node.config.observe``), the publisher that
binds the endpoint, and ``nvdp check``'s ``metrics.listen`` rule.
"""

from __future__ import annotations

import ipaddress
import json


class ListenError(ValueError):
    """``metrics.listen`` is not ``<address>:<port>``."""


def parse_listen(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9400"`` → ``("127.0.0.1", 9400)``; ``"[::1]:9400"`` → ``("::1", 9400)``.

    The address is an IP literal or ``localhost`` (a name would be resolved,
    and its answer could change); the port is 1-65535.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ListenError("expected <address>:<port>, e.g. \"127.0.0.1:9400\" or \"[::1]:9400\"")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ListenError("write an IPv6 address in brackets, e.g. \"[::1]:9400\"")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ListenError(f"{json.dumps(host)} is not an IP address (or \"localhost\")") from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ListenError(f"{json.dumps(port)} is not a port number (1-65535)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback
