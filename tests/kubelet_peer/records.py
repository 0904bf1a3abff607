"""What the kubelet stand-in records and raises: constants, error types, Go-style texts, records.

Used by every module of the stand-in and by tests (re-exported from the package). Stdlib and
grpc only: the CLI runs inside system-test boxes.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb

KUBELET_SOCKET = "kubelet.sock"
CHECKPOINT_FILE = "kubelet_internal_checkpoint"
POD_RESOURCES_DIR = "pod-resources"  # kubelet: /var/lib/kubelet/pod-resources/kubelet.sock
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
DEFAULT_GRACE_PERIOD = 300.0  # endpointStopGracePeriod = 5 * time.Minute
DEFAULT_DIAL_TIMEOUT = 10.0
PRE_START_TIMEOUT = 30.0  # KubeletPreStartContainerRPCTimeoutInSecs
NO_TOPOLOGY_NUMA = -1
UNIX_PATH_MAX = 107  # sun_path is 108 bytes with the terminating NUL

METHODS = ("GetDevicePluginOptions", "ListAndWatch", "GetPreferredAllocation", "Allocate", "PreStartContainer")

Listener = Callable[[str, Any], None]


class KubeletPeerError(Exception):
    """An error kubelet would report (its text is kubelet's)."""


class AdmissionError(KubeletPeerError):
    """Pod admission failed in the device manager (kubelet: UnexpectedAdmissionError)."""

    reason = "UnexpectedAdmissionError"


class ContainerStartError(KubeletPeerError):
    """Container start failed (PreStartContainer)."""


_GO_CODE_NAMES = {"OK": "OK", "CANCELLED": "Canceled"}


def go_code_name(code: grpc.StatusCode) -> str:
    name = code.name
    return _GO_CODE_NAMES.get(name) or "".join(p.capitalize() for p in name.split("_"))


def go_error(err: BaseException) -> str:
    """Render an exception the way kubelet's ``%v`` of a grpc-go error reads."""
    if isinstance(err, grpc.RpcError) and callable(getattr(err, "code", None)):
        code = err.code()  # type: ignore[attr-defined]
        details = err.details()  # type: ignore[attr-defined]
        if code is not None:
            return f"rpc error: code = {go_code_name(code)} desc = {details or ''}"
    return str(err) or type(err).__name__


def go_join(directory: str | os.PathLike[str], endpoint: str) -> str:
    """``filepath.Join(dir, endpoint)``: an absolute endpoint is still appended under dir."""
    parts = [p for p in (os.fspath(directory), endpoint) if p]
    return posixpath.normpath("/".join(parts)) if parts else ""


def check_unix_path(path: str | os.PathLike[str], what: str) -> None:
    """Raise ValueError naming ``what`` when ``path`` cannot be bound as a unix socket."""
    length = len(os.fsencode(path))
    if length > UNIX_PATH_MAX:
        raise ValueError(f"{what} {os.fspath(path)!r} is {length} bytes; unix socket paths allow {UNIX_PATH_MAX}")


@dataclass(frozen=True)
class Registration:
    """One Register request as kubelet saw it (accepted or not)."""

    resource: str
    endpoint: str
    version: str
    socket_path: str
    time: float  # time.monotonic()
    ok: bool
    error: str | None = None

    @property
    def result(self) -> str:
        return "ok" if self.ok else (self.error or "")


@dataclass(frozen=True)
class RpcCall:
    """One call kubelet made to a plugin."""

    method: str  # one of METHODS
    resource: str
    socket_path: str
    request: Any
    time: float  # time.monotonic() at the start of the call
    response: Any = None
    error: str | None = None


@dataclass(frozen=True)
class DeviceState:
    id: str
    health: str  # "Healthy" / "Unhealthy" as kubelet counts it (not the raw string)
    numa: tuple[int, ...] = ()
    raw_health: str = ""


@dataclass(frozen=True)
class Allocation:
    """One container's devices of one resource; ``device_ids`` sorted (a set to kubelet)."""

    pod_uid: str
    container_name: str
    resource: str
    device_ids: tuple[str, ...]
    response: pb.ContainerAllocateResponse
