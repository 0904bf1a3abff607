"""metrics.listen: is nvdp's HTTP metrics endpoint reachable from beyond this host?

The metrics name GPUs and the pods holding them. The config schema already
refuses a non-loopback ``metrics.listen`` unless ``metrics.allow_remote`` is
set; this rule makes the explicit choice visible in ``nvdp check`` (a
warning with what to check), so it is never made by accident.
"""

from __future__ import annotations

from nvdp_node.domain.checks.report import CheckResult, Status
from nvdp_node.domain.listen_address import ListenError, is_loopback, parse_listen

METRICS_LISTEN_CHECK_ID = "metrics.listen"
TITLE = "the metrics endpoint is reachable from this host only"


def evaluate_metrics_listen(listen: str) -> CheckResult:
    if not listen:
        return CheckResult(METRICS_LISTEN_CHECK_ID, TITLE, Status.SKIPPED, ("no HTTP endpoint (metrics.listen = \"\")",))
    try:
        host, port = parse_listen(listen)
    except ListenError as err:  # the schema refuses this first; kept for a hand-made Config
        return CheckResult(METRICS_LISTEN_CHECK_ID, TITLE, Status.ERROR, (f"metrics.listen {listen!r}: {err}",))
    if is_loopback(host):
        return CheckResult(METRICS_LISTEN_CHECK_ID, TITLE, Status.OK, (f"metrics are served on {listen} (loopback)",))
    return CheckResult(
        METRICS_LISTEN_CHECK_ID, TITLE, Status.WARNING,
        (f"metrics are served on {listen}, beyond loopback (metrics.allow_remote = true)",
         "the metrics name every GPU and the namespace, pod and container holding it"),
        f"restrict port {port} with a firewall or the unit's IPAddressAllow= (docs/operations.md), or listen on "
        "127.0.0.1 and let a local agent scrape",
    )
