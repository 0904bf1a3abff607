"""ListAndWatch accounting: device updates, and what the end of a stream does (kubelet-api.md §2.2-2.4).

``StreamsMixin`` is a role of ``KubeletPeer``; registration.py starts ``_run_client`` on a thread
per accepted registration. Each message replaces the resource's device set (healthy only if
exactly ``"Healthy"``) and rewrites the checkpoint. When a stream ends kubelet runs
``PluginDisconnected``: every device unhealthy (allocatable 0, capacity kept) and the endpoint's
stop time recorded; kubelet never calls ListAndWatch again by itself.

Which registration a stream's end disconnects depends on the kubelet version:

* kubelet <= 1.35 (``stale_stream_disconnects=True``, the default, as observed with 1.32): the
  handler remembers one client per resource name, the newest. When *any* stream of the
  resource ends, that newest client is disconnected. So when a plugin registers again while
  its old stream is still open, the old stream's end takes the new registration down: the
  new stream is closed from kubelet's side, capacity stays, allocatable drops to 0, and only
  another Register brings the resource back.
* kubelet >= 1.36 (``stale_stream_disconnects=False``, PR #135437): a replaced stream's end
  touches nothing.
"""

from __future__ import annotations

import threading
import time

import grpc

from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb

from .core import PeerCore
from .records import HEALTHY, RpcCall, go_error
from .state import PluginClient


class StreamsMixin(PeerCore):
    """Kubelet's ``client.Run``, ``genericDeviceUpdateCallback`` and ``PluginDisconnected``."""

    def _run_client(self, client: PluginClient) -> None:
        """``client.Run``: consume ListAndWatch until it ends, then disconnect (see the module docstring)."""
        error = "EOF"
        try:
            call = RpcCall("ListAndWatch", client.resource, client.socket_path, pb.Empty(), time.monotonic())
            self._record(call)
            stream = client.stub.ListAndWatch(pb.Empty())
            client.set_stream(stream)
            for resp in stream:
                self._on_devices(client, resp)
        except grpc.RpcError as e:
            error = go_error(e)
        except Exception as e:  # e.g. "Cannot invoke RPC on closed channel!"
            error = str(e) or type(e).__name__
        finally:
            try:
                # before anything slow: a plugin re-registering meanwhile would be taken down
                self._on_stream_end(client)
            finally:
                self._log(
                    f"ListAndWatch ended unexpectedly for device plugin {client.resource} ({client.socket_path}): {error}"
                )
                client.close()
                with self._lock:
                    self._threads.discard(threading.current_thread())

    def _is_current(self, client: PluginClient) -> bool:
        ep = self._state.endpoints.get(client.resource)
        return client.generation == self._generation and ep is not None and ep.client is client

    def _on_devices(self, client: PluginClient, resp: pb.ListAndWatchResponse) -> None:
        """``genericDeviceUpdateCallback``: the message replaces the whole device set."""
        with self._lock:
            client.messages += 1
            if client.disconnected or not self._is_current(client):
                self._log(f"ignoring ListAndWatch update from replaced endpoint {client.socket_path}")
                return
            res = client.resource
            healthy: set[str] = set()
            unhealthy: set[str] = set()
            devices: dict[str, pb.Device] = {}
            for dev in resp.devices:
                copy = pb.Device()
                copy.CopyFrom(dev)
                devices[dev.ID] = copy
                (healthy if dev.health == HEALTHY else unhealthy).add(dev.ID)
            self._state.healthy[res] = healthy
            self._state.unhealthy[res] = unhealthy
            self._state.all_devices[res] = devices
            self._write_checkpoint_locked()
        self._refresh()

    def _on_stream_end(self, client: PluginClient) -> None:
        """``runClient`` after ``Run`` returns: pick the client to disconnect, then disconnect it."""
        with self._lock:
            self._clients.discard(client)
            victim: PluginClient | None = None
            if client.generation != self._generation or client.disconnected:
                pass  # a previous kubelet's stream, or one kubelet itself already disconnected
            elif self.stale_stream_disconnects:
                victim = self._state.clients.get(client.resource)
            elif self._is_current(client):
                victim = client
            if victim is not None and victim is not client:
                self._log(
                    f"stream of replaced registration {client.socket_path} ended: "
                    f"disconnecting {client.resource} client {victim.socket_path}"
                )
        if victim is not None:
            self._disconnect(victim)
        else:
            self._refresh()

    def _disconnect(self, client: PluginClient) -> None:
        """``disconnectClient``: forget the client, ``PluginDisconnected``, then close its stream."""
        with self._lock:
            st = self._state
            if st.clients.get(client.resource) is client:
                del st.clients[client.resource]
            client.disconnected = True
            if client.generation == self._generation and client.resource in st.endpoints:
                st.mark_unhealthy(client.resource)
                self._write_checkpoint_locked()
            self._cond.notify_all()
        client.cancel()  # closed from kubelet's side; its stream's end then changes nothing
        self._refresh()

    def drop_stream(self, resource: str) -> None:
        """Disconnect ``resource``'s plugin from kubelet's side, without a restart.

        Kubelet forgets the client and marks the devices unhealthy before it closes the
        stream, as its ``disconnectClient`` does; it never calls ListAndWatch again, so
        only a new Register brings the resource back.
        """
        self._disconnect(self._current_client(resource))
