"""The CDI spec renderer and CDI-aware Allocate, as pure functions over plain data."""

from __future__ import annotations

import json

import pytest

from nvdp_node.domain.allocation import AllocationPolicy, InvalidAllocationError, MpsAllocation, allocate_container
from nvdp_node.domain.cdi_spec import (
    CdiDevice,
    DriverFiles,
    HostFile,
    cdi_devices,
    device_name_problem,
    minimum_version,
    render_spec,
    spec_device_names,
)
from nvdp_node.domain.devices import Device
from nvdp_node.domain.sharing import replicas_of

GPUS = {
    f"GPU-{i}": Device(id=f"GPU-{i}", index=str(i), gpu_uuid=f"GPU-{i}", numa_node=0, dev_paths=(f"/dev/nvidia{i}",))
    for i in range(4)
}
NAMES = frozenset(GPUS)
LIB = "/usr/lib/x86_64-linux-gnu/libcuda.so.570.86.15"
FILES = DriverFiles(
    driver_version="570.86.15",
    control_nodes=(HostFile("/dev/nvidiactl", "/dev/nvidiactl"),),
    libraries=(HostFile(LIB, LIB),),
    binaries=(HostFile("/usr/bin/nvidia-smi", "/usr/bin/nvidia-smi"),),
    ipc_sockets=(HostFile("/run/nvidia-persistenced/socket", "/run/nvidia-persistenced/socket"),),
    symlinks=(("libcuda.so.570.86.15", "/usr/lib/x86_64-linux-gnu/libcuda.so.1"),),
    hook_path="/usr/bin/nvidia-ctk",
)


def policy(*strategies: str, names: frozenset[str] | None = NAMES, **kw: object) -> AllocationPolicy:
    return AllocationPolicy(device_list_strategy=strategies, cdi_names=names, **kw)  # type: ignore[arg-type]


# -- Allocate ---------------------------------------------------------------------------------------


def test_cdi_annotations_key_is_the_prefix_the_plugin_name_and_the_given_id():
    got = allocate_container(GPUS, ["GPU-2", "GPU-0"], policy("cdi-annotations", cdi_annotation_prefix="x.io/"),
                             annotation_id=lambda: "6e1f4c7a-0000-4000-8000-000000000000")
    assert got.annotations == {"x.io/nvidia-device-plugin_6e1f4c7a-0000-4000-8000-000000000000":
                               "k8s.device-plugin.nvidia.com/gpu=GPU-2,k8s.device-plugin.nvidia.com/gpu=GPU-0"}
    assert (got.envs, got.mounts, got.device_specs, got.cdi_devices) == ({}, (), (), ())


def test_only_cdi_strategies_give_no_device_specs_even_with_pass_device_specs():
    got = allocate_container(GPUS, ["GPU-1"], policy("cdi-cri", pass_device_specs=True))
    assert (got.cdi_devices, got.device_specs, got.envs) == (("k8s.device-plugin.nvidia.com/gpu=GPU-1",), (), {})


def test_with_envvar_next_to_cdi_the_device_specs_are_passed_as_without_cdi():
    got = allocate_container(GPUS, ["GPU-1"], policy("cdi-cri", "envvar", pass_device_specs=True))
    assert [s.container_path for s in got.device_specs] == ["/dev/nvidia1"]


def test_an_mps_resource_keeps_its_envs_and_mounts_with_only_cdi_strategies():
    shared = replicas_of(GPUS["GPU-1"], 2)
    got = allocate_container({d.id: d for d in shared}, ["GPU-1::1"], policy("cdi-cri", mps=MpsAllocation()))
    assert got.envs == {"CUDA_MPS_PIPE_DIRECTORY": "/mps/nvidia.com/gpu/pipe"} and len(got.mounts) == 2
    assert got.cdi_devices == ("k8s.device-plugin.nvidia.com/gpu=GPU-1",)


def test_a_device_the_written_spec_lacks_is_refused_naming_it():
    with pytest.raises(InvalidAllocationError) as err:
        allocate_container(GPUS, ["GPU-0", "GPU-3"], policy("cdi-cri", names=frozenset({"GPU-0"})))
    assert str(err.value) == ('invalid allocation request for "nvidia.com/gpu": cannot hand over '
                              "k8s.device-plugin.nvidia.com/gpu=GPU-3 by CDI: the CDI spec written does not name it")


def test_without_a_written_spec_cdi_requests_fail_with_the_reason():
    with pytest.raises(InvalidAllocationError, match="by CDI: disk full$"):
        allocate_container(GPUS, ["GPU-0"], policy("cdi-annotations", names=None, cdi_problem="disk full"))


# -- the spec ---------------------------------------------------------------------------------------


def test_devices_are_sorted_and_replicas_collapse_onto_their_gpu():
    devices = [*replicas_of(GPUS["GPU-3"], 3), GPUS["GPU-1"]]
    assert cdi_devices(devices, "uuid", "/") == (
        CdiDevice("GPU-1", (HostFile("/dev/nvidia1", "/dev/nvidia1"),)),
        CdiDevice("GPU-3", (HostFile("/dev/nvidia3", "/dev/nvidia3"),)),
    )


def test_device_nodes_carry_the_dev_root_on_the_host_side_only():
    [device] = cdi_devices([GPUS["GPU-2"]], "uuid", "/run/nvidia/driver")
    assert device.nodes == (HostFile("/dev/nvidia2", "/run/nvidia/driver/dev/nvidia2"),)


@pytest.mark.parametrize(
    ("name", "valid"),
    [("GPU-0f1e", True), ("MIG-1a2b", True), ("0:1", True), ("7", True), ("-a", False), ("a/b", False),
     ("a_", False), ("", False)],
    ids=["gpu uuid", "mig uuid", "mig index", "index", "leading dash", "slash", "trailing underscore", "empty"],
)
def test_device_names_follow_the_cdi_parser(name, valid):
    assert (device_name_problem(name) is None) is valid


def test_the_rendered_spec_does_not_depend_on_the_order_devices_come_in():
    forward = render_spec(cdi_devices(GPUS.values(), "uuid", "/"), FILES)
    backward = render_spec(cdi_devices(reversed(list(GPUS.values())), "uuid", "/"), FILES)
    assert json.dumps(forward) == json.dumps(backward)


def test_nvidia_ctk_as_hook_gets_its_hook_subcommand():
    hooks = render_spec((), FILES)["containerEdits"]["hooks"]  # type: ignore[index]
    assert [h["args"][:3] for h in hooks] == [["nvidia-ctk", "hook", "create-symlinks"],
                                              ["nvidia-ctk", "hook", "update-ldcache"]]


@pytest.mark.parametrize(
    ("strategy", "dev_root", "version"),
    [("uuid", "/", "0.3.0"), ("index", "/", "0.5.0"), ("uuid", "/run/nvidia/driver", "0.5.0")],
    ids=["uuid names on /", "index names", "host paths differ"],
)
def test_cdi_version_is_the_lowest_the_spec_needs(strategy, dev_root, version):
    spec = render_spec(cdi_devices(GPUS.values(), strategy, dev_root), FILES)
    assert spec["cdiVersion"] == minimum_version(spec) == version


def test_spec_device_names_reads_only_specs_of_nvdps_kind():
    spec = render_spec(cdi_devices(GPUS.values(), "uuid", "/"), FILES)
    assert spec_device_names(spec) == NAMES
    assert spec_device_names({**spec, "kind": "nvidia.com/gpu"}) is None


# -- the CDI specification's schema, field by field ------------------------------------------------
# Written from the CDI spec (specs-go/config.go, schema/schema.json and defs.json of
# tags.cncf.io/container-device-interface): each object's fields with their JSON types,
# and the required ones. Nothing nvdp writes may be outside this table.
STR, STRS = "string", "array of strings"
SCHEMA = {
    "spec": ({"cdiVersion": STR, "kind": STR, "annotations": "map", "devices": "devices",
              "containerEdits": "edits"}, {"cdiVersion", "kind", "devices"}),
    "device": ({"name": STR, "annotations": "map", "containerEdits": "edits"}, {"name", "containerEdits"}),
    "edits": ({"env": STRS, "deviceNodes": "deviceNodes", "netDevices": "list", "hooks": "hooks", "mounts": "mounts",
               "intelRdt": "object", "additionalGids": "list"}, set()),
    "deviceNode": ({"path": STR, "hostPath": STR, "type": STR, "major": "int", "minor": "int", "fileMode": "int",
                    "permissions": STR, "uid": "int", "gid": "int"}, {"path"}),
    "mount": ({"hostPath": STR, "containerPath": STR, "options": STRS, "type": STR}, {"hostPath", "containerPath"}),
    "hook": ({"hookName": STR, "path": STR, "args": STRS, "env": STRS, "timeout": "int"}, {"hookName", "path"}),
}
LISTS = {"devices": "device", "deviceNodes": "deviceNode", "mounts": "mount", "hooks": "hook"}


def schema_problems(value: object, kind: str, where: str) -> list[str]:
    fields, required = SCHEMA[kind]
    if not isinstance(value, dict):
        return [f"{where}: not an object"]
    problems = [f"{where}.{k}: not in the CDI schema" for k in value if k not in fields]
    problems += [f"{where}.{k}: required" for k in required if k not in value]
    for key, item in value.items():
        expected = fields.get(key)
        if expected == STR and not isinstance(item, str):
            problems.append(f"{where}.{key}: not a string")
        elif expected == STRS and not (isinstance(item, list) and all(isinstance(s, str) for s in item)):
            problems.append(f"{where}.{key}: not a list of strings")
        elif expected == "edits":
            problems += schema_problems(item, "edits", f"{where}.{key}")
        elif expected in LISTS:
            if not isinstance(item, list):
                problems.append(f"{where}.{key}: not a list")
            else:
                problems += [p for n, x in enumerate(item) for p in schema_problems(x, LISTS[expected], f"{where}.{key}[{n}]")]
    return problems


@pytest.mark.parametrize("strategy", ["uuid", "index"])
def test_every_field_of_the_spec_is_one_the_cdi_schema_declares_with_its_type(strategy):
    mig = Device(id="MIG-9", index="3:0", gpu_uuid="GPU-3", numa_node=0,
                 dev_paths=("/dev/nvidia3", "/dev/nvidia-caps/nvidia-cap21", "/dev/nvidia-caps/nvidia-cap22"))
    spec = render_spec(cdi_devices([*GPUS.values(), mig], strategy, "/run/nvidia/driver"), FILES)
    assert schema_problems(json.loads(json.dumps(spec)), "spec", "spec") == []
    assert all(d["containerEdits"]["deviceNodes"] for d in spec["devices"])  # type: ignore[union-attr,index]
