"""The typed schema of /etc/nvdp/config.toml (format ``version = 1``).

A pydantic-settings ``BaseSettings`` (:class:`Config`) over strict pydantic
sections (value types in ``values.py``; ``[resources]`` in ``naming.py``,
``[sharing.*]`` in ``sharing.py``, its checks in ``sharing_checks.py``);
nothing here reads files or the environment. ``loader.py`` builds
the pydantic-settings sources (file, environment, flags) for each load and
hands them to :meth:`Config.from_sources`; ``keys.py`` lists the keys;
``render.py`` turns the field descriptions into the commented default file;
the daemon reads the frozen result (``config.kubelet.socket_dir``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from nvdp_node.config.naming import ResourcesConfig
from nvdp_node.config.observe import LabelsConfig, MetricsConfig
from nvdp_node.config.sharing import SharingConfig
from nvdp_node.config.sharing_checks import renamed_resources, sharing_problems
from nvdp_node.config.values import AbsolutePath, AbsolutePathOrEmpty, Section, XidList, choices, quote
from nvdp_node.domain.allocation import AllocationPolicy
from nvdp_node.domain.preferred import SharedAllocationPolicy
from nvdp_node.domain.health_policy import DEFAULT_IGNORED_XIDS
from nvdp_node.domain.resource_names import socket_dir_problem, socket_path_problem, validate_extended_resource_name
from nvdp_node.domain.resources import MigStrategy

CONFIG_VERSION = 1
CROSS_KEY = "cross_key_problems"  # error type of the checks over several keys (errors.py splits it)
DEVICE_LIST_STRATEGIES = ("envvar", "volume-mounts", "cdi-annotations", "cdi-cri")
UNSUPPORTED_DEVICE_LIST_STRATEGIES: tuple[str, ...] = ()
ENGINES = ("docker", "containerd", "crio")

Engine = Literal["docker", "containerd", "crio"]
DeviceListStrategy = Literal["envvar", "volume-mounts", "cdi-annotations", "cdi-cri"]


class KubeletConfig(Section):
    """Where kubelet's device-plugin sockets live."""

    socket_dir: AbsolutePath = Field(
        Path("/var/lib/kubelet/device-plugins"),
        description="Directory holding kubelet's registration socket and the plugin's own "
        "socket (nvidia-<name>.sock).",
    )
    kubelet_socket: AbsolutePathOrEmpty = Field(
        "",
        description='Path of kubelet\'s registration socket. "" means <socket_dir>/kubelet.sock.',
    )
    pod_resources_socket: AbsolutePathOrEmpty = Field(
        "/var/lib/kubelet/pod-resources/kubelet.sock",
        description="Path of kubelet's PodResources API socket. nvdp asks it at start and on reload which "
        "GPUs running pods hold, so a GPU a pod got under another resource name (before a rename of "
        'resource_name, or from another plugin) is not handed out twice. "" means do not ask.',
    )

    @property
    def kubelet_socket_path(self) -> Path:
        return Path(self.kubelet_socket) if self.kubelet_socket else self.socket_dir / "kubelet.sock"


class HealthConfig(Section):
    """GPU health checking through NVML events."""

    enabled: bool = Field(True, description="Check GPU health at all. false: GPUs are always reported healthy.")
    xid_events: bool = Field(
        True,
        description="Mark a GPU unhealthy on an NVML XID critical-error event. "
        "DP_DISABLE_HEALTHCHECKS=all or =xids sets this to false.",
    )
    ignored_xids: XidList = Field(
        tuple(sorted(DEFAULT_IGNORED_XIDS)),
        description="XIDs that do not mark a GPU unhealthy: errors caused by applications, not hardware. "
        "DP_DISABLE_HEALTHCHECKS=<list> adds to this list; DP_ENABLE_HEALTHCHECKS=all empties it. "
        "Duplicates are dropped and the list is sorted.",
    )
    force_enabled_xids: XidList = Field(
        (),
        description="XIDs that always mark a GPU unhealthy, even if listed in ignored_xids. "
        "DP_ENABLE_HEALTHCHECKS=<list> adds to this list.",
    )

    unattributed_events: Literal["mark-all", "ignore"] = Field(
        "mark-all",
        description='An XID event NVML cannot attribute to a GPU: "mark-all" marks every GPU unhealthy '
        '(upstream), "ignore" only logs it.',
    )
    recovery: bool = Field(
        False,
        description="Let an unhealthy GPU return to Healthy after recovery_quiet_period seconds without "
        "events and a passing probe query. false (upstream): unhealthy until reload or restart.",
    )
    recovery_quiet_period: int = Field(
        600, ge=1, description="Seconds without health events before a GPU may recover (with recovery = true)."
    )


class RuntimeCheckConfig(Section):
    """The start-up check that container engines are set up for NVIDIA GPUs."""

    engines: Literal["auto"] | tuple[Engine, ...] = Field(
        "auto",
        description='Container engines to check: "auto" (those installed on this node) '
        'or a list drawn from "docker", "containerd", "crio".',
    )
    policy: Literal["warn", "fail", "off"] = Field(
        "warn",
        description='What a failed check does: "warn" logs it, "fail" stops nvdp, "off" skips the check.',
    )
    min_driver_version: str = Field(
        "384.81",
        pattern=r"^[0-9]+(\.[0-9]+){0,2}$",
        description="Oldest NVIDIA driver version the driver check accepts (384.81: the original plugin's minimum).",
    )

    @field_validator("engines", mode="before")
    @classmethod
    def _engines(cls, value: object) -> object:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ValueError('expected "auto" or a list of engine names')
        if not items:
            raise ValueError('name at least one engine, or use "auto"')
        if "auto" in items:
            if len(items) > 1:
                raise ValueError('"auto" cannot be combined with engine names')
            return "auto"
        for item in items:
            if item not in ENGINES:
                raise ValueError(f"unknown engine {quote(item)}: expected {choices(ENGINES)}")
        return tuple(dict.fromkeys(items))


# Allocate's defaults are upstream's and live with the allocation rules (domain).
_ALLOCATE = AllocationPolicy()


class PluginConfig(Section):
    """How GPUs are handed to containers; upstream's flags and flags.plugin keys."""

    fail_on_init_error: bool = Field(
        True,
        description="Exit with an error when NVML cannot be initialised (no driver). "
        "false: keep running and advertise no GPUs, as the 2019 plugin did.",
    )
    pass_device_specs: bool = Field(
        _ALLOCATE.pass_device_specs,
        description="Also return the /dev/nvidia* device nodes in Allocate; needed with "
        "kubelet's static CPU manager policy.",
    )
    device_list_strategy: tuple[DeviceListStrategy, ...] = Field(
        _ALLOCATE.device_list_strategy,
        description='How the allocated GPUs are passed to the container runtime: "envvar" '
        '(NVIDIA_VISIBLE_DEVICES), "volume-mounts" (/var/run/nvidia-container-devices/<id>), '
        '"cdi-annotations" (CDI names in a cdi.k8s.io/ annotation) and/or "cdi-cri" (CDI names in '
        "Allocate's cdi_devices, kubelet 1.29+). A single string or a list. With a cdi-* strategy nvdp "
        "writes the node's CDI spec to cdi_spec_dir.",
    )
    device_id_strategy: Literal["uuid", "index"] = Field(
        _ALLOCATE.device_id_strategy, description='How GPUs are named to the runtime: "uuid" (GPU-...) or "index" (0, 1, ...).'
    )
    nvidia_driver_root: AbsolutePath = Field(
        Path("/"),
        description="Root of the NVIDIA driver installation on the host, e.g. /run/nvidia/driver "
        "for a containerised driver.",
    )
    nvidia_dev_root: AbsolutePathOrEmpty = Field(
        "",
        description='Prefix of the /dev/nvidia* paths passed to the runtime. "" means the same as '
        "nvidia_driver_root.",
    )
    mig_strategy: MigStrategy = Field(
        "none",
        description='How MIG-enabled GPUs are advertised. "none": whole, like any other GPU (a container '
        'then finds no usable CUDA device on them). "single": as their MIG devices, all under one name '
        "(resource_name, or as resources.mig says); every GPU must be MIG-enabled and every MIG device of "
        'one profile. "mixed": one resource per MIG profile, nvidia.com/mig-<profile> such as '
        "nvidia.com/mig-1g.10gb, next to the whole GPUs that are not MIG-enabled.",
    )
    mig_check_interval: int = Field(
        30,
        ge=0,
        description="Seconds between checks for a changed MIG mode or MIG layout (GPU and compute "
        "instances); a change is applied like a reload. 0: no periodic check. A reload always checks.",
    )
    shared_devices_allocation_policy: SharedAllocationPolicy = Field(
        _ALLOCATE.shared_devices_allocation_policy,
        description="Which replicas of a shared resource (sharing.*) kubelet is offered first: "
        '"distributed": those of the GPU with the fewest replicas in use (upstream\'s default), '
        '"packed": those of the GPU with the most, so whole GPUs stay free.',
    )

    cdi_annotation_prefix: str = Field(
        _ALLOCATE.cdi_annotation_prefix,
        description='Prefix of the annotation key that "cdi-annotations" sets '
        "(<prefix>nvidia-device-plugin_<uuid>); a DNS subdomain ending in /.",
    )
    nvidia_cdi_hook_path: AbsolutePath = Field(
        Path("/usr/bin/nvidia-cdi-hook"),
        description="The toolkit's nvidia-cdi-hook (or nvidia-ctk) written into the CDI spec for its "
        "create-symlinks and update-ldcache hooks. If it does not exist on the host, the spec has no "
        "hooks (a warning says so) and still mounts every driver file.",
    )
    cdi_spec_dir: AbsolutePath = Field(
        Path("/var/run/cdi"),
        description="Directory nvdp writes its CDI spec to (k8s.device-plugin.nvidia.com-gpu.json, "
        "upstream's name) when a cdi-* strategy is used; nvdp touches no other file there.",
    )

    @field_validator("cdi_annotation_prefix")
    @classmethod
    def _annotation_prefix(cls, value: str) -> str:
        problem = annotation_prefix_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("device_list_strategy", mode="before")
    @classmethod
    def _strategies(cls, value: object) -> object:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ValueError("expected a strategy name or a list of them")
        if not items:
            raise ValueError(f"name at least one strategy: {choices(DEVICE_LIST_STRATEGIES)}")
        for item in items:
            if item in UNSUPPORTED_DEVICE_LIST_STRATEGIES:
                raise ValueError(
                    f"{quote(item)} is not supported yet (supported: {choices(DEVICE_LIST_STRATEGIES)})"
                )
            if item not in DEVICE_LIST_STRATEGIES:
                raise ValueError(f"unknown strategy {quote(item)}: expected {choices(DEVICE_LIST_STRATEGIES)}")
        return tuple(dict.fromkeys(items))

    @property
    def dev_root_path(self) -> Path:
        return Path(self.nvidia_dev_root) if self.nvidia_dev_root else self.nvidia_driver_root


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def annotation_prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot start a Kubernetes annotation key (a DNS subdomain, then "/"), or None."""
    if not prefix.endswith("/"):
        return 'expected a DNS subdomain ending in "/", such as "cdi.k8s.io/"'
    domain = prefix[:-1]
    if not domain or len(domain) > 253 or not all(_DNS_LABEL.match(p) for p in domain.split(".")):
        return 'expected a DNS subdomain ending in "/" (lower-case letters, digits, "-" and "."), such as "cdi.k8s.io/"'
    return None


class LoggingConfig(Section):
    """Log output; journald adds timestamps and the unit name to plain lines."""

    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Least severe level logged.")
    format: Literal["plain", "json"] = Field(
        "plain", description='"plain": one line per message, for journald; "json": one JSON object per line.'
    )


def _resource_name(value: str) -> str:
    error = validate_extended_resource_name(value)
    if error:
        raise ValueError(error)
    return value


def _version(value: object) -> object:
    if type(value) is not int or value != CONFIG_VERSION:
        raise ValueError(f"unsupported config version; this nvdp reads version = {CONFIG_VERSION}")
    return value


# The sources of the load in progress (see Config.from_sources); a ContextVar,
# so concurrent loads in threads or tasks cannot see each other's.
_LOAD_SOURCES: ContextVar[tuple[PydanticBaseSettingsSource, ...] | None] = ContextVar("_LOAD_SOURCES", default=None)


class Config(BaseSettings):
    """The whole configuration. Frozen: a reload builds a new one and compares."""

    # The environment source (loader.py builds it) reads NVDP_<SECTION>__<KEY>;
    # enable_decoding=False hands it the raw strings, which sources.py parses
    # strictly. The model is not strict itself (its sections are), so the
    # environment source does not coerce strings the lax way either.
    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", env_prefix="NVDP_", env_nested_delimiter="__", enable_decoding=False
    )

    version: Annotated[int, BeforeValidator(_version)] = Field(
        CONFIG_VERSION, description=f"Format version of this file; must be {CONFIG_VERSION}."
    )
    resource_name: Annotated[str, Field(strict=True), AfterValidator(_resource_name)] = Field(
        _ALLOCATE.resource_name,
        description="Extended resource name advertised to kubelet. Checked with kubelet's rules "
        "(a domain prefix, at most one '/', a DNS-subdomain prefix, a name of at most 63 characters).",
    )
    kubelet: KubeletConfig = Field(default_factory=KubeletConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    runtime_check: RuntimeCheckConfig = Field(default_factory=RuntimeCheckConfig)
    plugin: PluginConfig = Field(default_factory=PluginConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    sharing: SharingConfig = Field(default_factory=SharingConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)

    @model_validator(mode="after")
    def _cross_key(self) -> Config:
        """Checks over several keys: [sharing] against the names, and every name's socket under socket_dir."""
        problems = sharing_problems(self)
        socket_problem = socket_dir_problem(self.kubelet.socket_dir)
        if socket_problem:
            problems.append((("kubelet", "socket_dir"), socket_problem))
        else:
            problems += [
                (loc, found)
                for loc, name in self._resource_names()
                if (found := socket_path_problem(self.kubelet.socket_dir, name))
            ]
        if problems:
            # One pydantic error can carry all of them; errors.py gives each its own line.
            raise PydanticCustomError(CROSS_KEY, "{problem}", {"problem": problems[0][1], "problems": problems})
        return self

    def _resource_names(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        yield ("resource_name",), self.resource_name
        for table in ("gpus", "mig"):
            for index, entry in enumerate(getattr(self.resources, table)):
                yield ("resources", table, index, "name"), entry.name
        yield from renamed_resources(self)

    @classmethod
    def from_sources(cls, *sources: PydanticBaseSettingsSource) -> Config:
        """Build from these pydantic-settings sources, highest priority first (pydantic's merge)."""
        with _sources(sources):
            return cls()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Config(...) and model_validate() read only their arguments, never the
        # process environment; loads go through from_sources.
        return _LOAD_SOURCES.get() or (init_settings,)


@contextmanager
def _sources(sources: tuple[PydanticBaseSettingsSource, ...]) -> Iterator[None]:
    token = _LOAD_SOURCES.set(sources)
    try:
        yield
    finally:
        _LOAD_SOURCES.reset(token)
