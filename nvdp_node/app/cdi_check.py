"""Gather the facts of the ``cdi.spec`` check: nvdp's spec file and the device ids nvdp would advertise.

``app/host_checks.py`` calls :func:`cdi_spec_result` from ``nvdp check`` (and
the serve-time checks). The ids come from the same planning ``nvdp serve``
does (MIG strategy, names, sharing) over one NVML enumeration; the rule is
``domain/checks/cdi_spec.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from nvdp_node.adapters import nvml
from nvdp_node.adapters.cdi_writer import read_spec
from nvdp_node.adapters.host import HostRoot
from nvdp_node.config import Config, naming_from_config
from nvdp_node.config.sharing import sharing_from_config
from nvdp_node.domain.cdi_spec import SPEC_FILE_NAME, device_name_problem, rendered_id, spec_device_names
from nvdp_node.domain.checks import CheckResult
from nvdp_node.domain.checks.cdi_spec import CdiSpecFacts, evaluate_cdi_spec
from nvdp_node.domain.devices import NodeInventory
from nvdp_node.domain.errors import NvmlUnavailableError
from nvdp_node.domain.resources import plan_devices
from nvdp_node.domain.sharing import plan_sharing


def cdi_spec_result(config: Config, paths: HostRoot,
                    discover: Callable[[], NodeInventory] | None = None) -> CheckResult:
    plugin = config.plugin
    uses = any(s.startswith("cdi-") for s in plugin.device_list_strategy)
    if not uses:
        return evaluate_cdi_spec(CdiSpecFacts(path="", declared=None), uses_cdi=False)
    host_path = f"{str(plugin.cdi_spec_dir).rstrip('/')}/{SPEC_FILE_NAME}"
    declared, problem = None, ""
    try:
        declared = spec_device_names(read_spec(paths.at(host_path)))
        if declared is None:
            problem = "not a spec of kind k8s.device-plugin.nvidia.com/gpu with a devices list"
    except FileNotFoundError:
        problem = "missing"
    except (OSError, ValueError) as err:
        problem = f"cannot be read: {getattr(err, 'strerror', None) or err}"
    try:
        inventory = (discover or (lambda: nvml.discover(sysfs_root=paths.at(paths.sysfs_dir))))()
    except NvmlUnavailableError:
        return evaluate_cdi_spec(CdiSpecFacts(host_path, declared, problem, devices_known=False), uses_cdi=True)
    advertised = _advertised_names(config, inventory)
    return evaluate_cdi_spec(CdiSpecFacts(host_path, declared, problem, advertised), uses_cdi=True)


def _advertised_names(config: Config, inventory: NodeInventory) -> frozenset[str]:
    plan = plan_devices(inventory, naming_from_config(config))
    shared = plan_sharing(plan.resources, sharing_from_config(config),
                          compute_capabilities={g.uuid: g.compute_capability for g in inventory.gpus})
    strategy = str(config.plugin.device_id_strategy)
    names = {rendered_id(d, strategy) for devices in shared.resources.values() for d in devices}
    return frozenset(n for n in names if device_name_problem(n) is None)
