"""``nvdp status``: what the running daemon serves, and why a device is not on offer.

Reads the state file the daemon keeps (``/run/nvdp/state.json``, written by
``nvdp_node.app.publish``; no RPC, so it works while kubelet or the daemon
hang) and asks ``systemctl is-active nvdp``. Prints a table, or the document
itself with ``--json``; ``--watch`` prints again whenever the state changes.
Exit codes: 0 every resource served and registered, 1 running but not all
of it (waiting for kubelet, a resource that cannot serve), 3 not running
(LSB's "program is not running": unit inactive or failed, no state, or the
state's process gone).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from nvdp_node.adapters.atomic_file import read_text
from nvdp_node.adapters.unit_state import unit_state

STATE_FILE = Path("/run/nvdp/state.json")
EXIT_OK, EXIT_DEGRADED, EXIT_NOT_RUNNING = 0, 1, 3
WATCH_POLL = 1.0

DESCRIPTION = """\
Show what the running nvdp serves: each resource with its devices, health and
registration state (and since when), each device's holder (namespace/pod/
container, from kubelet's PodResources) or why it is not on offer (XID n at
time t, lost, held under another resource name), the last reload and whether
kubelet's socket is there; plus `systemctl is-active nvdp`.
"""
EXIT_CODES = """\
exit codes:
  0  every resource is served and registered with kubelet
  1  nvdp runs, but a resource is not served or not registered (yet)
  3  nvdp is not running (unit inactive or failed, no state file, process gone)
"""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    status = subparsers.add_parser(
        "status", help="show what the running daemon serves, and why a GPU is not on offer",
        description=DESCRIPTION, epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("--json", action="store_true", help="print the state as JSON (with \"unit\" added)")
    status.add_argument("--watch", action="store_true", help="print again whenever the state changes (Ctrl-C ends)")
    status.add_argument("--state-file", type=Path, default=STATE_FILE, metavar="PATH",
                        help=f"the daemon's state file (default: {STATE_FILE})")
    status.add_argument("--systemctl", default="systemctl", metavar="PATH",
                        help="systemctl asked `is-active nvdp` (default: systemctl)")
    status.set_defaults(func=cmd_status)


def load_state(path: Path) -> dict[str, Any] | None:
    text = read_text(path)
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def verdict(doc: dict[str, Any] | None, unit: str) -> int:
    if unit in ("inactive", "failed", "deactivating") or doc is None or doc.get("stopped"):
        return EXIT_NOT_RUNNING
    if unit == "unknown" and not _alive(doc.get("pid")):
        return EXIT_NOT_RUNNING
    resources = doc.get("resources") or []
    if doc.get("serving") and all(r.get("registered") for r in resources):
        return EXIT_OK
    return EXIT_DEGRADED


def _at(stamp: object) -> str:
    if not isinstance(stamp, (int, float)):
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def render(doc: dict[str, Any] | None, unit: str, path: Path) -> str:
    lines = [f"nvdp.service: {unit}"]
    if doc is None:
        lines.append(f"no state in {path}: nvdp is not running (or never ran here)")
        return "\n".join(lines) + "\n"
    lines.append(f"status: {doc.get('status', '')}")
    present = "present" if doc.get("kubelet_socket_present") else "missing"
    lines.append(f"kubelet socket: {doc.get('kubelet_socket', '?')} ({present})")
    reload = doc.get("last_reload")
    if reload:
        result = "ok" if reload.get("ok") else f"failed: {reload.get('error')}"
        lines.append(f"last reload: {_at(reload.get('at'))} {result}")
    else:
        lines.append("last reload: none since start")
    lines.append(f"updated: {_at(doc.get('updated'))} by pid {doc.get('pid')} (nvdp {doc.get('nvdp_version')})")
    resources = doc.get("resources") or []
    if resources:
        lines.append("")
        lines += _table(["RESOURCE", "DEVICES", "HEALTHY", "REGISTRATION", "SINCE"],
                        [[r["resource"], str(r["devices"]), str(r["healthy"]), r["state"], _at(r["since"])]
                         for r in resources])
    devices = doc.get("devices") or []
    if devices:
        lines.append("")
        lines += _table(["DEVICE", "RESOURCE", "INDEX", "MODEL", "HEALTH", "HOLDER / REASON"],
                        [[d["device"], d["resource"], d["index"], d["model"],
                          "Healthy" if d["healthy"] else "Unhealthy",
                          d["reason"] or d.get("holder") or "-"] for d in devices])
    for key, note in sorted((doc.get("notes") or {}).items()):
        lines.append(f"note ({key}): {note}")
    return "\n".join(lines) + "\n"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *rows]]


def _show(args: argparse.Namespace) -> tuple[int, str]:
    doc = load_state(args.state_file)
    unit = unit_state(args.systemctl, "nvdp")
    code = verdict(doc, unit)
    if args.json:
        return code, json.dumps({**(doc or {}), "unit": unit, "exit": code}, indent=1, sort_keys=True) + "\n"
    return code, render(doc, unit, args.state_file)


def cmd_status(args: argparse.Namespace) -> int:
    code, text = _show(args)
    print(text, end="", flush=True)
    if not args.watch:
        return code
    try:
        last = text
        while True:
            time.sleep(WATCH_POLL)
            code, text = _show(args)
            if _without_updated(text) != _without_updated(last):
                print("---", flush=True)
                print(text, end="", flush=True)
            last = text
    except KeyboardInterrupt:
        return code


def _without_updated(text: str) -> str:
    """The heartbeat rewrites the file; only a change of what it says is worth printing."""
    return "\n".join(line for line in text.splitlines() if not line.startswith(("updated:", ' "updated"')))
