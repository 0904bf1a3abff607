"""Pytest fixtures for the kubelet stand-in (registered from tests/conftest.py).

* ``kubelet_peer_factory(**kw)`` -> a started ``KubeletPeer`` in a fresh short directory
  under /tmp (unix socket paths are limited to 108 bytes), its PodResources socket in
  another one (``peer.pod_resources_socket``, ``/tmp/kpr-*/pod-resources/kubelet.sock``);
  ``kw`` go to ``KubeletPeer`` (``grace_period``, ``dial_timeout``, ``options_timeout``,
  ``status_file``, ``seed``, ``stale_stream_disconnects``, ``pod_resources_socket``, ...), plus
  ``plugin_dir=`` to use a given directory and ``start=False`` to get it unstarted.
  Every peer is stopped and every directory removed at teardown.
* ``kubelet_peer`` -> one started peer; parametrize indirectly to configure it:
  ``@pytest.mark.parametrize("kubelet_peer", [0.5], indirect=True)`` (a grace period in
  seconds) or ``[{"grace_period": 0.5, "dial_timeout": 1}]`` (keyword arguments).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .peer import KubeletPeer

KubeletPeerFactory = Callable[..., KubeletPeer]


@pytest.fixture
def kubelet_peer_factory() -> Iterator[KubeletPeerFactory]:
    peers: list[KubeletPeer] = []
    dirs: list[Path] = []

    def make(*, plugin_dir: str | Path | None = None, start: bool = True, **kw: Any) -> KubeletPeer:
        if plugin_dir is None:
            plugin_dir = Path(tempfile.mkdtemp(prefix="kp-", dir="/tmp"))
            dirs.append(plugin_dir)
        if "pod_resources_socket" not in kw:
            pod_resources_dir = Path(tempfile.mkdtemp(prefix="kpr-", dir="/tmp"))
            dirs.append(pod_resources_dir)
            kw["pod_resources_socket"] = pod_resources_dir / "pod-resources" / "kubelet.sock"
        peer = KubeletPeer(plugin_dir, **kw)
        peers.append(peer)
        if start:
            peer.start()
        return peer

    yield make
    for peer in reversed(peers):
        peer.stop()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def kubelet_peer(request: pytest.FixtureRequest, kubelet_peer_factory: KubeletPeerFactory) -> KubeletPeer:
    param = getattr(request, "param", None)
    if param is None:
        kw: dict[str, Any] = {}
    elif isinstance(param, dict):
        kw = dict(param)
    else:
        kw = {"grace_period": float(param)}
    return kubelet_peer_factory(**kw)
