"""containerd: the CRI plugin's default runtime and each runtime's ``BinaryName``.

Called by ``nvdp_node.app.host_checks``. containerd has had three config
layouts; the CRI runtime settings live under a different plugin id in each:

* version 1 (no ``version`` key): ``plugins.cri.containerd``
* version 2 (containerd 1.x): ``plugins."io.containerd.grpc.v1.cri".containerd``
* version 3 (containerd 2.x): ``plugins."io.containerd.cri.v1.runtime".containerd``

``imports`` (drop-in files, e.g. /etc/containerd/conf.d/*.toml) are merged
over the main file in order, as containerd does.

CDI (``enable_cdi``, ``cdi_spec_dirs``) sits in the CRI plugin's own table:
``plugins."io.containerd.grpc.v1.cri"`` in layout 2 (containerd 1.7, e.g.
Debian 13's 1.7.24, where it is off by default) and
``plugins."io.containerd.cri.v1.runtime"`` in layout 3 (containerd 2.x, on by
default).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath

from nvdp_node.adapters.host.paths import HostRoot, lookup, merge, read_toml, toml_key
from nvdp_node.domain.checks import EngineFacts, FileProblem, ProblemKind, Runtime, fatal

CRI_PLUGIN = {1: "cri", 2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}
# Names under which disabled_plugins switches the CRI service off, per layout.
CRI_SERVICE_IDS = {1: {"cri"}, 2: {"cri", "io.containerd.grpc.v1.cri"},
                   3: {"io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"}}
# `containerd config default` of 1.7 (layouts 1, 2) and 2.x (layout 3).
CDI_DEFAULT_ENABLED = {1: False, 2: False, 3: True}
CDI_DEFAULT_DIRS = ("/etc/cdi", "/var/run/cdi")


def read_containerd(paths: HostRoot) -> EngineFacts:
    """What containerd's CRI service on this host would run containers with."""
    file = paths.containerd_config
    binary = paths.locate("containerd")
    main = read_toml(paths, file)
    if isinstance(main, FileProblem):
        return EngineFacts("containerd", binary, (file,), (main,))
    files, data = [file], main
    problems: list[FileProblem] = []
    for imported in _imports(paths, main, file, problems):
        extra = read_toml(paths, imported)
        files.append(imported)
        if isinstance(extra, FileProblem):
            problems.append(extra)
        else:
            data = merge(data, extra)
    if fatal(problems):
        return EngineFacts("containerd", binary, tuple(files), tuple(problems))
    return containerd_facts(data, files=tuple(files), problems=problems, binary=binary, locate=paths.locate)


def containerd_facts(
    data: dict[str, object], *, files: tuple[str, ...], problems: list[FileProblem],
    binary: str | None, locate: Callable[[str], str | None],
) -> EngineFacts:
    """Normalise a parsed (and import-merged) containerd config; new problems join ``problems``."""
    file = files[0]
    version = data.get("version", 1)
    if type(version) is not int or version not in CRI_PLUGIN:
        problems.append(FileProblem(file, ProblemKind.INVALID, f"version = {version!r}: containerd reads 1, 2 or 3"))
        return EngineFacts("containerd", binary, files, tuple(problems))
    disabled = lookup(data, ("disabled_plugins",), list, file=file, problems=problems) or []
    keys = ("plugins", CRI_PLUGIN[version], "containerd")
    cri = lookup(data, keys, dict, file=file, problems=problems) or {}
    prefix = toml_key(keys)
    default = lookup(cri, ("default_runtime_name",), str, file=file, problems=problems, prefix=prefix)
    table = lookup(cri, ("runtimes",), dict, file=file, problems=problems, prefix=prefix) or {}
    runtimes: dict[str, Runtime] = {}
    for name in table:
        path = lookup(table, (name, "options", "BinaryName"), str, file=file, problems=problems,
                      prefix=f"{prefix}.runtimes")
        runtimes[name] = Runtime(name, path, path is not None and locate(path) is not None)
    cdi_keys = ("plugins", CRI_PLUGIN[version])
    cdi_prefix = toml_key(cdi_keys)
    cri_table = lookup(data, cdi_keys, dict, file=file, problems=problems) or {}
    enabled = lookup(cri_table, ("enable_cdi",), bool, file=file, problems=problems, prefix=cdi_prefix)
    dirs = lookup(cri_table, ("cdi_spec_dirs",), list, file=file, problems=problems, prefix=cdi_prefix)
    return EngineFacts(
        "containerd", binary, files, tuple(problems),
        default_runtime=default, default_from=file if default else None, builtin_default="runc",
        runtimes=runtimes, cri_disabled=bool(CRI_SERVICE_IDS[version] & {str(p) for p in disabled}),
        cdi_enabled=CDI_DEFAULT_ENABLED[version] if enabled is None else enabled,
        cdi_from=None if enabled is None else file,
        cdi_spec_dirs=CDI_DEFAULT_DIRS if dirs is None else tuple(str(d) for d in dirs),
    )


def _imports(paths: HostRoot, main: dict[str, object], file: str, problems: list[FileProblem]) -> list[str]:
    """Host paths named by ``imports``, globs expanded and sorted, relative to the main file."""
    patterns = lookup(main, ("imports",), list, file=file, problems=problems) or []
    found: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            problems.append(FileProblem(file, ProblemKind.WRONG_TYPE, f"imports: {pattern!r} is not a string"))
            continue
        host = PurePosixPath(file).parent / pattern
        if not any(c in host.name for c in "*?["):
            found.append(str(host))  # a missing plain import is reported, as containerd would
            continue
        try:
            matches = sorted(m.name for m in paths.at(host.parent).glob(host.name) if m.is_file())
        except (OSError, ValueError) as err:
            problems.append(FileProblem(str(host), ProblemKind.UNREADABLE, str(err)))
            continue
        found += [str(host.parent / name) for name in matches]
    return found
