"""The v1beta1 proto matches kubelet's API table field for field.

The expected table is transcribed from the upstream field table
(k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1, see docs/architecture.md), not
derived from our .proto, so a typo in either shows up here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
PROTO = "nvdp_node/api/deviceplugin_v1beta1.proto"

F = descriptor_pb2.FieldDescriptorProto
OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED
STR, BOOL, I64, I32, MSG = F.TYPE_STRING, F.TYPE_BOOL, F.TYPE_INT64, F.TYPE_INT32, F.TYPE_MESSAGE

# message -> [(number, name, type, label, message type or None)]
EXPECTED_MESSAGES = {
    "Empty": [],
    "DevicePluginOptions": [(1, "pre_start_required", BOOL, OPT, None), (2, "get_preferred_allocation_available", BOOL, OPT, None)],
    "RegisterRequest": [
        (1, "version", STR, OPT, None), (2, "endpoint", STR, OPT, None),
        (3, "resource_name", STR, OPT, None), (4, "options", MSG, OPT, ".v1beta1.DevicePluginOptions"),
    ],
    "ListAndWatchResponse": [(1, "devices", MSG, REP, ".v1beta1.Device")],
    "TopologyInfo": [(1, "nodes", MSG, REP, ".v1beta1.NUMANode")],
    "NUMANode": [(1, "ID", I64, OPT, None)],
    "Device": [(1, "ID", STR, OPT, None), (2, "health", STR, OPT, None), (3, "topology", MSG, OPT, ".v1beta1.TopologyInfo")],
    "PreStartContainerRequest": [(1, "devices_ids", STR, REP, None)],
    "PreStartContainerResponse": [],
    "PreferredAllocationRequest": [(1, "container_requests", MSG, REP, ".v1beta1.ContainerPreferredAllocationRequest")],
    "ContainerPreferredAllocationRequest": [
        (1, "available_deviceIDs", STR, REP, None), (2, "must_include_deviceIDs", STR, REP, None),
        (3, "allocation_size", I32, OPT, None),
    ],
    "PreferredAllocationResponse": [(1, "container_responses", MSG, REP, ".v1beta1.ContainerPreferredAllocationResponse")],
    "ContainerPreferredAllocationResponse": [(1, "deviceIDs", STR, REP, None)],
    "AllocateRequest": [(1, "container_requests", MSG, REP, ".v1beta1.ContainerAllocateRequest")],
    "ContainerAllocateRequest": [(1, "devices_ids", STR, REP, None)],
    "CDIDevice": [(1, "name", STR, OPT, None)],
    "AllocateResponse": [(1, "container_responses", MSG, REP, ".v1beta1.ContainerAllocateResponse")],
    "ContainerAllocateResponse": [
        (1, "envs", MSG, REP, ".v1beta1.ContainerAllocateResponse.EnvsEntry"),
        (2, "mounts", MSG, REP, ".v1beta1.Mount"),
        (3, "devices", MSG, REP, ".v1beta1.DeviceSpec"),
        (4, "annotations", MSG, REP, ".v1beta1.ContainerAllocateResponse.AnnotationsEntry"),
        (5, "cdi_devices", MSG, REP, ".v1beta1.CDIDevice"),
    ],
    "Mount": [(1, "container_path", STR, OPT, None), (2, "host_path", STR, OPT, None), (3, "read_only", BOOL, OPT, None)],
    "DeviceSpec": [(1, "container_path", STR, OPT, None), (2, "host_path", STR, OPT, None), (3, "permissions", STR, OPT, None)],
}
MAP_ENTRIES = {("ContainerAllocateResponse", "EnvsEntry"), ("ContainerAllocateResponse", "AnnotationsEntry")}

# (service, method, input, output, server streaming)
EXPECTED_METHODS = [
    ("Registration", "Register", "RegisterRequest", "Empty", False),
    ("DevicePlugin", "GetDevicePluginOptions", "Empty", "DevicePluginOptions", False),
    ("DevicePlugin", "ListAndWatch", "Empty", "ListAndWatchResponse", True),
    ("DevicePlugin", "GetPreferredAllocation", "PreferredAllocationRequest", "PreferredAllocationResponse", False),
    ("DevicePlugin", "Allocate", "AllocateRequest", "AllocateResponse", False),
    ("DevicePlugin", "PreStartContainer", "PreStartContainerRequest", "PreStartContainerResponse", False),
]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorProto:
    out = tmp_path_factory.mktemp("proto") / "set.pb"
    rc = protoc.main(["protoc", f"-I{ROOT}", f"--descriptor_set_out={out}", str(ROOT / PROTO)])
    assert rc == 0, "protoc failed to compile the .proto"
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    (file,) = fds.file
    return file


def test_the_proto_package_is_v1beta1_so_method_paths_match_kubelet(compiled):
    assert compiled.package == "v1beta1"
    assert compiled.syntax == "proto3"


def test_the_proto_file_name_cannot_clash_with_other_api_protos(compiled):
    assert not compiled.name.endswith("/api.proto") and compiled.name != "api.proto"


def test_the_proto_has_exactly_the_messages_of_the_api_table(compiled):
    assert {m.name for m in compiled.message_type} == set(EXPECTED_MESSAGES)


@pytest.mark.parametrize("message", sorted(EXPECTED_MESSAGES))
def test_every_field_has_the_tables_number_name_type_and_label(compiled, message):
    (desc,) = [m for m in compiled.message_type if m.name == message]
    actual = [
        (f.number, f.name, f.type, f.label, f.type_name or None) for f in sorted(desc.field, key=lambda f: f.number)
    ]
    assert actual == EXPECTED_MESSAGES[message]


def test_the_two_maps_compile_to_string_entry_messages(compiled):
    entries = {(m.name, n.name) for m in compiled.message_type for n in m.nested_type}
    assert entries == MAP_ENTRIES
    for m in compiled.message_type:
        for n in m.nested_type:
            assert n.options.map_entry
            assert [(f.number, f.name, f.type) for f in n.field] == [(1, "key", STR), (2, "value", STR)]


def test_a_descriptor_holds_22_messages_counting_map_entries(compiled):
    assert len(compiled.message_type) + sum(len(m.nested_type) for m in compiled.message_type) == 22


@pytest.mark.parametrize("service,method,inp,out,streaming", EXPECTED_METHODS, ids=[m[1] for m in EXPECTED_METHODS])
def test_every_rpc_has_the_tables_types_and_streaming_flag(compiled, service, method, inp, out, streaming):
    (svc,) = [s for s in compiled.service if s.name == service]
    (m,) = [m for m in svc.method if m.name == method]
    assert (m.input_type, m.output_type) == (f".v1beta1.{inp}", f".v1beta1.{out}")
    assert m.server_streaming is streaming
    assert m.client_streaming is False


def test_the_services_have_no_other_methods(compiled):
    methods = {(s.name, m.name) for s in compiled.service for m in s.method}
    assert methods == {(s, m) for s, m, *_ in EXPECTED_METHODS}


def test_full_method_paths_are_the_ones_kubelet_calls(compiled):
    paths = {f"/{compiled.package}.{s.name}/{m.name}" for s in compiled.service for m in s.method}
    assert "/v1beta1.Registration/Register" in paths
    assert "/v1beta1.DevicePlugin/ListAndWatch" in paths


def test_the_committed_generated_code_matches_the_proto(compiled):
    generated = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    compiled_clean = descriptor_pb2.FileDescriptorProto()
    compiled_clean.CopyFrom(compiled)
    compiled_clean.ClearField("source_code_info")
    # protoc's descriptor set adds json_name; generated code omits it.
    for message in compiled_clean.message_type:
        for f in [*message.field, *(f for n in message.nested_type for f in n.field)]:
            f.ClearField("json_name")
    assert generated == compiled_clean, "regenerate with scripts/gen-proto"


# --------------------------------------------------------------------------- PodResources v1
#
# Transcribed from the field table of k8s.io/kubelet/pkg/apis/podresources/v1/api.proto
# (kubernetes/kubelet 63b3249), independently of our .proto.

PR_PROTO = "nvdp_node/api/podresources_v1.proto"
U64 = F.TYPE_UINT64

# message -> [(number, name, type, label, message type or None)]
PR_EXPECTED_MESSAGES = {
    "AllocatableResourcesRequest": [],
    "AllocatableResourcesResponse": [
        (1, "devices", MSG, REP, ".v1.ContainerDevices"), (2, "cpu_ids", I64, REP, None),
        (3, "memory", MSG, REP, ".v1.ContainerMemory"),
    ],
    "ListPodResourcesRequest": [],
    "ListPodResourcesResponse": [(1, "pod_resources", MSG, REP, ".v1.PodResources")],
    "PodResources": [
        (1, "name", STR, OPT, None), (2, "namespace", STR, OPT, None),
        (3, "containers", MSG, REP, ".v1.ContainerResources"), (4, "cpu_ids", I64, REP, None),
        (5, "memory", MSG, REP, ".v1.ContainerMemory"),
    ],
    "ContainerResources": [
        (1, "name", STR, OPT, None), (2, "devices", MSG, REP, ".v1.ContainerDevices"),
        (3, "cpu_ids", I64, REP, None), (4, "memory", MSG, REP, ".v1.ContainerMemory"),
        (5, "dynamic_resources", MSG, REP, ".v1.DynamicResource"),
    ],
    "ContainerMemory": [
        (1, "memory_type", STR, OPT, None), (2, "size", U64, OPT, None), (3, "topology", MSG, OPT, ".v1.TopologyInfo"),
    ],
    "ContainerDevices": [
        (1, "resource_name", STR, OPT, None), (2, "device_ids", STR, REP, None),
        (3, "topology", MSG, OPT, ".v1.TopologyInfo"),
    ],
    "TopologyInfo": [(1, "nodes", MSG, REP, ".v1.NUMANode")],
    "NUMANode": [(1, "ID", I64, OPT, None)],
    "DynamicResource": [
        (2, "claim_name", STR, OPT, None), (3, "claim_namespace", STR, OPT, None),
        (4, "claim_resources", MSG, REP, ".v1.ClaimResource"),
    ],
    "ClaimResource": [
        (1, "cdi_devices", MSG, REP, ".v1.CDIDevice"), (2, "driver_name", STR, OPT, None),
        (3, "pool_name", STR, OPT, None), (4, "device_name", STR, OPT, None), (5, "share_id", STR, OPT, None),
    ],
    "CDIDevice": [(1, "name", STR, OPT, None)],
    "GetPodResourcesRequest": [(1, "pod_name", STR, OPT, None), (2, "pod_namespace", STR, OPT, None)],
    "GetPodResourcesResponse": [(1, "pod_resources", MSG, OPT, ".v1.PodResources")],
}
PR_EXPLICIT_OPTIONAL = {("ClaimResource", "share_id")}  # proto3 `optional`: has presence

PR_EXPECTED_METHODS = [
    ("List", "ListPodResourcesRequest", "ListPodResourcesResponse"),
    ("GetAllocatableResources", "AllocatableResourcesRequest", "AllocatableResourcesResponse"),
    ("Get", "GetPodResourcesRequest", "GetPodResourcesResponse"),
]


@pytest.fixture(scope="module")
def pr_compiled(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorProto:
    out = tmp_path_factory.mktemp("proto") / "podresources.pb"
    rc = protoc.main(["protoc", f"-I{ROOT}", f"--descriptor_set_out={out}", str(ROOT / PR_PROTO)])
    assert rc == 0, "protoc failed to compile the PodResources .proto"
    (file,) = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    return file


def test_the_podresources_package_is_v1_so_method_paths_match_kubelet(pr_compiled):
    assert (pr_compiled.package, pr_compiled.syntax) == ("v1", "proto3")
    assert not pr_compiled.name.endswith("api.proto")


def test_the_podresources_proto_has_exactly_the_messages_of_the_api_table(pr_compiled):
    assert {m.name for m in pr_compiled.message_type} == set(PR_EXPECTED_MESSAGES)
    assert all(not m.nested_type for m in pr_compiled.message_type), "no maps in this API"


@pytest.mark.parametrize("message", sorted(PR_EXPECTED_MESSAGES))
def test_every_podresources_field_has_the_tables_number_name_type_and_label(pr_compiled, message):
    (desc,) = [m for m in pr_compiled.message_type if m.name == message]
    actual = [
        (f.number, f.name, f.type, f.label, f.type_name or None) for f in sorted(desc.field, key=lambda f: f.number)
    ]
    assert actual == PR_EXPECTED_MESSAGES[message]


def test_only_share_id_is_an_explicitly_optional_field(pr_compiled):
    optional = {(m.name, f.name) for m in pr_compiled.message_type for f in m.field if f.proto3_optional}
    assert optional == PR_EXPLICIT_OPTIONAL


@pytest.mark.parametrize("method,inp,out", PR_EXPECTED_METHODS, ids=[m[0] for m in PR_EXPECTED_METHODS])
def test_every_podresources_rpc_is_unary_with_the_tables_types(pr_compiled, method, inp, out):
    (svc,) = pr_compiled.service
    (m,) = [m for m in svc.method if m.name == method]
    assert (m.input_type, m.output_type) == (f".v1.{inp}", f".v1.{out}")
    assert (m.client_streaming, m.server_streaming) == (False, False)


def test_the_podresources_service_has_exactly_the_three_methods_at_kubelets_paths(pr_compiled):
    paths = {f"/{pr_compiled.package}.{s.name}/{m.name}" for s in pr_compiled.service for m in s.method}
    assert paths == {
        "/v1.PodResourcesLister/List", "/v1.PodResourcesLister/GetAllocatableResources", "/v1.PodResourcesLister/Get",
    }


def test_both_apis_load_into_one_descriptor_pool_with_distinct_full_names():
    from nvdp_node.api import podresources_v1_pb2 as pr

    assert pr.DESCRIPTOR.pool is pb.DESCRIPTOR.pool
    for short in ("TopologyInfo", "NUMANode", "CDIDevice"):
        names = (pr.DESCRIPTOR.message_types_by_name[short], pb.DESCRIPTOR.message_types_by_name[short])
        assert tuple(n.full_name for n in names) == (f"v1.{short}", f"v1beta1.{short}")


def test_the_committed_podresources_code_matches_the_proto(pr_compiled):
    from nvdp_node.api import podresources_v1_pb2 as pr

    generated = descriptor_pb2.FileDescriptorProto.FromString(pr.DESCRIPTOR.serialized_pb)
    compiled_clean = descriptor_pb2.FileDescriptorProto()
    compiled_clean.CopyFrom(pr_compiled)
    compiled_clean.ClearField("source_code_info")
    for message in compiled_clean.message_type:
        for f in message.field:
            f.ClearField("json_name")  # protoc's descriptor set adds it; generated code omits it
    assert generated == compiled_clean, "regenerate with scripts/gen-proto"
