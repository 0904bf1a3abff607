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
from nvdp_node.app import check_cli, config_cli
from nvdp_node.adapters.host.paths import HostRoot
from nvdp_node.app.settings import HealthSettings, ServeSettings
from nvdp_node.config import Config, ConfigError, LoadedConfig, load_config
from nvdp_node.domain.errors import EX_CONFIG, HostCheckFailed, PermanentError
from nvdp_node.domain.health_policy import HealthPolicy, RecoveryPolicy

DESCRIPTION = """\
nvdp advertises this node's NVIDIA GPUs to kubelet through the device plugin
API v1beta1 (resource nvidia.com/gpu by default), keeps them registered across
kubelet restarts and reports GPU health. It runs as the systemd service
nvdp.service and is configured by /etc/nvdp/config.toml.
"""

EXIT_CODES = """\
exit codes:
  0   stopped normally (SIGTERM/SIGINT), or the command succeeded
  1   unexpected internal error
  2   bad command line
  69  NVML unavailable (driver missing or not loaded) and fail_on_init_error is true
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
        "kubelet restarts. SIGHUP reloads the configuration; SIGTERM stops and removes the socket.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_override_flags(serve)
    _add_host_flags(serve)
    serve.set_defaults(func=cmd_serve)

    devices = sub.add_parser(
        "devices",
        help="show the GPUs nvdp would advertise",
        description="Enumerate GPUs through NVML exactly as `nvdp serve` does and print them.",
    )
    devices.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_host_flags(devices)
    devices.set_defaults(func=cmd_devices)

    version = sub.add_parser("version", help="print nvdp's version")
    version.set_defaults(func=lambda args: print(f"nvdp {__version__}") or 0)

    config_cli.register(sub)
    check_cli.register(sub)
    return parser


def _add_override_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resource-name", metavar="NAME", help="overrides resource_name")
    p.add_argument("--socket-dir", metavar="DIR", help="overrides kubelet.socket_dir")
    p.add_argument("--kubelet-socket", metavar="PATH", help="overrides kubelet.kubelet_socket")


def _add_host_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sysfs-root", type=Path, default=Path("/sys"), metavar="DIR",
        help="where sysfs is mounted, for NUMA affinity (default: /sys)",
    )
    p.add_argument(
        "--dev-root", type=Path, default=Path("/dev"), metavar="DIR",
        help="where /dev is, for control device nodes (default: /dev)",
    )


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    pairs = {
        "resource_name": getattr(args, "resource_name", None),
        "kubelet.socket_dir": getattr(args, "socket_dir", None),
        "kubelet.kubelet_socket": getattr(args, "kubelet_socket", None),
    }
    return {k: v for k, v in pairs.items() if v is not None}


def serve_settings(config: Config, host: HostRoot) -> ServeSettings:
    return ServeSettings(
        resource_name=config.resource_name,
        socket_dir=Path(config.kubelet.socket_dir),
        kubelet_socket=Path(config.kubelet.kubelet_socket_path),
        fail_on_init_error=config.plugin.fail_on_init_error,
        device_list_strategy=tuple(config.plugin.device_list_strategy),
        device_id_strategy=str(config.plugin.device_id_strategy),
        pass_device_specs=config.plugin.pass_device_specs,
        nvidia_dev_root=str(config.plugin.dev_root_path),
        health=HealthSettings(
            enabled=config.health.enabled,
            xid_events=config.health.xid_events,
            policy=HealthPolicy(
                ignored_xids=frozenset(config.health.ignored_xids),
                force_enabled_xids=frozenset(config.health.force_enabled_xids),
                unattributed_marks_all=config.health.unattributed_events == "mark-all",
            ),
            recovery=RecoveryPolicy(
                enabled=config.health.recovery, quiet_period=float(config.health.recovery_quiet_period)
            ),
        ),
        host=host,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from nvdp_node.app.logs import setup_logging
    from nvdp_node.app.supervisor import Supervisor

    host = HostRoot(sysfs_dir=str(args.sysfs_root), dev_dir=str(args.dev_root))

    def load() -> LoadedConfig:
        loaded = load_config(args.config, overrides=_overrides(args))
        for notice in loaded.notices:
            print(f"nvdp: {notice}", file=sys.stderr)
        return loaded

    def reload() -> ServeSettings:
        config = load().config
        check_host(config, host)
        return serve_settings(config, host)

    try:
        loaded = load()
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EX_CONFIG
    setup_logging(loaded.config.logging.level, loaded.config.logging.format)
    policy = loaded.config.runtime_check.policy
    try:
        if policy == "fail":  # must decide before serving
            check_host(loaded.config, host)
    except HostCheckFailed as err:
        from nvdp_node.adapters.systemd_notify import Notifier

        logging.getLogger("nvdp").error("%s", err)
        notifier = Notifier()
        notifier.set_status(f"Failed: {err}")
        notifier.close()
        return err.exit_code
    supervisor = Supervisor(
        serve_settings(loaded.config, host),
        reload_settings=reload,
        # "warn" findings are only logged: run them off the start-up path, once registered.
        after_registration=(lambda: _background_checks(loaded.config, host)) if policy == "warn" else None,
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

    try:
        inventory = nvml.discover(sysfs_root=args.sysfs_root)
    except PermanentError as err:
        print(f"nvdp: {err}", file=sys.stderr)
        return err.exit_code
    if args.json:
        print(json.dumps(_inventory_json(inventory), indent=2))
        return 0
    print(f"driver {inventory.driver_version}, CUDA {inventory.cuda_driver_version or 'unknown'}, "
          f"{len(inventory.gpus)} GPU(s)")
    rows = [("INDEX", "ID", "NAME", "MEMORY", "NUMA", "MIG", "PCI BUS ID")]
    for g in inventory.gpus:
        rows.append((str(g.index), g.uuid, g.name, f"{g.memory_total // 2**20} MiB",
                     "-" if g.numa_node is None else str(g.numa_node), "on" if g.mig_enabled else "off",
                     g.pci_bus_id))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    for skipped in inventory.skipped:
        print(f"skipped {skipped} (display device)")
    return 0


def _inventory_json(inventory) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {
        "driver_version": inventory.driver_version,
        "cuda_driver_version": inventory.cuda_driver_version,
        "devices": [
            {
                "id": g.uuid, "index": g.index, "name": g.name, "minor": g.minor,
                "pci_bus_id": g.pci_bus_id, "memory_total": g.memory_total,
                "numa_node": g.numa_node, "compute_capability": g.compute_capability,
                "mig_enabled": g.mig_enabled,
            }
            for g in inventory.gpus
        ],
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
