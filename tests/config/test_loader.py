"""load_config: reading the file, precedence, the environment, DP_* semantics, errors, notices."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import string
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvdp_node.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    config_keys,
    env_var_name,
    load_config,
    resolve_config_path,
)
from nvdp_node.config.files import writable_by_non_root
from nvdp_node.config.render import render_effective
from nvdp_node.domain.health_policy import HealthPolicy


ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, mode: int = 0o644) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_missing_file_means_defaults_and_a_notice(tmp_path: Path) -> None:
    loaded = load_config(tmp_path / "absent.toml", environ={})
    assert loaded.config == Config()
    assert loaded.notices == [f"no config file at {tmp_path / 'absent.toml'}, using defaults"]
    assert set(loaded.sources.values()) == {"default"}
    assert list(loaded.sources) == config_keys()


def test_file_values_are_used_and_attributed_to_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'version = 1\nresource_name = "example.com/gpu"\n[health]\nenabled = false\n')
    loaded = load_config(path, environ={})
    assert loaded.config.resource_name == "example.com/gpu"
    assert loaded.config.health.enabled is False
    assert loaded.path == path
    assert loaded.sources["resource_name"] == "file"
    assert loaded.sources["health.enabled"] == "file"
    assert loaded.sources["health.xid_events"] == "default"


@pytest.mark.parametrize(
    ("path", "environ", "expected"),
    [
        (None, {}, DEFAULT_CONFIG_PATH),
        (None, {"NVDP_CONFIG": "/srv/nvdp.toml"}, Path("/srv/nvdp.toml")),
        (None, {"NVDP_CONFIG": ""}, DEFAULT_CONFIG_PATH),
        (Path("/cli.toml"), {"NVDP_CONFIG": "/srv/nvdp.toml"}, Path("/cli.toml")),
    ],
    ids=["default", "NVDP_CONFIG", "empty NVDP_CONFIG", "flag beats NVDP_CONFIG"],
)
def test_config_path_resolution(path: Path | None, environ: dict, expected: Path) -> None:
    assert resolve_config_path(path, environ) == expected


def test_load_config_without_a_path_honours_nvdp_config(tmp_path: Path) -> None:
    path = write(tmp_path, 'resource_name = "example.com/gpu"\n')
    loaded = load_config(environ={"NVDP_CONFIG": str(path)})
    assert loaded.path == path and loaded.config.resource_name == "example.com/gpu"


# (in file, in env, in flags) -> (value, source) of resource_name
PRECEDENCE = [
    (None, None, None, "nvidia.com/gpu", "default"),
    ("file.com/gpu", None, None, "file.com/gpu", "file"),
    ("file.com/gpu", "env.com/gpu", None, "env.com/gpu", "env NVDP_RESOURCE_NAME"),
    (None, "env.com/gpu", None, "env.com/gpu", "env NVDP_RESOURCE_NAME"),
    ("file.com/gpu", "env.com/gpu", "cli.com/gpu", "cli.com/gpu", "cli --resource-name"),
    ("file.com/gpu", None, "cli.com/gpu", "cli.com/gpu", "cli --resource-name"),
]


@pytest.mark.parametrize(
    ("file", "env", "flag", "value", "source"), PRECEDENCE, ids=[p[-1] + f"-{i}" for i, p in enumerate(PRECEDENCE)]
)
def test_precedence_is_flag_env_file_default(tmp_path: Path, file, env, flag, value, source) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, f'resource_name = "{file}"\n' if file else "")
    environ = {"NVDP_RESOURCE_NAME": env} if env else {}
    loaded = load_config(path, environ=environ, overrides={"resource_name": flag})
    assert loaded.config.resource_name == value
    assert loaded.sources["resource_name"] == source


def test_nested_env_overrides_one_key_of_a_file_table(tmp_path: Path) -> None:
    path = write(tmp_path, '[kubelet]\nsocket_dir = "/file"\nkubelet_socket = "/file/k.sock"\n')
    loaded = load_config(path, environ={"NVDP_KUBELET__SOCKET_DIR": "/env"})
    assert loaded.config.kubelet.socket_dir == Path("/env")
    assert loaded.config.kubelet.kubelet_socket == "/file/k.sock"


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("health.enabled", "false", False),
        ("health.enabled", "FALSE", False),
        ("health.xid_events", "True", True),
        ("health.recovery_quiet_period", "30", 30),
        ("health.ignored_xids", "79, 48,", (48, 79)),
        ("health.ignored_xids", "[79, 48]", (48, 79)),
        ("health.ignored_xids", "", ()),
        ("plugin.device_list_strategy", "volume-mounts,envvar", ("volume-mounts", "envvar")),
        ("runtime_check.engines", "auto", "auto"),
        ("runtime_check.engines", "docker,crio", ("docker", "crio")),
        ("kubelet.socket_dir", "/tmp/dp", Path("/tmp/dp")),
        ("kubelet.pod_resources_socket", "", ""),
    ],
    ids=lambda v: str(v),
)
def test_env_values_are_read_as_the_keys_type(tmp_path: Path, key: str, raw: str, expected: object) -> None:
    loaded = load_config(tmp_path / "absent", environ={env_var_name(key): raw})
    value: object = loaded.config
    for part in key.split("."):
        value = getattr(value, part)
    assert value == expected
    assert loaded.sources[key] == f"env {env_var_name(key)}"


@pytest.mark.parametrize("raw", ["1", "0", "yes", "no", "on", "off", "", " true"])
def test_env_booleans_are_only_true_or_false(tmp_path: Path, raw: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "absent", environ={"NVDP_HEALTH__ENABLED": raw})
    assert exc.value.lines == [f'NVDP_HEALTH__ENABLED: expected true or false for health.enabled (got "{raw}")']


@pytest.mark.parametrize("raw", ["600s", " 600", "6e2", "true", ""])
def test_env_integers_are_only_decimal_digits(tmp_path: Path, raw: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "absent", environ={"NVDP_HEALTH__RECOVERY_QUIET_PERIOD": raw})
    assert exc.value.lines == [
        f'NVDP_HEALTH__RECOVERY_QUIET_PERIOD: expected an integer for health.recovery_quiet_period (got "{raw}")'
    ]


def test_env_xid_list_items_must_be_integers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "absent", environ={"NVDP_HEALTH__IGNORED_XIDS": "13,x31"})
    assert exc.value.lines == [
        "NVDP_HEALTH__IGNORED_XIDS: 'x31' is not an integer (expected comma-separated integers, e.g. 48,79)"
    ]


def test_env_json_array_items_are_checked_strictly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "absent", environ={"NVDP_HEALTH__IGNORED_XIDS": '["79"]'})
    assert exc.value.lines[0].startswith("health.ignored_xids[0]: expected an integer")
    assert "from env NVDP_HEALTH__IGNORED_XIDS" in exc.value.lines[0]


def test_a_flag_value_is_read_as_strictly_as_the_environment(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "absent", environ={}, overrides={"health.enabled": "yes"})
    assert exc.value.lines == ['--enabled: expected true or false for health.enabled (got "yes")']


def test_only_the_injected_environment_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVDP_RESOURCE_NAME", "process.com/gpu")
    monkeypatch.setenv("DP_DISABLE_HEALTHCHECKS", "all")
    loaded = load_config(tmp_path / "absent", environ={"NVDP_LOGGING__LEVEL": "debug"})
    assert loaded.config.resource_name == "nvidia.com/gpu" and loaded.config.health.xid_events is True
    assert loaded.config.logging.level == "debug"


def test_env_list_that_is_not_a_json_array_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "absent", environ={"NVDP_HEALTH__IGNORED_XIDS": "[1, 2"})
    assert exc.value.lines == ['NVDP_HEALTH__IGNORED_XIDS: expected a comma-separated list or a JSON array (got "[1, 2")']


def test_bad_env_value_names_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "[logging]\nformat = \"xml\"\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={"NVDP_LOGGING__LEVEL": "verbose"})
    assert exc.value.lines == [
        "logging.level: Input should be 'debug', 'info', 'warning' or 'error' "
        '(got "verbose", from env NVDP_LOGGING__LEVEL)',
        "logging.format: Input should be 'plain' or 'json' (got \"xml\")",
    ]
    assert exc.value.path == path
    assert str(exc.value).startswith(f"nvdp: invalid configuration in {path}:\n")


def test_unknown_nvdp_variables_are_reported_not_fatal(tmp_path: Path) -> None:
    environ = {"NVDP_HEALTH__ENABLD": "false", "NVDP_CONFIG": str(tmp_path / "absent"), "NVDP_VERSION": "2"}
    loaded = load_config(environ=environ)
    assert loaded.config.health.enabled is True
    assert (
        "ignoring environment variable NVDP_HEALTH__ENABLD: not a config setting "
        "(did you mean NVDP_HEALTH__ENABLED?)" in loaded.notices
    )
    assert any(n.startswith("ignoring environment variable NVDP_VERSION") for n in loaded.notices)
    assert not any("NVDP_CONFIG" in n for n in loaded.notices)


def test_overrides_skip_none_and_accept_paths(tmp_path: Path) -> None:
    loaded = load_config(
        tmp_path / "absent",
        environ={},
        overrides={"kubelet.socket_dir": Path("/tmp/dp"), "kubelet.kubelet_socket": Path("/run/k.sock"), "resource_name": None},
    )
    assert loaded.config.kubelet.socket_dir == Path("/tmp/dp")
    assert loaded.config.kubelet.kubelet_socket_path == Path("/run/k.sock")
    assert loaded.sources["kubelet.socket_dir"] == "cli --socket-dir"
    assert loaded.sources["resource_name"] == "default"


def test_override_of_a_list_key_splits_commas(tmp_path: Path) -> None:
    loaded = load_config(tmp_path / "absent", environ={}, overrides={"plugin.device_list_strategy": "envvar,volume-mounts"})
    assert loaded.config.plugin.device_list_strategy == ("envvar", "volume-mounts")


def test_override_of_an_unknown_key_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown config key 'socket_dir'"):
        load_config(tmp_path / "absent", environ={}, overrides={"socket_dir": "/x"})


def test_env_cannot_paper_over_a_file_that_puts_a_value_where_a_table_belongs(tmp_path: Path) -> None:
    path = write(tmp_path, "health = 5\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={"NVDP_HEALTH__ENABLED": "false"})
    assert exc.value.lines == ["health: expected a table (got 5)"]


def test_dp_variables_cannot_paper_over_a_health_value_that_is_not_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, "health = 5\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={"DP_DISABLE_HEALTHCHECKS": "all"})
    assert exc.value.lines == ["health: expected a table (got 5)"]


# --- upstream's DP_DISABLE_HEALTHCHECKS / DP_ENABLE_HEALTHCHECKS ------------------------

DEFAULT_IGNORED = (13, 31, 43, 45, 68, 109)
# (DP_DISABLE_HEALTHCHECKS, DP_ENABLE_HEALTHCHECKS, file [health] text) -> (xid_events, ignored, force-enabled)
DP_SEMANTICS = [
    ("unset", None, None, "", True, DEFAULT_IGNORED, ()),
    ("empty", "", "", "", True, DEFAULT_IGNORED, ()),
    ("disable all", "all", None, "", False, DEFAULT_IGNORED, ()),
    ("disable xids", "xids", None, "", False, DEFAULT_IGNORED, ()),
    ("case-insensitive", " ALL ", None, "", False, DEFAULT_IGNORED, ()),
    ("all anywhere in the list", "94,all", None, "", False, DEFAULT_IGNORED, ()),
    ("list adds to defaults", "94,119", None, "", True, (13, 31, 43, 45, 68, 94, 109, 119), ()),
    ("blanks skipped", " 94 , ,119,", None, "", True, (13, 31, 43, 45, 68, 94, 109, 119), ()),
    ("list adds to the file", "94", None, "ignored_xids = [13]", True, (13, 94), ()),
    ("enable list", None, "31,43", "", True, DEFAULT_IGNORED, (31, 43)),
    ("enable list adds to the file", None, "31", "force_enabled_xids = [79]", True, DEFAULT_IGNORED, (31, 79)),
    ("enable all", None, "all", "", True, (), ()),
    ("enable xids means all", None, "xids", "", True, (), ()),
    ("enable all beats disable all", "all", "all", "", True, (), ()),
    ("enable all beats a disable list", "94", "all", "", True, (), ()),
    ("disable all beats an enable list", "all", "31", "", False, DEFAULT_IGNORED, ()),
    ("both lists", "94", "31", "", True, (13, 31, 43, 45, 68, 94, 109), (31,)),
]


@pytest.mark.parametrize(
    ("disable", "enable", "file", "xid_events", "ignored", "forced"),
    [case[1:] for case in DP_SEMANTICS],
    ids=[case[0] for case in DP_SEMANTICS],
)
def test_dp_healthcheck_variables_keep_upstream_meaning(tmp_path, disable, enable, file, xid_events, ignored, forced) -> None:  # type: ignore[no-untyped-def]
    environ = {k: v for k, v in {"DP_DISABLE_HEALTHCHECKS": disable, "DP_ENABLE_HEALTHCHECKS": enable}.items() if v is not None}
    health = load_config(write(tmp_path, f"[health]\n{file}\n"), environ=environ).config.health
    assert (health.xid_events, health.ignored_xids, health.force_enabled_xids) == (xid_events, ignored, forced)


def test_dp_both_lists_leave_the_force_enabled_xid_effective(tmp_path: Path) -> None:
    environ = {"DP_DISABLE_HEALTHCHECKS": "94,31", "DP_ENABLE_HEALTHCHECKS": "31"}
    health = load_config(tmp_path / "absent", environ=environ).config.health
    policy = HealthPolicy(frozenset(health.ignored_xids), frozenset(health.force_enabled_xids))
    assert not policy.is_critical(94) and policy.is_critical(31)


def test_enable_list_under_disable_all_gets_a_notice(tmp_path: Path) -> None:
    environ = {"DP_DISABLE_HEALTHCHECKS": "all", "DP_ENABLE_HEALTHCHECKS": "31"}
    loaded = load_config(tmp_path / "absent", environ=environ)
    assert any(n.startswith("DP_ENABLE_HEALTHCHECKS=31 has no effect") for n in loaded.notices)


@pytest.mark.parametrize(
    ("environ", "source_of"),
    [
        ({"DP_DISABLE_HEALTHCHECKS": "xids"}, {"health.xid_events": "env DP_DISABLE_HEALTHCHECKS"}),
        ({"DP_DISABLE_HEALTHCHECKS": "94"}, {"health.ignored_xids": "default + env DP_DISABLE_HEALTHCHECKS"}),
        ({"DP_ENABLE_HEALTHCHECKS": "all"}, {"health.ignored_xids": "env DP_ENABLE_HEALTHCHECKS"}),
        ({"DP_ENABLE_HEALTHCHECKS": "31"}, {"health.force_enabled_xids": "default + env DP_ENABLE_HEALTHCHECKS"}),
    ],
    ids=["disable all", "disable list", "enable all", "enable list"],
)
def test_dp_variables_are_named_as_the_source(tmp_path: Path, environ: dict, source_of: dict) -> None:
    sources = load_config(tmp_path / "absent", environ=environ).sources
    assert {k: sources[k] for k in source_of} == source_of


@pytest.mark.parametrize(
    ("name", "value", "token"),
    [
        ("DP_DISABLE_HEALTHCHECKS", "94,abc", "abc"),
        ("DP_DISABLE_HEALTHCHECKS", "0", "0"),
        ("DP_DISABLE_HEALTHCHECKS", "-1", "-1"),
        ("DP_DISABLE_HEALTHCHECKS", "9.5", "9.5"),
        ("DP_DISABLE_HEALTHCHECKS", "all,abc", "abc"),
        ("DP_ENABLE_HEALTHCHECKS", "everything", "everything"),
        ("DP_ENABLE_HEALTHCHECKS", "٣", "٣"),
    ],
    ids=lambda v: str(v),
)
def test_invalid_dp_tokens_are_config_errors(tmp_path: Path, name: str, value: str, token: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "absent", environ={name: value})
    assert exc.value.lines[0].startswith(f"{name}: {token!r} is not an XID (expected \"all\", \"xids\"")


def test_nvdp_and_dp_variables_for_the_same_key_conflict(tmp_path: Path) -> None:
    environ = {"NVDP_HEALTH__IGNORED_XIDS": "13", "DP_DISABLE_HEALTHCHECKS": "94"}
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "absent", environ=environ)
    assert exc.value.lines == [
        "NVDP_HEALTH__IGNORED_XIDS and DP_DISABLE_HEALTHCHECKS both set health.ignored_xids; use one"
    ]


def test_a_flag_beats_dp_variables(tmp_path: Path) -> None:
    loaded = load_config(tmp_path / "absent", environ={"DP_DISABLE_HEALTHCHECKS": "94"}, overrides={"health.ignored_xids": "1"})
    assert loaded.config.health.ignored_xids == (1,)


# --- file errors -------------------------------------------------------------------------

TOML_ERRORS = [
    ('resource_name = nvidia.com/gpu\n', 1, 17, "Invalid value (strings must be quoted", 16),
    ('[kubelet]\nsocket_dir = /var/lib\n', 2, 14, "Invalid value (strings must be quoted", 13),
    ('[health\nenabled = true\n', 1, 8, "invalid TOML: Expected ']'", 7),
    ('version = 1\nversion = 1\n', 2, 12, "invalid TOML: Cannot overwrite a value", 11),
    ('resource_name = "nvidia.com/gpu\n', 1, 32, "invalid TOML: Illegal character", 31),
    ('\tx = nope\n', 1, 6, "Invalid value (strings must be quoted", 12),
    ('x = "abc', 1, 9, "invalid TOML: Unterminated string", 8),
    ('[a]\nb = 1\n[a]\n', 3, 3, "invalid TOML: Cannot declare ('a',) twice", 2),
]


@pytest.mark.parametrize(("text", "line", "col", "message", "caret"), TOML_ERRORS, ids=[t[3] for t in TOML_ERRORS])
def test_toml_syntax_error_names_file_line_and_column(tmp_path: Path, text, line, col, message, caret) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    first, shown, pointer = exc.value.lines
    assert first.startswith(f"{path}:{line}:{col}: ")
    assert message in first
    assert pointer == "  " + " " * caret + "^"
    assert exc.value.path == path


def test_non_utf8_file_is_reported_with_position(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'version = 1\nresource_name = "nvidia.com/g\xffu"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    assert exc.value.lines == [f"{path}:2:30: not valid UTF-8 (byte 0xff); TOML files must be UTF-8"]


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path, environ={})
    assert exc.value.lines == [f"{tmp_path} is a directory, expected a TOML file"]


def test_an_unreadable_file_is_an_error(tmp_path: Path) -> None:
    # Root reads any file, so as root the load runs in a child as "nobody".
    if os.geteuid() != 0:
        path = write(tmp_path, "", mode=0o000)
        with pytest.raises(ConfigError) as exc:
            load_config(path, environ={})
        assert exc.value.lines == [f"cannot read {path}: Permission denied"]
        return
    if not all(p.stat().st_mode & 0o001 for p in [Path(sys.executable).resolve(), *ROOT.parents, ROOT]):
        pytest.skip("the checkout is not reachable for an unprivileged user")
    shared = Path(tempfile.mkdtemp(prefix="nvdp-unreadable-", dir="/tmp"))
    try:
        shared.chmod(0o755)
        path = write(shared, "", mode=0o000)
        code = (
            "from nvdp_node.config import ConfigError, load_config\n"
            "try:\n    load_config(__import__('pathlib').Path(%r), environ={})\n"
            "except ConfigError as e:\n    print(e.lines)\n" % str(path)
        )
        result = subprocess.run(
            [sys.executable, "-c", code], user=65534, group=65534, capture_output=True, text=True,
            cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")},
        )
        assert result.stdout.strip() == repr([f"cannot read {path}: Permission denied"]), result.stderr
    finally:
        shutil.rmtree(shared)


def test_errors_without_a_file_say_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "absent", environ={"NVDP_RESOURCE_NAME": "gpu"})
    assert str(exc.value).startswith("nvdp: invalid configuration:\n")
    assert "from env NVDP_RESOURCE_NAME" in exc.value.lines[0]


# --- permissions -------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("mode", "uid", "gid", "writable"),
    [
        (0o644, 0, 0, False),
        (0o600, 0, 0, False),
        (0o664, 0, 0, False),
        (0o664, 0, 1000, True),
        (0o646, 0, 0, True),
        (0o644, 1000, 0, True),
        (0o444, 1000, 1000, True),
    ],
    ids=["root 644", "root 600", "root:root 664", "group 1000 664", "world-writable", "user-owned", "read-only but user-owned"],
)
def test_writable_by_non_root(mode: int, uid: int, gid: int, writable: bool) -> None:
    assert writable_by_non_root(mode, uid, gid) is writable


def test_world_writable_file_gets_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, "version = 1\n", mode=0o666)
    notices = load_config(path, environ={}).notices
    assert any(n.startswith(f"config file {path} can be changed by users other than root (mode 0666") for n in notices)
    assert any(f"chmod 644 {path}" in n for n in notices)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a root-owned file")
def test_root_owned_0644_file_gets_no_warning(tmp_path: Path) -> None:
    path = write(tmp_path, "version = 1\n", mode=0o644)
    assert load_config(path, environ={}).notices == []


# --- properties --------------------------------------------------------------------------

KEYS = config_keys()
toml_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.datetimes()
    | st.sampled_from(["envvar", "volume-mounts", "cdi-cri", "auto", "docker", "uuid", "index", "/", "/tmp", "info", "json"])
)
toml_values = st.recursive(
    toml_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8
)
known_leaf = st.sampled_from(KEYS)


@st.composite
def documents(draw: st.DrawFn) -> dict:
    """Mostly known keys with random values, sometimes random keys and tables."""
    doc: dict = {}
    for key in draw(st.lists(known_leaf, max_size=6)):
        section, _, leaf = key.rpartition(".")
        target = doc.setdefault(section, {}) if section else doc
        if isinstance(target, dict):
            target[leaf] = draw(toml_values)
    doc.update(draw(st.dictionaries(st.text(max_size=10), toml_values, max_size=2)))
    return doc


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents())
def test_random_documents_load_or_raise_config_error(tmp_path: Path, doc: dict) -> None:
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(doc))
    try:
        loaded = load_config(path, environ={})
    except ConfigError as err:
        assert err.lines and str(err).startswith("nvdp: ")
        return
    # What `config show` prints loads back to the same configuration.
    path.write_text(render_effective(loaded.config))
    assert load_config(path, environ={}).config == loaded.config


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=80) | st.text(alphabet=string.printable + "[]{}=\"'#é", max_size=80).map(str.encode))
def test_random_bytes_load_or_raise_config_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(raw)
    try:
        load_config(path, environ={})
    except ConfigError:
        pass


env_names = st.sampled_from(
    [env_var_name(k) for k in KEYS] + ["DP_DISABLE_HEALTHCHECKS", "DP_ENABLE_HEALTHCHECKS", "NVDP_X", "NVDP_"]
)


@settings(max_examples=200, deadline=None)
@given(environ=st.dictionaries(env_names, st.text(max_size=20), max_size=5))
def test_random_environment_loads_or_raises_config_error(environ: dict) -> None:
    try:
        load_config(Path("/nonexistent/nvdp.toml"), environ=environ)
    except ConfigError as err:
        assert err.lines
