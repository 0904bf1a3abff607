"""nvdp's metrics through Debian's own node_exporter, its labels and ``nvdp status``, installed (issue 16).

A real systemd 252 in systemd-nspawn, with nvdp's .deb installed next to
Debian's ``prometheus-node-exporter`` (baked into the image) and the kubelet
test peer. node_exporter's textfile collector reads nvdp.prom from
``/var/lib/prometheus/node-exporter`` and serves it on localhost:9100, fetched
with curl; nvdp.service writes it from inside its shipped sandbox. Then the
opt-in loopback endpoint with the drop-in docs/operations.md gives, ``nvdp
status``, the NFD features file, and ``apt purge`` removing both files.

Set NVDP_TEST_DEB to a prebuilt package to skip the build.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.system.deb_helpers import (
    PLUGIN_DIR,
    ROOT,
    Built,
    apt,
    build_deb_once,
    capacity,
    depends_names,
    log,
    prebuilt,
    prepare_box,
    prop,
    wait,
)
from tests.system.nspawn import Image, missing_host_requirements
from tests.system.plugin import SYSTEM_IMAGE_PACKAGES

pytestmark = pytest.mark.system

GPU = "nvidia.com/gpu"
TEXTFILE = "/var/lib/prometheus/node-exporter/nvdp.prom"
FEATURES = "/etc/kubernetes/node-feature-discovery/features.d/nvdp"
FAMILIES = (
    "nvdp_resource_devices", "nvdp_resource_healthy_devices", "nvdp_resource_registered",
    "nvdp_registrations_total", "nvdp_device_healthy", "nvdp_gpu_lost", "nvdp_rpc_requests_total",
    "nvdp_rpc_duration_seconds_bucket", "nvdp_reloads_total", "nvdp_config_generation",
    "nvdp_start_time_seconds", "nvdp_build_info", "nvdp_kubelet_socket_present",
)


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Built:
    why = missing_host_requirements()
    if why:
        pytest.skip("needs a host that can build packages and run systemd-nspawn: " + "; ".join(why))
    # the same bookworm build test_deb.py and test_apt_repo.py use: one build per pytest run
    return prebuilt("NVDP_TEST_DEB", "bookworm") or build_deb_once(tmp_path_factory.mktemp("deb"), release="bookworm")


@pytest.fixture
def box(system_box, deb: Built):
    from tests.mock_nvml.build import build as build_mock_nvml
    from tests.mock_nvml.environment import profile_path

    image = Image("nvdp-metrics", packages=SYSTEM_IMAGE_PACKAGES,
                  extra_packages=sorted({*depends_names(deb.path), "prometheus-node-exporter", "curl"}))
    image.ensure()
    box = system_box(image=image)
    prepare_box(box, build_mock_nvml(), profile_path("h100-sxm-8"))
    box.cp_in(deb.path, "/root/")
    box.exec(["mkdir", "-p", "-m", "0750", PLUGIN_DIR])
    box.exec(["mkdir", "-p", str(Path(FEATURES).parent)])
    return box


def scrape(box, port: int) -> str:
    done = box.exec(["curl", "-sS", "--max-time", "5", f"http://localhost:{port}/metrics"], check=False)
    return done.stdout if done.returncode == 0 else ""


def sample(text: str, name: str, labels: str = "") -> float | None:
    match = re.search(rf"^{re.escape(name)}(\{{[^}}]*{re.escape(labels)}[^}}]*\}})? (\S+)$", text, re.MULTILINE)
    return float(match.group(2)) if match else None


def test_node_exporter_serves_nvdps_families_and_purge_removes_what_nvdp_wrote(box, deb: Built):
    apt(box, "install", f"/root/{deb.path.name}")
    box.systemctl("enable", "--now", "kubelet.service")
    wait(lambda: capacity(box, GPU) == (8, 8), "capacity 8 from the mock NVML")
    box.systemctl("enable", "--now", "prometheus-node-exporter.service")

    text = wait(lambda: (t := scrape(box, 9100)) and sample(t, "nvdp_resource_registered", GPU) == 1 and t,
                "nvdp_resource_registered 1 on node_exporter's :9100", timeout=60)
    missing = [f for f in FAMILIES if sample(text, f) is None]
    assert not missing, f"families missing on :9100: {missing}\n{text[-3000:]}"
    assert sample(text, "node_textfile_scrape_error") == 0
    assert sample(text, "nvdp_resource_devices", GPU) == 8
    assert box.exec(["stat", "-c", "%a", TEXTFILE]).stdout.strip() == "644"

    status = box.exec(["nvdp", "status"], check=False)
    log("nvdp status in the box:\n" + status.stdout)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "nvdp.service: active" in status.stdout and "registered" in status.stdout
    assert "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3\n" in box.read_file(FEATURES)

    # The loopback endpoint, with the drop-in docs/operations.md gives.
    dropin = re.search(r"```ini\n(# /etc/systemd/system/nvdp.service.d/metrics.conf[^\n]*\n.*?)```",
                       (ROOT / "docs/operations.md").read_text(), re.DOTALL)
    assert dropin, "docs/operations.md lost its drop-in"
    box.write_file("/etc/systemd/system/nvdp.service.d/metrics.conf", dropin.group(1))
    config = box.read_file("/etc/nvdp/config.toml")
    box.write_file("/etc/nvdp/config.toml", config.replace('#listen = ""', 'listen = "127.0.0.1:9400"', 1))
    box.systemctl("daemon-reload")
    box.systemctl("restart", "nvdp.service")
    wait(lambda: prop(box, "ActiveState") == "active", "nvdp active again")
    text = wait(lambda: (t := scrape(box, 9400)) and sample(t, "nvdp_resource_registered", GPU) == 1 and t,
                "nvdp's own endpoint on 127.0.0.1:9400", timeout=60)
    assert sample(text, "nvdp_build_info") == 1

    apt(box, "purge", "nvdp")
    assert not box.exists(TEXTFILE)
    assert not box.exists(FEATURES)
