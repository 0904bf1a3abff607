"""The NVIDIA container toolkit: its binaries, its runtime config.toml, and CDI specs.

Called by ``nvdp_node.app.host_checks``. nvdp only hands the runtime a list
of GPUs (an env var, mounts or CDI names); nvidia-container-runtime and its
helpers do the injecting, so what they are told by
/etc/nvidia-container-runtime/config.toml decides whether the list is obeyed.
"""

from __future__ import annotations

import json


from nvdp_node.adapters.host.paths import HostRoot, read_text, read_toml
from nvdp_node.domain.checks import TOOLKIT_BINARIES, CdiFacts, FileProblem, ProblemKind, ToolkitFacts

CDI_SUFFIXES = (".json", ".yaml", ".yml")


def read_toolkit(paths: HostRoot) -> ToolkitFacts:
    """Which toolkit binaries are installed, and the runtime's top-level settings."""
    return ToolkitFacts(
        binaries={name: paths.locate(name) for name in TOOLKIT_BINARIES},
        config_path=paths.toolkit_config,
        config=read_toml(paths, paths.toolkit_config),
    )


def read_cdi(paths: HostRoot) -> CdiFacts:
    """The ``kind`` of every CDI spec in the spec directories; broken specs become problems."""
    specs: dict[str, str] = {}
    problems: list[FileProblem] = []
    for spec_dir in paths.cdi_dirs:
        try:
            names = sorted(p.name for p in paths.at(spec_dir).iterdir() if p.suffix in CDI_SUFFIXES)
        except FileNotFoundError:
            continue
        except OSError as err:
            problems.append(FileProblem(spec_dir, ProblemKind.UNREADABLE, err.strerror or str(err)))
            continue
        for name in names:
            host_path = f"{spec_dir.rstrip('/')}/{name}"
            kind = _spec_kind(paths, host_path)
            if isinstance(kind, FileProblem):
                problems.append(kind)
            else:
                specs[host_path] = kind
    return CdiFacts(spec_dirs=paths.cdi_dirs, specs=specs, problems=tuple(problems))


def _spec_kind(paths: HostRoot, host_path: str) -> str | FileProblem:
    text = read_text(paths, host_path)
    if isinstance(text, FileProblem):
        return text
    import yaml  # only CDI specs need it; kept off `nvdp serve`'s start-up

    try:
        data = json.loads(text) if host_path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        return FileProblem(host_path, ProblemKind.INVALID, str(err).splitlines()[0])
    kind = data.get("kind") if isinstance(data, dict) else None
    if not isinstance(kind, str):
        return FileProblem(host_path, ProblemKind.WRONG_TYPE, "no string `kind` at the top level")
    return kind
