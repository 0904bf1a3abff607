"""Pure rules of ``nvdp check``: facts about the host in, verdicts out.

The host adapters (``nvdp_node.adapters.host``) read files, binaries, NVML
and kubelet into the plain ``*Facts`` values of the rule modules;
``nvdp_node.app.host_checks`` hands them to the ``evaluate_*`` functions and
renders the :class:`CheckReport`. Nothing here touches the host, so every
rule is table-tested with literal facts. Check ids are stable: they are the
anchors of docs/troubleshooting.md and the keys of ``nvdp check --json``.
"""

from nvdp_node.domain.checks.driver import DriverFacts, NvmlFailure, evaluate_driver
from nvdp_node.domain.checks.engines import EngineFacts, Runtime, combine_engines, evaluate_engine
from nvdp_node.domain.checks.kubelet import KubeletFacts, PathState, evaluate_kubelet
from nvdp_node.domain.checks.report import (
    CONFIG_CHECK_ID,
    CONFIG_PERMISSIONS_CHECK_ID,
    EXIT_CONFIG_INVALID,
    EXIT_ERRORS,
    EXIT_OK,
    CheckReport,
    CheckResult,
    FileProblem,
    ProblemKind,
    Status,
    fatal,
    parse_kubelet_version,
    parse_version,
    version_at_least,
)
from nvdp_node.domain.checks.toolkit import (
    CDI_KINDS,
    ENVVAR_KEY,
    TOOLKIT_BINARIES,
    VOLUME_MOUNTS_KEY,
    CdiFacts,
    ToolkitFacts,
    evaluate_cdi,
    evaluate_toolkit,
    uses_cdi,
)

__all__ = [
    "CDI_KINDS", "CONFIG_CHECK_ID", "CONFIG_PERMISSIONS_CHECK_ID", "ENVVAR_KEY", "EXIT_CONFIG_INVALID",
    "EXIT_ERRORS", "EXIT_OK", "TOOLKIT_BINARIES", "VOLUME_MOUNTS_KEY", "CdiFacts", "CheckReport", "CheckResult", "DriverFacts",
    "EngineFacts", "FileProblem", "KubeletFacts", "NvmlFailure", "PathState", "ProblemKind", "Runtime",
    "Status", "ToolkitFacts", "combine_engines", "evaluate_cdi", "evaluate_driver", "evaluate_engine",
    "evaluate_kubelet", "evaluate_toolkit", "fatal", "parse_kubelet_version", "parse_version",
    "uses_cdi", "version_at_least",
]
