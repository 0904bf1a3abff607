"""The Debian package, end to end (issue 6).

* The package is built with the one documented command, ``scripts/build-deb``
  (at its fixed path, lintian included), once as the changelog's version and
  once as a higher version for the upgrade.
* Its contents: a venv at /usr/lib/nvdp without pip, setuptools, activate
  scripts, byte-code or any trace of the build path; RECORDs that match the
  shipped files; the conffile, unit, man pages, Depends and Recommends.
* Two builds of one commit are byte-identical.
* All of it for each release scripts/build-deb builds for (bookworm: python3.11,
  systemd 252; trixie: python3.13, systemd 257), each with its own build.
* The life cycle under a real systemd booted in systemd-nspawn from a fresh
  image of the release (no network, so the dependencies must already be in it):
  ``apt-get install ./nvdp_*.deb`` → enabled, active, and the kubelet test peer
  (kubelet.service in the same box) shows capacity 8 from the mock NVML;
  config edit + ``systemctl reload nvdp``; reboot; a python3.X upgrade (the
  file trigger restarts nvdp); upgrade (edits kept, one restart); ``apt remove`` (stopped, config kept); ``apt purge`` (config gone,
  kubelet's checkpoint and another plugin's socket untouched).

Set NVDP_TEST_DEB and NVDP_TEST_DEB_UPGRADE to prebuilt packages to skip the
two builds (the upgrade package must have the higher version); each may name
several packages separated by ``:``, and a release uses the one whose version
suffix names it (~deb12u1, ~deb13u1).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from nvdp_node import __version__
from tests.system.deb_helpers import (
    BUILD_PATH,
    MOCK_DIR,
    PLUGIN_DIR,
    ROOT,
    RELEASE_SUFFIX,
    RELEASES,
    Built,
    Timer,
    apt,
    build_deb,
    build_deb_once,
    capacity,
    changelog_version,
    data_members,
    deb_field,
    depends_names,
    dpkg_status,
    extract,
    journal_cursor,
    journal_since,
    log,
    node_status,
    prebuilt,
    prepare_box,
    prop,
    record_problems,
    wait,
)
from tests.system.nspawn import Image, missing_host_requirements
from tests.system.plugin import SYSTEM_IMAGE_PACKAGES, release_image

# A first run makes each release's build root and image, and builds in fixtures (a minute or two each).
pytestmark = pytest.mark.timeout(900)

GPU = "nvidia.com/gpu"
EDITED = "example.com/gpu"
VENV = "usr/lib/nvdp"
#: Where each release's debhelper puts the units.
UNIT_DIR = {"bookworm": "lib/systemd/system", "trixie": "usr/lib/systemd/system"}


def _need_host() -> None:
    why = missing_host_requirements()
    if why:
        pytest.skip("the .deb tests need a host that can build packages and run systemd-nspawn: " + "; ".join(why))


@pytest.fixture(scope="module", params=list(RELEASES))
def release(request: pytest.FixtureRequest) -> str:
    """Each Debian release scripts/build-deb builds for."""
    return request.param


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory, release: str) -> Built:
    """dist/nvdp_<changelog version>~debNNu1_amd64.deb as scripts/build-deb --release makes it (lintian on)."""
    _need_host()
    built = prebuilt("NVDP_TEST_DEB", release) or build_deb_once(
        tmp_path_factory.mktemp(f"deb-{release}-v1"), release=release)
    log(f"package {built.path.name} {built.sha256}")
    return built


@pytest.fixture(scope="module")
def upgrade_deb(tmp_path_factory: pytest.TempPathFactory, deb: Built, release: str) -> Built:
    """The same source built as a higher version."""
    built = prebuilt("NVDP_TEST_DEB_UPGRADE", release) or build_deb_once(
        tmp_path_factory.mktemp(f"deb-{release}-v2"), release=release,
        version=f"{changelog_version()}+systest1", lint=False,
    )
    assert subprocess.run(["dpkg", "--compare-versions", built.version, "gt", deb.version]).returncode == 0
    return built


@pytest.fixture(scope="module")
def unpacked(deb: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract(deb.path, tmp_path_factory.mktemp("unpacked") / "root")


# ---------------------------------------------------------------- no box needed


def _unescape_roff(text: str) -> str:
    return text.replace("\\-", "-").replace("\\(dq", '"')


def test_the_man_pages_cover_every_command_option_and_config_key():
    from nvdp_node.app.cli import build_parser
    from nvdp_node.config.loader import config_keys, env_var_name

    nvdp8 = _unescape_roff((ROOT / "packaging/man/nvdp.8").read_text())
    toml5 = _unescape_roff((ROOT / "packaging/man/nvdp.toml.5").read_text())

    def walk(parser, path):  # every (command path, option strings) of the argparse tree
        import argparse

        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, [*path, name])
            elif action.option_strings:
                yield path, action.option_strings

    missing = []
    for path, options in walk(build_parser(), []):
        if path and f".SS {' '.join(path)}" not in nvdp8:
            missing.append(f"nvdp.8: no section for `nvdp {' '.join(path)}`")
        for opt in options:
            if opt not in ("-h",) and opt not in nvdp8:
                missing.append(f"nvdp.8: `nvdp {' '.join(path)} {opt}` not described")
    for key in config_keys():
        section, _, name = key.rpartition(".")
        if (section and f".SS [{section}]" not in toml5) or f".B {name}\n" not in toml5:
            missing.append(f"nvdp.toml.5: key {key} not described")
        if key != "version" and env_var_name(key) not in toml5:
            missing.append(f"nvdp.toml.5: {env_var_name(key)} not named")
    assert not missing, "\n".join(missing)


# ---------------------------------------------------------------- the package


@pytest.mark.system
def test_the_package_holds_a_clean_venv_and_its_parts(deb: Built, unpacked: Path, release: str):
    root = unpacked
    py = f"python{RELEASES[release]}"
    site = f"{VENV}/lib/{py}/site-packages"
    assert deb.path.name == f"nvdp_{deb.version}_amd64.deb"
    assert deb.version == changelog_version() + RELEASE_SUFFIX[release]

    # control: Depends names the interpreter the venv links to, Recommends the toolkit
    assert py in depends_names(deb.path)
    assert deb_field(deb.path, "Recommends") == "nvidia-container-toolkit"
    assert deb_field(deb.path, "Architecture") == "amd64"
    assert (root / "DEBIAN/conffiles").read_text().split() == ["/etc/nvdp/config.toml"]
    assert (root / "etc/nvdp/config.toml").read_bytes() == (ROOT / "etc/nvdp/config.toml").read_bytes()

    # the venv: nvdp on PATH, no pip/setuptools/activate/byte-code/direct_url.json
    assert os.readlink(root / "usr/sbin/nvdp") == "../lib/nvdp/bin/nvdp"
    assert (root / VENV / "bin/nvdp").read_text().startswith("#!/usr/lib/nvdp/bin/python\n")
    assert os.readlink(root / VENV / f"bin/{py}") == f"../../../bin/{py}"
    files = [p.relative_to(root) for p in root.rglob("*")]
    forbidden = [str(p) for p in files if p.suffix in (".pyc", ".pyo") or p.name in ("__pycache__", "direct_url.json")]
    forbidden += [
        f"bin/{name}" for name in os.listdir(root / VENV / "bin")
        if name.startswith(("activate", "Activate", "pip", "easy_install", "wheel"))
    ]
    forbidden += [
        name for name in os.listdir(root / site)
        if re.fullmatch(r"(pip|setuptools|_distutils_hack|pkg_resources|wheel)(-.*\.dist-info)?|distutils-precedence\.pth", name)
    ]
    assert not forbidden, forbidden
    assert "command" not in (root / VENV / "pyvenv.cfg").read_text()

    # no build path anywhere (file contents and symlinks)
    grep = subprocess.run(["grep", "-r", "-l", BUILD_PATH, str(root)], capture_output=True, text=True)
    assert grep.returncode == 1 and not grep.stdout, grep.stdout
    assert not [p for p in files if (root / p).is_symlink() and BUILD_PATH in os.readlink(root / p)]

    # every shipped file of the venv is in a RECORD, with the right hash
    assert record_problems(root / site) == []
    assert [p.name for p in (root / site).glob("nvdp-*.dist-info")] == [f"nvdp-{__version__}.dist-info"]

    # modes and owners: root:root, nothing world-writable, no stray executables in lib/
    for m in data_members(deb.path):
        assert (m.uid, m.gid) == (0, 0), m.name
        assert m.issym() or not m.mode & 0o002, m.name
        if m.isfile() and f"/lib/{py}/" in m.name:
            assert not m.mode & 0o111 or m.name.endswith(".so"), m.name

    # unit, man pages, docs
    unit = root / UNIT_DIR[release] / "nvdp.service"
    assert (root / UNIT_DIR[release] / "nvdp-mps@.service").is_file()
    assert unit.read_bytes() == (ROOT / "packaging/systemd/nvdp.service").read_bytes()
    assert (root / "usr/share/man/man8/nvdp.8.gz").is_file()
    assert (root / "usr/share/man/man5/nvdp.toml.5.gz").is_file()
    assert (root / "usr/share/doc/nvdp/README.md").is_file()  # the unit's Documentation= link
    assert (root / "usr/share/doc/nvdp/copyright").read_text().startswith(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
    )

    # maintainer scripts: compile before the start, clean the caches after the stop
    postinst = (root / "DEBIAN/postinst").read_text()
    prerm = (root / "DEBIAN/prerm").read_text()
    assert postinst.index("compileall") < postinst.index("deb-systemd-invoke")
    assert prerm.index("deb-systemd-invoke stop") < prerm.index("__pycache__")
    postrm_code = [l for l in (root / "DEBIAN/postrm").read_text().splitlines() if not l.lstrip().startswith("#")]
    assert "rm -rf /etc/nvdp" in postrm_code[postrm_code.index("    purge)") + 1]
    assert not [l for l in postrm_code if "kubelet" in l], "postrm must not touch the kubelet directory"
    assert [l.strip() for l in postrm_code if "/run/cdi" in l] == ["rm -f /run/cdi/k8s.device-plugin.nvidia.com-gpu.json"]


@pytest.mark.system
def test_two_builds_of_one_commit_are_byte_identical(tmp_path: Path, release: str):
    _need_host()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    commit = head.stdout.strip()
    first = build_deb(tmp_path / "a", release=release, git_ref=commit, lint=False)
    second = build_deb(tmp_path / "b", release=release, git_ref=commit, lint=False)
    log(f"commit {commit[:12]}: {first.sha256} / {second.sha256}")
    assert first.path.name == second.path.name
    assert first.sha256 == second.sha256


# ---------------------------------------------------------------- the life cycle


@pytest.fixture
def deb_box(system_image: Image, system_box, deb: Built, upgrade_deb: Built, release: str):
    """A booted box of the release whose image has every Depends of the package, prepared for it."""
    from tests.mock_nvml.build import build as build_mock_nvml
    from tests.mock_nvml.environment import profile_path

    image = system_image if release == "bookworm" else release_image(release)
    image.ensure()
    probe = system_box(image=image)
    depends = sorted(set(depends_names(deb.path)) | set(depends_names(upgrade_deb.path)))
    present = probe.exec(["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\n", *depends], check=False).stdout
    installed = {line.split()[0] for line in present.splitlines() if line.split()[1:2] == ["ii"]}
    missing = [d for d in depends if d not in installed]
    probe.stop()
    if missing:
        log(f"baking the missing Depends into an image: {missing}")
        image = Image(f"nvdp-deb-{release}", suite=release, packages=SYSTEM_IMAGE_PACKAGES, extra_packages=missing)
        image.ensure()
    box = system_box(image=image)
    prepare_box(box, build_mock_nvml(), profile_path("h100-sxm-8"))
    box.cp_in(deb.path, "/root/")
    box.cp_in(upgrade_deb.path, "/root/")  # /tmp is a tmpfs: gone after the reboot
    return box


def _edit_resource_name(box, name: str) -> str:
    text = box.read_file("/etc/nvdp/config.toml")
    new, n = re.subn(r'^#resource_name = "nvidia.com/gpu"$', f'resource_name = "{name}"', text, flags=re.M)
    assert n == 1, "the shipped config.toml has no commented resource_name line"
    box.write_file("/etc/nvdp/config.toml", new)
    return new


@pytest.mark.system
def test_install_reload_reboot_upgrade_remove_purge(deb_box, deb: Built, upgrade_deb: Built, release: str):
    box = deb_box
    py = f"python{RELEASES[release]}"

    # -- install, offline, from the file ------------------------------------------------
    # kubelet has run on this node before (it made its device-plugin directory); the peer
    # itself needs the package's venv, so it starts after the install, and nvdp waits for it.
    box.exec(["mkdir", "-p", "-m", "0750", PLUGIN_DIR])
    with Timer(f"apt-get install {deb.path.name}"):
        out = apt(box, "install", f"/root/{deb.path.name}")
    assert dpkg_status(box) == "ii"
    assert box.systemctl("is-enabled", "nvdp.service").stdout.strip() == "enabled"
    assert prop(box, "ActiveState") == "active", box.journal("nvdp.service")
    assert box.exec(["sh", "-c", "command -v nvdp"]).stdout.strip() == "/usr/sbin/nvdp"
    assert box.exec(["nvdp", "version"]).stdout.strip() == f"nvdp {__version__}"
    assert box.exists("/etc/systemd/system/kubelet.service.wants/nvdp.service")
    compiled = box.exec(["find", "/usr/lib/nvdp", "-name", "*.pyc"]).stdout.split()
    assert any("/nvdp_node/" in p for p in compiled), "postinst did not compile the venv"
    assert "dpkg: warning" not in out, out
    # ... and nvdp registers with kubelet (the test peer) once it runs
    with Timer("kubelet peer up, capacity 8"):
        box.systemctl("enable", "--now", "kubelet.service")
        wait(lambda: capacity(box, GPU) == (8, 8), "capacity 8 from the mock NVML")
        # PodResources may come up a moment after kubelet.sock: its note clears within a second.
        wait(lambda: prop(box, "StatusText") == f"Serving 8 GPUs as {GPU}, registered with kubelet",
             "the registered status")
    assert box.exists(f"{PLUGIN_DIR}/nvidia-gpu.sock")

    # -- edit the config, reload ------------------------------------------------------------
    pid = prop(box, "MainPID")
    edited = _edit_resource_name(box, EDITED)
    with Timer("systemctl reload nvdp, new resource registered"):
        box.systemctl("reload", "nvdp.service")
        wait(lambda: capacity(box, EDITED) == (8, 8), f"{EDITED} with capacity 8")
        wait(lambda: prop(box, "StatusText").startswith(f"Serving 8 GPUs as {EDITED}"), "the new status")
    assert prop(box, "MainPID") == pid, "reload must not restart the daemon"

    # -- reboot -------------------------------------------------------------------------------
    with Timer("reboot, back and registered"):
        box.reboot()
        wait(lambda: prop(box, "ActiveState") == "active", "nvdp active after the reboot")
        wait(lambda: capacity(box, EDITED) == (8, 8), f"{EDITED} registered after the reboot")
        wait(lambda: "registered with kubelet" in prop(box, "StatusText"), "the registered status")
    assert box.systemctl("is-enabled", "nvdp.service").stdout.strip() == "enabled"

    # -- the release's python3.X upgraded (its file trigger): a running nvdp is restarted ---------
    pid = prop(box, "MainPID")
    with Timer(f"{py} trigger, restarted and registered"):
        box.exec(["dpkg-trigger", "--no-await", f"/usr/bin/{py}"])
        out = box.exec(["dpkg", "--triggers-only", "--pending"]).stdout
        wait(lambda: prop(box, "MainPID") not in (pid, "0") and prop(box, "ActiveState") == "active", "a new nvdp")
        wait(lambda: capacity(box, EDITED) == (8, 8), f"{EDITED} registered after the restart")
    assert "Processing triggers for nvdp" in out, out

    # -- upgrade ---------------------------------------------------------------------------------
    pid = prop(box, "MainPID")
    registrations = node_status(box)["registrations"]
    cursor = journal_cursor(box)
    with Timer(f"apt-get install {upgrade_deb.path.name} (upgrade), registered again"):
        out = apt(box, "install", f"/root/{upgrade_deb.path.name}")
        wait(lambda: node_status(box)["registrations"] > registrations, "a new registration")
        wait(lambda: capacity(box, EDITED) == (8, 8), f"{EDITED} with capacity 8 after the upgrade")
    assert dpkg_status(box) == "ii"
    assert box.exec(["dpkg-query", "-W", "-f=${Version}", "nvdp"]).stdout == upgrade_deb.version
    assert box.read_file("/etc/nvdp/config.toml") == edited, "the upgrade lost the config edit"
    assert not box.exists("/etc/nvdp/config.toml.dpkg-dist") and not box.exists("/etc/nvdp/config.toml.dpkg-old")
    assert prop(box, "ActiveState") == "active"
    assert prop(box, "MainPID") != pid
    assert prop(box, "NRestarts") == "0"
    journal = journal_since(box, cursor)
    log("journal of nvdp.service during the upgrade:\n" + journal)
    # stopped once (old prerm) and started once (new postinst): one restart, no flapping
    assert len(re.findall(r"systemd\[1\]: Stopped nvdp\.service", journal)) == 1, journal
    assert len(re.findall(r"systemd\[1\]: Starting nvdp\.service", journal)) == 1, journal
    assert len(re.findall(r"systemd\[1\]: Started nvdp\.service", journal)) == 1, journal
    assert "unable to delete old directory" not in out, out

    # -- remove ------------------------------------------------------------------------------------
    # another vendor's plugin socket, which nothing of ours may touch (kubelet's checkpoint is there too)
    other = f"{PLUGIN_DIR}/other-vendor.sock"
    box.exec(["python3", "-c", f"import socket; socket.socket(socket.AF_UNIX).bind({other!r})"])
    with Timer("apt-get remove nvdp"):
        out = apt(box, "remove", "nvdp")
    assert dpkg_status(box) == "rc"
    assert prop(box, "ActiveState") == "inactive"
    assert box.read_file("/etc/nvdp/config.toml") == edited, "remove must keep the config"
    assert not box.exists("/usr/lib/nvdp"), box.exec(["find", "/usr/lib/nvdp"], check=False).stdout
    assert not box.exists("/usr/sbin/nvdp")
    assert "unable to delete old directory" not in out, out
    left = box.exec(["ls", "-A", PLUGIN_DIR]).stdout.split()
    assert sorted(left) == ["kubelet.sock", "kubelet_internal_checkpoint", "other-vendor.sock"], left

    # -- purge ------------------------------------------------------------------------------------
    # The kubelet stand-in rewrites its checkpoint as plugins come and go: stop it, so that
    # the directory only changes if the purge changes it.
    box.systemctl("stop", "kubelet.service")
    before = {
        name: box.read_file(f"{PLUGIN_DIR}/{name}", binary=True) if name.endswith("checkpoint") else b"socket"
        for name in box.exec(["ls", "-A", PLUGIN_DIR]).stdout.split()
    }
    assert "kubelet_internal_checkpoint" in before and "other-vendor.sock" in before, before
    # nvdp's CDI spec (kept by remove: pods restarting meanwhile still resolve it) and another vendor's
    box.write_file("/run/cdi/k8s.device-plugin.nvidia.com-gpu.json", "{}\n")
    box.write_file("/run/cdi/nvidia.yaml", "{}\n")
    with Timer("apt-get purge nvdp"):
        apt(box, "purge", "nvdp")
    assert not box.exists("/run/cdi/k8s.device-plugin.nvidia.com-gpu.json"), "purge left nvdp's CDI spec"
    assert box.exists("/run/cdi/nvidia.yaml"), "purge removed another vendor's CDI spec"
    assert dpkg_status(box) == ""
    assert not box.exists("/etc/nvdp")
    assert not box.exists("/etc/systemd/system/multi-user.target.wants/nvdp.service")
    assert not box.exists("/etc/systemd/system/kubelet.service.wants/nvdp.service")
    after = {
        name: box.read_file(f"{PLUGIN_DIR}/{name}", binary=True) if name.endswith("checkpoint") else b"socket"
        for name in box.exec(["ls", "-A", PLUGIN_DIR]).stdout.split()
    }
    assert after == before, f"purge changed the kubelet directory: {sorted(before)} -> {sorted(after)}"
    assert box.exec(["test", "-S", other], check=False).returncode == 0, "purge removed another plugin's socket"
    left = sorted(after)
    log("apt purge left in the kubelet dir: " + shlex.join(left))


@pytest.mark.system
def test_install_on_a_node_where_kubelet_never_ran_starts_nvdp(deb_box, deb: Built):
    box = deb_box
    assert not box.exists(PLUGIN_DIR)
    apt(box, "install", f"/root/{deb.path.name}")
    wait(lambda: prop(box, "ActiveState") == "active", "nvdp active", timeout=10)
    assert box.exists(PLUGIN_DIR)


@pytest.mark.system
def test_the_installed_unit_verifies_cleanly_and_scores_at_most_2_0_on_the_release(deb_box, deb: Built, release: str):
    box = deb_box
    apt(box, "install", f"/root/{deb.path.name}")
    systemd = box.exec(["systemctl", "--version"]).stdout.split()[1]
    verify = box.exec(["systemd-analyze", "verify", "--man=no", "nvdp.service"], check=False)
    assert verify.stdout + verify.stderr == "", f"systemd {systemd}:\n{verify.stdout}{verify.stderr}"
    security = box.exec(["systemd-analyze", "security", "--no-pager", "nvdp.service"], check=False).stdout
    score = float(re.search(r"Overall exposure level for nvdp.service: ([0-9.]+)", security).group(1))
    log(f"{release} (systemd {systemd}): systemd-analyze security nvdp.service: {score}")
    assert score <= 2.0, security
