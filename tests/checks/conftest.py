"""The ``host`` fixture: a host root assembled from fixture layers in tmp_path."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from nvdp_node.adapters.host import HostRoot

FIXTURES = Path(__file__).parent / "fixtures"
TOOLKIT = ("nvidia-container-runtime", "nvidia-ctk", "nvidia-container-cli")


class Host:
    """A fake host's / being put together: fixture layers, executables, sockets, /dev nodes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    @property
    def paths(self) -> HostRoot:
        return HostRoot(root=self.root)

    def path(self, host_path: str) -> Path:
        return self.root / host_path.lstrip("/")

    def layer(self, *names: str) -> Host:
        for name in names:
            shutil.copytree(FIXTURES / name, self.root, dirs_exist_ok=True)
        return self

    def write(self, host_path: str, text: str) -> Path:
        path = self.path(host_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def binaries(self, *names: str, bin_dir: str = "/usr/bin") -> Host:
        for name in names:
            self.executable(f"{bin_dir}/{name}", "#!/bin/sh\nexit 0\n")
        return self

    def executable(self, host_path: str, script: str) -> Path:
        path = self.write(host_path, script)
        path.chmod(0o755)
        return path

    def kubelet(self, output: str = "Kubernetes v1.29.3") -> Host:
        self.executable("/usr/bin/kubelet", f"#!/bin/sh\necho '{output}'\n")
        return self

    def socket(self, host_path: str) -> Path:
        # mknod avoids bind()'s 108-byte path limit, which deep tmp_paths exceed.
        path = self.path(host_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mknod(path, 0o600 | stat.S_IFSOCK)
        return path

    def kubelet_dir(self, socket: bool = True) -> Host:
        self.path("/var/lib/kubelet/device-plugins").mkdir(parents=True, exist_ok=True)
        if socket:
            self.socket("/var/lib/kubelet/device-plugins/kubelet.sock")
        return self

    def dev(self, *names: str) -> Host:
        for name in names:
            self.write(f"/dev/{name}", "")
        return self

    def healthy(self) -> Host:
        """Everything a GPU pod needs on a containerd node, except what NVML reports."""
        self.layer("containerd-v2-ok", "toolkit-packaged").binaries("containerd", *TOOLKIT)
        return self.kubelet().kubelet_dir().dev("nvidiactl", "nvidia0", "nvidia1", "nvidia-uvm")


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path / "host")
