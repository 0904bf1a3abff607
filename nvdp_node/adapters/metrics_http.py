"""The opt-in HTTP endpoint serving ``/metrics`` (``metrics.listen``).

Started and stopped by the publisher (``nvdp_node.app.publish``) at start and
on reload. prometheus_client's server answers on its own daemon thread, so a
slow scraper never touches the event loop; the registry it reads holds only
thread-safe counters and an immutable snapshot the loop replaces. The address
was validated by the config schema (loopback unless ``allow_remote``).
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server


class MetricsEndpoint:
    """One listening server; :meth:`stop` closes its socket."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        # Raises OSError (address in use, not available, forbidden by the sandbox).
        self._server: Any
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2.0)
