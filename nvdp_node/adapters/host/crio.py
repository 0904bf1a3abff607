"""CRI-O: ``crio.runtime.default_runtime`` and ``crio.runtime.runtimes.<name>.runtime_path``.

Called by ``nvdp_node.app.host_checks``. CRI-O reads /etc/crio/crio.conf,
then every file in /etc/crio/crio.conf.d in lexical order, a later file
overriding an earlier one key by key (crio.conf.d(5)). The file that set the
default runtime last is kept, so a drop-in that quietly switches back to
crun/runc is named in the report.
"""

from __future__ import annotations

from collections.abc import Callable

from nvdp_node.adapters.host.paths import HostRoot, lookup, merge, read_toml
from nvdp_node.domain.checks import EngineFacts, FileProblem, ProblemKind, Runtime, fatal

DEFAULT_KEY = ("crio", "runtime", "default_runtime")


def read_crio(paths: HostRoot) -> EngineFacts:
    """What CRI-O on this host would run containers with."""
    binary = paths.locate("crio")
    problems: list[FileProblem] = []
    files = [paths.crio_config, *_drop_ins(paths, problems)]
    data: dict[str, object] = {}
    default_from = None
    for file in files:
        parsed = read_toml(paths, file)
        if isinstance(parsed, FileProblem):
            # Only the main file may be absent; CRI-O then runs on built-in defaults.
            problems.append(parsed)
            continue
        if lookup(parsed, DEFAULT_KEY, str, file=file, problems=problems) is not None:
            default_from = file
        data = merge(data, parsed)
    if fatal(problems):
        return EngineFacts("crio", binary, tuple(files), tuple(problems))
    return crio_facts(data, files=tuple(files), problems=problems, default_from=default_from,
                      binary=binary, locate=paths.locate)


def crio_facts(
    data: dict[str, object], *, files: tuple[str, ...], problems: list[FileProblem],
    default_from: str | None, binary: str | None, locate: Callable[[str], str | None],
) -> EngineFacts:
    """Normalise the merged CRI-O configuration."""
    file = default_from or files[0]
    default = lookup(data, DEFAULT_KEY, str, file=file, problems=problems)
    table = lookup(data, ("crio", "runtime", "runtimes"), dict, file=file, problems=problems) or {}
    runtimes: dict[str, Runtime] = {}
    for name in table:
        # Without runtime_path CRI-O looks for a binary called <name> in $PATH.
        path = lookup(table, (name, "runtime_path"), str, file=file, problems=problems,
                      prefix="crio.runtime.runtimes") or None
        runtimes[name] = Runtime(name, path, path is not None and locate(path) is not None)
    return EngineFacts(
        "crio", binary, files, tuple(problems), default_runtime=default,
        default_from=default_from if default else None, builtin_default="crun/runc",
        runtimes=runtimes,
    )


def _drop_ins(paths: HostRoot, problems: list[FileProblem]) -> list[str]:
    directory = paths.at(paths.crio_config_dir)
    try:
        names = sorted(p.name for p in directory.iterdir() if not p.name.startswith(".") and not p.is_dir())
    except FileNotFoundError:
        return []
    except OSError as err:
        problems.append(FileProblem(paths.crio_config_dir, ProblemKind.UNREADABLE, err.strerror or str(err)))
        return []
    return [f"{paths.crio_config_dir.rstrip('/')}/{name}" for name in names]
