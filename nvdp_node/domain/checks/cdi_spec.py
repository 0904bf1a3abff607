"""cdi.spec: nvdp's own CDI spec exists, parses, and names every device nvdp advertises.

``runtime.cdi`` (``toolkit.py``) asks whether the engines find *a* GPU spec;
this rule asks whether *nvdp's* spec would let every Allocate answer be
injected: with a ``cdi-*`` strategy, Allocate names each device
``k8s.device-plugin.nvidia.com/gpu=<id>``, and a name the spec lacks fails
the container's creation. ``nvdp_node.app.cdi_check`` gathers the facts.
"""

from __future__ import annotations

from dataclasses import dataclass

from nvdp_node.domain.checks.report import CheckResult, Status

CHECK_ID = "cdi.spec"
TITLE = "nvdp's CDI spec names every advertised device"
_FIX = "start (or reload) nvdp, which writes it, or `nvdp cdi generate --output DIR`; see the daemon's log"


@dataclass(frozen=True)
class CdiSpecFacts:
    """nvdp's spec file, what it declares (None: unreadable, ``problem`` says why), what nvdp advertises."""

    path: str
    declared: frozenset[str] | None
    problem: str = ""
    advertised: frozenset[str] = frozenset()
    devices_known: bool = True  # False when NVML could not enumerate: nothing to compare with


def evaluate_cdi_spec(facts: CdiSpecFacts, uses_cdi: bool) -> CheckResult:
    if not uses_cdi:
        return CheckResult(CHECK_ID, TITLE, Status.SKIPPED, ("no cdi-* strategy: nvdp writes no CDI spec",))
    if facts.declared is None:
        return CheckResult(CHECK_ID, TITLE, Status.ERROR, (f"{facts.path}: {facts.problem}",), _FIX)
    evidence = (f"{facts.path}: {len(facts.declared)} devices",)
    if not facts.devices_known:
        return CheckResult(CHECK_ID, TITLE, Status.WARNING,
                           (*evidence, "the GPUs could not be enumerated, so the names were not compared"),
                           "see driver.nvml")
    missing = sorted(facts.advertised - facts.declared)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        return CheckResult(CHECK_ID, TITLE, Status.ERROR,
                           (*evidence, f"advertised but not in the spec: {shown}"), _FIX)
    return CheckResult(CHECK_ID, TITLE, Status.OK, (*evidence, f"all {len(facts.advertised)} advertised devices named"))
