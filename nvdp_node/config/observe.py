"""The ``[metrics]`` and ``[labels]`` sections: where nvdp publishes what it knows.

``schema.py`` puts both into :class:`~nvdp_node.config.schema.Config`; the
daemon's publisher (``nvdp_node.app.publish``) reads them, and ``nvdp check``
(``metrics.listen``) flags a non-loopback endpoint. The address rules are
``nvdp_node.domain.listen_address``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from nvdp_node.config.values import AbsolutePath, AbsolutePathOrEmpty, Section, quote
from nvdp_node.domain.listen_address import is_loopback, parse_listen

DEFAULT_TEXTFILE = "/var/lib/prometheus/node-exporter/nvdp.prom"
DEFAULT_FEATURES_FILE = Path("/etc/kubernetes/node-feature-discovery/features.d/nvdp")


class MetricsConfig(Section):
    """Prometheus metrics: a textfile for node_exporter (on), an HTTP endpoint (off)."""

    textfile: AbsolutePathOrEmpty = Field(
        DEFAULT_TEXTFILE,
        description="File rewritten atomically for node_exporter's textfile collector (Debian's "
        "prometheus-node-exporter reads /var/lib/prometheus/node-exporter). \"\" turns it off. A missing "
        "directory is reported in the log and in `nvdp status`, never fatal.",
    )
    textfile_interval: int = Field(
        5, ge=1, le=3600,
        description="Least number of seconds between two rewrites of the textfile; changes in between "
        "are written together. The file is also rewritten every 60 s without a change.",
    )
    allow_remote: bool = Field(
        False,
        description="Let listen be an address other than loopback. The metrics name pods and GPUs; "
        "nvdp.service also needs a drop-in (docs/operations.md).",
    )
    listen: str = Field(
        "",
        description="<address>:<port> of an HTTP endpoint serving /metrics, e.g. \"127.0.0.1:9400\" or "
        "\"[::1]:9400\". \"\": no endpoint. A non-loopback address needs allow_remote = true.",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            return value
        host, _ = parse_listen(value)
        if not is_loopback(host) and not info.data.get("allow_remote", False):
            raise ValueError(f"{quote(host)} is not a loopback address; set metrics.allow_remote = true "
                             "to serve metrics beyond this host, or listen on 127.0.0.1 or [::1]")
        return value


def _features_path(value: Path) -> Path:
    if value.name in ("", ".", ".."):
        raise ValueError("expected a file path")
    return value


class LabelsConfig(Section):
    """GPU facts as node labels, through node-feature-discovery's features.d directory."""

    enabled: bool = Field(
        True,
        description="Write nvidia.com/gpu.* labels (gpu-feature-discovery's names) for NFD. false: "
        "write none, and remove the file nvdp wrote.",
    )
    path: Annotated[AbsolutePath, AfterValidator(_features_path)] = Field(
        DEFAULT_FEATURES_FILE,
        description="The features file, rewritten atomically at start, on reload and when the MIG "
        "layout changes; NFD's nfd-worker turns its key=value lines into node labels.",
    )
