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
        self._thread = threading.Thread(target=self._accept, name="silent-kubelet", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:  # a connection accepted while close() runs is closed, never leaked
                if self._closed:
                    conn.close()
                    return
                self.accepted.append(conn)
            self.connected.set()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        except OSError:
            pass
        self._thread.join(timeout=5)
        self._sock.close()
        with self._lock:
            for conn in self.accepted:
                conn.close()
