"""socket_identity: which socket is at a path, by lstat; chmod and extra links keep it, a new bind does not."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from nvdp_node.adapters.fs_identity import socket_identity


def bind(path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))


def test_a_chmod_is_not_a_new_identity(tmp_path):
    bind(tmp_path / "kubelet.sock")
    before = socket_identity(tmp_path / "kubelet.sock")
    os.chmod(tmp_path / "kubelet.sock", 0o600)
    assert before is not None and socket_identity(tmp_path / "kubelet.sock") == before


def test_linking_and_unlinking_another_name_is_not_a_new_identity(tmp_path):
    bind(tmp_path / "first")
    os.link(tmp_path / "first", tmp_path / "final")
    before = socket_identity(tmp_path / "final")
    (tmp_path / "first").unlink()
    assert socket_identity(tmp_path / "final") == before


def test_a_socket_bound_again_at_the_same_path_is_a_new_identity(tmp_path):
    path = tmp_path / "kubelet.sock"
    bind(path)
    first = socket_identity(path)
    path.unlink()
    bind(path)  # tmpfs and ext4 often hand the freed inode number straight back
    assert socket_identity(path) != first


def test_a_symlink_to_a_socket_has_no_identity(tmp_path):
    bind(tmp_path / "real.sock")
    (tmp_path / "link.sock").symlink_to(tmp_path / "real.sock")
    assert socket_identity(tmp_path / "link.sock") is None


def test_a_regular_file_or_nothing_has_no_identity(tmp_path):
    (tmp_path / "file").write_text("")
    assert socket_identity(tmp_path / "file") is None
    assert socket_identity(tmp_path / "missing") is None
    assert socket_identity(tmp_path / "file" / "below-a-file") is None
