"""The kubelet restart → Register path: no fixed debounce, the same listener, old streams closed first.

In-process: a real Supervisor wait, real ResourcePlugin servers on unix
sockets, a real grpc.aio ListAndWatch client, an injected Register that
records what it saw when it was called. Ordering is checked by loop turns
and by what the injected Register observed, never by elapsed time.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import grpc
import pytest

from nvdp_node.adapters.host import HostRoot
from nvdp_node.adapters.servicer import DeviceState
from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb
from nvdp_node.api import deviceplugin_v1beta1_pb2_grpc as pb_grpc
from nvdp_node.api import podresources_v1_pb2 as pr
from nvdp_node.api import podresources_v1_pb2_grpc as pr_grpc
from nvdp_node.app.resource_plugin import ResourcePlugin
from nvdp_node.app.settings import MpsHost, ServeSettings
from nvdp_node.app.supervisor import Supervisor
from nvdp_node.config import load_config
from nvdp_node.domain.allocation import AllocationPolicy
from nvdp_node.domain.devices import Device, DeviceSet
from tests.daemon.test_resource_plugin import Passes, kubelet_sock

GPU = "nvidia.com/gpu"


@pytest.fixture
def directory():
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        yield Path(tmp)


class RecordingKubelet:
    """An injected Register that notes how many ListAndWatch streams were still open when it was sent."""

    def __init__(self) -> None:
        self.plugin: ResourcePlugin | None = None
        self.open_at_call: list[int] = []

    async def register(self, socket: Path, *, endpoint: str, resource_name: str) -> None:
        assert self.plugin is not None and self.plugin._server is not None
        self.open_at_call.append(self.plugin._server.servicer.open_streams)


def make(directory: Path, kubelet: RecordingKubelet, passes: Passes,
         pod_resources: Path | None = None) -> ResourcePlugin:
    devices = DeviceSet([Device(id="GPU-1", index="0", gpu_uuid="GPU-1", numa_node=None)])
    plugin = ResourcePlugin(GPU, DeviceState(devices, AllocationPolicy(resource_name=GPU)), socket_dir=directory,
                            kubelet_socket=directory / "kubelet.sock", pod_resources_socket=pod_resources,
                            on_change=passes, register_fn=kubelet.register, stream_wait=1e9)
    kubelet.plugin = plugin
    return plugin


def test_a_wake_ends_the_supervisors_wait_within_a_few_loop_turns_without_a_debounce_sleep(directory):
    async def body() -> bool:
        config = load_config(directory / "absent.toml", environ={},
                             overrides={"kubelet.socket_dir": str(directory)}).config
        supervisor = Supervisor(ServeSettings.from_config(config, HostRoot(), MpsHost()))
        waiting = asyncio.create_task(supervisor._wait())
        await asyncio.sleep(0)
        supervisor.wake("kubelet.sock created")
        for _ in range(3):
            await asyncio.sleep(0)
        done = waiting.done()
        waiting.cancel()
        return done

    assert asyncio.run(body()), "the resources are poked on the event, not after a fixed sleep"


def test_a_re_registration_is_sent_only_after_the_ended_streams_have_closed(directory):
    async def body() -> list[int]:
        kubelet, passes = RecordingKubelet(), Passes()
        kubelet_sock(directory)
        plugin = make(directory, kubelet, passes)
        plugin.start()
        await asyncio.wait_for(plugin.first_pass.wait(), 10)
        async with grpc.aio.insecure_channel(f"unix://{plugin.socket_path}") as channel:
            stream = pb_grpc.DevicePluginStub(channel).ListAndWatch(pb.Empty())
            await stream.read()  # kubelet's stream is open
            kubelet_sock(directory)  # a new kubelet.sock: register again
            await passes.after(plugin)
            assert await stream.read() is grpc.aio.EOF, "the old stream was ended normally"
        await plugin.stop()
        return kubelet.open_at_call

    assert asyncio.run(body()) == [0, 0], "Register never overtakes the end of the old stream"


def test_after_kubelet_deleted_the_socket_the_same_server_serves_and_registers_again(directory):
    async def body() -> None:
        kubelet, passes = RecordingKubelet(), Passes()
        kubelet_sock(directory)
        plugin = make(directory, kubelet, passes)
        plugin.start()
        await asyncio.wait_for(plugin.first_pass.wait(), 10)
        server = plugin._server
        plugin.socket_path.unlink()  # kubelet's start: plugin sockets go, directories stay
        kubelet_sock(directory)
        await passes.after(plugin)
        assert plugin._server is server, "linked again, no new server"
        assert plugin.serving and plugin.registered and len(kubelet.open_at_call) == 2
        await plugin.stop()

    asyncio.run(body())


class PodResources(pr_grpc.PodResourcesListerServicer):
    """Kubelet's PodResources: the first List fails (kubelet not up yet); ``during_list`` runs inside later ones."""

    def __init__(self) -> None:
        self.calls = 0
        self.during_list = lambda: None

    async def List(self, request, context):
        self.calls += 1
        if self.calls == 1:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not yet")
        self.during_list()
        return pr.ListPodResourcesResponse()


def test_the_end_of_an_old_registrations_stream_seen_while_registering_anew_registers_no_third_time(directory):
    # A kubelet restart ends kubelet's stream and replaces kubelet.sock. When nvdp notices the
    # stream's end in the middle of the pass that already registers with the new kubelet, that
    # loss belongs to the old registration: registering once more would be the 1.32 race.
    async def body() -> list[int]:
        kubelet, passes, lister = RecordingKubelet(), Passes(), PodResources()
        server = grpc.aio.server()
        pr_grpc.add_PodResourcesListerServicer_to_server(lister, server)
        server.add_insecure_port(f"unix://{directory / 'pod-resources.sock'}")
        await server.start()
        kubelet_sock(directory)
        plugin = make(directory, kubelet, passes, pod_resources=directory / "pod-resources.sock")
        plugin.start()
        await asyncio.wait_for(plugin.first_pass.wait(), 10)
        while not plugin.registered:
            await passes.after(plugin)
        token = plugin.opened()  # kubelet's stream of that registration, as the servicer reports it
        lister.during_list = lambda: plugin.ended(token)  # its end arrives while the next pass runs
        kubelet_sock(directory)  # the new kubelet
        for _ in range(3):
            await passes.after(plugin)
        await plugin.stop()
        await server.stop(None)
        return kubelet.open_at_call

    assert len(asyncio.run(body())) == 2, "one Register for the first kubelet, one for the new one"


def test_a_resource_poked_in_the_same_loop_turn_as_its_stop_still_stops(directory):
    # Python 3.11's asyncio.wait_for returns the inner result when that finished in the same
    # turn as the cancellation, swallowing it: an inotify poke next to SIGTERM kept nvdp running.
    async def body() -> bool:
        kubelet, passes = RecordingKubelet(), Passes()
        kubelet_sock(directory)
        plugin = make(directory, kubelet, passes)
        plugin.start()
        await asyncio.wait_for(plugin.first_pass.wait(), 10)
        await passes.after(plugin)  # idle, waiting to be poked
        plugin.poke()
        stopping = asyncio.ensure_future(plugin.stop())
        done, _ = await asyncio.wait({stopping}, timeout=5)  # a bound on a hang, not a timing check
        if not done:
            plugin._task.cancel()
            await asyncio.wait({stopping}, timeout=5)
        return bool(done)

    assert asyncio.run(body()), "stop() came back"
