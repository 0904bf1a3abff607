"""kubelet.*: can nvdp put its socket where kubelet looks, and register with it?

``nvdp_node.adapters.host.kubelet`` stats the device-plugin directory and
``kubelet.sock`` and asks the kubelet binary for its version; the rules here
name what each finding means for GPU pods. The version landmarks come from
kubelet's device plugin API history (v1beta1 since 1.10).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from nvdp_node.domain.checks.report import CheckResult, Status, parse_kubelet_version

MIN_KUBELET = (1, 10, 0)
# Features nvdp uses that older kubelets lack: (first version, what is lost).
KUBELET_FEATURES = (
    ((1, 19, 0), "GetPreferredAllocation (1.19): kubelet ignores nvdp's NVLink-aware choice of GPUs"),
)


class PathState(enum.Enum):
    PRESENT = "present"
    MISSING = "missing"
    WRONG_KIND = "wrong kind"
    NOT_WRITABLE = "not writable"


@dataclass(frozen=True)
class KubeletFacts:
    """The device-plugin directory, kubelet.sock, and ``kubelet --version`` if it could be run."""

    socket_dir: str
    socket_dir_state: PathState
    kubelet_socket: str
    kubelet_socket_state: PathState
    binary: str | None = None
    version_output: str | None = None
    version_error: str = ""


_OTHER_ROOT = ("if kubelet runs with another --root-dir (k3s: /var/lib/rancher/k3s/agent/kubelet), "
               "set kubelet.socket_dir to its device-plugins directory")


def evaluate_kubelet(facts: KubeletFacts, strategies: tuple[str, ...] = ()) -> tuple[CheckResult, ...]:
    """kubelet.socket-dir, kubelet.socket and kubelet.version."""
    return _socket_dir(facts), _socket(facts), _version(facts, strategies)


def _socket_dir(facts: KubeletFacts) -> CheckResult:
    title, path = "device-plugin directory", facts.socket_dir
    verdicts = {
        PathState.PRESENT: (Status.OK, f"{path} is a writable directory", ""),
        PathState.MISSING: (Status.ERROR, f"{path} does not exist",
                            f"install and start kubelet (it creates the directory); {_OTHER_ROOT}"),
        PathState.WRONG_KIND: (Status.ERROR, f"{path} is not a directory", f"remove it and restart kubelet; {_OTHER_ROOT}"),
        PathState.NOT_WRITABLE: (Status.ERROR, f"{path} is not writable: nvdp cannot create its socket there",
                                 "run nvdp as root, and do not mount the directory read-only"),
    }
    status, evidence, fix = verdicts[facts.socket_dir_state]
    return CheckResult("kubelet.socket-dir", title, status, (evidence,), fix)


def _socket(facts: KubeletFacts) -> CheckResult:
    title, path = "kubelet registration socket", facts.kubelet_socket
    if facts.kubelet_socket_state is PathState.PRESENT:
        return CheckResult("kubelet.socket", title, Status.OK, (f"{path} is a socket",))
    if facts.kubelet_socket_state is PathState.MISSING:
        return CheckResult("kubelet.socket", title, Status.ERROR,
                           (f"{path} does not exist: kubelet is not running (yet)",),
                           f"start kubelet (`systemctl status kubelet`, `journalctl -u kubelet`); {_OTHER_ROOT}")
    return CheckResult("kubelet.socket", title, Status.ERROR, (f"{path} exists but is not a socket",),
                       "remove it and restart kubelet, or point kubelet.kubelet_socket at the real socket")


def _version(facts: KubeletFacts, strategies: tuple[str, ...]) -> CheckResult:
    title = "kubelet version"
    if facts.binary is None:
        return CheckResult("kubelet.version", title, Status.SKIPPED, ("kubelet binary not found; version unknown",))
    if facts.version_output is None:
        return CheckResult("kubelet.version", title, Status.SKIPPED,
                           (f"`{facts.binary} --version` failed: {facts.version_error or 'no output'}",))
    version = parse_kubelet_version(facts.version_output)
    if version is None:
        return CheckResult("kubelet.version", title, Status.SKIPPED,
                           (f"unrecognised `kubelet --version` output: {facts.version_output.strip()[:80]!r}",))
    shown = "v" + ".".join(map(str, version))
    if version < MIN_KUBELET:
        return CheckResult("kubelet.version", title, Status.ERROR,
                           (f"kubelet {shown}: the device plugin API v1beta1 needs 1.10 or newer",),
                           "upgrade Kubernetes on this node")
    features = list(KUBELET_FEATURES)
    if "cdi-cri" in strategies:
        features.append(((1, 29, 0), "CDI devices in Allocate (cdi-cri): DevicePluginCDIDevices is on by default from 1.29"))
    lost = [text for first, text in features if version < first]
    if lost:
        return CheckResult("kubelet.version", title, Status.WARNING, (f"kubelet {shown}", *lost),
                           "upgrade Kubernetes on this node to use these features")
    return CheckResult("kubelet.version", title, Status.OK, (f"kubelet {shown}",))
