"""``nvdp cdi generate``: print or write the CDI spec ``nvdp serve`` would write, now.

``nvdp_node.app.cli`` calls :func:`register` with its subparsers. The spec is
built exactly as the daemon builds it (``app/cdi_specs.build_spec`` over the
devices ``plan_resources`` gives for this configuration), so an operator can
see it before switching ``device_list_strategy`` to a CDI one, or write it
into an image or another spec directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nvdp_node.adapters.cdi_writer import spec_json, write_spec, write_spec_file
from nvdp_node.adapters.host.paths import HostRoot
from nvdp_node.config import ConfigError, load_config
from nvdp_node.domain.errors import EX_CONFIG, PermanentError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cdi = subparsers.add_parser("cdi", help="the node's CDI spec")
    sub = cdi.add_subparsers(dest="cdi_command", metavar="COMMAND", required=True)
    generate = sub.add_parser(
        "generate",
        help="print or write the CDI spec nvdp serve writes",
        description="Enumerate the GPUs through NVML, find the driver's files under plugin.nvidia_driver_root "
        "and print the CDI spec (k8s.device-plugin.nvidia.com/gpu) that nvdp serve writes with a cdi-* "
        "device_list_strategy. Problems (no hook, no ld cache) go to stderr. Exits 0 when the spec was "
        "produced, 69 when NVML is unavailable, 78 when the configuration is invalid, 1 when it cannot be written.",
    )
    generate.add_argument(
        "--output", default="-", metavar="PATH",
        help="- (the default) prints it; a directory gets k8s.device-plugin.nvidia.com-gpu.json; "
        "any other path is written as that file (atomically, mode 0644)",
    )
    generate.add_argument("--sysfs-root", type=Path, default=Path("/sys"), metavar="DIR",
                          help="where sysfs is mounted (default: /sys)")
    generate.add_argument("--dev-root", type=Path, default=Path("/dev"), metavar="DIR",
                          help="where /dev is, for the control device nodes (default: /dev)")
    generate.add_argument("--proc-root", type=Path, default=Path("/proc"), metavar="DIR",
                          help="where /proc is, for the MIG capability minors (default: /proc)")
    generate.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    from nvdp_node.adapters import nvml
    from nvdp_node.app.cdi_specs import build_spec
    from nvdp_node.app.resource_plugin import plan_resources
    from nvdp_node.app.settings import MpsHost, ServeSettings

    try:
        config = load_config(args.config).config
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EX_CONFIG
    host = HostRoot(sysfs_dir=str(args.sysfs_root), dev_dir=str(args.dev_root), proc_dir=str(args.proc_root))
    settings = ServeSettings.from_config(config, host, MpsHost())  # MPS units play no part in the spec
    try:
        inventory = nvml.discover(host=host)
    except PermanentError as err:
        print(f"nvdp: {err}", file=sys.stderr)
        return err.exit_code
    planned = plan_resources(settings, inventory)
    devices = [d for _name, state in planned.resources.values() for d in state.devices.by_id.values()]
    built = build_spec(settings.cdi, devices, settings.policy.device_id_strategy, inventory.driver_version)
    for problem in built.problems:
        print(f"nvdp: warning: {problem}", file=sys.stderr)
    if not settings.policy.uses_cdi:
        print("nvdp: note: plugin.device_list_strategy has no cdi-* strategy, so nvdp serve writes no spec",
              file=sys.stderr)
    if args.output == "-":
        sys.stdout.write(spec_json(built.spec))
        return 0
    output = Path(args.output)
    try:
        path = write_spec(output, built.spec)[0] if output.is_dir() else write_spec_file(output, built.spec)
    except OSError as err:
        print(f"nvdp: cannot write {output}: {err.strerror or err}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({len(built.names)} devices)", file=sys.stderr)
    return 0
