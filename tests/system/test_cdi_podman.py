"""nvdp's CDI spec consumed by a real CDI implementation: podman 4.3 (Debian bookworm) in systemd-nspawn.

The repository (with its .venv) is bind-mounted read-only at the same path in
the box, as in test_mps.py. A fake driver install (tests/driver_tree.py:
real ELF libraries, an ld cache by ldconfig) of the mock NVML's driver
version is copied to /opt/nvidia-driver, its /dev/nvidia* are real character
nodes (1:3, /dev/null's numbers: the box may create and open those), and
``nvdp cdi generate`` writes the spec into /etc/cdi over the mock NVML. A
container image is made locally (``podman import`` of a busybox-static
rootfs; no registry is reachable), and ``podman run --device
k8s.device-plugin.nvidia.com/gpu=<uuid>`` must show the injected device node
and the driver's libraries, binaries and firmware. How podman runs inside
nspawn here is in tests/system/README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.system.nspawn import Image
from tests.system.plugin import SYSTEM_IMAGE_PACKAGES

ROOT = Path(__file__).resolve().parents[2]
PY = "/usr/lib/nvdp/bin/python"
DRIVER = "/opt/nvidia-driver"
MOCK = "/opt/mock-nvml"
PODMAN = ["podman"]
RUN = [*PODMAN, "run", "--rm", "--network=none", "--cgroups=disabled"]
# podman inside systemd-nspawn (see tests/system/README.md): vfs storage (no overlay on the box's
# overlayfs root), cgroupfs (no systemd user session / D-Bus scope), events in a file (no journal socket).
STORAGE_CONF = '[storage]\ndriver = "vfs"\nrunroot = "/run/containers/storage"\ngraphroot = "/var/lib/containers/storage"\n'
CONTAINERS_CONF = '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'


pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def podman_image():
    image = Image("nvdp-podman", packages=SYSTEM_IMAGE_PACKAGES, extra_packages=("podman", "busybox-static"))
    image.ensure()
    return image


@pytest.fixture
def box(system_box, podman_image, tmp_path):
    from tests.driver_tree import make_driver_tree
    from tests.mock_nvml.build import build as build_mock_nvml
    from tests.mock_nvml.environment import load_profile

    profile = load_profile("h100-sxm-8")
    b = system_box(image=podman_image, binds=[(str(ROOT), str(ROOT), "ro")])
    b.exec(["ln", "-sfn", f"{ROOT}/.venv", "/usr/lib/nvdp"])
    tree = make_driver_tree(tmp_path / Path(DRIVER).name, profile["driver_version"], tmp_path / "trees")
    b.cp_in(tree, str(Path(DRIVER).parent))  # a directory lands inside the destination
    nodes = [f"nvidia{g['minor_number']}" for g in profile["gpus"]] + ["nvidiactl", "nvidia-uvm"]
    b.exec(["sh", "-c", f"mkdir -p {DRIVER}/dev && cd {DRIVER}/dev && rm -f nvidia* && "
            + " && ".join(f"mknod -m 0666 {n} c 1 3" for n in nodes)])
    b.exec(["mkdir", "-p", MOCK, "/etc/nvdp", "/etc/cdi"])
    b.cp_in(build_mock_nvml() / "libnvidia-ml.so.1", f"{MOCK}/libnvidia-ml.so.1")
    b.write_file(f"{MOCK}/node.json", json.dumps(profile))
    b.write_file("/etc/nvdp/config.toml", f'[plugin]\ndevice_list_strategy = "cdi-cri"\n'
                                          f'nvidia_driver_root = "{DRIVER}"\n')
    b.write_file("/etc/containers/storage.conf", STORAGE_CONF)
    b.write_file("/etc/containers/containers.conf", CONTAINERS_CONF)
    # a rootfs of one static busybox, imported as a local image
    b.exec(["sh", "-c", "mkdir -p /tmp/rootfs/bin && cp /bin/busybox /tmp/rootfs/bin/ && "
            "ln -s busybox /tmp/rootfs/bin/sh && tar -C /tmp/rootfs -c . | "
            + " ".join(PODMAN) + " import - localhost/busybox"])
    b.profile = profile
    return b


def generate(box) -> dict:
    env = {"LD_LIBRARY_PATH": MOCK, "MOCK_NVML_CONFIG": f"{MOCK}/node.json", "PYTHONPATH": str(ROOT)}
    box.exec([PY, "-m", "nvdp_node", "cdi", "generate", "--output", "/etc/cdi", "--dev-root", f"{DRIVER}/dev",
              "--sysfs-root", "/nonexistent"], env=env)
    return json.loads(box.read_file("/etc/cdi/k8s.device-plugin.nvidia.com-gpu.json"))


def test_podman_injects_the_gpu_node_and_the_driver_files_from_nvdps_spec(box):
    spec = generate(box)
    gpu = box.profile["gpus"][3]
    uuid, version = gpu["uuid"], box.profile["driver_version"]
    assert uuid in {d["name"] for d in spec["devices"]}
    script = (f"ls -l /dev/nvidia{gpu['minor_number']} /dev/nvidiactl; ls /dev; "
              f"ls /usr/lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu/vdpau /usr/bin /lib/firmware/nvidia/{version}; "
              "echo NVIDIA_VISIBLE_DEVICES=$NVIDIA_VISIBLE_DEVICES")
    done = box.exec([*RUN, "--device", f"k8s.device-plugin.nvidia.com/gpu={uuid}", "localhost/busybox",
                     "/bin/sh", "-c", script], timeout=180)
    out = done.stdout
    print(out, done.stderr)
    node = next(line for line in out.splitlines() if line.endswith(f"/dev/nvidia{gpu['minor_number']}"))
    assert node.startswith("c") and "1,   3" in node  # a character device with the host node's numbers
    for name in (f"libcuda.so.{version}", f"libnvidia-ml.so.{version}", f"libvdpau_nvidia.so.{version}",
                 "nvidia-smi", "nvidia-cuda-mps-control", "gsp_ga10x.bin"):
        assert name in out.split(), name
    other = box.profile["gpus"][4]["minor_number"]
    assert f"nvidia{other}" not in out.split(), "only the requested GPU is injected"
    assert "NVIDIA_VISIBLE_DEVICES=void" in out


def test_podman_refuses_a_gpu_name_the_spec_does_not_declare(box):
    generate(box)
    done = box.exec([*RUN, "--device", "k8s.device-plugin.nvidia.com/gpu=GPU-not-on-this-node",
                     "localhost/busybox", "/bin/sh", "-c", "true"], check=False, timeout=180)
    assert done.returncode != 0
    assert "GPU-not-on-this-node" in done.stderr, done.stderr


@pytest.mark.parametrize(("status", "runs"), [(0, True), (3, False)], ids=["hook succeeds", "hook fails"])
def test_podman_runs_the_hooks_of_the_spec_when_the_hook_exists(box, status, runs):
    # A stand-in for the toolkit's nvidia-cdi-hook: its exit status shows that the runtime ran it.
    box.write_file("/usr/bin/nvidia-cdi-hook", f"#!/bin/sh\nexit {status}\n", mode=0o755)
    spec = generate(box)
    assert [h["args"][1] for h in spec["containerEdits"]["hooks"]] == ["create-symlinks", "update-ldcache"]
    uuid = box.profile["gpus"][0]["uuid"]
    done = box.exec([*RUN, "--device", f"k8s.device-plugin.nvidia.com/gpu={uuid}", "localhost/busybox",
                     "/bin/sh", "-c", "true"], check=False, timeout=180)
    assert (done.returncode == 0) is runs, done.stderr
    assert runs or "nvidia-cdi-hook" in done.stderr, done.stderr


def test_nvdp_service_writes_the_spec_in_its_sandbox_and_podman_injects_from_it(box):
    # The shipped unit (ProtectSystem=strict, UMask=0077) with the mock NVML: /run/cdi must be writable
    # to it, and the spec readable by everyone.
    box.write_file("/lib/systemd/system/nvdp.service", (ROOT / "packaging/systemd/nvdp.service").read_text())
    box.write_file("/etc/systemd/system/nvdp.service.d/mock-nvml.conf",
                   f"[Service]\nEnvironment=LD_LIBRARY_PATH={MOCK} MOCK_NVML_CONFIG={MOCK}/node.json\n"
                   # /usr/lib/nvdp links to the checkout's .venv, which PrivateTmp= hides when the
                   # checkout is under /tmp (as CI's clone may be)
                   f"BindReadOnlyPaths={ROOT}\n")
    box.systemctl("daemon-reload")
    started = box.systemctl("start", "nvdp.service", check=False)  # Type=notify: returns once serving
    assert started.returncode == 0, "nvdp.service did not start:\n" + box.exec(
        ["journalctl", "--no-pager", "-o", "cat", "-u", "nvdp.service"], check=False).stdout[-4000:]
    spec_path = "/run/cdi/k8s.device-plugin.nvidia.com-gpu.json"
    modes = box.exec(["stat", "-c", "%a %U", "/run/cdi", spec_path]).stdout.split()
    assert modes == ["755", "root", "644", "root"], box.journal("nvdp.service")
    uuid = box.profile["gpus"][5]["uuid"]
    assert uuid in {d["name"] for d in json.loads(box.read_file(spec_path))["devices"]}
    out = box.exec([*RUN, "--device", f"k8s.device-plugin.nvidia.com/gpu={uuid}", "localhost/busybox",
                    "/bin/sh", "-c", "ls /dev /usr/bin"], timeout=180).stdout.split()
    assert f"nvidia{box.profile['gpus'][5]['minor_number']}" in out and "nvidia-smi" in out
