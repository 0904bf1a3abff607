"""Where the host's files and binaries are, and how to read them without raising.

Every reader in ``nvdp_node.adapters.host`` takes a :class:`HostRoot`, so
``nvdp check --root DIR`` and the tests point all of them at a fixture tree by
changing one value. The ``read_*`` helpers turn every way a host file can be
broken (missing, unreadable, a directory, not UTF-8, bad JSON/TOML) into a
:class:`FileProblem`: a broken file is a finding, never a crash.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from nvdp_node.domain.checks import FileProblem, ProblemKind

DEFAULT_BIN_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# Host config files are small; a huge one is a mistake we should not slurp.
MAX_FILE_BYTES = 4 * 2**20


@dataclass(frozen=True)
class HostRoot:
    """Every host path the checks read, as it appears on the host, under ``root``.

    Fields hold host paths ("/etc/docker/daemon.json") so messages show what an
    operator would type; :meth:`at` maps them under ``root`` for reading.
    """

    root: Path = Path("/")
    bin_dirs: tuple[str, ...] = DEFAULT_BIN_DIRS
    docker_daemon_json: str = "/etc/docker/daemon.json"
    containerd_config: str = "/etc/containerd/config.toml"
    crio_config: str = "/etc/crio/crio.conf"
    crio_config_dir: str = "/etc/crio/crio.conf.d"
    toolkit_config: str = "/etc/nvidia-container-runtime/config.toml"
    cdi_dirs: tuple[str, ...] = ("/etc/cdi", "/var/run/cdi")
    dev_dir: str = "/dev"
    proc_dir: str = "/proc"
    sysfs_dir: str = "/sys"
    kubelet_binary: str = "kubelet"
    command_timeout: float = 3.0

    def at(self, host_path: str | os.PathLike[str]) -> Path:
        """The path to open for ``host_path`` (relative paths count from /)."""
        relative = PurePosixPath(host_path).relative_to("/") if PurePosixPath(host_path).is_absolute() \
            else PurePosixPath(host_path)
        return self.root / relative

    def locate(self, name: str) -> str | None:
        """The host path of an executable: ``name`` itself if it has a slash, else looked up in ``bin_dirs``."""
        candidates = [name] if "/" in name else [f"{d.rstrip('/')}/{name}" for d in self.bin_dirs]
        for candidate in candidates:
            path = self.at(candidate)
            try:
                if path.is_file() and os.access(path, os.X_OK):
                    return candidate
            except (OSError, ValueError):  # an untraversable dir, a NUL byte from a config file
                continue
        return None


def read_text(paths: HostRoot, host_path: str) -> str | FileProblem:
    """The file's text, or why it cannot be had."""
    try:
        with open(paths.at(host_path), "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return FileProblem(host_path, ProblemKind.MISSING)
    except IsADirectoryError:
        return FileProblem(host_path, ProblemKind.UNREADABLE, "it is a directory")
    except PermissionError:
        return FileProblem(host_path, ProblemKind.UNREADABLE, "permission denied")
    except OSError as err:
        return FileProblem(host_path, ProblemKind.UNREADABLE, err.strerror or str(err))
    except ValueError:  # a path taken from a host file may hold a NUL byte
        return FileProblem(repr(host_path), ProblemKind.INVALID, "not a usable path")
    if len(raw) > MAX_FILE_BYTES:
        return FileProblem(host_path, ProblemKind.INVALID, f"larger than {MAX_FILE_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return FileProblem(host_path, ProblemKind.INVALID, f"not UTF-8 (byte {err.start})")


def read_json(paths: HostRoot, host_path: str) -> dict[str, object] | FileProblem:
    """A JSON object; any other top-level value is a wrong-type problem."""
    text = read_text(paths, host_path)
    if isinstance(text, FileProblem):
        return text
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        return FileProblem(host_path, ProblemKind.INVALID, f"JSON syntax error at line {err.lineno} column {err.colno}: {err.msg}")
    if not isinstance(data, dict):
        return FileProblem(host_path, ProblemKind.WRONG_TYPE, f"expected a JSON object, got {_kind(data)}")
    return data


def read_toml(paths: HostRoot, host_path: str) -> dict[str, object] | FileProblem:
    text = read_text(paths, host_path)
    if isinstance(text, FileProblem):
        return text
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        return FileProblem(host_path, ProblemKind.INVALID, f"TOML syntax error: {err}")


def lookup(
    data: Mapping[str, object], keys: tuple[str, ...], expected: type, *, file: str,
    problems: list[FileProblem], prefix: str = "",
) -> object | None:
    """``data[k1][k2]...`` if every level is a table and the leaf is ``expected``; else None.

    A missing key is simply None (the engine's default applies); a value of the
    wrong type is recorded in ``problems``, since the engine would reject it.
    """
    node: object = data
    for depth, key in enumerate(keys):
        if not isinstance(node, Mapping):
            problems.append(_wrong(file, prefix, keys[:depth], "a table", node))
            return None
        if key not in node:
            return None
        node = node[key]
    if not isinstance(node, expected) or (expected is int and isinstance(node, bool)):
        problems.append(_wrong(file, prefix, keys, _kind_name(expected), node))
        return None
    return node


def merge(base: Mapping[str, object], over: Mapping[str, object]) -> dict[str, object]:
    """Drop-in semantics: tables merge key by key, any other value replaces."""
    merged = dict(base)
    for key, value in over.items():
        old = merged.get(key)
        merged[key] = merge(old, value) if isinstance(old, Mapping) and isinstance(value, Mapping) else value
    return merged


def toml_key(keys: tuple[str, ...]) -> str:
    """Dotted TOML key, quoting parts such as ``io.containerd.grpc.v1.cri``."""
    return ".".join(k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k) for k in keys)


def _wrong(file: str, prefix: str, keys: tuple[str, ...], expected: str, value: object) -> FileProblem:
    where = ".".join(p for p in (prefix, toml_key(keys)) if p) or "the top level"
    return FileProblem(file, ProblemKind.WRONG_TYPE, f"{where}: expected {expected}, got {_kind(value)}")


def _kind_name(expected: type) -> str:
    return {str: "a string", dict: "a table", list: "a list", bool: "true or false", int: "an integer"}.get(
        expected, expected.__name__)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return f"the boolean {json.dumps(value)}"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {json.dumps(value, default=str)[:40]}"
