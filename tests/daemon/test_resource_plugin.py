"""ResourcePlugin's task in-process: real servers on unix sockets, an injected Register, fake time.

Two resources share one kubelet: one is refused and backs off 1 s, 2 s, …
while the other registers; a new kubelet.sock ends the back-off at once.
The clock is a list the test moves; each pass is awaited through the
plugin's ``on_change`` callback, so nothing sleeps.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from pathlib import Path

import pytest

from nvdp_node.adapters.registration import RegistrationError
from nvdp_node.adapters.servicer import DeviceState
from nvdp_node.app.resource_plugin import ResourcePlugin
from nvdp_node.domain.allocation import AllocationPolicy
from nvdp_node.domain.devices import Device, DeviceSet
from nvdp_node.domain.registration import RegState

GOOD, BAD = "nvidia.com/gpu", "example.com/gpu"


class Kubelet:
    """An injected Register: records calls, refuses ``refuse`` resources."""

    def __init__(self, refuse: set[str]) -> None:
        self.refuse, self.calls = refuse, []

    async def register(self, socket: Path, *, endpoint: str, resource_name: str) -> None:
        self.calls.append(resource_name)
        if resource_name in self.refuse:
            raise RegistrationError(f"Register with {socket} failed: INVALID_ARGUMENT: no")


class Passes:
    def __init__(self) -> None:
        self.count = 0
        self.event = asyncio.Event()

    def __call__(self, why: str) -> None:
        if why.endswith("pass done"):
            self.count += 1
            self.event.set()

    async def after(self, plugin: ResourcePlugin) -> None:
        """Poke ``plugin`` and wait until it finished a pass."""
        target = self.count + 1
        plugin.poke()
        while self.count < target:
            self.event.clear()
            await asyncio.wait_for(self.event.wait(), 10)


def kubelet_sock(directory: Path) -> None:
    """(Re)create a socket file at kubelet.sock: a new identity, as a kubelet restart makes."""
    path = directory / "kubelet.sock"
    if path.exists():
        os.unlink(path)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))


def make(name: str, directory: Path, kubelet: Kubelet, clock: list[float], passes: Passes,
         stream_wait: float = 1e9, gate=None) -> ResourcePlugin:
    devices = DeviceSet([Device(id="GPU-1", index="0", gpu_uuid="GPU-1", numa_node=None)])
    return ResourcePlugin(
        name, DeviceState(devices, AllocationPolicy(resource_name=name)), socket_dir=directory,
        kubelet_socket=directory / "kubelet.sock", on_change=passes, register_fn=kubelet.register,
        clock=lambda: clock[0], stream_wait=stream_wait, gate=gate,
    )


@pytest.fixture
def directory():
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        yield Path(tmp)


def test_one_refused_resource_backs_off_while_the_other_registers(directory):
    async def body() -> None:
        clock, kubelet = [100.0], Kubelet(refuse={BAD})
        kubelet_sock(directory)
        good_passes, bad_passes = Passes(), Passes()
        good = make(GOOD, directory, kubelet, clock, good_passes)
        bad = make(BAD, directory, kubelet, clock, bad_passes)
        good.start()
        bad.start()
        await asyncio.wait_for(asyncio.gather(good.first_pass.wait(), bad.first_pass.wait()), 10)
        assert good.registered and good.serving
        assert bad.serving and bad.registrar.state is RegState.BACKING_OFF
        assert bad.registrar.retry_in(clock[0]) == 1.0
        assert "INVALID_ARGUMENT" in (bad.last_error or "")

        await bad_passes.after(bad)  # no time passed: no new attempt
        assert kubelet.calls.count(BAD) == 1
        for expected_delay in (2.0, 4.0, 8.0):
            clock[0] += bad.registrar.retry_in(clock[0])
            await bad_passes.after(bad)
            assert bad.registrar.retry_in(clock[0]) == expected_delay
        assert kubelet.calls.count(BAD) == 4

        kubelet_sock(directory)  # kubelet restarted: try at once, from 1 s again
        await bad_passes.after(bad)
        assert kubelet.calls.count(BAD) == 5
        assert bad.registrar.retry_in(clock[0]) == 1.0
        assert kubelet.calls.count(GOOD) == 1, "the good resource is not disturbed by the other's failures"
        await good.stop()
        await bad.stop()
    asyncio.run(body())


def test_a_resource_serves_again_when_its_socket_is_deleted_and_then_registers(directory):
    async def body() -> None:
        clock, kubelet, passes = [0.0], Kubelet(refuse=set()), Passes()
        kubelet_sock(directory)
        plugin = make(GOOD, directory, kubelet, clock, passes)
        plugin.start()
        await asyncio.wait_for(plugin.first_pass.wait(), 10)
        plugin.socket_path.unlink()  # what kubelet does at its start
        await passes.after(plugin)
        assert plugin.serving and plugin.registered
        assert plugin.socket_path.is_socket()
        assert kubelet.calls == [GOOD, GOOD]
        await plugin.stop()
        assert not plugin.socket_path.exists()
    asyncio.run(body())


def test_a_registration_kubelet_never_streams_from_is_made_again(directory):
    async def body() -> None:
        clock, kubelet, passes = [0.0], Kubelet(refuse=set()), Passes()
        kubelet_sock(directory)
        plugin = make(GOOD, directory, kubelet, clock, passes, stream_wait=5.0)
        plugin.start()
        await asyncio.wait_for(plugin.first_pass.wait(), 10)
        while not plugin.registered:
            await passes.after(plugin)
        assert kubelet.calls == [GOOD]
        clock[0] += 4.9
        await passes.after(plugin)
        assert kubelet.calls == [GOOD], "kubelet still has time to open its stream"
        clock[0] += 0.2
        await passes.after(plugin)
        assert kubelet.calls == [GOOD, GOOD], "no ListAndWatch 5 s after Register: register again"
        await plugin.stop()
    asyncio.run(body())


def test_no_register_is_sent_while_kubelet_sock_is_missing(directory):
    async def body() -> None:
        clock, kubelet, passes = [0.0], Kubelet(refuse=set()), Passes()
        plugin = make(GOOD, directory, kubelet, clock, passes)
        plugin.start()
        await asyncio.wait_for(plugin.first_pass.wait(), 10)
        await passes.after(plugin)
        assert plugin.serving and kubelet.calls == []
        kubelet_sock(directory)
        await passes.after(plugin)
        assert kubelet.calls == [GOOD] and plugin.registered
        await plugin.stop()
    asyncio.run(body())


def test_a_gated_resource_is_served_only_while_its_gate_is_open(directory):
    async def body() -> None:
        clock, kubelet, passes = [0.0], Kubelet(refuse=set()), Passes()
        kubelet_sock(directory)
        reason: list[str | None] = ["MPS control daemon not answering"]

        async def gate() -> str | None:
            return reason[0]

        plugin = make(GOOD, directory, kubelet, clock, passes, gate=gate)  # as the supervisor does for MPS
        plugin.start()
        await asyncio.wait_for(plugin.first_pass.wait(), 10)
        assert not plugin.serving and not plugin.socket_path.exists() and kubelet.calls == []
        assert plugin.last_error == "MPS control daemon not answering"
        reason[0] = None
        await passes.after(plugin)
        assert plugin.serving and plugin.registered and kubelet.calls == [GOOD]
        reason[0] = "MPS control daemon stopped"
        await passes.after(plugin)
        assert not plugin.serving and not plugin.registered and not plugin.socket_path.exists()
        await plugin.stop()
    asyncio.run(body())
