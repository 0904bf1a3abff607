"""plugin.mig_strategy, plugin.mig_check_interval and the [resources] name patterns: schema, file, env, text."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from nvdp_node.config import ConfigError, load_config, parse_config
from nvdp_node.config.render import effective_summary, render_effective, render_template
from nvdp_node.config.naming import NamePatternConfig


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(0o644)
    return path


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    return exc.value.lines


@pytest.mark.parametrize("strategy", ["none", "single", "mixed"])
def test_each_upstream_mig_strategy_is_accepted(strategy: str) -> None:
    assert parse_config({"plugin": {"mig_strategy": strategy}}).plugin.mig_strategy == strategy


@pytest.mark.parametrize(
    ("value", "line"),
    [
        ("Mixed", "plugin.mig_strategy: Input should be 'none', 'single' or 'mixed' (got \"Mixed\")"),
        (True, "plugin.mig_strategy: Input should be 'none', 'single' or 'mixed' (got true)"),
    ],
    ids=["wrong case", "boolean"],
)
def test_an_unknown_mig_strategy_names_the_choices(value: object, line: str) -> None:
    assert problems({"plugin": {"mig_strategy": value}}) == [line]


@pytest.mark.parametrize("seconds", [0, 1, 3600], ids=["0 disables", "1 s", "an hour"])
def test_mig_check_interval_takes_whole_seconds_from_zero(seconds: int) -> None:
    assert parse_config({"plugin": {"mig_check_interval": seconds}}).plugin.mig_check_interval == seconds


@pytest.mark.parametrize(
    ("value", "line"),
    [
        (-1, "plugin.mig_check_interval: Input should be greater than or equal to 0 (got -1)"),
        ("30", "plugin.mig_check_interval: expected an integer (a TOML integer, without quotes, not a boolean)"),
        (True, "plugin.mig_check_interval: expected an integer"),
        (2.5, "plugin.mig_check_interval: expected an integer"),
    ],
    ids=["negative", "quoted", "boolean", "fraction"],
)
def test_a_mig_check_interval_that_is_not_a_count_of_seconds_is_an_error(value: object, line: str) -> None:
    (got,) = problems({"plugin": {"mig_check_interval": value}})
    assert got.startswith(line), got


def test_patterns_keep_their_order_and_names_get_the_nvidia_domain() -> None:
    config = parse_config(
        {"resources": {"gpus": [{"pattern": "*A100*", "name": "a100"}, {"pattern": "*", "name": "example.com/gpu"}]}}
    )
    assert config.resources.gpus == (
        NamePatternConfig(pattern="*A100*", name="nvidia.com/a100"),
        NamePatternConfig(pattern="*", name="example.com/gpu"),
    )


def test_mig_patterns_may_name_profiles_with_attributes() -> None:
    config = parse_config({"resources": {"mig": [{"pattern": "1g.10gb+me", "name": "mig-1g.10gb.me"}]}})
    assert config.resources.mig == (NamePatternConfig(pattern="1g.10gb+me", name="nvidia.com/mig-1g.10gb.me"),)


# (resources table, the error line expected)
BAD_PATTERNS = [
    ({"gpus": [{"pattern": "*", "name": "a/b/c"}]}, 'resources.gpus[0].name: the ResourceName "a/b/c" is invalid: it may contain only one "/"'),
    ({"gpus": [{"pattern": "*", "name": "A 100"}]}, 'resources.gpus[0].name: the ResourceName "nvidia.com/A 100" is invalid'),
    ({"mig": [{"pattern": "*", "name": "kubernetes.io/mig"}]}, "resources.mig[0].name: the ResourceName \"kubernetes.io/mig\" is invalid: the \"kubernetes.io/\" domain"),
    ({"gpus": [{"pattern": "", "name": "gpu"}]}, 'resources.gpus[0].pattern: expected a non-empty pattern, e.g. "*A100*"'),
    ({"gpus": [{"pattern": 5, "name": "gpu"}]}, "resources.gpus[0].pattern: Input should be a valid string (got 5)"),
    ({"gpus": [{"name": "gpu"}]}, 'resources.gpus[0].pattern: required key missing (got {"name": "gpu"})'),
    ({"gpus": [{"pattern": "*"}]}, 'resources.gpus[0].name: required key missing (got {"pattern": "*"})'),
    ({"gpus": ["*A100*"]}, 'resources.gpus[0]: expected a table (got "*A100*")'),
    ({"gpus": [{"pattern": "*", "name": "gpu", "patern": "x"}]}, "resources.gpus[0].patern: unknown key (did you mean 'resources.gpus[0].pattern'?)"),
    ({"gpu": []}, "resources.gpu: unknown key (did you mean 'resources.gpus'?)"),
]


@pytest.mark.parametrize(("resources", "line"), BAD_PATTERNS, ids=[line.split(": ")[0] + f"-{i}" for i, (_, line) in enumerate(BAD_PATTERNS)])
def test_a_bad_pattern_entry_is_an_error_naming_its_key_path(resources: dict, line: str) -> None:
    got = problems({"resources": resources})
    assert any(found.startswith(line) for found in got), got


def test_every_unserveable_pattern_name_gets_its_own_line() -> None:
    deep = "/" + "/".join(["d" * 9] * 8)  # 80 bytes: room for nvidia-gpu.sock, not for long names
    long_a, long_b = "x" * 30, "y" * 30
    got = problems(
        {
            "kubelet": {"socket_dir": deep},
            "resources": {"gpus": [{"pattern": "*", "name": "gpu"}, {"pattern": "*A*", "name": long_a}],
                          "mig": [{"pattern": "*", "name": long_b}]},
        }
    )
    assert [line.split(": ")[0] for line in got] == ["resources.gpus[1].name", "resources.mig[0].name"]
    assert got[0].startswith(f"resources.gpus[1].name: the socket path '{deep}/nvidia-{long_a}.sock' for 'nvidia.com/{long_a}'")


def test_a_socket_dir_without_room_is_one_line_whatever_the_names() -> None:
    deep = "/" + "d" * 86
    got = problems({"kubelet": {"socket_dir": deep}, "resources": {"gpus": [{"pattern": "*", "name": "gpu"}]}})
    assert [line.split(": ")[0] for line in got] == ["kubelet.socket_dir"]


def test_the_file_takes_arrays_of_tables(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[plugin]\nmig_strategy = "mixed"\n\n'
        '[[resources.gpus]]\npattern = "*A100*"\nname = "nvidia.com/a100"\n\n'
        '[[resources.gpus]]\npattern = "*"\nname = "gpu"\n',
    )
    loaded = load_config(path, environ={})
    assert [entry.name for entry in loaded.config.resources.gpus] == ["nvidia.com/a100", "nvidia.com/gpu"]
    assert (loaded.sources["resources.gpus"], loaded.sources["resources.mig"]) == ("file", "default")


def test_the_file_takes_inline_tables(tmp_path: Path) -> None:
    path = write(tmp_path, '[resources]\nmig = [{ pattern = "1g.10gb", name = "mig-small" }]\n')
    assert load_config(path, environ={}).config.resources.mig[0].name == "nvidia.com/mig-small"


def test_a_single_bracket_entry_in_the_file_is_an_error_that_shows_the_double_brackets(tmp_path: Path) -> None:
    path = write(tmp_path, '[resources.gpus]\npattern = "*A100*"\nname = "a100"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    assert exc.value.lines == [
        "resources.gpus: expected a list of tables: write [[resources.gpus]], with two brackets, above each "
        'entry (got {"pattern": "*A100*", "name": "a100"})'
    ]


def test_an_unknown_key_in_a_file_entry_names_the_entry(tmp_path: Path) -> None:
    path = write(tmp_path, '[[resources.mig]]\npattern = "1g.10gb"\nnaem = "mig-small"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    assert "resources.mig[0].naem: unknown key (did you mean 'resources.mig[0].name'?)" in exc.value.lines


def test_the_environment_sets_the_strategy_and_the_interval(tmp_path: Path) -> None:
    environ = {"NVDP_PLUGIN__MIG_STRATEGY": "single", "NVDP_PLUGIN__MIG_CHECK_INTERVAL": "0"}
    loaded = load_config(tmp_path / "absent.toml", environ=environ)
    assert (loaded.config.plugin.mig_strategy, loaded.config.plugin.mig_check_interval) == ("single", 0)
    assert loaded.sources["plugin.mig_strategy"] == "env NVDP_PLUGIN__MIG_STRATEGY"


def test_the_environment_sets_patterns_as_a_json_array(tmp_path: Path) -> None:
    environ = {"NVDP_RESOURCES__GPUS": '[{"pattern": "*H100*", "name": "h100"}]'}
    loaded = load_config(tmp_path / "absent.toml", environ=environ)
    assert loaded.config.resources.gpus == (NamePatternConfig(pattern="*H100*", name="nvidia.com/h100"),)
    assert loaded.sources["resources.gpus"] == "env NVDP_RESOURCES__GPUS"


def test_patterns_from_the_environment_that_are_not_json_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "absent.toml", environ={"NVDP_RESOURCES__GPUS": "*H100*=h100"})
    assert exc.value.lines == [
        'NVDP_RESOURCES__GPUS: expected a JSON array of tables, e.g. [{"pattern": "*A100*", "name": '
        '"nvidia.com/a100"}] (got "*H100*=h100")'
    ]


def test_a_bad_pattern_from_the_environment_says_where_it_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "absent.toml", environ={"NVDP_RESOURCES__MIG": '[{"pattern": "*", "name": "a/b/c"}]'})
    (line,) = exc.value.lines
    assert line.startswith("resources.mig[0].name: the ResourceName") and line.endswith("(from env NVDP_RESOURCES__MIG)")


def test_an_unserveable_pattern_name_from_the_environment_says_where_it_came_from(tmp_path: Path) -> None:
    environ = {"NVDP_RESOURCES__GPUS": '[{"pattern": "*", "name": "' + "g" * 63 + '"}]',
               "NVDP_KUBELET__SOCKET_DIR": "/" + "d" * 60}
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "absent.toml", environ=environ)
    (line,) = exc.value.lines
    assert line.startswith("resources.gpus[0].name: the socket path") and line.endswith("(from env NVDP_RESOURCES__GPUS)")


def test_mig_patterns_without_a_mig_strategy_get_a_notice(tmp_path: Path) -> None:
    path = write(tmp_path, '[[resources.mig]]\npattern = "*"\nname = "mig"\n')
    assert load_config(path, environ={}).notices == [
        'resources.mig has no effect while plugin.mig_strategy is "none": MIG-enabled GPUs are advertised '
        "whole, named by resources.gpus"
    ]


def test_mig_patterns_with_a_mig_strategy_get_no_notice(tmp_path: Path) -> None:
    path = write(tmp_path, '[plugin]\nmig_strategy = "mixed"\n[[resources.mig]]\npattern = "*"\nname = "mig"\n')
    assert load_config(path, environ={}).notices == []


CONFIGURED = {
    "plugin": {"mig_strategy": "mixed", "mig_check_interval": 0},
    "resources": {
        "gpus": [{"pattern": "*A100 SXM*", "name": "a100"}, {"pattern": "*", "name": "nvidia.com/gpu"}],
        "mig": [{"pattern": "1g.10gb", "name": "mig-small"}],
    },
}


def test_an_uncommented_template_lists_one_pattern_per_line_and_reads_back() -> None:
    config = parse_config(CONFIGURED)
    text = render_template(config, active={"resources.gpus"})
    assert 'gpus = [\n  { pattern = "*A100 SXM*", name = "nvidia.com/a100" },\n  { pattern = "*", name = "nvidia.com/gpu" },\n]\n' in text
    assert tomllib.loads(text)["resources"]["gpus"][0] == {"pattern": "*A100 SXM*", "name": "nvidia.com/a100"}


def test_config_show_with_sources_reads_back_to_the_same_patterns(tmp_path: Path) -> None:
    config = parse_config(CONFIGURED)
    text = render_effective(config, {"resources.gpus": "file"})
    assert 'gpus = [  # file\n  { pattern = "*A100 SXM*", name = "nvidia.com/a100" },\n' in text
    assert load_config(write(tmp_path, text), environ={}).config == config


def test_the_summary_writes_patterns_as_compact_inline_tables() -> None:
    summary = effective_summary(parse_config(CONFIGURED))
    assert ' resources.mig=[{pattern="1g.10gb",name="nvidia.com/mig-small"}] ' in summary
