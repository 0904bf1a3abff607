"""``nvdp check``: say exactly what stands between this node and GPU pods.

``nvdp_node.app.cli`` calls :func:`register` with its subparsers and
dispatches to ``args.func(args)``, which returns the exit code. The checks
themselves live in ``nvdp_node.app.host_checks``; this module loads the
configuration (an invalid one is itself a finding, and exit 78), picks the
output format and decides about colour.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path
from typing import TextIO

from nvdp_node.config import Config, ConfigError, load_config
from nvdp_node.domain.checks import EXIT_CONFIG_INVALID, EXIT_ERRORS, EXIT_OK, parse_version

DESCRIPTION = """\
Check everything a GPU pod on this node depends on and say, for each check,
ok / warning / error / skipped, the evidence, and the fix:

  config.*   the nvdp configuration, as `nvdp config validate`
  driver.*   libnvidia-ml.so.1 loads, NVML initialises, the driver version is
             at least runtime_check.min_driver_version (384.81), /dev/nvidiactl
             and /dev/nvidiaN exist
  runtime.*  docker (/etc/docker/daemon.json), containerd
             (/etc/containerd/config.toml, layouts 1-3) and CRI-O
             (crio.conf + crio.conf.d) run nvidia-container-runtime by
             default; CDI specs when a cdi-* strategy is used
  cdi.spec   nvdp's own CDI spec names every device it advertises (with a
             cdi-* strategy)
  toolkit.*  nvidia-container-runtime, nvidia-ctk, nvidia-container-cli, and
             the /etc/nvidia-container-runtime/config.toml settings the
             device list strategy needs
  kubelet.*  the device-plugin directory is writable, kubelet.sock exists,
             the kubelet version (>= 1.10) and features needing newer ones

Each check id is a heading in docs/troubleshooting.md. Nothing is changed on
the host. runtime_check.engines chooses the engines ("auto": those installed).
"""

EXIT_CODES = f"""\
exit codes:
  {EXIT_OK}   no errors (warnings and skipped checks allowed)
  {EXIT_ERRORS}   at least one check is an error: GPU pods will not work yet
  2   bad command line
  {EXIT_CONFIG_INVALID}  the configuration is invalid (the other checks still ran, with defaults)
"""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``check`` to the ``nvdp`` parser."""
    check = subparsers.add_parser(
        "check",
        help="check the driver, container runtime, kubelet and config for GPU pods",
        description=DESCRIPTION,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON (never coloured)")
    check.add_argument(
        "--root", type=Path, default=Path("/"), metavar="DIR",
        help=textwrap.dedent("""\
            read host files and binaries under DIR instead of / (a mounted image, a
            fixture tree); the config default becomes DIR/etc/nvdp/config.toml and
            DIR's kubelet is run for --version. NVML still reports this machine's driver."""),
    )
    check.add_argument(
        "--min-driver-version", type=_version_arg, metavar="V",
        help="oldest acceptable driver, e.g. 470.57.02 (default: runtime_check.min_driver_version)",
    )
    check.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    # Imported here, not at the top: every `nvdp serve` start imports this module for argparse.
    from nvdp_node.adapters.host import HostRoot
    from nvdp_node.app.host_checks import config_check, config_path_for, render_json, render_table, run_checks

    paths = HostRoot(root=args.root)
    try:
        loaded = load_config(config_path_for(paths, getattr(args, "config", None)))
        config, config_result = loaded.config, config_check(loaded)
    except ConfigError as err:
        config, config_result = Config(), config_check(err)
    report = run_checks(config, paths, min_driver_version=args.min_driver_version, config_result=config_result)
    if args.json:
        sys.stdout.write(render_json(report))
    else:
        sys.stdout.write(render_table(report, color=use_color(sys.stdout)))
    return report.exit_code


def use_color(stream: TextIO) -> bool:
    """Colour only for a terminal, and never with NO_COLOR set or TERM=dumb."""
    if "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _version_arg(text: str) -> str:
    if parse_version(text) is None or not text.strip()[0].isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a version like 384.81")
    return text.strip()
