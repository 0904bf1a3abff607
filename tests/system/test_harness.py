"""Smoke tests of the systemd-nspawn harness itself (tests/system/nspawn.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.system.nspawn import Box, BoxCommandError, Image, ProcRef

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]

# A Type=notify service in plain python3 (no sdnotify): it sleeps, then sends
# STATUS= and READY=1 over $NOTIFY_SOCKET with a raw datagram socket.
NOTIFY_SCRIPT = textwrap.dedent(
    """\
    import os, socket, time
    time.sleep(float(os.environ.get("DELAY", "1.0")))
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\\0" + addr[1:]
    os.makedirs("/run/notify-demo", exist_ok=True)
    with open("/run/notify-demo/ready-sent", "w") as f:
        f.write(str(time.monotonic()))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(b"STATUS=serving 3 fake GPUs\\nREADY=1")
    while True:
        time.sleep(3600)
    """
)
NOTIFY_UNIT = textwrap.dedent(
    """\
    [Unit]
    Description=notify demo for the harness smoke test

    [Service]
    Type=notify
    Environment=DELAY={delay}
    ExecStart=/usr/bin/python3 /usr/local/lib/notify-demo.py
    TimeoutStartSec=30

    [Install]
    WantedBy=multi-user.target
    """
)


def _install_notify_unit(box: Box, delay: float = 1.0) -> None:
    box.write_file("/usr/local/lib/notify-demo.py", NOTIFY_SCRIPT)
    box.write_file("/etc/systemd/system/notify-demo.service", NOTIFY_UNIT.format(delay=delay))
    box.systemctl("daemon-reload")


def _prop(box: Box, unit: str, name: str) -> str:
    return box.systemctl("show", "-p", name, "--value", unit).stdout.strip()


def test_boots_real_systemd_252_in_nspawn(system_box):
    box = system_box()
    assert box.state in ("running", "degraded")
    assert box.exec(["systemd-detect-virt"]).stdout.strip() == "systemd-nspawn"
    assert box.read_file("/proc/1/comm").strip() == "systemd"
    version = box.exec(["systemctl", "--version"]).stdout.splitlines()[0]
    assert version.startswith("systemd 252 "), version
    assert box.exec(["hostname"]).stdout.strip() == box.name
    machine_id = box.read_file("/etc/machine-id").strip()
    assert len(machine_id) == 32 and machine_id != "0" * 32
    # private network by default: only lo
    assert box.exec(["ls", "/sys/class/net"]).stdout.split() == ["lo"]

    # exec: clean environment, env=, input=, cwd=, exit status, check=
    env = box.exec(["env"]).stdout
    assert "NVDP_SYSTEMBOX_HOME" not in env and "PYTEST_CURRENT_TEST" not in env
    assert box.exec("echo $FOO", env={"FOO": "bar"}).stdout == "bar\n"
    assert box.exec(["cat"], input="hello").stdout == "hello"
    assert box.exec(["pwd"], cwd="/etc").stdout == "/etc\n"
    assert box.exec("exit 3", check=False).returncode == 3
    with pytest.raises(BoxCommandError, match="oops"):
        box.exec("echo oops >&2; exit 1")
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        box.exec("sleep 30; echo never", timeout=0.5)
    assert time.monotonic() - t0 < 5
    assert "sleep 30" not in box.exec(["ps", "-eo", "args"]).stdout

    n = 20
    t0 = time.monotonic()
    for _ in range(n):
        box.exec(["true"])
    per_exec = (time.monotonic() - t0) / n
    t0 = time.monotonic()
    box.systemctl("is-active", "-q", "dbus.socket")
    per_systemctl = time.monotonic() - t0
    print(f"[systembox] exec true: {per_exec * 1000:.1f} ms; exec systemctl is-active: {per_systemctl * 1000:.1f} ms")


def test_files_in_and_out(system_box, tmp_path):
    box = system_box()
    box.write_file("/etc/demo/conf.toml", "a = 1\n", mode=0o600)
    assert box.read_file("/etc/demo/conf.toml") == "a = 1\n"
    assert box.exec(["stat", "-c", "%a %U", "/etc/demo/conf.toml"]).stdout.split() == ["600", "root"]
    assert box.read_file("/etc/demo/conf.toml", binary=True) == b"a = 1\n"

    src = tmp_path / "tool.sh"
    src.write_text("#!/bin/sh\necho tool\n")
    src.chmod(0o755)
    box.cp_in(src, "/usr/local/bin/tool")  # a file to a new name
    assert box.exec(["tool"]).stdout == "tool\n"
    box.cp_in(src, "/tmp/")  # into the box's own tmpfs /tmp
    assert box.exec(["/tmp/tool.sh"]).stdout == "tool\n"
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "x.txt").write_text("x\n")
    box.cp_in(tree, "/opt/")
    assert box.read_file("/opt/tree/sub/x.txt") == "x\n"

    out = box.cp_out("/etc/os-release", tmp_path)
    assert out == tmp_path / "os-release" and "bookworm" in out.read_text()
    out = box.cp_out("/opt/tree", tmp_path / "back")
    assert (out / "sub" / "x.txt").read_text() == "x\n"


def test_notify_unit_active_only_after_ready(system_box):
    box = system_box()
    delay = 1.5
    _install_notify_unit(box, delay)
    box.systemctl("start", "--no-block", "notify-demo.service")
    time.sleep(0.3)
    assert _prop(box, "notify-demo.service", "ActiveState") == "activating"
    assert not box.exists("/run/notify-demo/ready-sent")

    t0 = time.monotonic()
    box.systemctl("start", "notify-demo.service")  # waits for the start job, i.e. READY=1
    waited = time.monotonic() - t0
    assert box.exists("/run/notify-demo/ready-sent")
    assert _prop(box, "notify-demo.service", "ActiveState") == "active"
    assert _prop(box, "notify-demo.service", "SubState") == "running"
    assert _prop(box, "notify-demo.service", "StatusText") == "serving 3 fake GPUs"
    assert 'Status: "serving 3 fake GPUs"' in box.systemctl("status", "notify-demo.service").stdout
    started = int(_prop(box, "notify-demo.service", "ExecMainStartTimestampMonotonic"))
    active = int(_prop(box, "notify-demo.service", "ActiveEnterTimestampMonotonic"))
    assert (active - started) / 1e6 >= delay - 0.05
    assert "Started notify-demo.service" in box.journal("notify-demo.service")
    print(f"[systembox] notify unit: active {(active - started) / 1e6:.2f}s after exec (delay {delay}s); "
          f"blocking start returned after {waited:.2f}s")


def test_reboot_keeps_enabled_unit_enabled_and_active(system_box):
    box = system_box()
    _install_notify_unit(box, delay=0.2)
    box.systemctl("enable", "--now", "notify-demo.service")
    box.write_file("/var/lib/demo/persist", "kept\n")
    leader_before = box.leader
    machine_id = box.read_file("/etc/machine-id")

    t0 = time.monotonic()
    box.reboot()
    print(f"[systembox] reboot (stop keep + start): {time.monotonic() - t0:.2f}s")

    assert box.leader != leader_before and leader_before is not None and not leader_before.alive()
    assert box.read_file("/etc/machine-id") == machine_id
    assert box.read_file("/var/lib/demo/persist") == "kept\n"
    assert box.systemctl("is-enabled", "notify-demo.service").stdout.strip() == "enabled"
    assert box.systemctl("is-active", "notify-demo.service").stdout.strip() == "active"
    assert _prop(box, "notify-demo.service", "StatusText") == "serving 3 fake GPUs"
    # /run is a fresh tmpfs after the reboot; the marker comes from the new start
    assert box.exists("/run/notify-demo/ready-sent")

    # `systemctl reboot` inside the box: nspawn exits 133, Box.wait() boots it again
    leader_before = box.leader
    t0 = time.monotonic()
    box.systemctl("reboot", check=False)  # may lose its connection as the box goes down
    assert box.wait() in ("running", "degraded")
    print(f"[systembox] systemctl reboot inside + wait: {time.monotonic() - t0:.2f}s")
    assert box.leader != leader_before
    assert box.systemctl("is-active", "notify-demo.service").stdout.strip() == "active"


def test_binds_and_host_network(system_box, tmp_path):
    (tmp_path / "in.txt").write_text("from the host\n")
    box = system_box(net="host", binds=[(str(tmp_path), "/mnt/host", "ro"), f"{tmp_path}:/mnt/rw"])
    assert box.read_file("/mnt/host/in.txt") == "from the host\n"
    assert box.exec("echo x > /mnt/host/new", check=False).returncode != 0  # read-only
    box.write_file("/mnt/rw/out.txt", "from the box\n")
    assert (tmp_path / "out.txt").read_text() == "from the box\n"
    assert len(box.exec(["ls", "/sys/class/net"]).stdout.split()) > 1  # the host's interfaces


def test_stop_leaves_nothing_behind(system_image):
    box = Box(f"stop-{os.getpid()}", system_image)
    try:
        box.start()
        pids = [box.nspawn, box.leader]
        cgroups = list(box.cgroups)
        assert all(p is not None and p.alive() for p in pids)
        assert cgroups and all(c.is_dir() for c in cgroups)
        assert any(str(box.dir) in line for line in Path("/proc/mounts").read_text().splitlines())
        box_dir = box.dir

        t0 = time.monotonic()
        box.stop()
        print(f"[systembox] stop: {time.monotonic() - t0:.2f}s")

        assert not any(str(box_dir) in line for line in Path("/proc/mounts").read_text().splitlines())
        assert all(not p.alive() for p in pids if p is not None)
        assert all(not c.exists() for c in cgroups)
        assert not box_dir.exists()
        assert not Path(f"/run/systemd/nspawn/propagate/{box.name}").exists()
        box.stop()  # idempotent
    finally:
        box.stop()


def test_two_boxes_at_once(system_box):
    t0 = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda n: system_box(n), [f"twin-a-{os.getpid()}", f"twin-b-{os.getpid()}"])
    print(f"[systembox] two boxes started in parallel: {time.monotonic() - t0:.2f}s")
    assert a.running and b.running
    assert a.leader.pid != b.leader.pid
    assert a.exec(["hostname"]).stdout.strip() == a.name
    assert b.exec(["hostname"]).stdout.strip() == b.name
    assert a.read_file("/etc/machine-id") != b.read_file("/etc/machine-id")
    a.write_file("/root/only-in-a", "a\n")
    assert not b.exists("/root/only-in-a")
    assert set(a.cgroups).isdisjoint(b.cgroups)
    a.stop()
    assert b.running and b.systemctl("is-system-running", check=False).stdout.strip() in ("running", "degraded")


def test_clean_stale_removes_box_of_crashed_run(system_image):
    """A pytest that dies without stopping its box: the next run cleans it up."""
    name = f"crash-{os.getpid()}"
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from tests.system.nspawn import Box, Image
        image = Image({system_image.name!r}, suite={system_image.suite!r}, packages={list(system_image.packages)!r},
                      mirror={system_image.mirror!r}, cache_dir={str(system_image.cache_dir)!r})
        box = Box({name!r}, image).start()
        print(box.nspawn.pid, box.nspawn.starttime, box.leader.pid, box.leader.starttime, flush=True)
        os._exit(0)   # "crash": no atexit, no stop
        """
    )
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    n_pid, n_st, l_pid, l_st = map(int, r.stdout.split()[-4:])
    nspawn, leader = ProcRef(n_pid, n_st), ProcRef(l_pid, l_st)
    assert nspawn.alive() and leader.alive()
    box_dir = system_image.cache_dir / "boxes" / name

    t0 = time.monotonic()
    cleaned = Box.clean_stale(system_image.cache_dir)
    # (a concurrent pytest run's clean_stale may have got there first)
    assert name in cleaned or not box_dir.exists()
    print(f"[systembox] clean_stale of a crashed run's box: {time.monotonic() - t0:.2f}s")
    assert not nspawn.alive() and not leader.alive()
    assert not box_dir.exists()
    assert not any(str(box_dir) in line for line in Path("/proc/mounts").read_text().splitlines())
    assert not list(Path("/sys/fs/cgroup").glob(f"*/nvdp-systembox-{name}"))


def test_image_is_cached_by_spec(system_image, tmp_path):
    t0 = time.monotonic()
    assert system_image.ensure() == system_image.path
    assert time.monotonic() - t0 < 1
    same = Image(system_image.name, packages=list(reversed(system_image.packages)), mirror=system_image.mirror,
                 cache_dir=system_image.cache_dir)
    assert same.spec_hash == system_image.spec_hash and same.ready
    other = Image(system_image.name, extra_packages=["jq"], cache_dir=tmp_path)
    assert other.spec_hash != system_image.spec_hash and not other.ready
    root = system_image.path
    assert (root / "etc/machine-id").read_text() == ""
    assert not (root / "etc/hostname").exists()
    for unit in ("getty@.service", "console-getty.service", "apt-daily.timer", "systemd-firstboot.service"):
        assert os.readlink(root / "etc/systemd/system" / unit) == "/dev/null"
