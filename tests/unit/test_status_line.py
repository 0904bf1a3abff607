"""The STATUS= line: what an operator reads first in `systemctl status nvdp`."""

from __future__ import annotations

import pytest

from nvdp_node.app.status import ResourceView, status_line

GPU = "nvidia.com/gpu"


def view(**kw) -> ResourceView:
    base = dict(resource_name=GPU, socket_path="/k/nvidia-gpu.sock", devices=8, healthy=8, held=0, serving=True,
                registered=True, error=None, claims_error=None)
    return ResourceView(**{**base, **kw})


def line(*views: ResourceView, found: int = 8, expected: int = 8, present: bool = True, **kw) -> str:
    return status_line(list(views), found=found, expected=expected, kubelet_socket_present=present,
                       kubelet_socket="/k/kubelet.sock", **kw)


@pytest.mark.parametrize(
    ("views", "kw", "expected"),
    [
        ([view()], {}, "Serving 8 GPUs as nvidia.com/gpu, registered with kubelet"),
        ([view(devices=7, healthy=7)], {"found": 7},
         "Serving 7 of 8 GPUs (1 not identified) as nvidia.com/gpu, registered with kubelet"),
        ([view(healthy=6)], {}, "Serving 8 GPUs (2 unhealthy) as nvidia.com/gpu, registered with kubelet"),
        ([view(healthy=2, held=6)], {},
         "Serving 8 GPUs (6 held by pods under another resource name) as nvidia.com/gpu, registered with kubelet"),
        ([view(registered=False)], {"present": False},
         "Serving 8 GPUs as nvidia.com/gpu; waiting for kubelet socket /k/kubelet.sock"),
        ([view(registered=False, error="Register failed: UNAVAILABLE")], {},
         "Serving 8 GPUs as nvidia.com/gpu; registration failed: Register failed: UNAVAILABLE; retrying"),
        ([view(serving=False, error="cannot listen: [Errno 30] Read-only file system")], {},
         "Cannot serve nvidia.com/gpu on /k/nvidia-gpu.sock: cannot listen: [Errno 30] Read-only file system"),
        ([view(claims_error="connection refused")], {},
         "Serving 8 GPUs as nvidia.com/gpu, registered with kubelet; PodResources unreachable (connection refused)"),
        ([], {"found": 0, "expected": 0}, "No GPUs found; nothing registered with kubelet (see `nvdp check`)"),
        ([view()], {"reload_error": "resource_name: expected a string"},
         "Reload failed: resource_name: expected a string (keeping previous config); "
         "Serving 8 GPUs as nvidia.com/gpu, registered with kubelet"),
    ],
    ids=["registered", "one-not-identified", "unhealthy", "held-elsewhere", "no-kubelet", "register-failing",
         "cannot-serve", "podresources-down", "no-gpus", "reload-failed"],
)
def test_status_line_says_what_matters_first(views, kw, expected):
    assert line(*views, **kw) == expected


MIG = "nvidia.com/mig-1g.10gb"


@pytest.mark.parametrize(
    ("views", "kw", "expected"),
    [
        ([view(devices=4, healthy=4), view(resource_name=MIG, devices=7, healthy=7)], {},
         "Serving 4 nvidia.com/gpu, 7 nvidia.com/mig-1g.10gb, registered with kubelet"),
        ([view(devices=4, healthy=4), view(resource_name=MIG, devices=7, healthy=6, registered=False)], {},
         "Serving 4 nvidia.com/gpu, 7 nvidia.com/mig-1g.10gb (1 unhealthy); "
         "nvidia.com/mig-1g.10gb: registering with kubelet"),
        ([view(devices=4, healthy=4, registered=False), view(resource_name=MIG, devices=7, healthy=7,
                                                            registered=False)], {"present": False},
         "Serving 4 nvidia.com/gpu, 7 nvidia.com/mig-1g.10gb; waiting for kubelet socket /k/kubelet.sock"),
        ([view()], {"plan_errors": ("GPU 5: MIG-enabled GPU has no MIG devices",)},
         "Serving 8 GPUs as nvidia.com/gpu, registered with kubelet; GPU 5: MIG-enabled GPU has no MIG devices"),
        ([view(devices=4, healthy=1, held=2), view(resource_name=MIG, devices=7, healthy=7)], {},
         "Serving 4 nvidia.com/gpu (2 held by pods under another resource name, 1 unhealthy), "
         "7 nvidia.com/mig-1g.10gb, registered with kubelet"),
        ([], {"plan_errors": ("more than one MIG device type present on node",)},
         "Serving nothing; more than one MIG device type present on node"),
    ],
    ids=["two-registered", "one-registering", "no-kubelet", "plan-error", "held-and-unhealthy",
         "plan-error-nothing-served"],
)
def test_status_line_with_several_resources_counts_each(views, kw, expected):
    assert line(*views, **kw) == expected
