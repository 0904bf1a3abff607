"""[sharing.time_slicing], [sharing.mps] and plugin.shared_devices_allocation_policy: schema, checks, file, env."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from nvdp_node.config import ConfigError, load_config, parse_config, sharing_from_config
from nvdp_node.config.render import render_effective
from nvdp_node.config.sharing import MpsResourceConfig, SharedResourceConfig
from nvdp_node.domain.sharing import SharedResource, Sharing

UUID = "b1028956-cfa2-0990-bf4a-5da9abb51763"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(0o644)
    return path


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    return exc.value.lines


def shared(kind: str, *entries: dict, **table: object) -> dict:
    return {"sharing": {kind: {"resources": list(entries), **table}}}


# ---------------------------------------------------------------- the sections


def test_nothing_is_shared_by_default() -> None:
    config = parse_config({})
    assert (config.sharing.time_slicing.resources, config.sharing.mps.resources) == ((), ())
    assert sharing_from_config(config) is None


def test_a_shared_name_gets_the_nvidia_domain_and_entries_keep_their_order() -> None:
    config = parse_config(
        {"resources": {"gpus": [{"pattern": "*A100*", "name": "a100"}, {"pattern": "*", "name": "example.com/gpu"}]}}
        | shared("time_slicing", {"name": "example.com/gpu", "replicas": 2}, {"name": "a100", "replicas": 4})
    )
    assert config.sharing.time_slicing.resources == (
        SharedResourceConfig(name="example.com/gpu", replicas=2),
        SharedResourceConfig(name="nvidia.com/a100", replicas=4),
    )


def test_mps_refuses_requests_for_more_than_one_replica_by_default_and_time_slicing_does_not() -> None:
    config = parse_config({})
    assert config.sharing.mps.fail_requests_greater_than_one is True
    assert config.sharing.time_slicing.fail_requests_greater_than_one is False


def test_mps_keeps_its_daemons_under_run_nvidia_mps_by_default() -> None:
    assert parse_config({}).sharing.mps.root == Path("/run/nvidia/mps")


@pytest.mark.parametrize("policy", ["distributed", "packed"])
def test_both_upstream_allocation_policies_for_replicas_are_accepted(policy: str) -> None:
    config = parse_config({"plugin": {"shared_devices_allocation_policy": policy}})
    assert config.plugin.shared_devices_allocation_policy == policy


def test_replicas_are_distributed_over_the_gpus_by_default() -> None:
    assert parse_config({}).plugin.shared_devices_allocation_policy == "distributed"


def test_an_unknown_allocation_policy_names_the_choices() -> None:
    assert problems({"plugin": {"shared_devices_allocation_policy": "spread"}}) == [
        "plugin.shared_devices_allocation_policy: Input should be 'distributed' or 'packed' (got \"spread\")"
    ]


@pytest.mark.parametrize("kind", ["time_slicing", "mps"])
def test_devices_may_say_all_explicitly(kind: str) -> None:
    config = parse_config(shared(kind, {"name": "gpu", "replicas": 2, "devices": "all"}))
    assert getattr(config.sharing, kind).resources[0].devices == "all"


# (kind, entry, the start of the one error line expected)
BAD_ENTRIES = [
    ("time_slicing", {"name": "gpu", "replicas": 1}, "sharing.time_slicing.resources[0].replicas: expected at least 2 replicas (upstream: number of replicas must be >= 2"),
    ("mps", {"name": "gpu", "replicas": 0}, "sharing.mps.resources[0].replicas: expected at least 2 replicas"),
    ("time_slicing", {"name": "gpu", "replicas": "4"}, "sharing.time_slicing.resources[0].replicas: expected an integer (a TOML integer, without quotes"),
    ("time_slicing", {"name": "gpu", "replicas": True}, "sharing.time_slicing.resources[0].replicas: expected an integer"),
    ("time_slicing", {"name": "gpu", "replicas": 2.5}, "sharing.time_slicing.resources[0].replicas: expected an integer"),
    ("time_slicing", {"name": "gpu", "replicas": 1025}, "sharing.time_slicing.resources[0].replicas: expected at most 1024 replicas per GPU (got 1025)"),
    ("mps", {"name": "gpu", "replicas": 49}, "sharing.mps.resources[0].replicas: expected at most 48 replicas (got 49): an MPS control daemon serves at most 48 clients"),
    ("time_slicing", {"name": "gpu"}, 'sharing.time_slicing.resources[0].replicas: required key missing (got {"name": "gpu"})'),
    ("mps", {"replicas": 2}, 'sharing.mps.resources[0].name: required key missing (got {"replicas": 2})'),
    ("time_slicing", {"name": "a/b/c", "replicas": 2}, 'sharing.time_slicing.resources[0].name: the ResourceName "a/b/c" is invalid: it may contain only one "/"'),
    ("time_slicing", {"name": "gpu", "replicas": 2, "rename": "gpu-ts"}, 'sharing.time_slicing.resources[0].rename: expected true (advertise as "<name>.shared") or false (got "gpu-ts"): a custom name is not supported'),
    ("mps", {"name": "gpu", "replicas": 2, "rename": 1}, "sharing.mps.resources[0].rename: expected true or false"),
    ("time_slicing", {"name": "gpu", "replicas": 2, "replica": 3}, "sharing.time_slicing.resources[0].replica: unknown key (did you mean 'sharing.time_slicing.resources[0].replicas'?)"),
    ("mps", "gpu", 'sharing.mps.resources[0]: expected a table (got "gpu")'),
]


@pytest.mark.parametrize(("kind", "entry", "line"), BAD_ENTRIES, ids=[line.split(": ")[1][:40] for _, _, line in BAD_ENTRIES])
def test_a_bad_shared_resource_entry_is_an_error_naming_its_key_path(kind: str, entry: object, line: str) -> None:
    (got,) = problems(shared(kind, entry))
    assert got.startswith(line), got


def test_resources_written_as_one_table_say_to_use_two_brackets() -> None:
    (got,) = problems({"sharing": {"time_slicing": {"resources": {"name": "gpu", "replicas": 2}}}})
    assert got.startswith(
        "sharing.time_slicing.resources: expected a list of tables: write [[sharing.time_slicing.resources]], "
        "with two brackets, above each entry"
    )


def test_a_sharing_mode_that_is_not_a_table_is_an_error() -> None:
    assert problems({"sharing": {"mps": 4}}) == ["sharing.mps: expected a table (got 4)"]


# devices: what upstream parses as a selection, refused; everything else a grammar error.
SELECTIONS = [
    (2, "a count of 2 devices"),
    ([0, 1], "a list of 2 devices"),
    (["3"], "a list of 1 devices"),
    (["0:1"], "a list of 1 devices"),
    ([f"GPU-{UUID}"], "a list of 1 devices"),
    ([f"MIG-{UUID}"], "a list of 1 devices"),
    ([f"MIG-GPU-{UUID}/1/0"], "a list of 1 devices"),
]


@pytest.mark.parametrize(("devices", "what"), SELECTIONS, ids=["count", "indices", "index string", "MIG index", "GPU UUID", "MIG UUID", "MIG GPU/GI/CI"])
def test_a_device_selection_is_parsed_and_refused_as_upstream_ignores_it(devices: object, what: str) -> None:
    (got,) = problems(shared("time_slicing", {"name": "gpu", "replicas": 2, "devices": devices}))
    assert got.startswith(
        f"sharing.time_slicing.resources[0].devices: {what}: selecting devices is not supported (upstream parses "
        'a selection too, and shares every device of the resource); write "all" or leave devices out'
    ), got


MALFORMED = [
    ("some", 'expected "all" (got "some")'),
    (True, 'expected "all" (got true)'),
    (0, "a count of devices must be > 0 (got 0)"),
    (-2, "a count of devices must be > 0 (got -2)"),
    (["GPU-xyz"], 'entry 0 ("GPU-xyz") is not a GPU index (0), a MIG index ("0:1"), a GPU UUID'),
    ([0, f"MIG-GPU-{UUID}/1"], "entry 1 ("),
    ([-1], "entry 0 (-1) is not a GPU index"),
    ([True], "entry 0 (true) is not a GPU index"),
]


@pytest.mark.parametrize(("devices", "reason"), MALFORMED, ids=["other string", "boolean", "zero", "negative", "bad UUID", "MIG UUID without CI", "negative index", "boolean entry"])
def test_a_malformed_device_selection_says_what_is_wrong(devices: object, reason: str) -> None:
    (got,) = problems(shared("mps", {"name": "gpu", "replicas": 2, "devices": devices}))
    assert got.startswith(f"sharing.mps.resources[0].devices: {reason}"), got


# ---------------------------------------------------------------- checks over several keys


def test_time_slicing_and_mps_together_are_refused() -> None:
    data = shared("time_slicing", {"name": "gpu", "replicas": 2})
    data["sharing"]["mps"] = {"resources": [{"name": "gpu", "replicas": 2}]}
    assert problems(data) == [
        "sharing.mps.resources: time-slicing and MPS cannot be combined (sharing.time_slicing.resources is set "
        "too): share the GPUs one way (upstream silently uses MPS alone)"
    ]


def test_mps_with_mixed_mig_strategy_is_refused_as_upstream_refuses_it() -> None:
    data = {"plugin": {"mig_strategy": "mixed"}} | shared("mps", {"name": "gpu", "replicas": 2})
    assert problems(data) == [
        'sharing.mps.resources: MPS cannot be used with plugin.mig_strategy = "mixed" (upstream: using '
        "--mig-strategy=mixed is not supported with MPS)"
    ]


def test_time_slicing_may_share_mig_devices_under_their_mixed_names() -> None:
    data = {"plugin": {"mig_strategy": "mixed"}} | shared("time_slicing", {"name": "mig-1g.10gb", "replicas": 7})
    assert parse_config(data).sharing.time_slicing.resources[0].name == "nvidia.com/mig-1g.10gb"


def test_a_shared_name_this_configuration_never_advertises_is_an_error_with_a_hint() -> None:
    assert problems(shared("time_slicing", {"name": "gpus", "replicas": 2})) == [
        'sharing.time_slicing.resources[0].name: "nvidia.com/gpus" is not a resource this configuration '
        'advertises (did you mean "nvidia.com/gpu"?); it advertises "nvidia.com/gpu"'
    ]


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"resource_name": "example.com/gpu"}, "example.com/gpu"),
        ({"resources": {"gpus": [{"pattern": "*H100*", "name": "h100"}]}}, "nvidia.com/h100"),
        ({"plugin": {"mig_strategy": "single"}, "resources": {"mig": [{"pattern": "1g.10gb", "name": "mig-small"}]}}, "nvidia.com/mig-small"),
        ({"plugin": {"mig_strategy": "single"}}, "nvidia.com/gpu"),
    ],
    ids=["resource_name", "a gpus pattern name", "a mig pattern name", "single's resource_name"],
)
def test_any_name_the_configuration_advertises_may_be_shared(settings: dict, name: str) -> None:
    config = parse_config(settings | shared("time_slicing", {"name": name, "replicas": 2}))
    assert config.sharing.time_slicing.resources[0].name == name


def test_a_mixed_mig_name_is_not_advertised_under_mig_strategy_none() -> None:
    (got,) = problems(shared("time_slicing", {"name": "mig-1g.10gb", "replicas": 2}))
    assert got.startswith('sharing.time_slicing.resources[0].name: "nvidia.com/mig-1g.10gb" is not a resource')


def test_a_resource_shared_twice_is_an_error_at_its_second_entry() -> None:
    data = shared("time_slicing", {"name": "gpu", "replicas": 2}, {"name": "nvidia.com/gpu", "replicas": 4})
    assert problems(data) == [
        'sharing.time_slicing.resources[1].name: "nvidia.com/gpu" is already shared by sharing.time_slicing.resources[0]'
    ]


def test_a_rename_to_a_name_already_advertised_is_an_error() -> None:
    gpus = [{"pattern": "*A100*", "name": "a100"}, {"pattern": "*", "name": "a100.shared"}]
    data = {"resources": {"gpus": gpus}} | shared("time_slicing", {"name": "a100", "replicas": 2, "rename": True})
    assert problems(data) == [
        'sharing.time_slicing.resources[0].name: renamed to "nvidia.com/a100.shared", a name this configuration '
        "already advertises: two resources cannot share a name"
    ]


def test_a_rename_kubelet_would_refuse_is_an_error() -> None:
    name = "g" * 60
    data = {"resource_name": f"nvidia.com/{name}"} | shared("mps", {"name": name, "replicas": 2}, rename_by_default=True)
    (got,) = problems(data)
    assert got.startswith(
        f'sharing.mps.resources[0].name: renamed to "nvidia.com/{name}.shared", which kubelet refuses: the '
        f'ResourceName "nvidia.com/{name}.shared" is invalid: the name after "/" is longer than 63 characters'
    ), got


def test_a_renamed_resource_whose_socket_does_not_fit_is_an_error() -> None:
    name = "g" * 40
    deep = "/" + "d" * (107 - len(f"/nvidia-{name}.sock") - 4)  # 3 bytes to spare, not the 7 of ".shared"
    data = {"kubelet": {"socket_dir": deep}, "resource_name": f"nvidia.com/{name}"}
    assert parse_config(data).resource_name == f"nvidia.com/{name}"  # the name itself fits, its .shared does not
    (got,) = problems(data | shared("time_slicing", {"name": name, "replicas": 2, "rename": True}))
    assert got.startswith(f"sharing.time_slicing.resources[0].name: the socket path '{deep}/nvidia-{name}.shared.sock'"), got


def test_an_entry_may_keep_its_name_when_renaming_is_the_default() -> None:
    config = parse_config(shared("time_slicing", {"name": "gpu", "replicas": 2, "rename": False}, rename_by_default=True))
    assert sharing_from_config(config) == Sharing(
        kind="time-slicing", resources=(SharedResource("nvidia.com/gpu", 2, rename=False),), rename_by_default=True
    )


def test_mps_of_a_name_that_holds_only_mig_devices_is_an_error() -> None:
    data = {"plugin": {"mig_strategy": "single"}, "resources": {"mig": [{"pattern": "*", "name": "mig"}]}}
    assert problems(data | shared("mps", {"name": "mig", "replicas": 2})) == [
        'sharing.mps.resources[0].name: "nvidia.com/mig" names only MIG devices here, and MPS does not share MIG devices'
    ]


def test_every_sharing_problem_gets_its_own_line() -> None:
    data = {"plugin": {"mig_strategy": "mixed"}} | shared("mps", {"name": "gpus", "replicas": 2}, {"name": "gpu", "replicas": 2})
    data["sharing"]["time_slicing"] = {"resources": [{"name": "gpu", "replicas": 2}]}
    assert [line.split(": ")[0] for line in problems(data)] == [
        "sharing.mps.resources",
        "sharing.mps.resources",
        "sharing.mps.resources[0].name",
    ]


# ---------------------------------------------------------------- the planner's form


def test_time_slicing_becomes_the_planners_sharing() -> None:
    config = parse_config(
        shared(
            "time_slicing",
            {"name": "gpu", "replicas": 4, "rename": True},
            {"name": "a100", "replicas": 2},
            fail_requests_greater_than_one=True,
        )
        | {"resources": {"gpus": [{"pattern": "*A100*", "name": "a100"}, {"pattern": "*", "name": "gpu"}]}}
    )
    assert sharing_from_config(config) == Sharing(
        kind="time-slicing",
        resources=(SharedResource("nvidia.com/gpu", 4, rename=True), SharedResource("nvidia.com/a100", 2)),
        rename_by_default=False,
        fail_requests_greater_than_one=True,
    )


def test_mps_becomes_the_planners_sharing_with_upstreams_default() -> None:
    config = parse_config(shared("mps", {"name": "gpu", "replicas": 8}, rename_by_default=True))
    assert sharing_from_config(config) == Sharing(
        kind="mps",
        resources=(SharedResource("nvidia.com/gpu", 8),),
        rename_by_default=True,
        fail_requests_greater_than_one=True,
    )


def test_mps_entries_are_their_own_model() -> None:
    config = parse_config(shared("mps", {"name": "gpu", "replicas": 48}))
    assert config.sharing.mps.resources == (MpsResourceConfig(name="nvidia.com/gpu", replicas=48),)


# ---------------------------------------------------------------- file, environment, text


SHARED_FILE = """\
version = 1

[plugin]
shared_devices_allocation_policy = "packed"

[sharing.mps]
rename_by_default = true
root = "/run/mps"

[[sharing.mps.resources]]
name = "nvidia.com/gpu"
replicas = 4
"""


def test_a_file_with_resource_tables_loads(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, SHARED_FILE), environ={})
    config = loaded.config
    assert (config.sharing.mps.resources[0].replicas, config.sharing.mps.root) == (4, Path("/run/mps"))
    assert config.plugin.shared_devices_allocation_policy == "packed"
    assert (loaded.sources["sharing.mps.resources"], loaded.sources["sharing.time_slicing.resources"]) == ("file", "default")


def test_the_environment_sets_shared_resources_as_a_json_array(tmp_path: Path) -> None:
    loaded = load_config(
        tmp_path / "absent",
        environ={"NVDP_SHARING__TIME_SLICING__RESOURCES": '[{"name": "gpu", "replicas": 3, "rename": true}]'},
    )
    assert loaded.config.sharing.time_slicing.resources == (SharedResourceConfig(name="nvidia.com/gpu", replicas=3, rename=True),)
    assert loaded.sources["sharing.time_slicing.resources"] == "env NVDP_SHARING__TIME_SLICING__RESOURCES"


def test_the_environment_overrides_a_key_of_a_nested_table_in_the_file(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, SHARED_FILE), environ={"NVDP_SHARING__MPS__FAIL_REQUESTS_GREATER_THAN_ONE": "false"})
    assert loaded.config.sharing.mps.fail_requests_greater_than_one is False
    assert loaded.config.sharing.mps.rename_by_default is True  # the rest of the file's table stays


def test_shared_resources_in_the_environment_that_are_no_json_array_say_how_to_write_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "absent", environ={"NVDP_SHARING__MPS__RESOURCES": "gpu"})
    assert exc.value.lines == [
        'NVDP_SHARING__MPS__RESOURCES: expected a JSON array of tables, e.g. [{"name": "nvidia.com/gpu", '
        '"replicas": 4}] (got "gpu")'
    ]


def test_a_bad_entry_from_the_environment_says_where_it_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "absent", environ={"NVDP_SHARING__MPS__RESOURCES": '[{"name": "gpu", "replicas": 1}]'})
    (line,) = exc.value.lines
    assert line.startswith("sharing.mps.resources[0].replicas: expected at least 2 replicas")
    assert line.endswith("(from env NVDP_SHARING__MPS__RESOURCES)")


def test_the_environment_does_not_paper_over_a_sharing_mode_that_is_no_table(tmp_path: Path) -> None:
    path = write(tmp_path, "[sharing]\ntime_slicing = 5\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={"NVDP_SHARING__TIME_SLICING__RESOURCES": '[{"name": "gpu", "replicas": 2}]'})
    assert exc.value.lines == ["sharing.time_slicing: expected a table (got 5)"]


@pytest.mark.parametrize(
    ("text", "notice"),
    [
        ("[sharing.time_slicing]\nrename_by_default = true\n", "sharing.time_slicing.rename_by_default has no effect: sharing.time_slicing.resources is empty"),
        ("[sharing.mps]\nfail_requests_greater_than_one = false\n", "sharing.mps.fail_requests_greater_than_one has no effect: sharing.mps.resources is empty"),
        ('[sharing.mps]\nroot = "/srv/mps"\n', "sharing.mps.root has no effect: sharing.mps.resources is empty"),
        ('[plugin]\nshared_devices_allocation_policy = "packed"\n', "plugin.shared_devices_allocation_policy has no effect: no resource is shared"),
    ],
    ids=["rename_by_default", "mps fail_requests_greater_than_one", "mps root", "allocation policy"],
)
def test_a_sharing_setting_without_effect_is_a_notice(tmp_path: Path, text: str, notice: str) -> None:
    assert notice in load_config(write(tmp_path, text), environ={}).notices


def test_a_used_sharing_setting_gives_no_notice(tmp_path: Path) -> None:
    notices = load_config(write(tmp_path, SHARED_FILE), environ={}).notices
    assert not [n for n in notices if "has no effect" in n], notices


def test_the_effective_config_leaves_an_unset_rename_out_and_reads_back_the_same(tmp_path: Path) -> None:
    config = parse_config(shared("time_slicing", {"name": "gpu", "replicas": 2}, {"name": "gpu2", "replicas": 3, "rename": True})
                          | {"resources": {"gpus": [{"pattern": "*2*", "name": "gpu2"}, {"pattern": "*", "name": "gpu"}]}})
    text = render_effective(config)
    assert 'name = "nvidia.com/gpu", replicas = 2, devices = "all" }' in text
    assert parse_config(tomllib.loads(text)) == config
