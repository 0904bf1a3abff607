"""nvdp.service under a real systemd 252 (systemd-nspawn): notify, status, reload, watchdog, PartOf.

The repository (with its .venv and the built mock NVML) is bind-mounted
read-only at the same path inside the box; /usr/lib/nvdp points at the venv,
so the unit file from packaging/systemd/ runs unchanged. The kubelet test peer
runs as kubelet.service and writes the node status it would report to a JSON
file this test reads.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.system.deb_helpers import STATUS, kubelet_unit

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging/systemd/nvdp.service"
GPU = "nvidia.com/gpu"

pytestmark = pytest.mark.system

def mock_dropin(lib_dir: Path, profile: Path, watchdog: str = "4s") -> str:
    # BindReadOnlyPaths: a checkout under /tmp would be hidden by the unit's PrivateTmp=.
    return (
        "[Service]\n"
        f"BindReadOnlyPaths={ROOT}\n"
        f"Environment=LD_LIBRARY_PATH={lib_dir} MOCK_NVML_CONFIG={profile}\n"
        f"WatchdogSec={watchdog}\n"
        "RestartSec=500ms\n"
    )


@pytest.fixture
def box(system_box, mock_nvml):
    node = mock_nvml.use("h100-sxm-8")
    env = node.env()
    lib_dir = Path(env["LD_LIBRARY_PATH"].split(":")[0])
    b = system_box(binds=[(str(ROOT), str(ROOT), "ro")])
    b.exec(["ln", "-sfn", f"{ROOT}/.venv", "/usr/lib/nvdp"])
    b.write_file("/etc/systemd/system/nvdp.service", UNIT.read_text())
    b.write_file("/etc/systemd/system/nvdp.service.d/mock-nvml.conf", mock_dropin(lib_dir, Path(env["MOCK_NVML_CONFIG"])))
    b.write_file("/etc/systemd/system/kubelet.service", kubelet_unit(pythonpath=str(ROOT)))
    b.write_file("/etc/nvdp/config.toml", "version = 1\n")
    b.systemctl("daemon-reload")
    b.systemctl("enable", "--now", "kubelet.service")
    wait(lambda: b.exists(STATUS), "kubelet stand-in status file")
    return b


def wait(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def node_status(box) -> dict:
    return json.loads(box.read_file(STATUS))


def capacity(box, resource: str = GPU) -> tuple[int, int] | None:
    r = node_status(box)["resources"].get(resource)
    return (r["allocatable"], r["capacity"]) if r else None


def prop(box, name: str, unit: str = "nvdp.service") -> str:
    return box.systemctl("show", "-p", name, "--value", unit).stdout.strip()


def test_enable_now_returns_after_ready_with_the_status_set_and_the_node_shows_8_gpus(box):
    box.systemctl("enable", "--now", "nvdp.service")
    # Type=notify: `start` returns only once READY=1 arrived, so the status is already there.
    assert prop(box, "ActiveState") == "active"
    assert prop(box, "StatusText").startswith("Serving 8 GPUs as nvidia.com/gpu")
    wait(lambda: capacity(box) == (8, 8), "capacity 8")
    wait(lambda: "registered with kubelet" in prop(box, "StatusText"), "registered status")
    status = box.systemctl("status", "nvdp.service", check=False).stdout
    assert "Status: \"Serving 8 GPUs as nvidia.com/gpu, registered with kubelet\"" in status


def test_reload_with_a_new_resource_name_registers_it_and_drops_the_old(box):
    box.systemctl("enable", "--now", "nvdp.service")
    wait(lambda: capacity(box) == (8, 8), "capacity 8")
    box.write_file("/etc/nvdp/config.toml", 'version = 1\nresource_name = "example.com/gpu"\n')
    box.systemctl("reload", "nvdp.service")
    wait(lambda: capacity(box, "example.com/gpu") == (8, 8), "the new resource")
    wait(lambda: capacity(box) == (0, 8), "the old resource's devices unhealthy (endpoint stopped)")
    wait(lambda: not box.exists("/var/lib/kubelet/device-plugins/nvidia-gpu.sock"), "the old socket removed")
    assert box.exists("/var/lib/kubelet/device-plugins/nvidia-example.com-gpu.sock")
    # systemd 252 returns from `reload` before the daemon handled SIGHUP; READY=1 ends "reloading".
    wait(lambda: prop(box, "ActiveState") == "active", "active again after RELOADING=1 ... READY=1")


def test_reload_with_a_broken_file_fails_and_the_service_keeps_the_old_config(box):
    box.systemctl("enable", "--now", "nvdp.service")
    wait(lambda: capacity(box) == (8, 8), "capacity 8")
    pid = prop(box, "MainPID")
    box.write_file("/etc/nvdp/config.toml", 'version = 1\nresource_name = "gpu"\n')
    result = box.systemctl("reload", "nvdp.service", check=False)
    assert result.returncode != 0
    assert "resource_name" in box.journal("nvdp.service")
    time.sleep(0.5)
    assert prop(box, "ActiveState") == "active" and prop(box, "MainPID") == pid
    assert capacity(box) == (8, 8)


def test_a_stopped_process_is_restarted_by_the_watchdog_and_registers_again(box):
    box.systemctl("enable", "--now", "nvdp.service")
    wait(lambda: capacity(box) == (8, 8), "capacity 8")
    registrations = node_status(box)["registrations"]
    pid = prop(box, "MainPID")
    box.exec(["kill", "-STOP", pid])
    wait(lambda: prop(box, "NRestarts") == "1", "a watchdog restart", timeout=30)
    assert "Watchdog timeout" in box.journal("nvdp.service") or "watchdog" in prop(box, "Result")
    wait(lambda: node_status(box)["registrations"] > registrations, "a new registration")
    wait(lambda: capacity(box) == (8, 8), "capacity 8 again")


def test_restarting_kubelet_restarts_nvdp_through_partof_and_it_registers_again(box):
    box.systemctl("enable", "--now", "nvdp.service")
    wait(lambda: capacity(box) == (8, 8), "capacity 8")
    pid = prop(box, "MainPID")
    box.systemctl("restart", "kubelet.service")
    wait(lambda: prop(box, "MainPID") not in (pid, "0"), "a new nvdp process")
    wait(lambda: exists_status(box) and capacity(box) == (8, 8), "capacity 8 after the kubelet restart")


GARBAGE_CALL = """
import grpc
with grpc.insecure_channel("unix:///var/lib/kubelet/device-plugins/nvidia-gpu.sock") as channel:
    try:
        channel.unary_unary("/v1beta1.DevicePlugin/Allocate")(b"\\xff\\xff\\xff", timeout=5)
    except grpc.RpcError as err:
        print(err.code())
"""


def test_journalctl_priority_warning_shows_the_warning_and_no_info_lines(box):
    box.systemctl("enable", "--now", "nvdp.service")
    wait(lambda: capacity(box) == (8, 8), "capacity 8")
    answer = box.exec(["/usr/lib/nvdp/bin/python", "-c", GARBAGE_CALL]).stdout.strip()
    assert answer == "StatusCode.INVALID_ARGUMENT"
    everything = wait(
        lambda: (out := box.journal("nvdp.service")) and "undecodable request" in out and out, "the warning"
    )
    assert "serving on" in everything, "info lines are in the journal"
    warnings = box.exec(["journalctl", "--no-pager", "-o", "cat", "-u", "nvdp.service", "-p", "warning"]).stdout
    assert "WARNING nvdp_node.adapters.plugin_handlers: 1 undecodable request" in warnings
    assert "INFO" not in warnings and "serving on" not in warnings
    assert "<4>" not in warnings, "journald strips the prefix it parsed"


PROFILES = ROOT / "tests/mock_nvml/profiles"
FAULT_DROPIN = """[Service]
Environment=MOCK_NVML_CONFIG=/etc/nvdp-test/mock-nvml.json
RestartSec=100ms
"""


def test_a_driver_that_stays_missing_past_the_old_start_limit_never_fails_the_unit_and_nvdp_recovers(box):
    # The shipped RestartSec (10 s) made fast by a drop-in; the start limit is the shipped one.
    box.write_file("/etc/nvdp-test/mock-nvml.json", (PROFILES / "driver-not-loaded.json").read_text())
    box.write_file("/etc/systemd/system/nvdp.service.d/zz-fault.conf", FAULT_DROPIN)
    box.systemctl("daemon-reload")
    box.systemctl("start", "--no-block", "nvdp.service")

    def restarted_past_the_old_limit() -> bool:
        restarts = int(prop(box, "NRestarts") or 0)
        assert prop(box, "ActiveState") != "failed", f"failed ({prop(box, 'Result')}) after {restarts} restarts"
        return restarts >= 25

    wait(restarted_past_the_old_limit, "25 restarts (the old limit was 20 starts in 10 minutes)", timeout=60)
    assert box.journal("nvdp.service").count("Main process exited, code=exited, status=69/UNAVAILABLE") >= 25
    box.write_file("/etc/nvdp-test/mock-nvml.json", (PROFILES / "h100-sxm-8.json").read_text())
    wait(lambda: prop(box, "ActiveState") == "active", "active once the driver is back", timeout=30)
    wait(lambda: capacity(box) == (8, 8), "capacity 8")


def exists_status(box) -> bool:
    try:
        node_status(box)
    except Exception:
        return False
    return True


def test_the_unit_verifies_cleanly_and_scores_at_most_2_0(box):
    verify = box.exec(["systemd-analyze", "verify", "--man=no", "nvdp.service"], check=False)
    assert verify.stdout + verify.stderr == "", verify.stdout + verify.stderr
    security = box.exec(["systemd-analyze", "security", "--no-pager", "nvdp.service"], check=False).stdout
    score = float(re.search(r"Overall exposure level for nvdp.service: ([0-9.]+)", security).group(1))
    print(f"\nsystemd-analyze security nvdp.service: {score}")
    assert score <= 2.0
