"""Register on ``kubelet.sock``: validation, dial-back, GetDevicePluginOptions (kubelet-api.md §2.1).

``RegistrationMixin`` is a role of ``KubeletPeer``; peer.py serves ``_RegistrationServicer`` on
``kubelet.sock`` for each device-manager generation. Register validates version and resource
name with kubelet's texts, dials ``filepath.Join(dir, endpoint)`` (blocking, ``dial_timeout``),
calls GetDevicePluginOptions with no deadline and only then returns ``Empty``; any error goes
back as gRPC UNKNOWN (what grpc-go makes of a plain error). ListAndWatch (streams.py) starts as
Register returns.

Like kubelet's handler up to 1.35 the newest client per resource name is remembered *before*
it connects, and forgotten when it fails to connect: that is what makes a replaced stream's
end disconnect the new client (streams.py).
"""

from __future__ import annotations

import threading
import time

import grpc

from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb
from nvdp_node.api import deviceplugin_v1beta1_pb2_grpc as pb_grpc

from . import resource_names as rn
from .core import PeerCore
from .records import Registration, go_error, go_join
from .state import Endpoint, PluginClient


class _RegistrationServicer(pb_grpc.RegistrationServicer):
    def __init__(self, peer: RegistrationMixin, generation: int):
        self._peer = peer
        self._generation = generation

    def Register(self, request: pb.RegisterRequest, context: grpc.ServicerContext) -> pb.Empty:  # noqa: N802
        error = self._peer._handle_register(request, self._generation)
        if error is not None:
            context.abort(grpc.StatusCode.UNKNOWN, error)
        return pb.Empty()


class RegistrationMixin(PeerCore):
    """Kubelet's ``server.Register`` and ``connectClient``."""

    def _registration_servicer(self, generation: int) -> pb_grpc.RegistrationServicer:
        return _RegistrationServicer(self, generation)

    def _handle_register(self, request: pb.RegisterRequest, generation: int) -> str | None:
        resource, endpoint, version = request.resource_name, request.endpoint, request.version
        socket_path = go_join(self.plugin_dir, endpoint)
        self._log(f"Got registration request from device plugin with resource {resource}")
        with self._lock:
            self._registration_counts[resource] = self._registration_counts.get(resource, 0) + 1
        stream_thread: threading.Thread | None = None
        if not rn.is_version_supported(version):
            error: str | None = rn.unsupported_version_error(version)
        elif not rn.is_extended_resource_name(resource):
            error = rn.invalid_resource_name_error(resource)
        else:
            error, stream_thread = self._connect_client(resource, endpoint, socket_path, generation)
        reg = Registration(resource, endpoint, version, socket_path, time.monotonic(), error is None, error)
        with self._lock:
            self._registrations.append(reg)
        self._log(f"registration of {resource} via {endpoint}: {reg.result}")
        self._refresh(event=("registration", reg))
        if stream_thread is not None:
            # kubelet starts ListAndWatch in a goroutine as Register returns
            stream_thread.start()
        return error

    def _connect_client(
        self, resource: str, endpoint: str, socket_path: str, generation: int
    ) -> tuple[str | None, threading.Thread | None]:
        """Dial, GetDevicePluginOptions, install the endpoint; return (error, unstarted stream thread)."""
        channel = grpc.insecure_channel(f"unix:{socket_path}")
        with self._lock:
            if generation != self._generation:
                channel.close()
                return "kubelet is shutting down", None
            self._pending_channels.add(channel)
            client = PluginClient(resource, endpoint, socket_path, channel, generation)
            self._state.clients[resource] = client  # registerClient, before Connect

        def fail(error: str) -> tuple[str, None]:
            client.close()
            with self._lock:
                if generation == self._generation and self._state.clients.get(resource) is client:
                    del self._state.clients[resource]  # deregisterClient(name)
            return error, None

        try:
            if not self._dial(channel, generation):
                return fail("failed to dial device plugin: context deadline exceeded")
            try:
                options = self._invoke(
                    client, "GetDevicePluginOptions", client.stub.GetDevicePluginOptions, pb.Empty(), self.options_timeout
                )
            except grpc.RpcError as e:
                return fail(f"failed to get device plugin options: {go_error(e)}")
            except ValueError as e:  # channel closed under us (kubelet stopping)
                return fail(f"failed to get device plugin options: {e}")
            client.options = options
            with self._lock:
                if generation != self._generation:
                    client.close()
                    return "kubelet is shutting down", None
                self._state.endpoints[resource] = Endpoint(resource, client, options)
                self._clients.add(client)
                thread = threading.Thread(
                    target=self._run_client, args=(client,), name=f"kubelet-peer-law-{resource}", daemon=True
                )
                client.thread = thread
                self._threads.add(thread)
            return None, thread
        finally:
            with self._lock:
                self._pending_channels.discard(channel)

    def _dial(self, channel: grpc.Channel, generation: int) -> bool:
        """grpc.DialContext(..., WithBlock) with the dial timeout."""
        fut = grpc.channel_ready_future(channel)
        deadline = time.monotonic() + self.dial_timeout
        with self._lock:
            self._dialing.add(channel)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or generation != self._generation:
                    return False
                try:
                    fut.result(timeout=min(0.05, remaining))
                    return True
                except grpc.FutureTimeoutError:
                    continue
                except Exception:
                    return False
        finally:
            fut.cancel()
            # grpc polls the channel from a thread of its own until the future is cancelled;
            # shutdown waits for this before closing the channel ("Channel closed!" otherwise).
            with self._lock:
                self._dialing.discard(channel)
