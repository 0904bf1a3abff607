"""``nvdp cdi generate`` and the ``cdi.spec`` check, in-process over the mock NVML and a fixture driver tree."""

from __future__ import annotations

import json
import tomllib

import pytest

from nvdp_node.adapters.host import HostRoot
from nvdp_node.app.cdi_check import cdi_spec_result
from nvdp_node.app.cli import main
from nvdp_node.config import parse_config
from nvdp_node.domain.checks import Status
from tests.driver_tree import DRIVERS, make_driver_tree
from tests.mock_nvml.environment import load_profile

SPEC = "k8s.device-plugin.nvidia.com-gpu.json"


@pytest.fixture
def host(mock_nvml, tmp_path, tmp_path_factory):
    data = load_profile("h100-sxm-8")
    data["driver_version"] = DRIVERS[1]
    node = mock_nvml.use(data)
    root = make_driver_tree(tmp_path / "driver", DRIVERS[1], tmp_path_factory.mktemp("trees"))
    node.write_devfs(root / "dev")
    config = tmp_path / "config.toml"
    config.write_text(f'[plugin]\ndevice_list_strategy = "cdi-cri"\nnvidia_driver_root = "{root}"\n'
                      f'cdi_spec_dir = "{tmp_path / "cdi"}"\n')
    return node, root, config, tmp_path / "cdi"


def generate(config, *args):
    return main(["--config", str(config), "cdi", "generate", "--sysfs-root", "/nonexistent", *args])


def uuids(node):
    return sorted(g["uuid"] for g in node.profile["gpus"])


def test_cdi_generate_prints_the_spec_for_every_gpu(host, capsys):
    node, root, config, _ = host
    assert generate(config, "--dev-root", str(root / "dev")) == 0
    out, err = capsys.readouterr()
    spec = json.loads(out)
    assert [d["name"] for d in spec["devices"]] == uuids(node)
    assert f"libcuda.so.{DRIVERS[1]}" in out
    assert "/usr/bin/nvidia-cdi-hook not found" in err


def test_cdi_generate_into_a_directory_writes_the_spec_file_there(host, tmp_path, capsys):
    node, _, config, _ = host
    out_dir = tmp_path / "elsewhere"
    out_dir.mkdir()
    assert generate(config, "--output", str(out_dir)) == 0
    assert [d["name"] for d in json.loads((out_dir / SPEC).read_text())["devices"]] == uuids(node)
    assert f"wrote {out_dir / SPEC} (8 devices)" in capsys.readouterr().err


def check(config_path):
    return cdi_spec_result(parse_config(tomllib.loads(config_path.read_text())), HostRoot(sysfs_dir="/nonexistent"))


def test_cdi_spec_passes_when_the_spec_names_every_advertised_gpu(host, capsys):
    _, _, config, spec_dir = host
    spec_dir.mkdir()
    assert generate(config, "--output", str(spec_dir)) == 0
    result = check(config)
    assert (result.id, result.status) == ("cdi.spec", Status.OK), result


def test_cdi_spec_fails_naming_a_device_the_spec_lacks(host, capsys):
    node, _, config, spec_dir = host
    spec_dir.mkdir()
    generate(config, "--output", str(spec_dir))
    spec = json.loads((spec_dir / SPEC).read_text())
    gone = spec["devices"].pop(3)["name"]
    (spec_dir / SPEC).write_text(json.dumps(spec))
    result = check(config)
    assert result.status is Status.ERROR and f"advertised but not in the spec: {gone}" in result.evidence


def test_cdi_spec_fails_when_the_spec_is_missing(host):
    _, _, config, spec_dir = host
    result = check(config)
    assert result.status is Status.ERROR and result.evidence == (f"{spec_dir}/{SPEC}: missing",)


def test_cdi_spec_is_skipped_without_a_cdi_strategy(host):
    _, _, config, _ = host
    config.write_text('[plugin]\ndevice_list_strategy = "envvar"\n')
    assert check(config).status is Status.SKIPPED
