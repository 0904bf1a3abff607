"""A real NOTIFY_SOCKET: an AF_UNIX datagram socket that records what systemd would receive."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from pathlib import Path


class NotifyListener:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ns-", dir="/tmp"))
        self.path = self.dir / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.1)
        self.datagrams: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.datagrams.append((time.monotonic(), data))

    def messages(self) -> list[dict[str, str]]:
        """Each datagram as a dict of its KEY=value fields (UTF-8)."""
        out = []
        for _, data in list(self.datagrams):
            fields = dict(line.split("=", 1) for line in data.decode("utf-8").split("\n") if line)
            out.append(fields)
        return out

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "a notify message"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, message in enumerate(self.messages()):
                if predicate(message):
                    return i, message
            time.sleep(0.01)
        raise AssertionError(f"no {what} within {timeout} s; got {self.messages()}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.sock.close()
        self.path.unlink(missing_ok=True)
        self.dir.rmdir()
