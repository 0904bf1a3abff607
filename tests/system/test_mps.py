"""nvdp-mps@.service under a real systemd 252 (systemd-nspawn), driven by MpsControl.

The repository (with its .venv) is bind-mounted read-only at the same path in
the box; /usr/lib/nvdp points at the venv. The shipped units go where the
.deb puts them (/lib/systemd/system), and the stand-ins of tests/mps_control/
are installed as /usr/bin/nvidia-cuda-mps-control and /usr/bin/nvidia-smi.
The adapter runs inside the box, as nvdp would.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PY = "/usr/lib/nvdp/bin/python"
GPU = "nvidia.com/gpu"
UNIT = "nvdp-mps@nvidia.com-gpu.service"
LOG = f"/run/nvidia/mps/{GPU}/log/control.log"
SHM = "/run/nvidia/mps/shm"

pytestmark = pytest.mark.system

# The adapter's driver in the box: DRIVER_PATH <root> (start|stop|probe) <resource> [replicas gpus];
# prints one JSON line. A file, not -c: a unit's ExecStart= runs it too.
DRIVER_PATH = "/usr/local/lib/nvdp-test/mps_driver.py"
DRIVER = """
import json, sys
from pathlib import Path
from nvdp_node.adapters.mps import MpsControl
from nvdp_node.domain.devices import Gpu
from nvdp_node.domain.errors import TemporaryError
root, action, resource = sys.argv[1:4]
control = MpsControl(root=Path(root))
out = {}
try:
    if action == "start":
        replicas, n = int(sys.argv[4]), int(sys.argv[5])
        gpus = [Gpu(index=i, uuid=f"GPU-{i:08x}-1111-2222-3333-444444444444", name="NVIDIA H100 80GB HBM3",
                    minor=i, pci_bus_id="", memory_total=85520809984) for i in range(n)]
        control.start(resource, replicas, gpus)
    elif action == "stop":
        control.stop(resource)
except TemporaryError as err:
    out["error"] = str(err)
out["probe"] = control.probe(resource)
print(json.dumps(out))
"""


def adapter(box, action: str, resource: str = GPU, *args: object, root: str = "/run/nvidia/mps") -> dict:
    done = box.exec([PY, DRIVER_PATH, root, action, resource, *map(str, args)], env={"PYTHONPATH": str(ROOT)})
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def box(system_box):
    b = system_box(binds=[(str(ROOT), str(ROOT), "ro")])
    b.exec(["ln", "-sfn", f"{ROOT}/.venv", "/usr/lib/nvdp"])
    for unit in ("nvdp-mps@.service", "run-nvidia-mps-shm.mount"):
        b.write_file(f"/lib/systemd/system/{unit}", (ROOT / "packaging/systemd" / unit).read_text())
    for tool in ("nvidia-cuda-mps-control", "nvidia-smi"):
        b.exec(["install", "-m", "0755", f"{ROOT}/tests/mps_control/{tool}", f"/usr/bin/{tool}"])
    b.write_file(DRIVER_PATH, DRIVER)
    b.systemctl("daemon-reload")
    return b


def prop(box, name: str, unit: str = UNIT) -> str:
    return box.systemctl("show", "-p", name, "--value", unit).stdout.strip()


def commands(box) -> list[str]:
    return [line.split("command: ", 1)[1] for line in box.read_file(LOG).splitlines() if "command: " in line]


def wait(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_units_verify_cleanly_and_the_daemon_scores_at_most_2_0(box):
    verify = box.exec(["systemd-analyze", "verify", "--man=no", UNIT, "run-nvidia-mps-shm.mount"], check=False)
    assert verify.stdout + verify.stderr == "", verify.stdout + verify.stderr
    security = box.exec(["systemd-analyze", "security", "--no-pager", UNIT], check=False).stdout
    score = float(re.search(rf"Overall exposure level for {re.escape(UNIT)}: ([0-9.]+)", security).group(1))
    print(f"\nsystemd-analyze security {UNIT}: {score}")
    assert score <= 2.0


def test_systemd_runs_the_daemon_while_the_adapter_keeps_it_started_and_it_answers_until_stopped(box):
    assert adapter(box, "probe")["probe"].endswith(f"no control pipe in /run/nvidia/mps/{GPU}/pipe")
    assert adapter(box, "start", GPU, 4, 2) == {"probe": None}
    assert prop(box, "ActiveState") == "active" and prop(box, "SubState") == "running"
    assert prop(box, "MainPID") != "0"
    stopped = adapter(box, "stop")
    assert stopped["probe"].startswith(f"MPS control daemon of {GPU} not running")
    assert prop(box, "ActiveState") == "inactive"
    assert not box.exists("/run/nvdp/mps/nvidia.com-gpu.env")


def test_the_daemon_has_upstreams_limits_and_exclusive_gpus_before_the_unit_is_active(box):
    adapter(box, "start", GPU, 3, 2)
    # H100 80GB: 85520809984 bytes / 3 = 27186 MiB; 100 / 3 = 33.
    assert commands(box)[:3] == [
        "set_default_device_pinned_mem_limit 0 27186M",
        "set_default_device_pinned_mem_limit 1 27186M",
        "set_default_active_thread_percentage 33",
    ]
    journal = box.journal(UNIT)
    assert journal.index("Set compute mode to EXCLUSIVE_PROCESS for GPU GPU-00000001") < journal.index("Started ")
    adapter(box, "stop")
    assert "Set compute mode to DEFAULT for GPU GPU-00000000" in box.journal(UNIT)


def test_the_daemon_and_its_clients_share_the_64_mib_tmpfs_as_dev_shm(box):
    adapter(box, "start", GPU, 4, 1)
    mount = box.exec(["findmnt", "-n", "-o", "FSTYPE,OPTIONS", SHM]).stdout.split()
    assert mount[0] == "tmpfs" and "size=65536k" in mount[1] and "noexec" in mount[1]
    pid = prop(box, "MainPID")
    ids = box.exec(["stat", "-L", "-c", "%d:%i", f"/proc/{pid}/root/dev/shm", SHM, "/dev/shm"]).stdout.split()
    assert ids[0] == ids[1] != ids[2], "the daemon's /dev/shm is <root>/shm, not the host's"


def test_the_daemon_cannot_write_outside_the_mps_root(box):
    adapter(box, "start", GPU, 4, 1)
    pid = prop(box, "MainPID")
    etc = box.exec(["nsenter", "-t", pid, "-m", "touch", "/etc/nvdp-mps-was-here"], check=False)
    assert etc.returncode != 0 and "Read-only file system" in etc.stderr
    ours = box.exec(["nsenter", "-t", pid, "-m", "touch", f"/run/nvidia/mps/{GPU}/log/probe"], check=False)
    assert ours.returncode == 0, ours.stderr


def test_a_killed_daemon_is_restarted_by_systemd_and_answers_again(box):
    adapter(box, "start", GPU, 4, 1)
    pid = prop(box, "MainPID")
    box.exec(["kill", "-KILL", pid])
    wait(lambda: prop(box, "NRestarts") == "1" and prop(box, "ActiveState") == "active", "a restart (RestartSec=5s)")
    assert prop(box, "MainPID") not in (pid, "0")
    assert adapter(box, "probe")["probe"] is None
    assert commands(box).count("set_default_active_thread_percentage 25") == 2, "the limits are set again"


def test_a_root_the_unit_is_not_set_up_for_is_refused_with_the_units_root(box):
    result = adapter(box, "start", GPU, 4, 1, root="/srv/mps")
    assert result["error"].startswith(f"sharing.mps.root is /srv/mps but {UNIT} is set up for /run/nvidia/mps: ")
    assert not box.exists("/srv/mps"), "nothing was created under the refused root"


def test_a_drop_in_for_another_root_runs_the_daemon_there(box):
    box.write_file(
        "/etc/systemd/system/nvdp-mps@.service.d/root.conf",
        "[Unit]\nRequiresMountsFor=/srv/mps/shm\n"
        "[Service]\nEnvironment=NVDP_MPS_UNIT_ROOT=/srv/mps\n"
        "ReadWritePaths=\nReadWritePaths=/srv/mps\nBindPaths=\nBindPaths=/srv/mps/shm:/dev/shm\n",
    )
    box.exec(["mkdir", "-p", "/srv/mps/shm"])
    box.systemctl("daemon-reload")
    assert adapter(box, "start", GPU, 4, 1, root="/srv/mps") == {"probe": None}
    pid = prop(box, "MainPID")
    ids = box.exec(["stat", "-L", "-c", "%d:%i", f"/proc/{pid}/root/dev/shm", "/srv/mps/shm"]).stdout.split()
    assert ids[0] == ids[1]


def test_the_adapter_works_from_inside_nvdp_services_sandbox_given_a_writable_env_dir(box):
    """What nvdp.service needs for MPS: its own hardening as shipped, plus /run/nvdp/mps writable."""
    service = (ROOT / "packaging/systemd/nvdp.service").read_text().split("[Service]", 1)[1].split("[Install]")[0]
    sandbox = [
        line for line in service.splitlines()
        if re.match(r"(Device|Protect|ReadWritePaths|Private|UMask|NoNewPriv|Capability|Ambient|Restrict|Lock|Keyring"
                    r"|RemoveIPC|MemoryDeny|IPAddress|SystemCall)", line)
    ]
    box.write_file(
        "/etc/systemd/system/mps-client.service",
        "[Service]\nType=oneshot\n"
        f"BindReadOnlyPaths={ROOT}\nEnvironment=PYTHONPATH={ROOT}\n"
        "RuntimeDirectory=nvdp/mps\nRuntimeDirectoryPreserve=yes\n"
        f"ExecStart={PY} {DRIVER_PATH} /run/nvidia/mps start {GPU} 4 1\n"
        + "\n".join(sandbox) + "\n",
    )
    box.systemctl("daemon-reload")
    box.systemctl("start", "mps-client.service")
    out = box.exec(["journalctl", "--no-pager", "-o", "cat", "-u", "mps-client.service"]).stdout
    assert '{"probe": null}' in out, out
    assert prop(box, "ActiveState") == "active"
