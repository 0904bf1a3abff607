"""Table tests of the pure check rules (nvdp_node.domain.checks): literal facts in, verdicts out."""

from __future__ import annotations

import pytest

from nvdp_node.domain.checks import (
    CheckReport,
    CheckResult,
    DriverFacts,
    EngineFacts,
    FileProblem,
    KubeletFacts,
    NvmlFailure,
    PathState,
    ProblemKind,
    Runtime,
    Status,
    combine_engines,
    evaluate_driver,
    evaluate_engine,
    evaluate_kubelet,
    parse_kubelet_version,
    parse_version,
    version_at_least,
)

OK, WARNING, ERROR, SKIPPED = Status.OK, Status.WARNING, Status.ERROR, Status.SKIPPED


@pytest.mark.parametrize(
    ("actual", "minimum", "expected"),
    [
        ("550.90.07", "384.81", True),
        ("384.81", "384.81", True),
        ("384.81", "384.81.0", True),
        ("384.80", "384.81", False),
        ("375.26", "384.81", False),
        ("384.111", "384.81", True),  # numeric, not string, comparison
        ("1000.1", "384.81", True),
        ("unknown", "384.81", None),
    ],
    ids=["newer", "equal", "padded-equal", "one-below", "older-major", "numeric-not-lexical", "four-digit", "unparsable"],
)
def test_driver_versions_compare_numerically_component_by_component(actual, minimum, expected):
    assert version_at_least(actual, minimum) is expected


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Kubernetes v1.29.3\n", (1, 29, 3)),
        ("Kubernetes v1.28.2+k3s1", (1, 28, 2)),
        ("Kubernetes v1.30.0-eks-036c24b", (1, 30, 0)),
        ("Kubernetes v1.9.11", (1, 9, 11)),
        ("kubelet: command not found", None),
    ],
    ids=["plain", "k3s", "eks", "pre-1.10", "garbage"],
)
def test_kubelet_version_output_is_parsed_with_distribution_suffixes(output, expected):
    assert parse_kubelet_version(output) == expected


def test_a_leading_v_is_allowed_in_versions():
    assert parse_version("v1.2.3") == (1, 2, 3)


def _report(*statuses: Status, config: Status | None = None) -> CheckReport:
    results = [CheckResult(f"x.{i}", "x", s) for i, s in enumerate(statuses)]
    if config is not None:
        results.insert(0, CheckResult("config.valid", "config", config))
    return CheckReport(tuple(results))


@pytest.mark.parametrize(
    ("report", "worst", "exit_code"),
    [
        (_report(), OK, 0),
        (_report(OK, SKIPPED), OK, 0),
        (_report(OK, WARNING, SKIPPED), WARNING, 0),
        (_report(OK, ERROR, WARNING), ERROR, 1),
        (_report(OK, config=ERROR), ERROR, 78),
        (_report(ERROR, config=OK), ERROR, 1),
    ],
    ids=["empty", "skipped-is-fine", "warnings-allowed", "error", "config-invalid", "config-valid-other-error"],
)
def test_the_report_maps_its_worst_status_to_the_documented_exit_code(report, worst, exit_code):
    assert (report.worst, report.exit_code) == (worst, exit_code)


# ---- driver -----------------------------------------------------------------

GOOD_DRIVER = DriverFacts(driver_version="550.90.07", gpu_minors=(0, 1), kernel_module_version="550.90.07",
                          dev_nodes=frozenset({"nvidiactl", "nvidia0", "nvidia1", "nvidia-uvm"}))


def _driver(facts: DriverFacts, minimum: str = "384.81") -> dict[str, Status]:
    return {r.id: r.status for r in evaluate_driver(facts, min_version=minimum)}


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (GOOD_DRIVER, {"driver.library": OK, "driver.nvml": OK, "driver.version": OK, "driver.device-nodes": OK}),
        (DriverFacts(nvml_failure=NvmlFailure.LIBRARY_NOT_FOUND),
         {"driver.library": ERROR, "driver.nvml": SKIPPED, "driver.version": SKIPPED, "driver.device-nodes": ERROR}),
        (DriverFacts(nvml_failure=NvmlFailure.LIBRARY_NOT_FOUND, kernel_module_version="550.90.07",
                     dev_nodes=frozenset({"nvidiactl", "nvidia0", "nvidia-uvm"})),
         {"driver.library": ERROR, "driver.nvml": SKIPPED, "driver.version": OK, "driver.device-nodes": OK}),
        (DriverFacts(nvml_failure=NvmlFailure.DRIVER_NOT_LOADED),
         {"driver.library": OK, "driver.nvml": ERROR, "driver.version": SKIPPED, "driver.device-nodes": ERROR}),
        (DriverFacts(driver_version="550.90.07", gpu_minors=(),
                     dev_nodes=frozenset({"nvidiactl", "nvidia0", "nvidia-uvm"})),
         {"driver.library": OK, "driver.nvml": ERROR, "driver.version": OK, "driver.device-nodes": OK}),
    ],
    ids=["healthy", "no-driver-at-all", "module-without-library", "module-not-loaded", "no-gpus"],
)
def test_driver_facts_give_one_verdict_per_driver_check(facts, expected):
    assert _driver(facts) == expected


def test_a_driver_older_than_the_minimum_is_an_error_naming_both_versions():
    (_, _, version, _) = evaluate_driver(GOOD_DRIVER, min_version="555.0")
    assert version.status is ERROR
    assert "550.90.07" in version.evidence[0] and "555.0" in version.evidence[0]


def test_a_missing_node_of_a_gpu_nvml_reports_is_named():
    facts = DriverFacts(driver_version="550.90.07", gpu_minors=(0, 3),
                        dev_nodes=frozenset({"nvidiactl", "nvidia0", "nvidia-uvm"}))
    nodes = evaluate_driver(facts, min_version="384.81")[3]
    assert nodes.status is ERROR and nodes.evidence == ("missing: /dev/nvidia3",)


def test_a_missing_nvidia_uvm_node_is_only_a_warning():
    facts = DriverFacts(driver_version="550.90.07", gpu_minors=(0,), dev_nodes=frozenset({"nvidiactl", "nvidia0"}))
    assert evaluate_driver(facts, min_version="384.81")[3].status is WARNING


# ---- engines ----------------------------------------------------------------

NVIDIA = Runtime("nvidia", "/usr/bin/nvidia-container-runtime", True)
RUNC = Runtime("runc", None)


def _engine(**kwargs) -> EngineFacts:
    defaults = dict(engine="containerd", binary="/usr/bin/containerd", runtimes={"nvidia": NVIDIA, "runc": RUNC},
                    default_runtime="nvidia", default_from="/etc/containerd/config.toml")
    return EngineFacts(**{**defaults, **kwargs})


@pytest.mark.parametrize(
    ("facts", "explicit", "status", "says"),
    [
        (_engine(), False, OK, "runs /usr/bin/nvidia-container-runtime"),
        (_engine(binary=None), False, SKIPPED, "not installed"),
        (_engine(binary=None), True, ERROR, "not installed"),
        (_engine(cri_disabled=True), False, SKIPPED, "CRI plugin is disabled"),
        (_engine(default_runtime=None, default_from=None), False, ERROR, "but the default is 'runc' (built-in"),
        (_engine(default_runtime="runc"), False, ERROR, "but the default is 'runc' (set in"),
        (_engine(runtimes={"nvidia": Runtime("nvidia", None)}), False, ERROR, "names no binary"),
        (_engine(runtimes={"nvidia": Runtime("nvidia", "/opt/nct", False)}), False, ERROR, "no runtime runs nvidia"),
        (_engine(runtimes={"nvidia": Runtime("nvidia", "/usr/bin/nvidia-container-runtime", False)}), False,
         ERROR, "which does not exist"),
        (_engine(default_runtime="gpu", runtimes={"gpu": Runtime("gpu", "/usr/bin/nvidia-container-runtime.cdi", True)}),
         False, OK, "'gpu'"),
        (_engine(problems=(FileProblem("/etc/containerd/config.toml", ProblemKind.INVALID, "bad"),)), False,
         ERROR, "is not valid: bad"),
        (_engine(problems=(FileProblem("/etc/containerd/config.toml", ProblemKind.MISSING),), runtimes={},
                 default_runtime=None), False, ERROR, "no runtime runs nvidia-container-runtime"),
    ],
    ids=["nvidia-default", "absent-auto", "absent-explicit", "cri-disabled", "builtin-default",
         "configured-not-default", "no-binary-name", "odd-binary", "binary-missing", "renamed-runtime",
         "invalid-file", "missing-file"],
)
def test_engine_rules_judge_the_default_runtime(facts, explicit, status, says):
    result = evaluate_engine(facts, explicit=explicit)
    assert result.status is status, result
    assert any(says in line for line in result.evidence), result.evidence


def test_with_cdi_the_nvidia_runtime_need_not_be_the_default():
    result = evaluate_engine(_engine(default_runtime="runc"), explicit=False, needs_default=False)
    assert result.status is OK


def test_every_engine_error_says_how_to_configure_it():
    result = evaluate_engine(_engine(engine="crio", default_runtime="crun"), explicit=False)
    assert "nvidia-ctk runtime configure --runtime=crio --set-as-default" in result.fix


def test_under_auto_one_good_engine_turns_the_others_errors_into_warnings():
    good = CheckResult("runtime.containerd", "t", OK)
    bad = CheckResult("runtime.docker", "t", ERROR, ("default is runc",))
    summary, *engines = combine_engines([good, bad], explicit=False)
    assert summary.status is OK
    assert [r.status for r in engines] == [OK, WARNING]
    assert "containerd is set up" in engines[1].evidence[-1]


def test_with_engines_named_explicitly_every_engine_error_stays_an_error():
    results = combine_engines([CheckResult("runtime.containerd", "t", OK),
                               CheckResult("runtime.docker", "t", ERROR)], explicit=True)
    assert [r.status for r in results] == [OK, OK, ERROR]


def test_no_installed_engine_at_all_is_an_error():
    summary, *_ = combine_engines([CheckResult(f"runtime.{e}", "t", SKIPPED) for e in ("docker", "crio")],
                                  explicit=False)
    assert summary.status is ERROR


# ---- kubelet ----------------------------------------------------------------

def _kubelet(**kwargs) -> dict[str, Status]:
    defaults = dict(socket_dir="/var/lib/kubelet/device-plugins", socket_dir_state=PathState.PRESENT,
                    kubelet_socket="/var/lib/kubelet/device-plugins/kubelet.sock",
                    kubelet_socket_state=PathState.PRESENT, binary="/usr/bin/kubelet",
                    version_output="Kubernetes v1.29.3")
    return {r.id: r.status for r in evaluate_kubelet(KubeletFacts(**{**defaults, **kwargs}))}


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, (OK, OK, OK)),
        ({"socket_dir_state": PathState.MISSING, "kubelet_socket_state": PathState.MISSING}, (ERROR, ERROR, OK)),
        ({"socket_dir_state": PathState.NOT_WRITABLE}, (ERROR, OK, OK)),
        ({"socket_dir_state": PathState.WRONG_KIND}, (ERROR, OK, OK)),
        ({"kubelet_socket_state": PathState.WRONG_KIND}, (OK, ERROR, OK)),
        ({"binary": None, "version_output": None}, (OK, OK, SKIPPED)),
        ({"version_output": None, "version_error": "no answer within 3 s"}, (OK, OK, SKIPPED)),
        ({"version_output": "Kubernetes v1.9.0"}, (OK, OK, ERROR)),
        ({"version_output": "Kubernetes v1.18.20"}, (OK, OK, WARNING)),
        ({"version_output": "Kubernetes v1.19.0"}, (OK, OK, OK)),
    ],
    ids=["all-good", "no-kubelet-dir", "dir-not-writable", "dir-is-a-file", "socket-not-a-socket",
         "no-binary", "version-timeout", "older-than-1.10", "before-preferred-allocation", "exactly-1.19"],
)
def test_kubelet_facts_give_dir_socket_and_version_verdicts(kwargs, expected):
    verdicts = _kubelet(**kwargs)
    assert (verdicts["kubelet.socket-dir"], verdicts["kubelet.socket"], verdicts["kubelet.version"]) == expected


def test_an_old_kubelet_names_the_feature_it_lacks():
    facts = KubeletFacts("/d", PathState.PRESENT, "/d/kubelet.sock", PathState.PRESENT, "/usr/bin/kubelet",
                         "Kubernetes v1.18.0")
    version = evaluate_kubelet(facts)[2]
    assert any("GetPreferredAllocation" in line for line in version.evidence)


def test_with_cdi_no_nvidia_runtime_is_needed_at_all():
    result = evaluate_engine(_engine(runtimes={}, default_runtime=None), explicit=False, needs_default=False)
    assert result.status is OK and any("CDI specs" in line for line in result.evidence)
