"""nvdp: the NVIDIA Kubernetes device plugin as a host systemd service."""

__version__ = "0.1.0"
