"""A Debian 12 node with nvdp from the apt repository, dist-upgraded to Debian 13 (issue 17).

A bookworm box (with network: the upgrade downloads trixie from
deb.debian.org) installs nvdp from the signed repository of
scripts/build-repo, which holds the bookworm and the trixie build; the config
is edited and nvdp registers. Then both sources are switched to trixie, and
``apt-get dist-upgrade`` plus a reboot end with the trixie build installed
(python3.13, systemd 257), the edit kept and the service registered again.

Slow (several minutes, about 150 packages downloaded): marked ``slow``, so it
runs only with NVDP_TEST_SLOW=1 (see tests/system/README.md). Its time is
recorded in docs/install.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.system.deb_helpers import Timer, apt, build_deb_once, capacity, log, prebuilt, prepare_box, prop, wait
from tests.system.nspawn import Box, missing_host_requirements
from tests.system.plugin import release_image
from tests.system.repo_helpers import add_repo, build_repo, gnupg_home, publish

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.timeout(2400)]

EDITED = "example.com/gpu"


def test_a_bookworm_node_dist_upgraded_to_trixie_ends_with_the_trixie_build_registered(
    system_box, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
):
    from tests.mock_nvml.build import build as build_mock_nvml
    from tests.mock_nvml.environment import profile_path

    why = missing_host_requirements()
    if why:
        pytest.skip("needs a host that can build packages and run systemd-nspawn: " + "; ".join(why))
    old = prebuilt("NVDP_TEST_DEB", "bookworm") or build_deb_once(
        tmp_path_factory.mktemp("dist-bookworm"), release="bookworm")
    new = prebuilt("NVDP_TEST_DEB", "trixie") or build_deb_once(
        tmp_path_factory.mktemp("dist-trixie"), release="trixie")
    repo = tmp_path / "apt"
    with gnupg_home(tmp_path) as gnupghome:
        build_repo(repo, gnupghome, old.path, new.path)

    image = release_image("bookworm")
    image.ensure()
    box: Box = system_box(image=image, net="host")
    prepare_box(box, build_mock_nvml(), profile_path("h100-sxm-8"))
    publish(box, repo)
    add_repo(box, "bookworm", only=False)  # next to Debian's own bookworm source
    with Timer("bookworm: install nvdp from the repository, registered"):
        apt(box, "update")
        apt(box, "install", "nvdp")
        box.systemctl("enable", "--now", "kubelet.service")
        wait(lambda: "registered with kubelet" in prop(box, "StatusText"), "nvdp registered on bookworm", timeout=60)
    text = box.read_file("/etc/nvdp/config.toml")
    edited, n = re.subn(r'^#resource_name = "nvidia.com/gpu"$', f'resource_name = "{EDITED}"', text, flags=re.M)
    assert n == 1
    box.write_file("/etc/nvdp/config.toml", edited)
    box.systemctl("reload", "nvdp.service")
    wait(lambda: capacity(box, EDITED) == (8, 8), f"{EDITED} registered on bookworm")

    # -- the release upgrade, the way Debian's release notes describe it ---------------------------
    box.exec("sed -i 's/bookworm/trixie/g' /etc/apt/sources.list /etc/apt/sources.list.d/nvdp.sources")
    with Timer("dist-upgrade bookworm -> trixie (apt-get update, dist-upgrade)") as t:
        apt(box, "update", timeout=600)
        out = apt(box, "dist-upgrade", timeout=1800)
    log(f"dist-upgrade took {t.seconds:.0f}s; its last lines:\n" + "\n".join(out.splitlines()[-15:]))
    with Timer("reboot into trixie, nvdp registered"):
        box.reboot(timeout=180)
        wait(lambda: prop(box, "ActiveState") == "active", "nvdp active after the reboot", timeout=60)
        wait(lambda: capacity(box, EDITED) == (8, 8), f"{EDITED} registered on trixie", timeout=60)
        wait(lambda: "registered with kubelet" in prop(box, "StatusText"), "the registered status", timeout=60)

    assert box.exec(["sh", "-c", ". /etc/os-release; echo $VERSION_CODENAME"]).stdout.strip() == "trixie"
    assert box.exec(["systemctl", "--version"]).stdout.split()[1] == "257"
    assert box.exec(["dpkg-query", "-W", "-f=${Version}", "nvdp"]).stdout == new.version
    assert box.read_file("/etc/nvdp/config.toml") == edited, "the dist-upgrade lost the config edit"
    assert box.exists("/usr/lib/nvdp/bin/python3.13")
    assert box.systemctl("is-enabled", "nvdp.service").stdout.strip() == "enabled"
