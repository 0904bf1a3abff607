"""GPU facts as node labels, with gpu-feature-discovery's names and value formats.

Pure: :func:`node_labels` takes the inventory, the MIG strategy and the
sharing and returns ``{label: value}``; :func:`features_file` writes them as
the ``key=value`` lines of a node-feature-discovery ``features.d`` file. The
publisher (``nvdp_node.app.publish``) writes that file at start, on reload
and when the MIG layout changes, so a scheduler can select on
``nvidia.com/gpu.product`` without a second DaemonSet.

Upstream's rules (``internal/lm`` of NVIDIA/k8s-device-plugin v0.20.0) are
followed: whole GPUs are labelled under ``nvidia.com/gpu`` whatever the
advertised resource name; a MIG-enabled GPU counts as its model without
sharing (replicas 0); ``single`` labels ``nvidia.com/gpu`` with its MIG
devices (``<model>-MIG-<profile>``); ``mixed`` labels each
``nvidia.com/mig-<profile>``. Where upstream picks one model of several at
random (Go map order), nvdp takes the model with the most GPUs, then the
lowest NVML index.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from nvdp_node.domain.devices import Gpu, MigDevice, NodeInventory
from nvdp_node.domain.mig import mixed_resource_name
from nvdp_node.domain.sharing import Sharing

GPU = "nvidia.com/gpu"
MIB = 1024 * 1024

# (major, minor-bound) → family, as upstream's getArchFamily.
_FAMILIES = {1: "tesla", 2: "fermi", 3: "kepler", 5: "maxwell", 6: "pascal", 9: "hopper",
             10: "blackwell", 12: "blackwell", 13: "rubin"}


def arch_family(major: int, minor: int) -> str:
    if major == 7:
        return "volta" if minor < 5 else "turing"
    if major == 8:
        return "ampere" if minor < 9 else "ada-lovelace"
    return _FAMILIES.get(major, "undefined")


def sanitise(text: str) -> str:
    """Upstream's label-value cleaning: drop all but ``[A-Za-z0-9-_. ]``, runs of blanks become one ``-``."""
    return "-".join(re.sub(r"[^A-Za-z0-9\-_. ]", "", text).split())


@dataclass(frozen=True)
class _Share:
    replicas: int  # 0: sharing not considered (MIG-enabled GPUs); 1: not shared
    strategy: str
    renamed: bool


def _share(name: str, sharing: Sharing | None, considered: bool = True) -> _Share:
    if not considered:
        return _Share(0, "none", False)
    if sharing is not None:
        for resource in sharing.resources:
            if resource.name == name and resource.replicas > 0:
                renamed = sharing.advertised_name(resource) != resource.name
                strategy = sharing.kind if resource.replicas > 1 else "none"
                return _Share(resource.replicas, strategy, renamed)
    return _Share(1, "none", False)


def _base(prefix: str, count: int, share: _Share, *parts: str) -> dict[str, str]:
    product = "-".join(sanitise(p) for p in parts if p)
    if product and share.replicas > 1 and not share.renamed:
        product += "-SHARED"
    return {f"{prefix}.product": product, f"{prefix}.count": str(count), f"{prefix}.replicas": str(share.replicas),
            f"{prefix}.sharing-strategy": share.strategy}


def _pick(groups: Mapping[str, list[Gpu]]) -> str:
    return min(groups, key=lambda name: (-len(groups[name]), min(g.index for g in groups[name])))


def _gpu_labels(gpus: tuple[Gpu, ...], sharing: Sharing | None) -> dict[str, str]:
    by_model: dict[str, list[Gpu]] = {}
    for gpu in gpus:
        by_model.setdefault(gpu.name, []).append(gpu)
    name = _pick(by_model)
    gpu = by_model[name][0]
    whole = any(not g.mig_enabled for g in by_model[name])
    labels = _base(GPU, len(by_model[name]), _share(GPU, sharing, considered=whole), name)
    if gpu.memory_total:
        labels[f"{GPU}.memory"] = str(gpu.memory_total // MIB)
    if gpu.compute_capability:
        major, _, minor = gpu.compute_capability.partition(".")
        if major.isdigit() and minor.isdigit() and int(major):
            labels[f"{GPU}.family"] = arch_family(int(major), int(minor))
            labels[f"{GPU}.compute.major"] = major
            labels[f"{GPU}.compute.minor"] = minor
    return labels


def _version_labels(inventory: NodeInventory) -> dict[str, str]:
    labels: dict[str, str] = {}
    parts = inventory.driver_version.split(".")
    if 2 <= len(parts) <= 3:
        major, minor, rev = parts[0], parts[1], parts[2] if len(parts) > 2 else ""
        labels |= {"nvidia.com/cuda.driver.major": major, "nvidia.com/cuda.driver.minor": minor,
                   "nvidia.com/cuda.driver.rev": rev,
                   "nvidia.com/cuda.driver-version.major": major, "nvidia.com/cuda.driver-version.minor": minor,
                   "nvidia.com/cuda.driver-version.revision": rev,
                   "nvidia.com/cuda.driver-version.full": inventory.driver_version}
    if inventory.cuda_driver_version:
        major, _, minor = inventory.cuda_driver_version.partition(".")
        labels |= {"nvidia.com/cuda.runtime.major": major, "nvidia.com/cuda.runtime.minor": minor,
                   "nvidia.com/cuda.runtime-version.major": major, "nvidia.com/cuda.runtime-version.minor": minor,
                   "nvidia.com/cuda.runtime-version.full": f"{major}.{minor}"}
    return labels


def _mig_labels(prefix: str, gpu: Gpu, mig: MigDevice, count: int, sharing: Sharing | None) -> dict[str, str]:
    labels = _base(prefix, count, _share(prefix, sharing), gpu.name, "MIG", mig.profile)
    if mig.memory_total:
        labels[f"{prefix}.memory"] = str(mig.memory_total // MIB)
    return labels


def _invalid_single(gpu: Gpu) -> dict[str, str]:
    return {f"{GPU}.product": f"{sanitise(gpu.name)}-MIG-INVALID", f"{GPU}.count": "0", f"{GPU}.replicas": "0",
            f"{GPU}.sharing-strategy": "", f"{GPU}.memory": "0"}


def _strategy_labels(gpus: tuple[Gpu, ...], strategy: str, sharing: Sharing | None) -> dict[str, str]:
    labels = {"nvidia.com/mig.strategy": strategy}
    migs = [(g, m) for g in gpus if g.mig_enabled for m in g.mig_devices]
    profiles: dict[str, list[tuple[Gpu, MigDevice]]] = {}
    for gpu, mig in migs:
        profiles.setdefault(mig.profile, []).append((gpu, mig))
    if strategy == "mixed":
        for profile, found in sorted(profiles.items()):
            # The resource's own name: "+" is no label character (1g.18gb+me → mig-1g.18gb.me).
            labels |= _mig_labels(mixed_resource_name(profile), *found[0], len(found), sharing)
        return labels
    enabled = [g for g in gpus if g.mig_enabled]
    if not enabled:
        return labels
    if any(not g.mig_devices for g in enabled) or len(enabled) < len(gpus) or len(profiles) != 1:
        return labels | _invalid_single(enabled[0])
    (found,) = profiles.values()
    return labels | _mig_labels(GPU, *found[0], len(found), sharing)


def node_labels(inventory: NodeInventory, *, mig_strategy: str, sharing: Sharing | None) -> dict[str, str]:
    """The node's labels; none when it has no GPU (as upstream)."""
    gpus = inventory.gpus
    if not gpus:
        return {}
    labels = _version_labels(inventory)
    labels["nvidia.com/mps.capable"] = str(sharing is not None and sharing.kind == "mps").lower()
    labels |= _gpu_labels(gpus, sharing)
    if mig_strategy != "none":
        labels |= _strategy_labels(gpus, mig_strategy, sharing)
    return dict(sorted(labels.items()))


def features_file(labels: Mapping[str, str]) -> str:
    """NFD's ``features.d`` format: one ``name=value`` per line."""
    return "".join(f"{k}={v}\n" for k, v in labels.items())
