"""`nvdp config import` of upstream's sharing.timeSlicing, sharing.mps, flags.mpsRoot and sharedDevicesAllocationPolicy."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from nvdp_node.config import Config, ConfigError, load_config
from nvdp_node.config.sharing import MpsResourceConfig, SharedResourceConfig
from nvdp_node.config.upstream_import import import_upstream_text

# The time-slicing example of upstream's README.
TIME_SLICING = """\
version: v1
flags:
  migStrategy: none
sharing:
  timeSlicing:
    renameByDefault: false
    failRequestsGreaterThanOne: false
    resources:
    - name: nvidia.com/gpu
      replicas: 10
"""

MPS = """\
version: v1
flags:
  mpsRoot: /run/nvidia/mps
  plugin:
    sharedDevicesAllocationPolicy: packed
sharing:
  mps:
    renameByDefault: true
    resources:
    - name: nvidia.com/gpu
      replicas: 10
"""


def imported(text: str) -> tuple[dict, list[str], Config]:
    result = import_upstream_text(text, Path("config.yaml"))
    return tomllib.loads(result.toml), result.warnings, result.config


def import_errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        import_upstream_text(text, Path("config.yaml"))
    return exc.value.lines


def test_upstreams_time_slicing_example_translates_without_warnings() -> None:
    doc, warnings, config = imported(TIME_SLICING)
    assert warnings == []
    assert doc["sharing"]["time_slicing"] == {
        "rename_by_default": False,
        "fail_requests_greater_than_one": False,
        "resources": [{"name": "nvidia.com/gpu", "replicas": 10, "devices": "all"}],
    }
    assert config.sharing.time_slicing.resources == (SharedResourceConfig(name="nvidia.com/gpu", replicas=10),)


def test_an_mps_config_translates_with_its_root_and_allocation_policy() -> None:
    doc, warnings, config = imported(MPS)
    assert warnings == []
    assert doc["sharing"]["mps"] == {
        "rename_by_default": True,
        "resources": [{"name": "nvidia.com/gpu", "replicas": 10, "devices": "all"}],
        "root": "/run/nvidia/mps",
    }
    assert doc["plugin"] == {"shared_devices_allocation_policy": "packed"}
    assert config.sharing.mps.resources == (MpsResourceConfig(name="nvidia.com/gpu", replicas=10),)
    assert config.sharing.mps.fail_requests_greater_than_one is True  # upstream's MPS default, unset above


def test_mps_without_mps_root_warns_that_nvdp_uses_its_default() -> None:
    _, warnings, config = imported("sharing:\n  mps:\n    resources: [{name: gpu, replicas: 2}]\n")
    assert warnings == [
        "flags.mpsRoot is not set: upstream needs --mps-root for MPS (its helm chart passes /run/nvidia/mps); "
        'nvdp uses sharing.mps.root = "/run/nvidia/mps"'
    ]
    assert config.sharing.mps.root == Path("/run/nvidia/mps")


def test_both_modes_keep_mps_as_upstream_does_and_drop_time_slicing_with_a_warning() -> None:
    doc, warnings, config = imported(MPS + "  timeSlicing:\n    failRequestsGreaterThanOne: true\n    resources: [{name: gpu, replicas: 4}]\n")
    assert warnings == ["sharing.timeSlicing dropped: upstream shares by MPS alone when sharing.mps lists resources"]
    assert doc["sharing"]["time_slicing"] == {}
    assert (config.sharing.time_slicing.resources, len(config.sharing.mps.resources)) == ((), 1)


def test_a_custom_rename_is_dropped_with_a_warning_as_upstream_ignores_it() -> None:
    doc, warnings, _ = imported("sharing:\n  timeSlicing:\n    resources: [{name: gpu, replicas: 2, rename: gpu-ts}]\n")
    assert warnings == [
        'sharing.timeSlicing.resources[0].rename = "gpu-ts" dropped: upstream ignores a custom name '
        "(renameByDefault advertises <name>.shared)"
    ]
    assert "rename" not in doc["sharing"]["time_slicing"]["resources"][0]


@pytest.mark.parametrize(
    ("devices", "what"),
    [("3", "a count of 3 devices"), ("[0, '1:0']", "a list of 2 devices")],
    ids=["count", "list"],
)
def test_a_device_selection_is_dropped_with_a_warning_as_upstream_ignores_it(devices: str, what: str) -> None:
    doc, warnings, _ = imported(f"sharing:\n  timeSlicing:\n    resources: [{{name: gpu, replicas: 2, devices: {devices}}}]\n")
    assert warnings == [
        f"sharing.timeSlicing.resources[0].devices dropped: {what}, but upstream ignores a selection and shares every device"
    ]
    assert doc["sharing"]["time_slicing"]["resources"][0]["devices"] == "all"


def test_an_unknown_key_of_a_sharing_mode_is_ignored_with_a_warning() -> None:
    _, warnings, _ = imported("sharing:\n  timeSlicing:\n    strategy: ''\n    resources: [{name: gpu, replicas: 2}]\n")
    assert warnings == ["sharing.timeSlicing.strategy: unknown upstream key, ignored (upstream ignores it too)"]


@pytest.mark.parametrize(
    ("fragment", "line"),
    [
        ("sharing: {timeSlicing: {}}", "sharing.timeSlicing.resources: no resources specified; upstream refuses this file too"),
        ("sharing: {mps: {resources: []}}", "sharing.mps.resources: no resources specified (got []); upstream refuses"),
        ("sharing: {timeSlicing: 4}", "sharing.timeSlicing: expected a mapping (got 4)"),
        ("sharing: {timeSlicing: {resources: [{name: gpu, replicas: 2, devices: some}]}}", 'sharing.timeSlicing.resources[0].devices: expected "all" (got "some")'),
        ("sharing: {timeSlicing: {resources: [{name: gpu, replicas: 2, rename: 5}]}}", "sharing.timeSlicing.resources[0].rename: expected a resource name (got 5)"),
        (
            "sharing: {timeSlicing: {resources: [{name: gpu, replicas: 1}]}}",
            "sharing.time_slicing.resources[0].replicas: expected at least 2 replicas (upstream: number of replicas must be >= 2",
        ),
        (
            "flags: {migStrategy: mixed, mpsRoot: /run/mps}\nsharing: {mps: {resources: [{name: gpu, replicas: 2}]}}",
            'sharing.mps.resources: MPS cannot be used with plugin.mig_strategy = "mixed"',
        ),
        (
            "flags: {plugin: {sharedDevicesAllocationPolicy: spread}}",
            "plugin.shared_devices_allocation_policy: Input should be 'distributed' or 'packed' (got \"spread\", "
            "from upstream flags.plugin.sharedDevicesAllocationPolicy)",
        ),
    ],
    ids=["no resources", "empty resources", "not a mapping", "malformed devices", "rename not a name", "one replica", "MPS with mixed", "unknown policy"],
)
def test_a_sharing_config_upstream_refuses_is_an_import_error(fragment: str, line: str) -> None:
    got = import_errors("version: v1\n" + fragment + "\n")
    assert any(found.startswith(line) for found in got), got


def test_a_bad_entry_names_the_upstream_key_it_came_from() -> None:
    (line,) = import_errors("sharing: {timeSlicing: {resources: [{name: gpu, replicas: 1}]}}\n")
    assert line.endswith("(from upstream sharing.timeSlicing.resources)")


def test_an_empty_mps_root_is_upstreams_unset_default() -> None:
    _, warnings, config = imported("flags: {mpsRoot: ''}\n")
    assert (warnings, config) == ([], Config())


def test_an_imported_sharing_config_loads_to_the_imported_config(tmp_path: Path) -> None:
    result = import_upstream_text(MPS)
    path = tmp_path / "config.toml"
    path.write_text(result.toml)
    path.chmod(0o644)
    assert load_config(path, environ={}).config == result.config


scalars = st.none() | st.booleans() | st.integers(-2, 60) | st.sampled_from(["gpu", "all", "nvidia.com/gpu", "0:1", "", "a b"])
entries = st.dictionaries(
    st.sampled_from(["name", "replicas", "rename", "devices", "x"]), scalars | st.lists(scalars, max_size=3), max_size=5
)
modes = st.dictionaries(
    st.sampled_from(["renameByDefault", "failRequestsGreaterThanOne", "resources", "x"]),
    scalars | st.lists(entries | scalars, max_size=3),
    max_size=4,
)
documents = st.fixed_dictionaries(
    {"sharing": st.dictionaries(st.sampled_from(["timeSlicing", "mps"]), modes | scalars, max_size=2)},
    optional={"flags": st.fixed_dictionaries({}, optional={"mpsRoot": scalars, "migStrategy": st.sampled_from(["none", "mixed"])})},
)


@settings(max_examples=300, deadline=None)
@given(document=documents)
def test_random_upstream_sharing_tables_import_or_raise_config_error(document: object) -> None:
    try:
        result = import_upstream_text(yaml.safe_dump(document))
    except ConfigError as err:
        assert err.lines
        return
    assert Config.model_validate(tomllib.loads(result.toml)) == result.config
