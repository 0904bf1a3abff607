"""runtime.*: does the container engine start GPU containers with nvidia-container-runtime?

docker's daemon.json, containerd's config.toml (layouts 1, 2 and 3) and
CRI-O's crio.conf plus drop-ins all come down to the same two facts: which
runtime is the default, and which binary each named runtime runs. The engine
adapters (``nvdp_node.adapters.host.docker`` etc.) normalise their format to
:class:`EngineFacts`; the rules here judge all three alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from nvdp_node.domain.checks.report import CheckResult, FileProblem, Status, fatal


@dataclass(frozen=True)
class Runtime:
    """One OCI runtime an engine knows: its name and the binary it runs."""

    name: str
    binary: str | None
    binary_found: bool = False

    @property
    def is_nvidia(self) -> bool:
        # nvidia-container-runtime, .cdi and .legacy all inject GPUs.
        return self.binary is not None and self.binary.rsplit("/", 1)[-1].startswith("nvidia-container-runtime")


@dataclass(frozen=True)
class EngineFacts:
    """An engine's effective runtime setup, normalised from its own config format."""

    engine: str
    binary: str | None
    config_files: tuple[str, ...] = ()
    problems: tuple[FileProblem, ...] = ()
    default_runtime: str | None = None
    default_from: str | None = None
    builtin_default: str = "runc"
    runtimes: Mapping[str, Runtime] = field(default_factory=dict)
    cri_disabled: bool = False
    #: containerd's CRI CDI settings (None: not an engine with them): enable_cdi, where it was
    #: set (None: the built-in default), and cdi_spec_dirs.
    cdi_enabled: bool | None = None
    cdi_from: str | None = None
    cdi_spec_dirs: tuple[str, ...] = ()


# engine: (display name, daemon binary, config file(s), restart command)
ENGINE_HINTS = {
    "docker": ("docker", "dockerd", "/etc/docker/daemon.json", "systemctl restart docker"),
    "containerd": ("containerd", "containerd", "/etc/containerd/config.toml", "systemctl restart containerd"),
    "crio": ("CRI-O", "crio", "/etc/crio/crio.conf(.d)", "systemctl restart crio"),
}


def evaluate_engine(facts: EngineFacts, *, explicit: bool, needs_default: bool = True) -> CheckResult:
    """runtime.<engine>: is nvidia-container-runtime the runtime this engine uses by default?

    ``explicit`` (the engine is named in runtime_check.engines) turns "not
    installed" from skipped into an error. ``needs_default`` is false with CDI
    strategies: the engine then resolves CDI names itself, and the nvidia
    runtime is not needed at all.
    """
    name, daemon, config, restart = ENGINE_HINTS[facts.engine]
    check_id, title = f"runtime.{facts.engine}", f"{name} uses the nvidia runtime"
    configure = f"run `nvidia-ctk runtime configure --runtime={facts.engine} --set-as-default`, then `{restart}`"
    absent = Status.ERROR if explicit else Status.SKIPPED
    if facts.binary is None:
        return CheckResult(check_id, title, absent, (f"{daemon} not found: {name} is not installed",),
                           f"install {name}, or drop it from runtime_check.engines" if explicit else "")
    if facts.cri_disabled:
        return CheckResult(check_id, title, absent, ("the CRI plugin is disabled: kubelet cannot use this containerd",),
                           "remove \"cri\" from disabled_plugins, or drop containerd from runtime_check.engines"
                           if explicit else "")
    broken = fatal(facts.problems)
    if broken:
        return CheckResult(check_id, title, Status.ERROR, tuple(str(p) for p in broken),
                           f"repair the file ({name} will not start with it), then `{restart}`")
    evidence = [str(p) for p in facts.problems] + [f"{facts.binary} found"]
    if facts.cdi_enabled is not None:
        set_in = f"set in {facts.cdi_from}" if facts.cdi_from else "built-in default"
        evidence.append(f"CDI: enable_cdi = {str(facts.cdi_enabled).lower()} ({set_in}), "
                        f"cdi_spec_dirs = {', '.join(facts.cdi_spec_dirs) or '(none)'}")
    default = facts.default_runtime or facts.builtin_default
    origin = f" (set in {facts.default_from})" if facts.default_from else " (built-in default)"
    nvidia = [r for r in facts.runtimes.values() if r.is_nvidia]
    chosen = facts.runtimes.get(default)
    if chosen is not None and chosen.is_nvidia:
        if not chosen.binary_found:
            return CheckResult(check_id, title, Status.ERROR,
                               (*evidence, f"default runtime {default!r} runs {chosen.binary}, which does not exist"),
                               "install nvidia-container-toolkit (it provides nvidia-container-runtime)")
        return CheckResult(check_id, title, Status.OK,
                           (*evidence, f"default runtime {default!r}{origin} runs {chosen.binary}"))
    if not needs_default and facts.cdi_enabled is False:
        return CheckResult(check_id, title, Status.ERROR,
                           (*evidence, "a cdi-* strategy needs the engine to resolve CDI names, and CDI is off"),
                           f"set enable_cdi = true in the CRI plugin's table of {config}, then `{restart}`")
    if not needs_default:
        return CheckResult(check_id, title, Status.OK,
                           (*evidence, f"default runtime {default!r}{origin}",
                            "with a cdi-* strategy the engine injects GPUs from CDI specs (see runtime.cdi)"))
    named = facts.runtimes.get("nvidia")
    if not nvidia and named is not None and named.binary is None:
        return CheckResult(check_id, title, Status.ERROR,
                           (*evidence, f"runtime 'nvidia' names no binary (BinaryName / path / runtime_path) in {config}"),
                           configure)
    if not nvidia:
        return CheckResult(check_id, title, Status.ERROR,
                           (*evidence, f"no runtime runs nvidia-container-runtime in {config}"), configure)
    listed = ", ".join(f"{r.name!r} → {r.binary}" for r in nvidia)
    return CheckResult(check_id, title, Status.ERROR,
                       (*evidence, f"nvidia runtime configured ({listed}) but the default is {default!r}{origin}",
                        "kubelet starts containers with the default runtime, so GPU pods get no GPUs"),
                       configure)


def combine_engines(results: Iterable[CheckResult], *, explicit: bool) -> tuple[CheckResult, ...]:
    """Add runtime.engines; with "auto", one good engine makes the others' errors warnings.

    nvdp cannot tell which engine kubelet talks to, so under "auto" a
    docker left at runc next to a correctly set up containerd is most likely
    unused, and is reported without failing the run.
    """
    results = tuple(results)
    installed = [r.id.split(".", 1)[1] for r in results if r.status is not Status.SKIPPED]
    good = [r.id.split(".", 1)[1] for r in results if r.status is Status.OK]
    if not installed:
        summary = CheckResult("runtime.engines", "container engines", Status.ERROR,
                              ("none of docker, containerd, CRI-O found",),
                              "install the container engine kubelet uses, with nvidia-container-toolkit")
    else:
        summary = CheckResult("runtime.engines", "container engines", Status.OK,
                              (f"checked: {', '.join(installed)}",))
    if not explicit and good:
        note = f"only a warning: {', '.join(good)} is set up, and kubelet may not use this engine"
        results = tuple(r.downgraded(Status.WARNING, note) if r.status is Status.ERROR else r for r in results)
    return (summary, *results)
