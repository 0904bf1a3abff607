"""The signed apt repository of scripts/build-repo, used by a node the way fleets do (issue 17).

For each release (bookworm, trixie; its own build of the package), in a box
of that release without network: the repository (a copy of the directory
build-repo wrote, served as ``file:``) is added with a ``signed-by`` keyring,
``apt-get install nvdp`` installs and starts it and it registers with the
kubelet stand-in; a newer version published into the same repository makes
``apt-get upgrade`` restart nvdp once, and it registers again. A repository
whose signed ``InRelease`` / ``Release`` were changed after signing is refused
by apt. The signing key is made for the test in a temporary GnuPG home.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import pytest

from tests.system.deb_helpers import (
    RELEASES,
    Built,
    Timer,
    apt,
    build_deb_once,
    capacity,
    changelog_version,
    journal_cursor,
    journal_since,
    log,
    node_status,
    prebuilt,
    prepare_box,
    prop,
    wait,
)
from tests.system.nspawn import Box, missing_host_requirements
from tests.system.plugin import release_image
from tests.system.repo_helpers import REPO_IN_BOX, add_repo, build_repo, gnupg_home, publish

pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]  # the builds run in fixtures

GPU = "nvidia.com/gpu"


def _need_host() -> None:
    why = missing_host_requirements()
    if why:
        pytest.skip("the apt repository tests need a host that can build packages and run systemd-nspawn: " + "; ".join(why))


@pytest.fixture(scope="module", params=list(RELEASES))
def release(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def gnupghome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with gnupg_home(tmp_path_factory.mktemp("gnupg")) as home:
        yield home


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory, release: str) -> tuple[Built, Built]:
    _need_host()
    v1 = prebuilt("NVDP_TEST_DEB", release) or build_deb_once(
        tmp_path_factory.mktemp(f"repo-{release}-v1"), release=release)
    v2 = prebuilt("NVDP_TEST_DEB_UPGRADE", release) or build_deb_once(
        tmp_path_factory.mktemp(f"repo-{release}-v2"), release=release,
        version=f"{changelog_version()}+systest1", lint=False)
    return v1, v2


@pytest.fixture
def repo_box(system_box, release: str) -> Box:
    from tests.mock_nvml.build import build as build_mock_nvml
    from tests.mock_nvml.environment import profile_path

    image = release_image(release)
    image.ensure()
    box = system_box(image=image)
    prepare_box(box, build_mock_nvml(), profile_path("h100-sxm-8"))
    return box


def test_apt_installs_nvdp_from_the_signed_repository_and_an_upgrade_restarts_it_once(
    repo_box: Box, debs: tuple[Built, Built], gnupghome: Path, tmp_path: Path, release: str
):
    box = repo_box
    v1, v2 = debs
    repo = tmp_path / "apt"
    out = build_repo(repo, gnupghome, v1.path)
    assert f"{release}: nvdp {v1.version}" in out, out
    publish(box, repo)
    add_repo(box, release)

    with Timer(f"{release}: apt-get update + install nvdp from the repository"):
        apt(box, "update")
        apt(box, "install", "nvdp")
        box.systemctl("enable", "--now", "kubelet.service")
        wait(lambda: capacity(box, GPU) == (8, 8), "capacity 8 from the mock NVML")
    assert box.exec(["dpkg-query", "-W", "-f=${Version}", "nvdp"]).stdout == v1.version
    assert prop(box, "ActiveState") == "active"

    # a newer version published into the same repository
    build_repo(repo, gnupghome, v2.path)
    publish(box, repo)
    pid = prop(box, "MainPID")
    registrations = node_status(box)["registrations"]
    cursor = journal_cursor(box)
    with Timer(f"{release}: apt-get update + upgrade, registered again"):
        apt(box, "update")
        out = apt(box, "upgrade")
        wait(lambda: node_status(box)["registrations"] > registrations, "a new registration")
        wait(lambda: capacity(box, GPU) == (8, 8), "capacity 8 after the upgrade")
    assert "1 upgraded" in out, out
    assert box.exec(["dpkg-query", "-W", "-f=${Version}", "nvdp"]).stdout == v2.version
    assert prop(box, "MainPID") != pid
    assert prop(box, "NRestarts") == "0"
    journal = journal_since(box, cursor)
    log("journal of nvdp.service during the upgrade:\n" + journal)
    assert len(re.findall(r"systemd\[1\]: Stopped nvdp\.service", journal)) == 1, journal
    assert len(re.findall(r"systemd\[1\]: Started nvdp\.service", journal)) == 1, journal


def test_apt_refuses_a_repository_whose_release_file_was_changed_after_signing(
    repo_box: Box, debs: tuple[Built, Built], gnupghome: Path, tmp_path: Path, release: str
):
    box = repo_box
    repo = tmp_path / "apt"
    build_repo(repo, gnupghome, debs[0].path)
    dist = repo / "dists" / release
    for name in ("InRelease", "Release"):
        text = (dist / name).read_text()
        assert "Label: nvdp\n" in text, text
        (dist / name).write_text(text.replace("Label: nvdp\n", "Label: nvdq\n"))
    publish(box, repo)
    add_repo(box, release)

    r = box.exec(["apt-get", "update"], check=False)
    out = r.stdout + r.stderr
    log(f"apt-get update of the tampered repository ({r.returncode}):\n{out}")
    assert r.returncode != 0, out
    # bookworm's apt checks with gpgv (BADSIG), trixie's with sqv ("Message has been manipulated")
    assert "BADSIG" in out or "has been manipulated" in out, out
    assert f"The repository 'file:{REPO_IN_BOX} {release} InRelease' is not signed." in out, out
    r = box.exec(["apt-get", "install", "-y", "nvdp"], check=False)
    assert r.returncode != 0 and "Unable to locate package nvdp" in r.stdout + r.stderr, r.stdout + r.stderr
