"""``kubelet_internal_checkpoint``: the device manager's JSON checkpoint (kubelet-api.md §2.6).

``CheckpointFile`` is owned by ``KubeletPeer``: written after every device update, allocation
and release, read when the device manager starts. Kubelet creates no checkpoint when none
exists; it appears with the first write. The checksum is FNV-1a 32 over a canonical JSON of
``Data``, so the stand-in detects edits the way kubelet rejects a corrupted file.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .state import DeviceManagerState, PodDevices


def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def atomic_write(path: Path, body: bytes, prefix: str = ".tmp-") -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix + path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@dataclass(frozen=True)
class CheckpointData:
    registered: list[str]
    pod_devices: dict[tuple[str, str, str], PodDevices]


def encode(st: DeviceManagerState) -> bytes:
    entries = [
        {
            "PodUID": pod,
            "ContainerName": ctr,
            "ResourceName": res,
            "DeviceIDs": {str(n): ids for n, ids in sorted(pd.numa.items())},
            "AllocResp": base64.b64encode(pd.resp).decode(),
        }
        for (pod, ctr, res), pd in sorted(st.pod_devices.items())
    ]
    registered = {res: sorted(devs) for res, devs in sorted(st.healthy.items())}
    data = {"PodDeviceEntries": entries, "RegisteredDevices": registered}
    return json.dumps({"Data": data, "Checksum": fnv32a(canonical(data))}).encode()


def decode(raw: bytes) -> CheckpointData:
    """Parse a checkpoint; ValueError when it is corrupted or malformed."""
    try:
        doc = json.loads(raw)
        data = doc["Data"]
        if int(doc.get("Checksum", -1)) != fnv32a(canonical(data)):
            raise ValueError("checkpoint is corrupted")
        registered = list(data.get("RegisteredDevices") or {})
        pod_devices: dict[tuple[str, str, str], PodDevices] = {}
        for e in data.get("PodDeviceEntries") or []:
            numa = {int(n): list(ids) for n, ids in (e.get("DeviceIDs") or {}).items()}
            ids = tuple(sorted({i for v in numa.values() for i in v}))
            pod_devices[(e["PodUID"], e["ContainerName"], e["ResourceName"])] = PodDevices(
                ids, numa, base64.b64decode(e.get("AllocResp") or "")
            )
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"malformed checkpoint: {e!r}") from e
    return CheckpointData(registered, pod_devices)


class CheckpointFile:
    """The checkpoint on disk, and what the stand-in last wrote to it."""

    def __init__(self, path: Path):
        self.path = path
        self.last_written: bytes | None = None

    def write(self, st: DeviceManagerState) -> None:
        body = encode(st)
        atomic_write(self.path, body, prefix=".")
        self.last_written = body

    def load(self) -> CheckpointData | None:
        """The checkpoint's content; None when there is none. ValueError when corrupted."""
        try:
            raw = self.path.read_bytes()
        except OSError:
            return None
        data = decode(raw)
        self.last_written = raw
        return data

    def read_json(self) -> dict[str, Any]:
        return json.loads(self.path.read_bytes())

    def intact(self) -> bool:
        try:
            return self.path.read_bytes() == self.last_written
        except OSError:
            return False
