"""DeviceState.listing reuses each device's message until that device or its health changes.

896 devices (8 GPUs × 7 MIG × 16 replicas) made every ListAndWatch update
build 896 messages; now only the changed ones are rebuilt. These tests pin
that what is listed is always current: health, held devices, a reload's
new device data under the same id.
"""

from __future__ import annotations

from dataclasses import replace

from nvdp_node.adapters.servicer import DeviceState
from nvdp_node.domain.allocation import AllocationPolicy
from nvdp_node.domain.devices import Device, DeviceSet, Health

DEVICES = [Device(id=f"GPU-{i}::{r}", index=str(i), gpu_uuid=f"GPU-{i}", numa_node=i % 2)
           for i in range(2) for r in range(3)]


def listed(state: DeviceState) -> dict[str, tuple[str, list[int]]]:
    response, _changed = state.listing()
    return {d.ID: (d.health, [n.ID for n in d.topology.nodes]) for d in response.devices}


def test_a_health_change_is_listed_and_the_other_devices_keep_theirs():
    state = DeviceState(DeviceSet(DEVICES), AllocationPolicy())
    listed(state)
    state.set_health(["GPU-1::2"], Health.UNHEALTHY)
    after = listed(state)
    assert after["GPU-1::2"][0] == "Unhealthy"
    assert all(health == "Healthy" for i, (health, _) in after.items() if i != "GPU-1::2")
    state.set_health(["GPU-1::2"], Health.HEALTHY)
    assert listed(state)["GPU-1::2"][0] == "Healthy"


def test_a_device_held_by_a_pod_elsewhere_is_listed_unhealthy_and_healthy_once_released():
    state = DeviceState(DeviceSet(DEVICES), AllocationPolicy())
    listed(state)
    state.set_held({"GPU-0::0": "pod-a"})
    assert listed(state)["GPU-0::0"][0] == "Unhealthy"
    state.set_held({})
    assert listed(state)["GPU-0::0"][0] == "Healthy"


def test_a_reload_that_changes_a_devices_numa_node_under_the_same_id_lists_the_new_node():
    state = DeviceState(DeviceSet(DEVICES), AllocationPolicy())
    assert listed(state)["GPU-0::1"][1] == [0]
    moved = [replace(d, numa_node=1) if d.id == "GPU-0::1" else d for d in DEVICES]
    state.replace(DeviceSet(moved), AllocationPolicy())
    assert listed(state)["GPU-0::1"][1] == [1]
