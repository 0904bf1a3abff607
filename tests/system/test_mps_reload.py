"""nvdp.service in a real systemd 252 starts and stops the nvdp-mps@ units as reloads share and unshare.

As tests/system/test_unit.py (the checkout bind-mounted read-only, mock NVML,
the kubelet stand-in as kubelet.service), plus the MPS units where the .deb
puts them and the stand-ins of tests/mps_control/ as /usr/bin tools.
"""

from __future__ import annotations

import pytest

from tests.system.test_unit import GPU, ROOT, box, capacity, prop, wait  # noqa: F401 - box is the fixture

MPS_UNIT = "nvdp-mps@nvidia.com-gpu.service"
SHARED = f'version = 1\n[[sharing.mps.resources]]\nname = "{GPU}"\nreplicas = 4\n'
UNSHARED = "version = 1\n"

pytestmark = pytest.mark.system


@pytest.fixture
def mps_box(box):
    for unit in ("nvdp-mps@.service", "run-nvidia-mps-shm.mount"):
        box.write_file(f"/lib/systemd/system/{unit}", (ROOT / "packaging/systemd" / unit).read_text())
    for tool in ("nvidia-cuda-mps-control", "nvidia-smi"):
        box.exec(["install", "-m", "0755", f"{ROOT}/tests/mps_control/{tool}", f"/usr/bin/{tool}"])
    box.systemctl("daemon-reload")
    return box


def test_reloads_start_and_stop_the_resources_mps_unit(mps_box):
    box = mps_box
    box.write_file("/etc/nvdp/config.toml", SHARED)
    box.systemctl("enable", "--now", "nvdp.service")
    wait(lambda: capacity(box) == (32, 32), "32 MPS replicas advertised", timeout=40)
    assert prop(box, "ActiveState", MPS_UNIT) == "active", box.journal("nvdp.service")
    assert "registered with kubelet" in prop(box, "StatusText")

    box.write_file("/etc/nvdp/config.toml", UNSHARED)
    box.systemctl("reload", "nvdp.service")
    wait(lambda: capacity(box) == (8, 8), "8 whole GPUs after unsharing", timeout=40)
    wait(lambda: prop(box, "ActiveState", MPS_UNIT) == "inactive", "the MPS unit stopped", timeout=40)

    box.write_file("/etc/nvdp/config.toml", SHARED)
    box.systemctl("reload", "nvdp.service")
    wait(lambda: prop(box, "ActiveState", MPS_UNIT) == "active", "the MPS unit started again", timeout=40)
    wait(lambda: capacity(box) == (32, 32), "32 replicas again", timeout=40)
    assert prop(box, "ActiveState") == "active", "nvdp itself never restarted"
