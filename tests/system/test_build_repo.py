"""scripts/build-repo's refusals, on the host (no box): quick, and they need only reprepro and gpg.

The repository itself, signed and used by apt, is tested in test_apt_repo.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.system.repo_helpers import BUILD_REPO, gnupg_home

pytestmark = pytest.mark.skipif(
    not (shutil.which("reprepro") and shutil.which("gpg") and shutil.which("dpkg-deb")),
    reason="needs reprepro, gpg and dpkg-deb (scripts/bootstrap installs them)",
)


def _deb(tmp_path: Path, version: str) -> Path:
    """A minimal nvdp package of VERSION (no files), made with dpkg-deb."""
    tree = tmp_path / f"pkg-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: nvdp\nVersion: {version}\nSection: admin\nPriority: optional\nArchitecture: amd64\n"
        "Maintainer: t <t@invalid>\nDescription: test\n"
    )
    out = tmp_path / f"nvdp_{version}_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(out)], check=True, capture_output=True)
    return out


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BUILD_REPO), *args], capture_output=True, text=True)


def test_build_repo_refuses_a_package_without_a_release_suffix(tmp_path: Path):
    with gnupg_home(tmp_path) as home:
        r = _run("--out", str(tmp_path / "apt"), "--gnupghome", str(home), "--make-test-key",
                 str(_deb(tmp_path, "0.1.0-1")))
    assert r.returncode != 0
    assert "version 0.1.0-1 has no release suffix (~deb12u1 or ~deb13u1)" in r.stderr, r.stderr
    assert not list((tmp_path / "apt").glob("pool/**/*.deb"))


def test_make_test_key_refuses_a_gnupg_home_that_is_not_empty(tmp_path: Path):
    home = tmp_path / "gnupg"
    home.mkdir()
    (home / "pubring.kbx").write_bytes(b"someone's keyring")
    r = _run("--out", str(tmp_path / "apt"), "--gnupghome", str(home), "--make-test-key",
             str(_deb(tmp_path, "0.1.0-1~deb12u1")))
    assert r.returncode != 0
    assert "is not empty: --make-test-key only writes into a new directory" in r.stderr, r.stderr
    assert (home / "pubring.kbx").read_bytes() == b"someone's keyring"


def test_build_repo_puts_each_package_into_the_dist_of_its_suffix(tmp_path: Path):
    debs = [_deb(tmp_path, "0.1.0-1~deb12u1"), _deb(tmp_path, "0.1.0-1~deb13u1")]
    with gnupg_home(tmp_path) as home:
        r = _run("--out", str(tmp_path / "apt"), "--gnupghome", str(home), "--make-test-key", *map(str, debs))
    assert r.returncode == 0, r.stderr
    for dist, version in (("bookworm", "0.1.0-1~deb12u1"), ("trixie", "0.1.0-1~deb13u1")):
        packages = (tmp_path / "apt/dists" / dist / "main/binary-amd64/Packages").read_text()
        assert f"Package: nvdp\nVersion: {version}\n" in packages, packages
        assert (tmp_path / "apt/dists" / dist / "InRelease").read_text().startswith("-----BEGIN PGP SIGNED MESSAGE-----")
    assert (tmp_path / "apt/nvdp-archive-keyring.gpg").stat().st_size > 0
