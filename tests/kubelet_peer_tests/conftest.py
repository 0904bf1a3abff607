"""Fixtures for the kubelet stand-in's own tests: ``plugins`` makes TinyPlugins in the peer's directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.kubelet_peer import KubeletPeer

from .tiny_plugin import TinyPlugin, plugin_factory


@pytest.fixture
def plugins(kubelet_peer: KubeletPeer) -> Iterator[Callable[..., TinyPlugin]]:
    with plugin_factory(kubelet_peer.plugin_dir) as make:
        yield make
