"""toolkit.* and runtime.cdi: the container toolkit's binaries, config.toml and CDI specs."""

from __future__ import annotations

import pytest

from nvdp_node.adapters.host import read_cdi, read_toolkit
from nvdp_node.domain.checks import Status, evaluate_cdi, evaluate_toolkit

ENVVAR, VOLUME_MOUNTS, CDI = ("envvar",), ("volume-mounts",), ("cdi-cri",)


def _toolkit(host, strategies):
    return evaluate_toolkit(read_toolkit(host.paths), strategies)


@pytest.mark.parametrize(
    ("layer", "strategies", "status", "says"),
    [
        ("toolkit-packaged", ENVVAR, Status.OK, "envvar-when-unprivileged = true (default)"),
        ("toolkit-packaged", VOLUME_MOUNTS, Status.ERROR, "volume-mounts needs it true"),
        ("toolkit-volume-mounts", VOLUME_MOUNTS, Status.OK, "as-volume-mounts = true"),
        ("toolkit-volume-mounts", ENVVAR, Status.ERROR, "ignores NVIDIA_VISIBLE_DEVICES in unprivileged"),
        ("toolkit-envvar-off", ENVVAR, Status.ERROR, "envvar needs it true"),
        ("toolkit-wrong-type", VOLUME_MOUNTS, Status.ERROR, "= 'true' is not true or false"),
        (None, ENVVAR, Status.OK, "(default)"),
        (None, VOLUME_MOUNTS, Status.ERROR, "volume-mounts needs it true"),
    ],
    ids=["packaged-envvar", "packaged-volume-mounts", "volume-mounts", "volume-mounts-config-envvar-strategy",
         "envvar-refused", "wrong-type", "no-file-envvar", "no-file-volume-mounts"],
)
def test_the_runtime_config_must_suit_the_device_list_strategy(host, layer, strategies, status, says):
    if layer:
        host.layer(layer)
    _, config = _toolkit(host, strategies)
    assert config.status is status, config
    assert any(says in line for line in config.evidence), config.evidence


def test_volume_mounts_with_envvar_still_accepted_is_a_warning_about_pods_picking_their_gpus(host):
    host.write("/etc/nvidia-container-runtime/config.toml", "accept-nvidia-visible-devices-as-volume-mounts = true\n")
    _, config = _toolkit(host, VOLUME_MOUNTS)
    assert config.status is Status.WARNING
    assert "accept-nvidia-visible-devices-envvar-when-unprivileged = false" in config.fix


def test_an_invalid_runtime_config_is_an_error_not_an_exception(host):
    host.write("/etc/nvidia-container-runtime/config.toml", "accept-nvidia-visible-devices-as-volume-mounts = tru\n")
    _, config = _toolkit(host, ENVVAR)
    assert config.status is Status.ERROR and "TOML syntax error" in config.evidence[0]


def test_an_unreadable_runtime_config_is_an_error(host):
    host.path("/etc/nvidia-container-runtime/config.toml").mkdir(parents=True)
    _, config = _toolkit(host, ENVVAR)
    assert config.status is Status.ERROR and "cannot be read" in config.evidence[0]


@pytest.mark.parametrize(
    ("binaries", "strategies", "status"),
    [
        (("nvidia-container-runtime", "nvidia-ctk", "nvidia-container-cli"), ENVVAR, Status.OK),
        (("nvidia-container-runtime", "nvidia-container-cli"), ENVVAR, Status.WARNING),
        (("nvidia-container-runtime", "nvidia-ctk"), ENVVAR, Status.ERROR),
        (("nvidia-ctk", "nvidia-container-cli"), ENVVAR, Status.ERROR),
        (("nvidia-container-runtime", "nvidia-ctk"), CDI, Status.WARNING),
        (("nvidia-container-runtime", "nvidia-container-cli"), CDI, Status.ERROR),
    ],
    ids=["all", "no-ctk", "no-cli-legacy", "no-runtime", "no-cli-cdi", "no-ctk-cdi"],
)
def test_missing_toolkit_binaries_matter_as_much_as_the_strategy_needs_them(host, binaries, strategies, status):
    host.binaries(*binaries)
    binaries_result, _ = _toolkit(host, strategies)
    assert binaries_result.status is status, binaries_result


def test_toolkit_binaries_are_found_in_any_bin_dir(host):
    host.binaries("nvidia-container-runtime", "nvidia-ctk", "nvidia-container-cli", bin_dir="/usr/local/bin")
    binaries_result, _ = _toolkit(host, ENVVAR)
    assert binaries_result.status is Status.OK
    assert "nvidia-ctk: /usr/local/bin/nvidia-ctk" in binaries_result.evidence


def test_a_file_without_the_executable_bit_is_not_a_binary(host):
    host.write("/usr/bin/nvidia-container-runtime", "")
    assert read_toolkit(host.paths).binaries["nvidia-container-runtime"] is None


@pytest.mark.parametrize(
    ("layers", "strategies", "status"),
    [
        (("cdi-present",), CDI, Status.OK),
        ((), CDI, Status.ERROR),
        (("cdi-other-vendor",), CDI, Status.ERROR),
        (("cdi-present", "cdi-broken"), CDI, Status.WARNING),
        (("cdi-broken",), CDI, Status.ERROR),
        (("cdi-present",), ENVVAR, Status.SKIPPED),
    ],
    ids=["spec-present", "no-spec", "other-vendor-only", "present-plus-broken", "broken-only", "not-a-cdi-strategy"],
)
def test_cdi_strategies_need_a_spec_for_the_nvidia_gpu_kind(host, layers, strategies, status):
    host.layer(*layers)
    result = evaluate_cdi(read_cdi(host.paths), strategies)
    assert result.status is status, result


def test_a_broken_cdi_spec_is_named_with_its_path(host):
    host.layer("cdi-broken")
    facts = read_cdi(host.paths)
    assert [str(p).split(":")[0] for p in facts.problems] == ["/var/run/cdi/nvidia.json is not valid"]
