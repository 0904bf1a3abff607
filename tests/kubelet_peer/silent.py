"""A kubelet.sock that accepts connections and never says a word: a hung kubelet.

Used by the daemon tests and the benchmark to show that nothing in nvdp waits
for kubelet (READY, watchdog pings, SIGTERM while Register hangs).
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path


class SilentKubelet:
    def __init__(self, path: Path | str) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(64)
        self.accepted: list[socket.socket] = []
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="silent-kubelet", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:  # accepted while close() ran: nobody else will close it
                    conn.close()
                    return
                self.accepted.append(conn)
            self.connected.set()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            accepted, self.accepted = self.accepted, []
        self._sock.close()
        for conn in accepted:
            conn.close()
