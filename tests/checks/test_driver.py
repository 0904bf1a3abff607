"""driver.* checks against the mock libnvidia-ml (tests/mock_nvml) and hand-written NVML stand-ins."""

from __future__ import annotations

import json
import subprocess
import sys

import pynvml
import pytest

from nvdp_node.adapters.host import read_driver
from nvdp_node.domain.checks import NvmlFailure, Status, evaluate_driver
from nvdp_node.domain.errors import NvmlUnavailableError
from tests.mock_nvml.environment import load_profile


def _verdicts(facts, minimum="384.81"):
    return {r.id: r for r in evaluate_driver(facts, min_version=minimum)}


def test_a_healthy_eight_gpu_node_passes_every_driver_check(host, mock_nvml):
    node = mock_nvml.use("h100-sxm-8")
    node.write_devfs(host.path("/dev"))
    facts = read_driver(host.paths)
    assert facts.driver_version == node.profile["driver_version"]
    assert facts.gpu_minors == tuple(g["minor_number"] for g in node.profile["gpus"])
    assert {k: r.status for k, r in _verdicts(facts).items()} == dict.fromkeys(
        ["driver.library", "driver.nvml", "driver.version", "driver.device-nodes"], Status.OK)


def test_a_driver_older_than_the_configured_minimum_is_an_error(host, mock_nvml):
    profile = load_profile("t4-1") | {"driver_version": "375.26"}
    mock_nvml.use(profile).write_devfs(host.path("/dev"))
    version = _verdicts(read_driver(host.paths))["driver.version"]
    assert version.status is Status.ERROR
    assert version.evidence == ("driver 375.26 (from NVML), minimum 384.81",)


def test_an_unloaded_kernel_module_is_reported_by_the_nvml_check_with_modprobe_as_the_fix(host, mock_nvml):
    mock_nvml.use("driver-not-loaded")
    facts = read_driver(host.paths)
    assert facts.nvml_failure is NvmlFailure.DRIVER_NOT_LOADED
    nvml = _verdicts(facts)["driver.nvml"]
    assert nvml.status is Status.ERROR and "modprobe nvidia" in nvml.fix


def test_nvml_without_gpus_is_an_error_because_nothing_can_be_advertised(host, mock_nvml):
    mock_nvml.use("none")
    host.dev("nvidiactl", "nvidia-uvm")
    assert _verdicts(read_driver(host.paths))["driver.nvml"].status is Status.ERROR


def test_a_missing_device_node_of_a_gpu_is_named(host, mock_nvml):
    mock_nvml.use("h100-sxm-8").write_devfs(host.path("/dev"))
    host.path("/dev/nvidia5").unlink()
    nodes = _verdicts(read_driver(host.paths))["driver.device-nodes"]
    assert nodes.status is Status.ERROR and nodes.evidence == ("missing: /dev/nvidia5",)


def test_a_missing_library_is_told_apart_from_a_missing_kernel_module(host, mock_nvml):
    """pynvml keeps a loaded library for the process's lifetime, so this runs in a fresh one."""
    node = mock_nvml.use("driver-missing")
    host.layer("driver-proc")
    code = ("import json; from pathlib import Path; from nvdp_node.adapters.host import HostRoot, read_driver;"
            f"f = read_driver(HostRoot(root=Path({str(host.root)!r})));"
            "print(json.dumps([f.nvml_failure.value, f.kernel_module_version]))")
    out = subprocess.run([sys.executable, "-c", code], env=node.env(), capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == ["library-not-found", "550.90.07"]


def _failing(code: int):
    def discover():
        try:
            raise pynvml.NVMLError(code)
        except pynvml.NVMLError as err:
            raise NvmlUnavailableError(f"cannot initialise NVML: {err}") from err
    return discover


@pytest.mark.parametrize(
    ("code", "failure"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, NvmlFailure.LIBRARY_NOT_FOUND),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, NvmlFailure.DRIVER_NOT_LOADED),
        (pynvml.NVML_ERROR_NO_PERMISSION, NvmlFailure.NO_PERMISSION),
        (pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH, NvmlFailure.VERSION_MISMATCH),
        (pynvml.NVML_ERROR_UNKNOWN, NvmlFailure.OTHER),
    ],
    ids=["library", "module", "permission", "mismatch", "unknown"],
)
def test_nvml_init_errors_are_classified_by_their_nvml_code(host, code, failure):
    assert read_driver(host.paths, discover=_failing(code)).nvml_failure is failure


def test_the_kernel_module_version_stands_in_when_nvml_cannot_say(host):
    host.layer("driver-proc")
    facts = read_driver(host.paths, discover=_failing(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    version = _verdicts(facts, minimum="560")["driver.version"]
    assert version.status is Status.ERROR
    assert version.evidence == ("driver 550.90.07 (from /proc/driver/nvidia/version), minimum 560",)


def test_an_open_kernel_module_version_line_is_understood(host):
    host.write("/proc/driver/nvidia/version",
               "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.124.06  Release Build\n")
    facts = read_driver(host.paths, discover=_failing(pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    assert facts.kernel_module_version == "570.124.06"
