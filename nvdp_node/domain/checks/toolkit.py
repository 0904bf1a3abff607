"""toolkit.* and runtime.cdi: the NVIDIA container toolkit pieces the strategy relies on.

What is required depends on ``plugin.device_list_strategy``: ``envvar``
needs the runtime to honour NVIDIA_VISIBLE_DEVICES, ``volume-mounts`` needs
``accept-nvidia-visible-devices-as-volume-mounts``, ``cdi-*`` needs a CDI spec
and nvidia-ctk. ``nvdp_node.adapters.host.nvidia_toolkit`` gathers the facts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from nvdp_node.domain.checks.report import CheckResult, FileProblem, ProblemKind, Status, fatal


CDI_KINDS = ("nvidia.com/gpu", "k8s.device-plugin.nvidia.com/gpu")
TOOLKIT_BINARIES = ("nvidia-container-runtime", "nvidia-ctk", "nvidia-container-cli")
VOLUME_MOUNTS_KEY = "accept-nvidia-visible-devices-as-volume-mounts"
ENVVAR_KEY = "accept-nvidia-visible-devices-envvar-when-unprivileged"


def uses_cdi(strategies: Iterable[str]) -> bool:
    return any(s.startswith("cdi-") for s in strategies)


@dataclass(frozen=True)
class CdiFacts:
    """CDI spec files found: ``specs`` maps each readable spec's path to its ``kind``."""

    spec_dirs: tuple[str, ...]
    specs: Mapping[str, str] = field(default_factory=dict)
    problems: tuple[FileProblem, ...] = ()


def evaluate_cdi(facts: CdiFacts, strategies: tuple[str, ...]) -> CheckResult:
    """runtime.cdi: with a cdi-* strategy the engine needs a spec for the GPU kind."""
    title = "CDI spec for NVIDIA GPUs"
    if not uses_cdi(strategies):
        return CheckResult("runtime.cdi", title, Status.SKIPPED, (f"not used by device_list_strategy {list(strategies)}",))
    found = sorted(path for path, kind in facts.specs.items() if kind in CDI_KINDS)
    broken = tuple(str(p) for p in fatal(facts.problems))
    if found:
        status = Status.WARNING if broken else Status.OK
        return CheckResult("runtime.cdi", title, status, (f"spec(s): {', '.join(found)}", *broken),
                           "remove or repair the broken spec files" if broken else "")
    return CheckResult("runtime.cdi", title, Status.ERROR,
                       (f"no spec of kind {' or '.join(CDI_KINDS)} in {', '.join(facts.spec_dirs)}", *broken),
                       "nvdp writes its own spec while it serves with a cdi-* strategy (see cdi.spec); "
                       "or `nvidia-ctk cdi generate --output=/var/run/cdi/nvidia.yaml` (again after driver upgrades)")


@dataclass(frozen=True)
class ToolkitFacts:
    """nvidia-container-toolkit binaries found, and its runtime config.toml."""

    binaries: Mapping[str, str | None]
    config_path: str
    config: Mapping[str, object] | FileProblem


def evaluate_toolkit(facts: ToolkitFacts, strategies: tuple[str, ...]) -> tuple[CheckResult, ...]:
    """toolkit.binaries and toolkit.config, judged against the device list strategy."""
    cdi = uses_cdi(strategies)
    missing = [b for b in TOOLKIT_BINARIES if not facts.binaries.get(b)]
    # The legacy hook calls nvidia-container-cli; CDI specs call nvidia-ctk hooks.
    needed = {"nvidia-container-runtime", "nvidia-ctk" if cdi else "nvidia-container-cli"}
    found = [f"{b}: {facts.binaries[b]}" for b in TOOLKIT_BINARIES if facts.binaries.get(b)]
    if not missing:
        binaries = CheckResult("toolkit.binaries", "NVIDIA container toolkit", Status.OK, tuple(found))
    else:
        status = Status.ERROR if needed & set(missing) else Status.WARNING
        why = "" if status is Status.ERROR else "; nvidia-ctk is what configures engines and writes CDI specs"
        binaries = CheckResult("toolkit.binaries", "NVIDIA container toolkit", status,
                               (f"not found: {', '.join(missing)}", *found),
                               f"install nvidia-container-toolkit (NVIDIA's apt repository){why}")
    return binaries, _toolkit_config(facts, strategies)


def _toolkit_config(facts: ToolkitFacts, strategies: tuple[str, ...]) -> CheckResult:
    title, path = "nvidia-container-runtime settings", facts.config_path
    fix_file = f"set it in {path}; no restart needed (read per container)"
    config = facts.config
    if isinstance(config, FileProblem):
        if config.kind is not ProblemKind.MISSING:
            return CheckResult("toolkit.config", title, Status.ERROR, (str(config),),
                               "repair the file: every GPU container start fails while it is broken")
        config = {}
    values: dict[str, bool] = {}
    for key, default in ((VOLUME_MOUNTS_KEY, False), (ENVVAR_KEY, True)):
        value = config.get(key, default)
        if not isinstance(value, bool):
            return CheckResult("toolkit.config", title, Status.ERROR,
                               (f"{path}: {key} = {value!r} is not true or false",), fix_file)
        values[key] = value
    evidence = tuple(f"{k} = {str(v).lower()}" + ("" if k in config else " (default)") for k, v in values.items())
    if "volume-mounts" in strategies:
        if not values[VOLUME_MOUNTS_KEY]:
            return CheckResult("toolkit.config", title, Status.ERROR,
                               (*evidence, "device_list_strategy volume-mounts needs it true"),
                               f"`{VOLUME_MOUNTS_KEY} = true`: {fix_file}")
        if values[ENVVAR_KEY]:
            return CheckResult("toolkit.config", title, Status.WARNING,
                               (*evidence, "pods that set NVIDIA_VISIBLE_DEVICES themselves still get GPUs"),
                               f"`{ENVVAR_KEY} = false`: {fix_file}")
    elif "envvar" in strategies and not values[ENVVAR_KEY]:
        return CheckResult("toolkit.config", title, Status.ERROR,
                           (*evidence, "device_list_strategy envvar needs it true: the runtime ignores "
                            "NVIDIA_VISIBLE_DEVICES in unprivileged containers"),
                           f"use device_list_strategy = \"volume-mounts\" with {VOLUME_MOUNTS_KEY} = true, "
                           f"or set {ENVVAR_KEY} = true")
    return CheckResult("toolkit.config", title, Status.OK, evidence)
