"""What one MPS control daemon is told: each client's share of the SMs and of each GPU's memory.

Pure. ``nvdp_node.adapters.mps.MpsControl.start`` writes these settings into
the environment file of ``nvdp-mps@<resource>.service``, whose
``ExecStartPost=`` hands them to ``nvidia-cuda-mps-control`` before systemd
reports the unit active. The numbers are upstream's
(``cmd/mps-control-daemon/mps/daemon.go`` in NVIDIA/k8s-device-plugin v0.20.0):

* ``set_default_device_pinned_mem_limit <index> <total / replicas>M`` for every
  GPU whose memory size is known, with the NVML index, in MiB rounded down;
* ``set_default_active_thread_percentage <100 / replicas>``, rounded down;
* and each GPU is put into the ``EXCLUSIVE_PROCESS`` compute mode while its
  daemon runs (``nvidia-smi -i <uuid> -c ...``), ``DEFAULT`` again after.

Upstream walks a Go map, so its order is random; here the limits go in index order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nvdp_node.domain.devices import Device, Gpu

MIB = 1024 * 1024


@dataclass(frozen=True)
class PinnedMemLimit:
    """One GPU's pinned device-memory limit per client: ``index`` is the NVML index, ``limit`` e.g. ``"20480M"``."""

    index: str
    limit: str


@dataclass(frozen=True)
class MpsDaemonSettings:
    """Everything the unit needs besides its directories, for one shared resource."""

    replicas: int
    gpu_uuids: tuple[str, ...]
    active_thread_percentage: int | None
    pinned_mem_limits: tuple[PinnedMemLimit, ...]

    def commands(self) -> tuple[str, ...]:
        """The control commands, in upstream's order (the memory limits first)."""
        out = [f"set_default_device_pinned_mem_limit {p.index} {p.limit}" for p in self.pinned_mem_limits]
        if self.active_thread_percentage is not None:
            out.append(f"set_default_active_thread_percentage {self.active_thread_percentage}")
        return tuple(out)


def mps_daemon_settings(gpus: Sequence[Gpu], replicas: int) -> MpsDaemonSettings:
    """The settings for a daemon serving ``gpus``, each shared by ``replicas`` clients.

    No GPUs: no thread percentage either (upstream sets none for an empty
    resource). A GPU whose memory size NVML did not report (0) gets no limit.
    """
    if replicas < 1:
        raise ValueError(f"an MPS daemon needs at least 1 replica per GPU, not {replicas}")
    unique = {g.uuid: g for g in gpus}.values()
    ordered = sorted(unique, key=lambda g: g.index)
    limits = tuple(
        PinnedMemLimit(str(g.index), f"{g.memory_total // replicas // MIB}M") for g in ordered if g.memory_total > 0
    )
    return MpsDaemonSettings(
        replicas=replicas,
        gpu_uuids=tuple(g.uuid for g in ordered),
        active_thread_percentage=100 // replicas if ordered else None,
        pinned_mem_limits=limits,
    )


def gpus_of(devices: Iterable[Device], gpus: Iterable[Gpu]) -> tuple[Gpu, ...]:
    """The GPUs (in ``gpus``' order) that ``devices`` — a resource's devices or their replicas — live on."""
    wanted = {d.gpu_uuid for d in devices}
    return tuple(g for g in gpus if g.uuid in wanted)
