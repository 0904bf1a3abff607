"""How the config file is read: regular files only, a size cap, bounded errors, permissions, reloads."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from nvdp_node.config import ConfigError, load_config
from nvdp_node.config.files import MAX_CONFIG_BYTES

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def write(directory: Path, text: str = "version = 1\n", mode: int = 0o644) -> Path:
    path = directory / "config.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


# --- regular files only ------------------------------------------------------------------

@pytest.mark.timeout(60)  # a hang guard: before the fix, reading a FIFO blocked until a writer came
def test_a_fifo_at_the_config_path_is_an_error_not_a_hang(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    os.mkfifo(path)
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    assert exc.value.lines == [
        f"{path} is a FIFO (named pipe), nvdp reads its configuration only from a regular file"
    ]


def test_a_socket_at_the_config_path_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        with pytest.raises(ConfigError) as exc:
            load_config(path, environ={})
    assert exc.value.lines == [f"{path} is a socket, nvdp reads its configuration only from a regular file"]


def test_a_device_behind_a_symlink_is_an_error_and_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.symlink_to("/dev/zero")  # reading it would never end
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    assert exc.value.lines == [
        f"{path} is a character device, nvdp reads its configuration only from a regular file"
    ]


def test_a_symlink_to_a_regular_file_is_followed(tmp_path: Path) -> None:
    target = write(tmp_path, 'resource_name = "example.com/gpu"\n')
    link = tmp_path / "link.toml"
    link.symlink_to(target)
    assert load_config(link, environ={}).config.resource_name == "example.com/gpu"


def test_a_dangling_symlink_is_an_error_not_the_defaults(tmp_path: Path) -> None:
    link = tmp_path / "config.toml"
    link.symlink_to(tmp_path / "gone.toml")
    with pytest.raises(ConfigError) as exc:
        load_config(link, environ={})
    assert exc.value.lines == [f"{link} is a symbolic link to a missing file"]


# --- size cap and bounded error lists -----------------------------------------------------

def test_a_file_over_one_mebibyte_is_an_error_naming_its_size_and_the_cap(tmp_path: Path) -> None:
    path = write(tmp_path, "#" * MAX_CONFIG_BYTES + "\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    assert exc.value.lines[0].startswith(
        f"{path} is {MAX_CONFIG_BYTES + 1} bytes, over the 1048576-byte (1 MiB) limit for a config file"
    )


def test_a_file_of_200000_unknown_keys_is_refused_by_its_size(tmp_path: Path) -> None:
    path = write(tmp_path, "".join(f"k{i:06d} = 1\n" for i in range(200_000)))
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    assert len(exc.value.lines) == 1 and "over the 1048576-byte (1 MiB) limit" in exc.value.lines[0]


def test_a_file_full_of_unknown_keys_gets_twenty_lines_and_a_count(tmp_path: Path) -> None:
    path = write(tmp_path, "".join(f"k{i:05x}=1\n" for i in range(100_000)))  # 900 000 bytes
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    assert len(exc.value.lines) == 21
    assert exc.value.lines[0].startswith("k00000: unknown key")
    assert exc.value.lines[-1].startswith("... and 99980 more problems; fix these, then run `nvdp config validate`")


# --- a reload needs the file --------------------------------------------------------------

def test_a_missing_file_is_an_error_when_it_must_exist(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={}, missing_ok=False)
    assert exc.value.lines[0].startswith(f"{path} does not exist; a reload needs the file")
    assert "restore it, or restart nvdp to run with the defaults" in exc.value.lines[0]


def test_a_missing_file_still_means_the_defaults_by_default(tmp_path: Path) -> None:
    assert load_config(tmp_path / "config.toml", environ={}).notices == [
        f"no config file at {tmp_path / 'config.toml'}, using defaults"
    ]


# --- permissions: notices by default, errors with secure=True -----------------------------

def test_secure_load_refuses_a_world_writable_file_with_mode_owner_and_fix(tmp_path: Path) -> None:
    path = write(tmp_path, mode=0o666)
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={}, secure=True)
    st = path.stat()
    assert str(exc.value).startswith(f"nvdp: refusing to use {path}:")
    assert exc.value.lines[0] == (
        f"config file {path} can be changed by users other than root (mode 0666, owner {st.st_uid}:{st.st_gid}); "
        f"fix with: chown root:root {path} && chmod 644 {path}"
    )


@needs_root
def test_secure_load_refuses_a_file_owned_by_another_user_even_read_only(tmp_path: Path) -> None:
    path = write(tmp_path, mode=0o444)
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={}, secure=True)
    assert f"(mode 0444, owner {NOBODY}:{NOBODY})" in exc.value.lines[0]


@needs_root
def test_secure_load_refuses_a_file_group_writable_by_a_group_other_than_root(tmp_path: Path) -> None:
    path = write(tmp_path, mode=0o664)
    os.chown(path, 0, NOBODY)
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={}, secure=True)
    assert f"(mode 0664, owner 0:{NOBODY})" in exc.value.lines[0]


@needs_root
def test_secure_load_refuses_a_directory_owned_by_another_user(tmp_path: Path) -> None:
    directory = tmp_path / "etc-nvdp"
    directory.mkdir(mode=0o755)
    os.chown(directory, NOBODY, NOBODY)
    path = write(directory)
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={}, secure=True)
    assert exc.value.lines[0] == (
        f"directory {directory} holding {path} can be changed by users other than root "
        f"(mode 0755, owner {NOBODY}:{NOBODY}); fix with: chown root:root {directory} && chmod 755 {directory}"
    )


@needs_root
def test_secure_load_checks_the_directory_of_a_symlinks_target(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    target = write(shared)
    safe = tmp_path / "etc"
    safe.mkdir(mode=0o755)
    (safe / "config.toml").symlink_to(target)
    with pytest.raises(ConfigError) as exc:
        load_config(safe / "config.toml", environ={}, secure=True)
    assert exc.value.lines[0].startswith(f"directory {shared} holding {safe / 'config.toml'} can be changed")


@needs_root
def test_secure_load_accepts_a_root_owned_file_in_a_root_owned_directory(tmp_path: Path) -> None:
    directory = tmp_path / "etc-nvdp"
    directory.mkdir(mode=0o755)
    path = write(directory, 'resource_name = "example.com/gpu"\n')
    loaded = load_config(path, environ={}, secure=True)
    assert loaded.config.resource_name == "example.com/gpu" and loaded.notices == []


def test_without_secure_a_writable_directory_is_a_notice(tmp_path: Path) -> None:
    directory = tmp_path / "etc-nvdp"
    directory.mkdir()
    directory.chmod(0o777)
    path = write(directory)
    notices = load_config(path, environ={}).notices
    assert any(n.startswith(f"directory {directory} holding {path} can be changed") for n in notices)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o777  # nothing was "fixed" behind the user's back
