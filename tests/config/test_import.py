"""`nvdp config import`: upstream config files of the shapes in NVIDIA's README, translated to TOML."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from nvdp_node.config import Config, ConfigError, load_config
from nvdp_node.config.upstream_import import import_upstream_file, import_upstream_text

FLAGS_ONLY = """\
version: v1
flags:
  migStrategy: "none"
  failOnInitError: true
  nvidiaDriverRoot: "/run/nvidia/driver"
  plugin:
    passDeviceSpecs: true
    deviceListStrategy: "envvar"
    deviceIDStrategy: "index"
"""

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

STRATEGY_LIST = """\
version: v1
flags:
  plugin:
    deviceListStrategy:
    - envvar
    - volume-mounts
"""

AS_JSON = json.dumps(
    {
        "version": "v1",
        "flags": {
            "failOnInitError": False,
            "nvidiaDevRoot": "/",
            "plugin": {"deviceListStrategy": ["volume-mounts"], "deviceIDStrategy": "uuid"},
        },
    },
    indent=2,
)


def toml_of(text: str, name: str = "config.yaml") -> tuple[dict, list[str], Config]:
    result = import_upstream_text(text, Path(name))
    return tomllib.loads(result.toml), result.warnings, result.config


def test_flags_only_config_translates_without_warnings() -> None:
    doc, warnings, config = toml_of(FLAGS_ONLY)
    assert warnings == []
    assert doc == {
        "version": 1,
        "kubelet": {},
        "health": {},
        "runtime_check": {},
        "plugin": {
            "fail_on_init_error": True,
            "pass_device_specs": True,
            "device_list_strategy": ["envvar"],
            "device_id_strategy": "index",
            "nvidia_driver_root": "/run/nvidia/driver",
            "mig_strategy": "none",
        },
        "resources": {},
        "sharing": {"time_slicing": {}, "mps": {}},
        "logging": {},
        "metrics": {},
        "labels": {},
    }
    assert config.plugin.nvidia_driver_root == Path("/run/nvidia/driver")


MIG_MIXED = """\
version: v1
flags:
  migStrategy: mixed
  plugin:
    passDeviceSpecs: true
resources:
  gpus:
  - pattern: "*A100*"
    name: a100
  mig:
  - pattern: "1g.10gb"
    name: nvidia.com/mig-small
"""


def test_mig_strategy_translates_to_plugin_mig_strategy() -> None:
    doc, warnings, config = toml_of("version: v1\nflags:\n  migStrategy: single\n")
    assert (doc["plugin"], warnings, config.plugin.mig_strategy) == ({"mig_strategy": "single"}, [], "single")


def test_an_upstream_mig_config_with_resources_translates_to_the_same_names() -> None:
    doc, _, config = toml_of(MIG_MIXED)
    assert doc["plugin"] == {"mig_strategy": "mixed", "pass_device_specs": True}
    assert doc["resources"] == {
        "gpus": [{"pattern": "*A100*", "name": "nvidia.com/a100"}],
        "mig": [{"pattern": "1g.10gb", "name": "nvidia.com/mig-small"}],
    }
    assert [entry.name for entry in config.resources.mig] == ["nvidia.com/mig-small"]


def test_resources_are_kept_with_a_warning_that_upstream_ignores_them() -> None:
    _, warnings, _ = toml_of(MIG_MIXED)
    assert warnings == [
        f"resources.{table}: upstream ignores custom resource names and advertises its default names; nvdp "
        "honours this list, so the devices it matches are advertised under the names given"
        for table in ("gpus", "mig")
    ]


@pytest.mark.parametrize(
    ("fragment", "line"),
    [
        ("flags: {migStrategy: full}", "plugin.mig_strategy: Input should be 'none', 'single' or 'mixed' (got \"full\", from upstream flags.migStrategy)"),
        ("resources: {gpus: [{pattern: '*'}]}", 'resources.gpus[0].name: required key missing (got {"pattern": "*"}, from upstream resources.gpus)'),
        ("resources: {mig: [{pattern: '*', name: 'a b'}]}", 'resources.mig[0].name: the ResourceName "nvidia.com/a b" is invalid'),
    ],
    ids=["unknown strategy", "entry without name", "bad name"],
)
def test_a_bad_upstream_mig_or_resources_value_is_an_error_naming_both_keys(fragment: str, line: str) -> None:
    with pytest.raises(ConfigError) as exc:
        import_upstream_text("version: v1\n" + fragment + "\n", Path("config.yaml"))
    assert any(got.startswith(line) for got in exc.value.lines), exc.value.lines


def test_an_imported_mig_config_loads_to_the_imported_config(tmp_path: Path) -> None:
    result = import_upstream_text(MIG_MIXED)
    path = tmp_path / "config.toml"
    path.write_text(result.toml)
    assert load_config(path, environ={}).config == result.config


def test_warnings_are_repeated_in_the_output_header() -> None:
    result = import_upstream_text("flags: {gdsEnabled: true}\n", Path("/etc/nvidia/plugin.yaml"))
    assert "# Imported from /etc/nvidia/plugin.yaml by `nvdp config import`.\n" in result.toml
    assert "# warning: flags.gdsEnabled = true dropped: GPUDirect Storage" in result.toml


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ('"envvar"', ["envvar"]),
        ("volume-mounts", ["volume-mounts"]),
        ("[envvar, volume-mounts]", ["envvar", "volume-mounts"]),
    ],
    ids=["quoted string", "bare string", "list"],
)
def test_device_list_strategy_as_string_or_list(strategy: str, expected: list[str]) -> None:
    doc, warnings, _ = toml_of(f"version: v1\nflags:\n  plugin:\n    deviceListStrategy: {strategy}\n")
    assert (doc["plugin"]["device_list_strategy"], warnings) == (expected, [])


def test_block_list_of_strategies() -> None:
    doc, _, config = toml_of(STRATEGY_LIST)
    assert config.plugin.device_list_strategy == ("envvar", "volume-mounts")


def test_cdi_strategies_and_keys_are_carried_over() -> None:
    doc, warnings, config = toml_of(
        "flags:\n  plugin:\n    deviceListStrategy: [envvar, cdi-cri]\n"
        "    cdiAnnotationPrefix: cdi.example.com/\n    nvidiaCTKPath: /opt/bin/nvidia-ctk\n"
    )
    assert warnings == []
    assert config.plugin.device_list_strategy == ("envvar", "cdi-cri")
    assert (config.plugin.cdi_annotation_prefix, str(config.plugin.nvidia_cdi_hook_path)) == (
        "cdi.example.com/", "/opt/bin/nvidia-ctk")


def test_a_single_cdi_strategy_string_is_carried_over() -> None:
    _, warnings, config = toml_of("flags:\n  plugin:\n    deviceListStrategy: cdi-annotations\n")
    assert (config.plugin.device_list_strategy, warnings) == (("cdi-annotations",), [])


def test_json_config(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(AS_JSON)
    result = import_upstream_file(path)
    assert result.warnings == []
    assert result.config.plugin.fail_on_init_error is False
    assert result.config.plugin.device_list_strategy == ("volume-mounts",)
    assert result.config.plugin.nvidia_dev_root == "/"


def test_json_without_json_suffix_is_recognised() -> None:
    _, _, config = toml_of(AS_JSON, "config")
    assert config.plugin.fail_on_init_error is False


@pytest.mark.parametrize("text", ["", "version: v1\n", "{}", "version: ''\nflags: null\n"], ids=["empty", "version only", "json {}", "nulls"])
def test_empty_configs_mean_defaults(text: str) -> None:
    _, warnings, config = toml_of(text)
    assert (config, warnings) == (Config(), [])


# (upstream fragment, start of the expected warning)
DROPPED = [
    ("flags: {gdrcopyEnabled: true}", "flags.gdrcopyEnabled = true dropped: GDRCopy injection is not supported yet"),
    ("flags: {gdsEnabled: true}", "flags.gdsEnabled = true dropped: GPUDirect Storage"),
    ("flags: {mofedEnabled: true}", "flags.mofedEnabled = true dropped: MOFED"),
    ("flags: {deviceDiscoveryStrategy: tegra}", 'flags.deviceDiscoveryStrategy = "tegra" dropped: only NVML discovery'),
    ("flags: {useNodeFeatureAPI: true}", "flags.useNodeFeatureAPI = true dropped: a GPU feature discovery setting"),
    ("flags: {gfd: {oneshot: true}}", "flags.gfd dropped: GPU feature discovery settings"),
    ("flags: {plugin: {containerDriverRoot: /drv}}", 'flags.plugin.containerDriverRoot = "/drv" dropped: not needed'),
    ("imex: {channelIDs: [0]}", "imex.channelIDs dropped: IMEX channels are not supported yet"),
    ("imex: {required: true}", "imex.required = true dropped: IMEX"),
    ("flags: {somethingNew: 1}", "flags.somethingNew: unknown upstream key, ignored"),
    ("extra: 1", "extra: unknown upstream key, ignored"),
]


@pytest.mark.parametrize(("fragment", "warning"), DROPPED, ids=[w.split(" ")[0].rstrip(":") for _, w in DROPPED])
def test_settings_without_equivalent_are_dropped_with_a_warning(fragment: str, warning: str) -> None:
    _, warnings, config = toml_of("version: v1\n" + fragment + "\n")
    assert len(warnings) == 1 and warnings[0].startswith(warning), warnings
    assert config == Config()


@pytest.mark.parametrize(
    "fragment",
    [
        "flags: {migStrategy: none, gdrcopyEnabled: false, gdsEnabled: false, mofedEnabled: false, mpsRoot: ''}",
        "flags: {deviceDiscoveryStrategy: auto, useNodeFeatureAPI: null}",
        "flags: {plugin: {containerDriverRoot: /driver-root}}",
        "flags: {plugin: {sharedDevicesAllocationPolicy: distributed}}",
        "imex: {channelIDs: [], required: false}",
        "resources: {gpus: [], mig: []}",
    ],
    ids=["feature flags off", "discovery auto", "container driver root default", "allocation policy default", "imex empty", "resources empty"],
)
def test_upstream_defaults_need_no_warning(fragment: str) -> None:
    _, warnings, _ = toml_of("version: v1\n" + fragment + "\n")
    assert warnings == []


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("version: v2\n", 'version: unknown version "v2" (upstream knows only v1)'),
        ("- a\n- b\n", "expected a mapping with the keys version, flags, resources, sharing, imex"),
        ("flags: 5\n", "flags: expected a mapping (got 5)"),
        (
            "flags: {plugin: {deviceIDStrategy: serial}}\n",
            "plugin.device_id_strategy: Input should be 'uuid' or 'index' "
            '(got "serial", from upstream flags.plugin.deviceIDStrategy)',
        ),
        (
            "flags: {failOnInitError: sometimes}\n",
            "plugin.fail_on_init_error: expected true or false (a TOML boolean, without quotes) "
            '(got "sometimes", from upstream flags.failOnInitError)',
        ),
        ("flags: {nvidiaDriverRoot: driver}\n", "plugin.nvidia_driver_root: expected an absolute path"),
        ("flags:\n  plugin: [\n", "config.yaml:3:1: invalid YAML: expected the node content"),
        ('{"version": "v1",}', "config.yaml:1:18: invalid JSON: Expecting property name"),
    ],
    ids=["version", "not a mapping", "flags not a mapping", "bad strategy", "bad bool", "relative root", "yaml syntax", "json syntax"],
)
def test_unusable_upstream_configs_are_config_errors(text: str, line: str) -> None:
    with pytest.raises(ConfigError) as exc:
        import_upstream_text(text, Path("config.yaml"))
    assert any(got.startswith(line) for got in exc.value.lines), exc.value.lines
    assert str(exc.value).startswith("nvdp: cannot import config.yaml:")


def test_imported_file_loads_to_the_imported_config(tmp_path: Path) -> None:
    result = import_upstream_text(FLAGS_ONLY + TIME_SLICING.split("\n", 3)[-1])
    path = tmp_path / "config.toml"
    path.write_text(result.toml)
    assert load_config(path, environ={}).config == result.config


def test_unreadable_upstream_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"version: v1\n\xff\n")
    with pytest.raises(ConfigError) as exc:
        import_upstream_file(path)
    assert exc.value.lines[0].startswith(f"cannot read {path}:")


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12)
    | st.sampled_from(["v1", "none", "envvar", "cdi-cri", "index", "/", "all"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["flags", "plugin", "version", "sharing", "imex", "resources", "deviceListStrategy",
                         "failOnInitError", "migStrategy", "timeSlicing", "mps", "mpsRoot", "renameByDefault",
                         "name", "replicas", "rename", "devices", "x"]),
        inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(document=yaml_values)
def test_random_upstream_documents_import_or_raise_config_error(document: object) -> None:
    try:
        result = import_upstream_text(yaml.safe_dump(document))
    except ConfigError as err:
        assert err.lines
        return
    assert Config.model_validate(tomllib.loads(result.toml)) == result.config
