"""The Register call to kubelet's ``v1beta1.Registration`` service.

Called by a resource's :class:`~nvdp_node.app.resource_plugin.ResourcePlugin`,
in its own task, after the plugin server proved it serves. Kubelet
dials back and calls GetDevicePluginOptions before Register returns (up to
10 s for the dial alone), hence the generous deadline.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from nvdp_node.adapters.plugin_server import unix_target
from nvdp_node.adapters.servicer import OPTIONS
from nvdp_node.api import deviceplugin_v1beta1_pb2 as pb
from nvdp_node.api import deviceplugin_v1beta1_pb2_grpc as pb_grpc
from nvdp_node.domain.errors import TemporaryError

API_VERSION = "v1beta1"
REGISTER_TIMEOUT = 20.0


class RegistrationError(TemporaryError):
    """Kubelet refused or could not be reached; retried with back-off."""


async def register(
    kubelet_socket: Path, *, endpoint: str, resource_name: str, timeout: float = REGISTER_TIMEOUT
) -> None:
    request = pb.RegisterRequest(
        version=API_VERSION, endpoint=endpoint, resource_name=resource_name, options=OPTIONS
    )
    # Subchannels of its own: grpc's global pool would hand this channel the
    # connect back-off of an earlier attempt on a kubelet.sock that has since come back.
    channel_options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(unix_target(kubelet_socket), options=channel_options) as channel:
        try:
            await pb_grpc.RegistrationStub(channel).Register(request, timeout=timeout)
        except grpc.aio.AioRpcError as err:
            raise RegistrationError(
                f"Register with {kubelet_socket} failed: {err.code().name}: {err.details()}"
            ) from err
