"""Helpers for the apt repository tests (test_apt_repo.py, test_dist_upgrade.py).

scripts/build-repo on the host, the repository copied into a box as a web
server would serve it, and the node-side steps docs/install.md gives an
operator (keyring + a deb822 source with Signed-By), with file: for https:.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

from tests.system.deb_helpers import ROOT
from tests.system.nspawn import Box

BUILD_REPO = ROOT / "scripts/build-repo"
REPO_IN_BOX = "/srv/nvdp-apt"
KEYRING = "/usr/share/keyrings/nvdp-archive-keyring.gpg"


@contextlib.contextmanager
def gnupg_home(parent: Path) -> Iterator[Path]:
    """A GnuPG home for a test key (made by build-repo --make-test-key); its agent is stopped after."""
    home = parent / "gnupg"
    try:
        yield home
    finally:
        if home.exists():
            subprocess.run(["gpgconf", "--kill", "gpg-agent"], env={**os.environ, "GNUPGHOME": str(home)},
                           capture_output=True, check=False)


def build_repo(out: Path, gnupghome: Path, *debs: Path) -> str:
    """scripts/build-repo into OUT (the test key is made on the first call); returns its messages."""
    cmd = [str(BUILD_REPO), "--out", str(out), "--gnupghome", str(gnupghome)]
    if not gnupghome.exists():
        cmd.append("--make-test-key")
    cmd += [str(d) for d in debs]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stderr


def publish(box: Box, repo: Path) -> None:
    """A fresh copy of the repository in the box, without reprepro's own conf/ and db/."""
    staging = f"{REPO_IN_BOX}.new"
    box.exec(["rm", "-rf", REPO_IN_BOX, staging])
    box.cp_in(repo, staging)  # a directory lands inside the target
    box.exec(["mv", f"{staging}/{repo.name}", REPO_IN_BOX])
    box.exec(["rm", "-rf", staging, f"{REPO_IN_BOX}/conf", f"{REPO_IN_BOX}/db"])


def add_repo(box: Box, suite: str, *, only: bool = True) -> None:
    """The keyring and the source, as docs/install.md says; ``only``: drop Debian's sources (no network)."""
    if only:
        box.exec("rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*")
    box.exec(["install", "-m", "0644", f"{REPO_IN_BOX}/nvdp-archive-keyring.gpg", KEYRING])
    box.write_file(
        "/etc/apt/sources.list.d/nvdp.sources",
        f"Types: deb\nURIs: file:{REPO_IN_BOX}\nSuites: {suite}\nComponents: main\nSigned-By: {KEYRING}\n",
    )
