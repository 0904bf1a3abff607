"""What ``nvdp serve`` needs to run, derived from the loaded configuration.

The supervisor works on this small frozen value rather than on the config
model, so a reload can compare old and new settings field by field. Every
default lives in the config schema; :meth:`ServeSettings.from_config` is the
only constructor the daemon uses. Host paths (sysfs, /dev) are the same
:class:`HostRoot` the host checks read, so tests redirect both with one value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nvdp_node.adapters.host import HostRoot
from nvdp_node.adapters.host.driver_files import DriverRoots
from nvdp_node.app.cdi_specs import CdiSettings
from nvdp_node.config import Config, naming_from_config
from nvdp_node.config.observe import LabelsConfig, MetricsConfig
from nvdp_node.config.sharing import sharing_from_config
from nvdp_node.config.render import effective_summary
from nvdp_node.domain.allocation import AllocationPolicy
from nvdp_node.domain.health_policy import HealthPolicy, RecoveryPolicy
from nvdp_node.domain.resources import ResourceNaming
from nvdp_node.domain.sharing import Sharing

CONTROL_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")


def present_control_devices(host: HostRoot) -> tuple[str, ...]:
    """The control nodes that exist on this host (upstream passes only those)."""
    dev = host.at(host.dev_dir)
    return tuple(p for p in CONTROL_DEVICES if (dev / Path(p).name).exists())


@dataclass(frozen=True)
class HealthSettings:
    """``[health]``: whether the NVML worker runs, and its policies."""

    enabled: bool
    xid_events: bool
    policy: HealthPolicy
    recovery: RecoveryPolicy


@dataclass(frozen=True)
class MpsHost:
    """Where the MPS daemons' tools are on this host (command-line flags; tests point them at stand-ins)."""

    systemctl: str = "systemctl"
    control: str = "nvidia-cuda-mps-control"
    env_dir: Path = Path("/run/nvdp/mps")


@dataclass(frozen=True)
class ServeSettings:
    resource_name: str
    socket_dir: Path
    kubelet_socket: Path
    pod_resources_socket: Path | None
    fail_on_init_error: bool
    policy: AllocationPolicy
    health: HealthSettings
    host: HostRoot
    naming: ResourceNaming
    sharing: Sharing | None
    mps_root: str
    mps_host: MpsHost
    mig_check_interval: float
    log_level: str
    log_format: str
    summary: str  # the effective configuration in one line, logged at start and after each reload
    metrics: MetricsConfig = MetricsConfig()  # where the publisher writes (app/publish.py)
    labels: LabelsConfig = LabelsConfig()
    cdi: CdiSettings = CdiSettings()

    @classmethod
    def from_config(cls, config: Config, host: HostRoot, mps_host: MpsHost) -> ServeSettings:
        plugin = config.plugin
        pass_specs = plugin.pass_device_specs
        pod_resources = config.kubelet.pod_resources_socket
        return cls(
            resource_name=config.resource_name,
            socket_dir=Path(config.kubelet.socket_dir),
            kubelet_socket=Path(config.kubelet.kubelet_socket_path),
            pod_resources_socket=Path(pod_resources) if pod_resources else None,
            fail_on_init_error=plugin.fail_on_init_error,
            policy=AllocationPolicy(
                resource_name=config.resource_name,
                device_list_strategy=tuple(plugin.device_list_strategy),
                device_id_strategy=str(plugin.device_id_strategy),
                pass_device_specs=pass_specs,
                dev_root=str(plugin.dev_root_path),
                control_device_paths=present_control_devices(host) if pass_specs else (),
                shared_devices_allocation_policy=plugin.shared_devices_allocation_policy,
                cdi_annotation_prefix=plugin.cdi_annotation_prefix,
            ),
            health=HealthSettings(
                enabled=config.health.enabled,
                xid_events=config.health.xid_events,
                policy=HealthPolicy(
                    ignored_xids=frozenset(config.health.ignored_xids),
                    force_enabled_xids=frozenset(config.health.force_enabled_xids),
                    unattributed_marks_all=config.health.unattributed_events == "mark-all",
                ),
                recovery=RecoveryPolicy(
                    enabled=config.health.recovery, quiet_period=float(config.health.recovery_quiet_period)
                ),
            ),
            host=host,
            naming=naming_from_config(config),
            sharing=sharing_from_config(config),
            mps_root=str(config.sharing.mps.root),
            mps_host=mps_host,
            mig_check_interval=float(config.plugin.mig_check_interval),
            log_level=config.logging.level,
            log_format=config.logging.format,
            summary=effective_summary(config),
            metrics=config.metrics,
            labels=config.labels,
            cdi=cdi_settings(config, host),
        )


def cdi_settings(config: Config, host: HostRoot) -> CdiSettings:
    plugin = config.plugin
    return CdiSettings(
        spec_dir=Path(plugin.cdi_spec_dir), hook_path=str(plugin.nvidia_cdi_hook_path),
        roots=DriverRoots(driver_root=Path(plugin.nvidia_driver_root), dev_root=str(plugin.dev_root_path), host=host),
    )

