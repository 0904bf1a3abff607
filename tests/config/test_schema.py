"""The schema's rules, one table per rule: what is accepted, normalised or rejected, and how."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from pydantic_settings import InitSettingsSource

from nvdp_node.config import Config, ConfigError, config_keys, parse_config
from nvdp_node.config.errors import did_you_mean, key_path
from nvdp_node.domain.errors import EX_CONFIG, PermanentError
from nvdp_node.domain.resource_names import validate_extended_resource_name

VALID_NAMES = [
    "nvidia.com/gpu",
    "nvidia.com/mig-1g.10gb",
    "nvidia.com/gpu.shared",
    "example.com/GPU_x",
    "a/b",
    "a" * 244 + "/gpu",
    "nvidia.com/" + "g" * 63,
]
INVALID_NAMES = [
    ("gpu", "domain prefix"),
    ("kubernetes.io/gpu", "reserved"),
    ("foo.kubernetes.io/gpu", "reserved"),
    ("requests.nvidia.com/gpu", "requests."),
    ("nvidia.com/a/b", 'only one "/"'),
    ("Nvidia.com/gpu", "DNS subdomain"),
    ("nvidia_com/gpu", "DNS subdomain"),
    ("/gpu", "DNS subdomain"),
    ("nvidia.com/", "empty"),
    ("nvidia.com/-gpu", "start and end"),
    ("nvidia.com/gpu-", "start and end"),
    ("nvidia.com/g pu", "letters, digits"),
    ("a" * 245 + "/gpu", "longer than 244"),
    ("nvidia.com/" + "g" * 64, "longer than 63"),
]


@pytest.mark.parametrize("name", VALID_NAMES, ids=lambda n: n[:30])
def test_kubelet_accepts_extended_resource_name(name: str) -> None:
    assert validate_extended_resource_name(name) is None


@pytest.mark.parametrize(("name", "reason"), INVALID_NAMES, ids=[n[:30] for n, _ in INVALID_NAMES])
def test_kubelet_rejects_resource_name_with_its_error_and_the_rule(name: str, reason: str) -> None:
    error = validate_extended_resource_name(name)
    assert error is not None
    assert error.startswith(f'the ResourceName "{name}" is invalid: ')
    assert reason in error


@given(st.text(alphabet="abcAB09-_./ kubernetes.io", max_size=40))
def test_resource_name_rules_agree_with_the_kubelet_peer(name: str) -> None:
    oracle = pytest.importorskip("tests.kubelet_peer.resource_names")
    assert (validate_extended_resource_name(name) is None) == oracle.is_extended_resource_name(name)


def test_bad_resource_name_fails_at_load_not_at_register() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"resource_name": "gpu"})
    assert 'resource_name: the ResourceName "gpu" is invalid' in str(exc.value)
    assert '"nvidia.com/gpu"' in str(exc.value)


# (data, attribute path, expected value)
ACCEPTED = [
    ({}, "resource_name", "nvidia.com/gpu"),
    ({"version": 1}, "version", 1),
    ({"plugin": {"device_list_strategy": "envvar"}}, "plugin.device_list_strategy", ("envvar",)),
    ({"plugin": {"device_list_strategy": ["volume-mounts"]}}, "plugin.device_list_strategy", ("volume-mounts",)),
    (
        {"plugin": {"device_list_strategy": ["volume-mounts", "envvar", "envvar"]}},
        "plugin.device_list_strategy",
        ("volume-mounts", "envvar"),
    ),
    ({"plugin": {"device_id_strategy": "index"}}, "plugin.device_id_strategy", "index"),
    ({"plugin": {"nvidia_driver_root": "/run/nvidia/driver"}}, "plugin.nvidia_driver_root", Path("/run/nvidia/driver")),
    ({"plugin": {"nvidia_dev_root": "/host"}}, "plugin.nvidia_dev_root", "/host"),
    ({"runtime_check": {"engines": "docker"}}, "runtime_check.engines", ("docker",)),
    ({"runtime_check": {"engines": ["auto"]}}, "runtime_check.engines", "auto"),
    ({"runtime_check": {"engines": ["crio", "containerd", "crio"]}}, "runtime_check.engines", ("crio", "containerd")),
    ({"runtime_check": {"policy": "off"}}, "runtime_check.policy", "off"),
    ({"health": {"ignored_xids": [45, 13, 13]}}, "health.ignored_xids", (13, 45)),
    ({"health": {"ignored_xids": []}}, "health.ignored_xids", ()),
    ({"health": {"force_enabled_xids": [79, 48]}}, "health.force_enabled_xids", (48, 79)),
    ({"kubelet": {"socket_dir": "/tmp/dp/"}}, "kubelet.socket_dir", Path("/tmp/dp")),
    ({"kubelet": {"kubelet_socket": "/run/k.sock"}}, "kubelet.kubelet_socket", "/run/k.sock"),
    ({"logging": {"level": "debug", "format": "json"}}, "logging.format", "json"),
]


@pytest.mark.parametrize(("data", "attr", "expected"), ACCEPTED, ids=[f"{a}={e!r}" for _, a, e in ACCEPTED])
def test_schema_accepts_and_normalises(data: dict, attr: str, expected: object) -> None:
    value: object = parse_config(data)
    for part in attr.split("."):
        value = getattr(value, part)
    assert value == expected


# (data, the error line expected in the message)
REJECTED = [
    ({"version": 2}, "version: unsupported config version; this nvdp reads version = 1 (got 2)"),
    ({"version": True}, "version: unsupported config version"),
    ({"version": "1"}, "version: unsupported config version"),
    ({"resource_name": "kubernetes.io/gpu"}, "resource_name: the ResourceName"),
    ({"resource_name": 5}, "resource_name: Input should be a valid string (got 5)"),
    ({"plugin": {"device_list_strategy": ["envvar", "cdi"]}}, 'plugin.device_list_strategy: unknown strategy "cdi"'),
    ({"plugin": {"device_list_strategy": "mounts"}},
     'unknown strategy "mounts": expected "envvar", "volume-mounts", "cdi-annotations", "cdi-cri"'),
    ({"plugin": {"cdi_annotation_prefix": "cdi.k8s.io"}}, 'plugin.cdi_annotation_prefix: expected a DNS subdomain ending in "/"'),
    ({"plugin": {"cdi_annotation_prefix": "CDI_x/"}}, 'plugin.cdi_annotation_prefix: expected a DNS subdomain ending in "/"'),
    ({"plugin": {"nvidia_cdi_hook_path": "nvidia-cdi-hook"}}, "plugin.nvidia_cdi_hook_path: "),
    ({"plugin": {"device_list_strategy": []}}, "plugin.device_list_strategy: name at least one strategy"),
    ({"plugin": {"device_list_strategy": 3}}, "plugin.device_list_strategy: expected a strategy name or a list"),
    ({"plugin": {"device_list_strategy": [{}]}}, 'unknown strategy {}: expected "envvar"'),
    ({"plugin": {"device_id_strategy": "serial"}}, "plugin.device_id_strategy: Input should be 'uuid' or 'index' (got \"serial\")"),
    ({"plugin": {"fail_on_init_error": "maybe"}}, "plugin.fail_on_init_error: expected true or false (a TOML boolean, without quotes)"),
    ({"plugin": {"nvidia_driver_root": "run/nvidia"}}, "plugin.nvidia_driver_root: expected an absolute path"),
    ({"plugin": {"nvidia_dev_root": "dev"}}, 'plugin.nvidia_dev_root: expected an absolute path, or "" for the default'),
    ({"runtime_check": {"engines": ["auto", "docker"]}}, '"auto" cannot be combined with engine names'),
    ({"runtime_check": {"engines": []}}, 'name at least one engine, or use "auto"'),
    ({"runtime_check": {"engines": ["podman"]}}, 'unknown engine "podman": expected "docker", "containerd", "crio"'),
    ({"runtime_check": {"engines": 1}}, 'runtime_check.engines: expected "auto" or a list of engine names'),
    ({"runtime_check": {"policy": "error"}}, "runtime_check.policy: Input should be 'warn', 'fail' or 'off'"),
    ({"health": {"ignored_xids": [13, 0]}}, "health.ignored_xids[1]: Input should be greater than or equal to 1 (got 0)"),
    ({"health": {"ignored_xids": [-1]}}, "health.ignored_xids[0]: Input should be greater than or equal to 1"),
    ({"health": {"ignored_xids": [True]}}, "health.ignored_xids[0]: expected a positive integer XID, not a boolean"),
    ({"health": {"ignored_xids": [1.5]}}, "health.ignored_xids[0]: expected an integer (a TOML integer, without quotes"),
    ({"health": {"ignored_xids": "13"}}, "health.ignored_xids: expected a list (got \"13\")"),
    ({"health": {"force_enabled_xids": [0]}}, "health.force_enabled_xids[0]: Input should be greater than or equal to 1"),
    ({"health": 5}, "health: expected a table (got 5)"),
    ({"kubelet": {"socket_dir": "relative/dir"}}, "kubelet.socket_dir: expected an absolute path"),
    ({"kubelet": {"socket_dir": ""}}, "kubelet.socket_dir: expected an absolute path"),
    ({"kubelet": {"socket_dir": "/a\0b"}}, "kubelet.socket_dir: a path must not contain a NUL character"),
    ({"kubelet": {"kubelet_socket": "kubelet.sock"}}, "kubelet.kubelet_socket: expected an absolute path"),
    ({"logging": {"level": "warn"}}, "logging.level: Input should be 'debug', 'info', 'warning' or 'error' (got \"warn\")"),
    ({"logging": {"format": "text"}}, "logging.format: Input should be 'plain' or 'json'"),
]


@pytest.mark.parametrize(("data", "line"), REJECTED, ids=[line.split(":")[0] + "-" + str(i) for i, (_, line) in enumerate(REJECTED)])
def test_schema_rejects_with_key_value_and_expectation(data: dict, line: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert any(line in got for got in exc.value.lines), exc.value.lines


# Strict types: what TOML wrote is what counts; nothing is converted.
STRICT = [
    ({"health": {"enabled": "no"}}, 'health.enabled: expected true or false (a TOML boolean, without quotes) (got "no")'),
    ({"health": {"enabled": "false"}}, 'health.enabled: expected true or false (a TOML boolean, without quotes) (got "false")'),
    ({"health": {"ignored_xids": [" 79"]}}, 'health.ignored_xids[0]: expected an integer (a TOML integer, without quotes, not a boolean) (got " 79")'),
    ({"health": {"ignored_xids": ["79"]}}, 'health.ignored_xids[0]: expected an integer'),
    ({"health": {"recovery_quiet_period": True}}, "health.recovery_quiet_period: expected an integer (a TOML integer, without quotes, not a boolean) (got true)"),
    ({"health": {"recovery_quiet_period": "600"}}, "health.recovery_quiet_period: expected an integer"),
    ({"health": {"recovery_quiet_period": 600.0}}, "health.recovery_quiet_period: expected an integer"),
    ({"plugin": {"pass_device_specs": 1}}, "plugin.pass_device_specs: expected true or false (a TOML boolean, without quotes) (got 1)"),
    ({"plugin": {"fail_on_init_error": 0}}, "plugin.fail_on_init_error: expected true or false"),
    ({"kubelet": {"socket_dir": 5}}, "kubelet.socket_dir:"),
    ({"kubelet": {"pod_resources_socket": "kubelet.sock"}}, 'kubelet.pod_resources_socket: expected an absolute path, or "" for the default'),
]


@pytest.mark.parametrize(("data", "line"), STRICT, ids=[line.split(" (")[0] for _, line in STRICT])
def test_toml_values_of_the_wrong_type_are_errors_not_converted(data: dict, line: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert any(got.startswith(line) for got in exc.value.lines), exc.value.lines


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", ""), ("/run/k8s/pod-resources.sock", "/run/k8s/pod-resources.sock")],
    ids=["empty: do not ask", "absolute path"],
)
def test_pod_resources_socket_is_an_absolute_path_or_empty(value: str, expected: str) -> None:
    assert parse_config({"kubelet": {"pod_resources_socket": value}}).kubelet.pod_resources_socket == expected


def test_pod_resources_socket_defaults_to_kubelets() -> None:
    assert Config().kubelet.pod_resources_socket == "/var/lib/kubelet/pod-resources/kubelet.sock"


NAME_240 = "a" * 232 + ".com/gpu"  # kubelet accepts it; its socket path is far over 107 bytes
NAME_62 = "example.com/" + "g" * 50
DEEP_DIR = "/" + "/".join(["d" * 9] * 8)  # 80 bytes: room for the private bind directory, not for NAME_62


def test_a_240_character_resource_name_cannot_be_served_and_the_error_shows_the_path() -> None:
    assert len(NAME_240) == 240 and validate_extended_resource_name(NAME_240) is None
    with pytest.raises(ConfigError) as exc:
        parse_config({"resource_name": NAME_240})
    path = f"/var/lib/kubelet/device-plugins/nvidia-{'a' * 232}.com-gpu.sock"
    assert exc.value.lines == [
        f"resource_name: the socket path {path!r} for {NAME_240!r} is {len(path)} bytes long, over the "
        "107-byte limit of a unix socket path; use a resource_name whose socket name fits in 75 bytes, "
        "or a shorter kubelet.socket_dir"
    ]


def test_a_62_character_resource_name_is_served_under_the_default_socket_dir() -> None:
    assert parse_config({"resource_name": NAME_62}).resource_name == NAME_62


def test_a_62_character_resource_name_does_not_fit_under_a_deep_socket_dir() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"resource_name": NAME_62, "kubelet": {"socket_dir": DEEP_DIR}})
    (line,) = exc.value.lines
    assert line.startswith(f"resource_name: the socket path '{DEEP_DIR}/nvidia-example.com-{'g' * 50}.sock'")
    assert "is 155 bytes long" in line


def test_a_socket_dir_without_room_for_the_private_bind_directory_is_an_error() -> None:
    deep = DEEP_DIR + "/dddddd"  # 87 bytes
    with pytest.raises(ConfigError) as exc:
        parse_config({"kubelet": {"socket_dir": deep}})
    (line,) = exc.value.lines
    assert line.startswith(f"kubelet.socket_dir: the socket directory {deep!r} is 87 bytes long; nvdp binds")
    assert "<socket_dir>/.nvdp-<12 hex digits>/s" in line and "at most 86" in line


def test_an_unserveable_name_from_the_environment_says_so(tmp_path: Path) -> None:
    from nvdp_node.config import load_config

    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "absent", environ={"NVDP_RESOURCE_NAME": NAME_240})
    assert exc.value.lines[0].endswith("(from env NVDP_RESOURCE_NAME)")


# (data, the unknown-key line expected)
UNKNOWN = [
    ({"resourse_name": "x"}, "resourse_name: unknown key (did you mean 'resource_name'?)"),
    ({"socket_dir": "/x"}, "socket_dir: unknown key (did you mean 'kubelet.socket_dir'?)"),
    ({"helth": {}}, "helth: unknown key (did you mean 'health'?)"),
    ({"health": {"Enabled": True}}, "health.Enabled: unknown key (did you mean 'health.enabled'?)"),
    ({"health": {"ignore_xids": []}}, "health.ignore_xids: unknown key (did you mean 'health.ignored_xids'?)"),
    ({"plugin": {"deviceIDStrategy": "uuid"}}, "plugin.deviceIDStrategy: unknown key (did you mean 'plugin.device_id_strategy'?)"),
    ({"plugin": {"driver_root": "/"}}, "plugin.driver_root: unknown key (did you mean 'plugin.nvidia_driver_root'?)"),
    ({"failOnInitError": True}, "failOnInitError: unknown key (did you mean 'plugin.fail_on_init_error'?)"),
    ({"migStrategy": "mixed"}, "migStrategy: unknown key (did you mean 'plugin.mig_strategy'?)"),
    ({"sharing": {"timeSlicing": {}}}, "sharing.timeSlicing: unknown key (did you mean 'sharing.time_slicing'?)"),
    ({"timeSlicing": {}}, "timeSlicing: unknown key (did you mean 'sharing.time_slicing'?)"),
    ({"plugin": {"mps_root": "/run"}}, "plugin.mps_root: unknown key (did you mean 'sharing.mps.root'?)"),
    ({"mpsRoot": "/run"}, "mpsRoot: unknown key (did you mean 'sharing.mps.root'?)"),
    ({"sharing": {"mps": {"mpsRoot": "/run"}}}, "sharing.mps.mpsRoot: unknown key (did you mean 'sharing.mps.root'?)"),
    ({"sharing": {"renameByDefault": True}}, "sharing.renameByDefault: unknown key (did you mean 'sharing.time_slicing.rename_by_default'?)"),
    ({"sharing": {"mps": {"resources": [{"name": "gpu", "replicas": 2, "Replicas": 3}]}}}, "sharing.mps.resources[0].Replicas: unknown key (did you mean 'sharing.mps.resources[0].replicas'?)"),
    ({"plugin": {"sharedDevicesAllocationPolicy": "packed"}}, "plugin.sharedDevicesAllocationPolicy: unknown key (did you mean 'plugin.shared_devices_allocation_policy'?)"),
    ({"plugin": {"gdrcopy_enabled": True}}, "plugin.gdrcopy_enabled: unknown key (GDRCopy injection is not supported yet)"),
    ({"imex": {}}, "imex: unknown key (IMEX channels are not supported yet)"),
    ({"flags": {}}, "flags: unknown key (nvdp has no [flags] table; `nvdp config import FILE`"),
    ({"zzzzzz": 1}, "zzzzzz: unknown key"),
    # BaseSettings would take these as its own arguments (and _cli_parse_args parses sys.argv).
    ({"_cli_parse_args": True}, "_cli_parse_args: unknown key"),
    ({"_env_file": "/etc/passwd"}, "_env_file: unknown key"),
]


@pytest.mark.parametrize(("data", "line"), UNKNOWN, ids=[next(iter(d)) for d, _ in UNKNOWN])
def test_unknown_keys_are_errors_with_a_hint(data: dict, line: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert any(got.startswith(line) for got in exc.value.lines), exc.value.lines


def test_a_key_without_any_close_match_gets_no_hint() -> None:
    assert did_you_mean("zzzzzz") == ""


def test_every_problem_is_reported_at_once() -> None:
    data = {"resourse_name": "x", "health": {"ignored_xids": [0]}, "logging": {"level": "loud"}}
    with pytest.raises(ConfigError) as exc:
        parse_config(data, header="invalid configuration in /etc/nvdp/config.toml")
    assert len(exc.value.lines) == 3
    text = str(exc.value)
    assert text.splitlines()[0] == "nvdp: invalid configuration in /etc/nvdp/config.toml:"
    assert all(line.startswith("  ") for line in text.splitlines()[1:])
    assert "pydantic" not in text and "errors.pydantic.dev" not in text


def test_config_error_is_a_permanent_error_with_exit_code_78() -> None:
    err = ConfigError("invalid configuration", ["a: b"], path=Path("/x"))
    assert isinstance(err, PermanentError)
    assert err.exit_code == ConfigError.EXIT_CODE == EX_CONFIG == 78
    assert err.path == Path("/x") and err.lines == ["a: b"]


@pytest.mark.parametrize(
    ("loc", "path"),
    [(("resource_name",), "resource_name"), (("health", "ignored_xids", 2), "health.ignored_xids[2]")],
)
def test_key_path_reads_like_toml(loc: tuple, path: str) -> None:
    assert key_path(loc) == path


def test_kubelet_socket_defaults_to_the_socket_dir() -> None:
    config = parse_config({"kubelet": {"socket_dir": "/tmp/dp"}})
    assert config.kubelet.kubelet_socket_path == Path("/tmp/dp/kubelet.sock")
    config = parse_config({"kubelet": {"kubelet_socket": "/run/k.sock"}})
    assert config.kubelet.kubelet_socket_path == Path("/run/k.sock")


def test_dev_root_defaults_to_the_driver_root() -> None:
    config = parse_config({"plugin": {"nvidia_driver_root": "/run/nvidia/driver"}})
    assert config.plugin.dev_root_path == Path("/run/nvidia/driver")
    config = parse_config({"plugin": {"nvidia_driver_root": "/run/nvidia/driver", "nvidia_dev_root": "/"}})
    assert config.plugin.dev_root_path == Path("/")




def test_parse_config_bounds_the_error_list_of_200000_unknown_keys() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({f"k{i}": 1 for i in range(200_000)})
    assert len(exc.value.lines) == 21
    assert exc.value.lines[-1].startswith("... and 199980 more problems")


def test_from_sources_takes_each_key_from_the_first_source_that_sets_it() -> None:
    high = InitSettingsSource(Config, {"health": {"enabled": False}})
    low = InitSettingsSource(Config, {"resource_name": "example.com/gpu", "health": {"enabled": True, "recovery": True}})
    config = Config.from_sources(high, low)
    assert (config.resource_name, config.health.enabled, config.health.recovery) == ("example.com/gpu", False, True)


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(ValidationError):
        config.resource_name = "example.com/gpu"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        config.health.enabled = False  # type: ignore[misc]


def test_the_model_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVDP_RESOURCE_NAME", "example.com/gpu")
    monkeypatch.setenv("NVDP_HEALTH__ENABLED", "false")
    assert Config().resource_name == "nvidia.com/gpu"
    assert Config().health.enabled is True


def test_schema_keys_are_the_ones_the_daemon_codes_against() -> None:
    assert config_keys() == [
        "version",
        "resource_name",
        "kubelet.socket_dir",
        "kubelet.kubelet_socket",
        "kubelet.pod_resources_socket",
        "health.enabled",
        "health.xid_events",
        "health.ignored_xids",
        "health.force_enabled_xids",
        "health.unattributed_events",
        "health.recovery",
        "health.recovery_quiet_period",
        "runtime_check.engines",
        "runtime_check.policy",
        "runtime_check.min_driver_version",
        "plugin.fail_on_init_error",
        "plugin.pass_device_specs",
        "plugin.device_list_strategy",
        "plugin.device_id_strategy",
        "plugin.nvidia_driver_root",
        "plugin.nvidia_dev_root",
        "plugin.mig_strategy",
        "plugin.mig_check_interval",
        "plugin.shared_devices_allocation_policy",
        "plugin.cdi_annotation_prefix",
        "plugin.nvidia_cdi_hook_path",
        "plugin.cdi_spec_dir",
        "resources.gpus",
        "resources.mig",
        "sharing.time_slicing.rename_by_default",
        "sharing.time_slicing.fail_requests_greater_than_one",
        "sharing.time_slicing.resources",
        "sharing.mps.rename_by_default",
        "sharing.mps.fail_requests_greater_than_one",
        "sharing.mps.resources",
        "sharing.mps.root",
        "logging.level",
        "logging.format",
        "metrics.textfile",
        "metrics.textfile_interval",
        "metrics.allow_remote",
        "metrics.listen",
        "labels.enabled",
        "labels.path",
    ]


def test_defaults_match_the_issue() -> None:
    config = Config()
    assert config.version == 1
    assert config.kubelet.socket_dir == Path("/var/lib/kubelet/device-plugins")
    assert config.kubelet.kubelet_socket_path == Path("/var/lib/kubelet/device-plugins/kubelet.sock")
    assert config.health.ignored_xids == (13, 31, 43, 45, 68, 109)
    assert config.health.force_enabled_xids == ()
    assert (config.health.enabled, config.health.xid_events) == (True, True)
    assert (config.runtime_check.engines, config.runtime_check.policy) == ("auto", "warn")
    assert config.plugin.fail_on_init_error is True and config.plugin.pass_device_specs is False
    assert config.plugin.device_list_strategy == ("envvar",)
    assert config.plugin.device_id_strategy == "uuid"
    assert config.plugin.dev_root_path == Path("/")
    assert (config.plugin.mig_strategy, config.plugin.mig_check_interval) == ("none", 30)
    assert (config.resources.gpus, config.resources.mig) == ((), ())
    assert (config.logging.level, config.logging.format) == ("info", "plain")
