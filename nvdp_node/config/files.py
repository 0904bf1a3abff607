"""Reading the config file with care: regular files only, a size cap, ownership and modes.

``sources.TomlFileSource`` calls :func:`read_config_file` for every load,
``upstream_import`` :func:`read_regular_file`; ``nvdp_node.app.host_checks``
calls :func:`permission_problems` for the ``config.permissions`` check of
``nvdp check``. The file is opened only once
``stat`` says it is a regular file, non-blocking, and ``fstat`` of the open
descriptor decides again, so a FIFO, a device or a socket at the config path
is reported at once instead of blocking or having side effects.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvdp_node.config.errors import ConfigError, toml_error_lines, utf8_error_line

MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: the commented default file is about 5 KiB
_WHY_SECURE = (
    "nvdp runs as root and its configuration decides which devices containers get, "
    "so only root may be able to change the file"
)

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


@dataclass(frozen=True)
class ConfigFile:
    """A config file that was read: its parsed TOML and what is worth telling the user."""

    path: Path
    data: dict[str, Any]
    notices: list[str] = field(default_factory=list)


def read_config_file(path: Path, *, secure: bool = False, missing_ok: bool = True) -> ConfigFile | None:
    """Parse the TOML file at ``path``; None if there is none and ``missing_ok``.

    With ``secure``, a file or directory that someone other than root can
    change is a :class:`ConfigError`; without it, the same finding is a notice.
    """
    header = f"invalid configuration in {path}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise ConfigError(header, [f"{path} is a symbolic link to a missing file"], path=path) from None
        if missing_ok:
            return None
        raise ConfigError(header, [
            f"{path} does not exist; a reload needs the file (nvdp does not fall back to the built-in "
            "defaults while it runs); restore it, or restart nvdp to run with the defaults"
        ], path=path) from None
    except OSError as exc:
        raise ConfigError(header, [f"cannot read {path}: {exc.strerror or exc}"], path=path) from None
    fd = _open_regular(path, st.st_mode, header)
    try:
        problems = permission_problems(path, os.fstat(fd))
        if problems and secure:
            raise ConfigError(f"refusing to use {path}", [*problems, _WHY_SECURE], path=path)
        raw = _read_capped(fd, path, header)
    finally:
        os.close(fd)
    return ConfigFile(path, _parse(path, raw, header), problems)


def read_regular_file(path: Path, header: str) -> bytes:
    """The bytes of a regular file of at most MAX_CONFIG_BYTES, or a ConfigError (``config import``)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ConfigError(header, [f"cannot read {path}: {exc.strerror or exc}"], path=path) from None
    fd = _open_regular(path, mode, header)
    try:
        return _read_capped(fd, path, header)
    finally:
        os.close(fd)


def writable_by_non_root(mode: int, uid: int, gid: int) -> bool:
    """Whether someone other than root can change a file with this mode and owner.

    An owner can always chmod, so a file owned by anyone but root counts as
    writable by them whatever its mode.
    """
    return bool(uid != 0 or mode & stat.S_IWOTH or (mode & stat.S_IWGRP and gid != 0))


def permission_problems(path: Path, file_stat: os.stat_result | None = None) -> list[str]:
    """One line per insecure item: the file, the directory it is named in, and that of its target."""
    try:
        st = file_stat or os.stat(path)
    except OSError:
        return []
    problems = []
    if writable_by_non_root(st.st_mode, st.st_uid, st.st_gid):
        problems.append(_problem(f"config file {path}", path, st, "644"))
    # Whoever can write a directory on the way can put another file in its place.
    directories = dict.fromkeys([Path(os.path.abspath(path)).parent, Path(os.path.realpath(path)).parent])
    for directory in directories:
        try:
            dst = os.stat(directory)
        except OSError:
            continue
        if writable_by_non_root(dst.st_mode, dst.st_uid, dst.st_gid):
            problems.append(_problem(f"directory {directory} holding {path}", directory, dst, "755"))
    return problems


def _problem(what: str, target: Path, st: os.stat_result, mode: str) -> str:
    return (
        f"{what} can be changed by users other than root (mode {stat.S_IMODE(st.st_mode):04o}, "
        f"owner {st.st_uid}:{st.st_gid}); fix with: chown root:root {target} && chmod {mode} {target}"
    )


def _open_regular(path: Path, mode: int, header: str) -> int:
    """Open only what stat() calls a regular file, without blocking; fstat() must agree."""
    _require_regular(path, mode, header)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(header, [f"cannot read {path}: {exc.strerror or exc}"], path=path) from None
    try:
        st = os.fstat(fd)
        _require_regular(path, st.st_mode, header)  # it may have been swapped since stat()
        _require_size(path, st.st_size, header)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _require_regular(path: Path, mode: int, header: str) -> None:
    if stat.S_ISREG(mode):
        return
    kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
    expected = "expected a TOML file" if kind == "a directory" else "nvdp reads its configuration only from a regular file"
    raise ConfigError(header, [f"{path} is {kind}, {expected}"], path=path)


def _require_size(path: Path, size: int, header: str) -> None:
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(header, [
            f"{path} is {size} bytes, over the {MAX_CONFIG_BYTES}-byte (1 MiB) limit for a config file; "
            "is this the right file? (the complete file `nvdp config init` prints is about 5 KiB)"
        ], path=path)


def _read_capped(fd: int, path: Path, header: str) -> bytes:
    """At most one byte more than the cap, so a file that grew after fstat() is still caught."""
    chunks, size = [], 0
    while size <= MAX_CONFIG_BYTES:
        try:
            chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - size)
        except OSError as exc:
            raise ConfigError(header, [f"cannot read {path}: {exc.strerror or exc}"], path=path) from None
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    _require_size(path, size, header)
    return b"".join(chunks)


def _parse(path: Path, raw: bytes, header: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(header, [utf8_error_line(path, raw, exc)], path=path) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(header, toml_error_lines(path, text, exc), path=path) from None
    except RecursionError:
        raise ConfigError(header, [f"{path}: arrays or tables are nested too deeply"], path=path) from None
