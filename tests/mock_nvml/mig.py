"""MIG layouts for the mock NVML: planning a GPU's MIG devices, run-time layouts, capability files.

:meth:`Control.mig <tests.mock_nvml.control.Control.mig>` plans a new layout
here (placements, GPU/compute instance ids, MIG UUIDs) and hands the C
library the result as a JSON file; the library checks it against the GPU's
catalogue again. :class:`MockNode <tests.mock_nvml.environment.MockNode>`
uses :func:`effective_profile` to see the layout the ``mig`` control lines
produced, and :func:`capability_files` / :func:`sync_tree` to write the
``/proc/driver/nvidia/capabilities`` files a driver would show for it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# One GPU instance with one compute instance ("1g.10gb", "1c.2g.20gb"), or several
# compute instances sharing one GPU instance (("1c.3g.40gb", "2c.3g.40gb")).
MigDeviceSpec = str | Sequence[str]

_PROFILE = re.compile(r"^(?:(?P<c>[1-9][0-9]*)c\.)?(?P<gi>[1-9][0-9]*g\.[0-9]+gb(?:[+-][a-z0-9.,]+)?)$")

# The minors the driver gives MIG capabilities (/proc/driver/nvidia-caps/mig-minors):
# config 1, monitor 2, then per GPU minor 15 GPU instances x (access + 8 compute instances).
_CONFIG_MINOR, _MONITOR_MINOR, _FIRST_GPU_MINOR = 1, 2, 3
_GPU_INSTANCE_IDS, _COMPUTE_INSTANCE_IDS = 15, 8
_PER_GI = 1 + _COMPUTE_INSTANCE_IDS
_PER_GPU = _GPU_INSTANCE_IDS * _PER_GI

CAPABILITIES_DIR = "driver/nvidia/capabilities"
MIG_MINORS_FILE = "driver/nvidia-caps/mig-minors"
PROCFS_DIRS = (CAPABILITIES_DIR, "driver/nvidia-caps")  # what MockNode.write_procfs owns under its root
CAPS_DEVICE_DIR = "nvidia-caps"  # under the devfs root: nvidia-cap<minor>


class MigLayoutError(ValueError):
    """A layout the GPU's catalogue cannot hold (unknown profile, no free placement, too many instances)."""


def cap_minor(gpu_minor: int, gpu_instance: int, compute_instance: int | None = None) -> int:
    """The ``/dev/nvidia-caps/nvidia-cap<minor>`` of a GPU instance's (or compute instance's) access file."""
    minor = _FIRST_GPU_MINOR + gpu_minor * _PER_GPU + gpu_instance * _PER_GI
    return minor if compute_instance is None else minor + 1 + compute_instance


def catalogue_of(profile: Mapping[str, Any], gpu: int) -> Mapping[str, Any]:
    """The MIG catalogue of GPU ``gpu`` (an NVML index)."""
    entry = profile["gpus"][gpu]
    key = entry.get("mig", {}).get("catalogue")
    if key is None:
        raise MigLayoutError(f"GPU {gpu} ({entry['name']}) has no MIG catalogue; its MIG layout cannot change")
    catalogue: Mapping[str, Any] = profile["mig_catalogues"][key]
    return catalogue


def _gpu_instance_id(total_slices: int, start: int, size: int) -> int:
    # The driver numbers GPU instances as nodes of a binary tree over the memory slices:
    # the whole GPU is 0, halves 1-2, quarters 3-6, eighths 7-14.
    level = (total_slices // size).bit_length() - 1
    return (1 << level) - 1 + start // size


def _parse(name: str, catalogue: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    match = _PROFILE.match(name)
    known = [p["name"] for p in catalogue["gpu_instance_profiles"]]
    gi = next((p for p in catalogue["gpu_instance_profiles"] if match and p["name"] == match["gi"]), None)
    if match is None or gi is None:
        raise MigLayoutError(f"unknown MIG profile {name!r}; this GPU has {', '.join(known)} "
                             f"(a smaller compute instance: '1c.<profile>')")
    slices = int(match["c"]) if match["c"] else gi["slices"]
    if match["c"] and slices == gi["slices"]:
        raise MigLayoutError(f"{name!r}: a compute instance as large as its GPU instance is written {gi['name']!r}")
    ci = next((c for c in gi["compute_instance_profiles"] if c["slices"] == slices), None)
    if ci is None:
        raise MigLayoutError(f"{name!r}: {gi['name']} has no {slices}-slice compute instance")
    return gi, ci


def mig_uuid(gpu_uuid: str, seq: int, gpu_instance: int, compute_instance: int) -> str:
    """A MIG UUID derived from its parent, the layout's sequence number and its instance ids."""
    h = hashlib.sha256(f"{gpu_uuid}/{seq}/{gpu_instance}/{compute_instance}".encode()).hexdigest()
    return f"MIG-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def plan_layout(
    profile: Mapping[str, Any], gpu: int, devices: Iterable[MigDeviceSpec], *, seq: int
) -> list[dict[str, Any]]:
    """The ``mig_devices`` entries for ``devices`` on GPU ``gpu`` (an NVML index).

    Each spec is one GPU instance; it takes the first placement its catalogue
    allows that still leaves room for the ones after it (so "3g.40gb, 4g.40gb"
    fits like "4g.40gb, 3g.40gb"). Compute instance ids count from 0 within a
    GPU instance, MIG indices in the order given; UUIDs come from
    :func:`mig_uuid` with ``seq``, so a new layout gets new UUIDs.
    """
    entry = profile["gpus"][gpu]
    catalogue = catalogue_of(profile, gpu)
    groups = []
    for spec in devices:
        names = [spec] if isinstance(spec, str) else list(spec)
        parsed = [_parse(name, catalogue) for name in names]
        if not parsed or len({gi["name"] for gi, _ in parsed}) != 1:
            raise MigLayoutError(f"{spec!r}: a group must name compute instances of one GPU instance profile")
        gi = parsed[0][0]
        per_profile = Counter(ci["profile"] for _, ci in parsed)
        if sum(ci["slices"] for _, ci in parsed) > gi["slices"] or any(
                per_profile[ci["profile"]] > ci["instances"] for _, ci in parsed):
            raise MigLayoutError(f"{names!r}: the compute instances do not fit one {gi['name']} GPU instance")
        groups.append((names, gi))
    chosen = [gi["name"] for _, gi in groups]
    count = Counter(chosen)
    if sum(gi["slices"] for _, gi in groups) > catalogue["compute_slices"] or any(
            count[gi["name"]] > gi["instances"] for _, gi in groups):
        raise MigLayoutError(f"{', '.join(chosen)} exceed the {catalogue['compute_slices']} compute slices "
                             f"or the instance counts of GPU {gpu}")
    starts = _place([gi for _, gi in groups], set())
    if starts is None:
        raise MigLayoutError(f"{', '.join(chosen)} do not fit the memory slices of GPU {gpu} in any placement")
    planned: list[dict[str, Any]] = []
    for (names, gi), start in zip(groups, starts):
        gi_id = _gpu_instance_id(catalogue["memory_slices"], start, gi["memory_slices"])
        for ci_id, name in enumerate(names):
            planned.append({"index": len(planned), "uuid": mig_uuid(entry["uuid"], seq, gi_id, ci_id),
                            "profile": name, "gpu_instance_id": gi_id, "compute_instance_id": ci_id})
    limit = entry["mig"].get("max_devices", 7)
    if len(planned) > limit:
        raise MigLayoutError(f"{len(planned)} MIG devices exceed the {limit} GPU {gpu} can have")
    return planned


def _place(instances: list[Mapping[str, Any]], used: set[int]) -> list[int] | None:
    """First memory slices for each GPU instance, in order, without overlaps (depth first); None if impossible."""
    if not instances:
        return []
    gi, rest = instances[0], instances[1:]
    for start in gi["placements"]:
        span = set(range(start, start + gi["memory_slices"]))
        if used.isdisjoint(span):
            tail = _place(rest, used | span)
            if tail is not None:
                return [start, *tail]
    return None


def gpu_index(profile: Mapping[str, Any], ref: str) -> int | None:
    """The NVML index a control-line ``gpu=`` names (index, GPU or MIG UUID), in ``profile``'s layout."""
    gpus = profile.get("gpus", [])
    if ref.isdigit():
        return int(ref) if int(ref) < len(gpus) else None
    for i, g in enumerate(gpus):
        if g["uuid"] == ref or any(m["uuid"] == ref for m in g.get("mig_devices", [])):
            return i
    return None


def effective_profile(profile: Mapping[str, Any], control_lines: Iterable[str]) -> dict[str, Any]:
    """``profile`` with the ``mig`` control lines applied in order (the layout every process sees now).

    Assumes the library accepted each line, as it does for lines written by
    :meth:`Control.mig <tests.mock_nvml.control.Control.mig>`.
    """
    current: dict[str, Any] = copy.deepcopy(dict(profile))
    for line in control_lines:
        words = line.split()
        if not words or words[0] != "mig":
            continue
        args = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        gpu = gpu_index(current, args.get("gpu", ""))
        if gpu is None or "mig" not in current["gpus"][gpu] or args.get("mode") not in ("0", "1"):
            continue
        entry = current["gpus"][gpu]
        entry["mig"] = {**entry["mig"], "current": int(args["mode"]), "pending": int(args.get("pending", args["mode"]))}
        entry["mig_devices"] = json.loads(Path(args["layout"]).read_text()) if args.get("layout") else []
    return current


def _capability(minor: int, mode: int = 0o444) -> str:
    # What the driver's capability files contain; 292 is 0444, config is root-only (0400 = 256).
    return f"DeviceFileMinor: {minor}\nDeviceFileMode: {mode}\nDeviceFileModify: 1\n"


def capability_files(profile: Mapping[str, Any]) -> dict[str, str]:
    """Relative path -> content of the MIG capability files for ``profile``'s current layout.

    ``driver/nvidia/capabilities/gpu<minor>/mig/gi<G>/access`` and
    ``…/gi<G>/ci<C>/access`` for every GPU/compute instance of a MIG-enabled
    GPU, ``…/capabilities/mig/{config,monitor}``, and the driver's full
    ``driver/nvidia-caps/mig-minors`` table for every MIG-capable GPU.
    """
    capable = [g for g in profile.get("gpus", []) if "mig" in g]
    if not capable:
        return {}
    files = {f"{CAPABILITIES_DIR}/mig/config": _capability(_CONFIG_MINOR, 0o400),
             f"{CAPABILITIES_DIR}/mig/monitor": _capability(_MONITOR_MINOR)}
    minors = [f"config {_CONFIG_MINOR}", f"monitor {_MONITOR_MINOR}"]
    for gpu in capable:
        minor = gpu["minor_number"]
        for gi in range(_GPU_INSTANCE_IDS):
            minors.append(f"gpu{minor}/gi{gi}/access {cap_minor(minor, gi)}")
            minors.extend(f"gpu{minor}/gi{gi}/ci{ci}/access {cap_minor(minor, gi, ci)}"
                          for ci in range(_COMPUTE_INSTANCE_IDS))
        if not gpu["mig"]["current"]:
            continue
        for dev in gpu.get("mig_devices", []):
            gi, ci = dev["gpu_instance_id"], dev["compute_instance_id"]
            base = f"{CAPABILITIES_DIR}/gpu{minor}/mig/gi{gi}"
            files[f"{base}/access"] = _capability(cap_minor(minor, gi))
            files[f"{base}/ci{ci}/access"] = _capability(cap_minor(minor, gi, ci))
    files[MIG_MINORS_FILE] = "\n".join(minors) + "\n"
    return files


def cap_device_files(profile: Mapping[str, Any]) -> list[str]:
    """``nvidia-caps/nvidia-cap<minor>`` (relative to /dev) for every capability file of ``profile``'s layout."""
    minors = sorted({int(text.split()[1]) for text in capability_files(profile).values()
                     if text.startswith("DeviceFileMinor: ")})
    return [f"{CAPS_DEVICE_DIR}/nvidia-cap{m}" for m in minors]


def sync_tree(root: Path, files: Mapping[str, str], managed: Sequence[str]) -> None:
    """Make ``root/<managed dir>`` hold exactly ``files`` (relative paths): write changed ones, delete others.

    Each file lands by rename, so a reader sees the old or the new content,
    never a partial one; a file kept from the old layout is never absent.
    """
    for rel, text in files.items():
        path = root / rel
        if path.is_file() and path.read_text() == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    wanted = {root / rel for rel in files}
    for top in managed:
        for dirpath, _, names in sorted(os.walk(root / top), reverse=True):  # deepest first
            for name in names:
                if Path(dirpath, name) not in wanted:
                    Path(dirpath, name).unlink()
            if not os.listdir(dirpath):
                os.rmdir(dirpath)
