"""What ``nvdp serve`` needs to run, derived from the loaded configuration.

The supervisor works on this small frozen value rather than on the config
model, so reload can compare old and new settings field by field. Host paths
(sysfs, /dev) are the same :class:`HostRoot` the host checks read, so tests
redirect both with one value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nvdp_node.adapters.host import HostRoot
from nvdp_node.domain.allocation import AllocationPolicy
from nvdp_node.domain.health_policy import HealthPolicy, RecoveryPolicy

CONTROL_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")


def present_control_devices(host: HostRoot) -> tuple[str, ...]:
    """The control nodes that exist on this host (upstream passes only those)."""
    dev = host.at(host.dev_dir)
    return tuple(p for p in CONTROL_DEVICES if (dev / Path(p).name).exists())


@dataclass(frozen=True)
class HealthSettings:
    """``[health]``: whether the NVML worker runs, and its policies."""

    enabled: bool = True
    xid_events: bool = True
    policy: HealthPolicy = field(default_factory=HealthPolicy)
    recovery: RecoveryPolicy = field(default_factory=RecoveryPolicy)


@dataclass(frozen=True)
class ServeSettings:
    resource_name: str = "nvidia.com/gpu"
    socket_dir: Path = Path("/var/lib/kubelet/device-plugins")
    kubelet_socket: Path = Path("/var/lib/kubelet/device-plugins/kubelet.sock")
    fail_on_init_error: bool = True
    device_list_strategy: tuple[str, ...] = ("envvar",)
    device_id_strategy: str = "uuid"
    pass_device_specs: bool = False
    nvidia_dev_root: str = "/"
    health: HealthSettings = field(default_factory=HealthSettings)
    host: HostRoot = field(default_factory=HostRoot)

    def policy(self) -> AllocationPolicy:
        return AllocationPolicy(
            resource_name=self.resource_name,
            device_list_strategy=self.device_list_strategy,
            device_id_strategy=self.device_id_strategy,
            pass_device_specs=self.pass_device_specs,
            dev_root=self.nvidia_dev_root,
            control_device_paths=present_control_devices(self.host) if self.pass_device_specs else (),
        )

    def registration_key(self) -> tuple[str, Path]:
        """What, if changed by a reload, needs a new plugin server.

        A changed kubelet socket alone keeps the server: the next reconcile sees
        a different kubelet.sock and registers there.
        """
        return (self.resource_name, self.socket_dir)


SettingsLoader = Callable[[], ServeSettings]
