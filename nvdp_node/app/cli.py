"""The ``nvdp`` command line: serve, devices, config, version.

Entry point of the console script and of the systemd unit. Commands load the
configuration once (file < environment < flags), then hand plain settings to
the supervisor or the adapters. Exit codes are listed in `nvdp --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from nvdp_node import __version__
from nvdp_node.app import cdi_cli, check_cli, config_cli, status_cli
from nvdp_node.adapters.host.paths import HostRoot
from nvdp_node.app.settings import MpsHost, ServeSettings
from nvdp_node.config import Config, ConfigError, LoadedConfig, load_config
from nvdp_node.domain.errors import EX_CONFIG, HostCheckFailed, PermanentError

DESCRIPTION = """\
nvdp advertises this node's NVIDIA GPUs to kubelet through the device plugin
API v1beta1 (resource nvidia.com/gpu by default), keeps them registered across
kubelet restarts and reports GPU health. It runs as the systemd service
nvdp.service and is configured by /etc/nvdp/config.toml.
"""

EXIT_CODES = """\
exit codes:
  0   stopped normally (SIGTERM/SIGINT/SIGQUIT), or the command succeeded
  1   unexpected internal error
  2   bad command line
  69  NVML unavailable (driver missing or not loaded): always for `devices`,
      for `serve` only when fail_on_init_error is true
  72  a host check failed and runtime_check.policy is "fail" (see `nvdp check`)
  78  invalid configuration (systemd does not restart nvdp for this code)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nvdp",
        description=DESCRIPTION,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="configuration file (default: $NVDP_CONFIG or /etc/nvdp/config.toml)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the device plugin daemon (what nvdp.service runs)",
        description="Discover GPUs through NVML, serve the v1beta1 DevicePlugin service on "
        "<socket_dir>/nvidia-<name>.sock, register with kubelet and re-register whenever "
        "kubelet restarts. SIGHUP reloads the configuration (a bad one is reported and the running one "
        "kept); SIGTERM, SIGINT or SIGQUIT stop serving and remove the socket.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_override_flags(serve)
    _add_host_flags(serve)
    serve.add_argument("--state-file", type=Path, default=status_cli.STATE_FILE, metavar="PATH",
                       help=f"where `nvdp status` finds the daemon's state (default: {status_cli.STATE_FILE})")
    serve.set_defaults(func=cmd_serve)

    devices = sub.add_parser(
        "devices",
        help="show the GPUs nvdp would advertise",
        description="Enumerate GPUs through NVML exactly as `nvdp serve` does and print them, "
        "including GPUs in error (advertised Unhealthy) and GPUs NVML cannot identify (not advertised), "
        "then every resource serve would advertise under the configuration (plugin.mig_strategy, "
        "[resources]) with its device ids. Exits 0 whenever the enumeration itself worked, 69 when "
        "NVML is unavailable, 78 when the configuration is invalid.",
    )
    devices.add_argument("--json", action="store_true", help="print JSON instead of a table")
    devices.add_argument(  # the only host path discovery reads (the device nodes are serve's concern)
        "--sysfs-root", type=Path, default=Path("/sys"), metavar="DIR",
        help="where sysfs is mounted, for NUMA affinity (default: /sys)",
    )
    devices.add_argument(
        "--proc-root", type=Path, default=Path("/proc"), metavar="DIR",
        help="where /proc is, for the MIG capability minors (default: /proc)",
    )
    devices.set_defaults(func=cmd_devices)

    version = sub.add_parser("version", help="print nvdp's version")
    version.set_defaults(func=lambda args: print(f"nvdp {__version__}") or 0)

    config_cli.register(sub)
    check_cli.register(sub)
    status_cli.register(sub)
    cdi_cli.register(sub)
    return parser


def _add_override_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resource-name", metavar="NAME", help="overrides resource_name")
    p.add_argument("--socket-dir", metavar="DIR", help="overrides kubelet.socket_dir")
    p.add_argument("--kubelet-socket", metavar="PATH", help="overrides kubelet.kubelet_socket")
    p.add_argument(
        "--pod-resources-socket", metavar="PATH",
        help='overrides kubelet.pod_resources_socket ("" = do not consult PodResources)',
    )


def _add_host_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sysfs-root", type=Path, default=Path("/sys"), metavar="DIR",
        help="where sysfs is mounted, for NUMA affinity (default: /sys)",
    )
    p.add_argument(
        "--dev-root", type=Path, default=Path("/dev"), metavar="DIR",
        help="where /dev is, for control device nodes (default: /dev)",
    )
    p.add_argument(
        "--proc-root", type=Path, default=Path("/proc"), metavar="DIR",
        help="where /proc is, for the MIG capability minors (default: /proc)",
    )
    p.add_argument(
        "--systemctl", default="systemctl", metavar="PATH",
        help="systemctl that starts the nvdp-mps@ units of MPS-shared resources (default: systemctl)",
    )
    p.add_argument(
        "--mps-control", default="nvidia-cuda-mps-control", metavar="PATH",
        help="the MPS control client used to probe the MPS daemons (default: nvidia-cuda-mps-control)",
    )
    p.add_argument(
        "--mps-env-dir", type=Path, default=Path("/run/nvdp/mps"), metavar="DIR",
        help="where the nvdp-mps@ units' environment files are written (default: /run/nvdp/mps)",
    )


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    pairs = {
        "resource_name": getattr(args, "resource_name", None),
        "kubelet.socket_dir": getattr(args, "socket_dir", None),
        "kubelet.kubelet_socket": getattr(args, "kubelet_socket", None),
        "kubelet.pod_resources_socket": getattr(args, "pod_resources_socket", None),
    }
    return {k: v for k, v in pairs.items() if v is not None}


def cmd_serve(args: argparse.Namespace) -> int:
    from nvdp_node.app.logs import setup_logging
    from nvdp_node.app.publish import Publisher
    from nvdp_node.app.supervisor import Supervisor

    host = HostRoot(sysfs_dir=str(args.sysfs_root), dev_dir=str(args.dev_root), proc_dir=str(args.proc_root))
    log = logging.getLogger("nvdp")

    def load(*, missing_ok: bool) -> LoadedConfig:
        # serve refuses a config that non-root users could change (it runs as root).
        return load_config(args.config, overrides=_overrides(args), secure=True, missing_ok=missing_ok)

    mps = MpsHost(systemctl=args.systemctl, control=args.mps_control, env_dir=args.mps_env_dir)

    def reload() -> ServeSettings:
        """Runs on a thread: read, validate and check; any error keeps the running configuration."""
        loaded = load(missing_ok=False)  # a file deleted since start is an error, not "defaults"
        for notice in loaded.notices:
            log.warning("%s", notice)
        check_host(loaded.config, host)  # under policy "fail" a failing check rejects the reload
        return ServeSettings.from_config(loaded.config, host, mps)  # the flags hold across reloads

    def reloaded(settings: ServeSettings) -> None:
        setup_logging(settings.log_level, settings.log_format)
        log.info("effective configuration: %s", settings.summary)

    try:
        loaded = load(missing_ok=True)
    except ConfigError as err:
        print(err, file=sys.stderr)  # logging is not set up without a config; journald keeps stderr
        return EX_CONFIG
    settings = ServeSettings.from_config(loaded.config, host, mps)
    setup_logging(settings.log_level, settings.log_format)
    for notice in loaded.notices:
        log.warning("%s", notice)
    log.info("nvdp %s starting; effective configuration: %s", __version__, settings.summary)
    policy = loaded.config.runtime_check.policy
    try:
        if policy == "fail":  # must decide before serving
            check_host(loaded.config, host)
    except HostCheckFailed as err:
        from nvdp_node.adapters.systemd_notify import Notifier

        log.error("%s", err)
        notifier = Notifier()
        notifier.set_status(f"Failed: {err}")
        notifier.close()
        return err.exit_code
    supervisor = Supervisor(
        settings,
        loader=reload,
        on_reloaded=reloaded,
        # "warn" findings are only logged: run them off the start-up path, once registered.
        after_registration=(lambda: _background_checks(loaded.config, host)) if policy == "warn" else None,
        publisher=Publisher(state_file=args.state_file),
    )
    return asyncio.run(supervisor.run())


def _background_checks(config: Config, host: HostRoot) -> None:
    try:
        check_host(config, host)
    except Exception:  # a thread nobody joins: say it, don't lose it
        logging.getLogger("nvdp.check").exception("the host checks could not run")


def check_host(config: Config, host: HostRoot) -> None:
    """The start/reload host checks under ``runtime_check.policy``: log findings; raise if policy is fail."""
    from nvdp_node.app.host_checks import serve_time_checks
    from nvdp_node.domain.checks import Status

    policy = config.runtime_check.policy
    if policy == "off":
        return
    log = logging.getLogger("nvdp.check")
    report = serve_time_checks(config, host)
    failed = []
    for result in report.results:
        if result.status in (Status.WARNING, Status.ERROR):
            # Under "warn" nothing stops: findings are warnings, whatever their severity.
            level = logging.ERROR if result.status is Status.ERROR and policy == "fail" else logging.WARNING
            log.log(level, "%s: %s (%s); fix: %s", result.id, result.title, "; ".join(result.evidence), result.fix)
            if result.status is Status.ERROR:
                failed.append(result.id)
    if failed and policy == "fail":
        raise HostCheckFailed(
            f"host checks failed: {', '.join(failed)} (runtime_check.policy = \"fail\"; see `nvdp check`)"
        )


def cmd_devices(args: argparse.Namespace) -> int:
    from nvdp_node.adapters import nvml
    from nvdp_node.config import naming_from_config
    from nvdp_node.domain.resources import plan_devices

    try:
        config = load_config(args.config).config
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EX_CONFIG
    host = HostRoot(sysfs_dir=str(args.sysfs_root), proc_dir=str(args.proc_root))
    try:
        inventory = nvml.discover(host=host)
    except PermanentError as err:
        print(f"nvdp: {err}", file=sys.stderr)
        return err.exit_code
    plan = plan_devices(inventory, naming_from_config(config))
    if args.json:
        print(json.dumps({**_inventory_json(inventory), **_plan_json(plan)}, indent=2))
        return 0
    found = len(inventory.gpus)
    counted = f"{found} GPU(s)" if found == inventory.expected else f"{found} of {inventory.expected} GPU(s)"
    print(f"driver {inventory.driver_version}, CUDA {inventory.cuda_driver_version or 'unknown'}, {counted}")
    rows = [("INDEX", "ID", "NAME", "MEMORY", "NUMA", "MIG", "PCI BUS ID", "STATE")]
    for g in inventory.gpus:
        rows.append((str(g.index), g.uuid, g.name, f"{g.memory_total // 2**20} MiB" if g.memory_total else "-",
                     "-" if g.numa_node is None else str(g.numa_node), "on" if g.mig_enabled else "off",
                     g.pci_bus_id or "-", "ok" if g.error is None else "error"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    for g in inventory.gpus:
        if g.error is not None:
            print(f"error GPU {g.index} ({g.uuid}): {g.error} (advertised Unhealthy)")
    for missing in inventory.unidentified:
        print(f"unidentified GPU at {missing} (not advertised)")
    for skipped in inventory.skipped:
        print(f"skipped {skipped} (display device)")
    _print_plan(plan, config.plugin.mig_strategy)
    return 0


def _print_plan(plan, strategy: str) -> None:  # type: ignore[no-untyped-def]
    """The resources as serve would advertise them, MIG devices grouped by resource."""
    print(f"\nresources (mig_strategy {strategy}):")
    for name, devices in plan.resources.items():
        print(f"  {name}: {len(devices)} device(s)")
        for d in devices:
            numa = "-" if d.numa_node is None else str(d.numa_node)
            print(f"    {d.id}  index {d.index}  {d.model}  NUMA {numa}")
    if not plan.resources:
        print("  none")
    for warning in plan.warnings:
        print(f"warning: {warning}")
    for error in plan.errors:
        print(f"error: {error} (not advertised)")


def _plan_json(plan) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {
        "resources": {
            name: [
                {"id": d.id, "index": d.index, "gpu_uuid": d.gpu_uuid, "model": d.model, "numa_node": d.numa_node,
                 "gpu_instance": d.gpu_instance, "compute_instance": d.compute_instance}
                for d in devices
            ]
            for name, devices in plan.resources.items()
        },
        "plan_warnings": list(plan.warnings),
        "plan_errors": list(plan.errors),
    }


def _inventory_json(inventory) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {
        "driver_version": inventory.driver_version,
        "cuda_driver_version": inventory.cuda_driver_version,
        "devices": [
            {
                "id": g.uuid, "index": g.index, "name": g.name, "minor": g.minor,
                "pci_bus_id": g.pci_bus_id, "memory_total": g.memory_total,
                "numa_node": g.numa_node, "compute_capability": g.compute_capability,
                "mig_enabled": g.mig_enabled, "error": g.error,
            }
            for g in inventory.gpus
        ],
        "expected": inventory.expected,
        "unidentified": list(inventory.unidentified),
        "skipped": list(inventory.skipped),
    }


def main(argv: list[str] | None = None) -> int:
    # gRPC core logs connection chatter at INFO to stderr; keep journald readable.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
