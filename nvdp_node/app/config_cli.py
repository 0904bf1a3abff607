"""``nvdp config show|validate|init|import``: inspect, check and create the configuration.

``nvdp_node.app.cli`` calls :func:`register` with its subparsers and
dispatches to ``args.func(args)``, which returns the exit code. The global
``--config PATH`` option (``args.config``) names the file; None means
$NVDP_CONFIG or /etc/nvdp/config.toml.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

from nvdp_node.config import ConfigError, load_config
from nvdp_node.config.render import render_default, render_effective

EX_OK = 0
EX_CANTCREAT = 73
EX_CONFIG = ConfigError.EXIT_CODE

EXIT_CODES = f"""\
exit codes:
  {EX_OK}   success
  2   bad command line
  {EX_CANTCREAT}  the output file exists (without --force) or cannot be written
  {EX_CONFIG}  invalid configuration; every problem is listed on stderr
"""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``config`` and its subcommands to the ``nvdp`` parser."""
    config = subparsers.add_parser(
        "config",
        help="show, check, create or import the configuration",
        description=textwrap.fill("Work with nvdp's configuration: /etc/nvdp/config.toml (or --config PATH, "
        "or $NVDP_CONFIG), overridden by NVDP_<SECTION>__<KEY> environment variables and "
        "upstream's DP_DISABLE_HEALTHCHECKS / DP_ENABLE_HEALTHCHECKS.", 79),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)

    show = _subcommand(
        sub, "show", "print the effective configuration as TOML",
        "Print the configuration nvdp would run with (defaults, then the file, then the "
        "environment) as TOML. The output is itself a valid config file.",
    )
    show.add_argument(
        "--sources", action="store_true",
        help='add a comment to each key saying where its value came from: "default", "file", '
        '"env NAME" or "cli --flag"',
    )
    show.set_defaults(func=cmd_show)

    validate = _subcommand(
        sub, "validate", "check a configuration file",
        "Check FILE together with the NVDP_* and DP_* environment variables, as `nvdp serve` "
        f"would, and list every problem. Exits {EX_CONFIG} if the configuration is invalid.",
    )
    validate.add_argument(
        "file", nargs="?", type=Path, metavar="FILE",
        help="the file to check (default: --config, $NVDP_CONFIG or /etc/nvdp/config.toml)",
    )
    validate.add_argument(
        "--reload", action="store_true",
        help="judge as a reload of `nvdp serve` does (ExecReload): the file must exist, and a file or "
        "directory that users other than root can change is an error, not a warning",
    )
    validate.set_defaults(func=cmd_validate)

    init = _subcommand(
        sub, "init", "print a fully commented default configuration file",
        "Print the default configuration with every key commented and explained; this is "
        "the file the Debian package installs as /etc/nvdp/config.toml.",
    )
    _add_output(init)
    init.set_defaults(func=cmd_init)

    upstream = _subcommand(
        sub, "import", "translate an upstream NVIDIA device plugin config into nvdp TOML",
        "Translate an NVIDIA k8s-device-plugin config file (YAML or JSON, the --config-file of "
        "upstream) into an nvdp config file: flags, MIG strategy, resources patterns, time-slicing and "
        "MPS sharing. Settings nvdp does not support (CDI, GDRCopy/GDS/MOFED, IMEX) are dropped with a "
        "warning on stderr and in the output's header.",
    )
    upstream.add_argument("file", type=Path, metavar="FILE", help='upstream config file, or "-" for stdin')
    _add_output(upstream)
    upstream.set_defaults(func=cmd_import)


def cmd_show(args: argparse.Namespace) -> int:
    try:
        loaded = load_config(getattr(args, "config", None))
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EX_CONFIG
    _notices(loaded.notices)
    sys.stdout.write(render_effective(loaded.config, loaded.sources if args.sources else None))
    return EX_OK


def cmd_validate(args: argparse.Namespace) -> int:
    explicit = args.file if args.file is not None else getattr(args, "config", None)
    if explicit is not None and not Path(explicit).exists():
        print(f"nvdp: cannot validate {explicit}: no such file", file=sys.stderr)
        return EX_CONFIG
    strict = getattr(args, "reload", False)
    try:
        loaded = load_config(explicit, secure=strict, missing_ok=not strict)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EX_CONFIG
    _notices(loaded.notices)
    print(f"{loaded.path}: configuration is valid")
    return EX_OK


def cmd_init(args: argparse.Namespace) -> int:
    return _write(render_default(), args.output, args.force)


def cmd_import(args: argparse.Namespace) -> int:
    from nvdp_node.config.upstream_import import import_upstream_file  # YAML: only `config import` needs it

    try:
        result = import_upstream_file(args.file)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EX_CONFIG
    for warning in result.warnings:
        print(f"nvdp: warning: {warning}", file=sys.stderr)
    return _write(result.toml, args.output, args.force)


def _subcommand(sub: argparse._SubParsersAction, name: str, summary: str, description: str) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    return sub.add_parser(
        name, help=summary, description=textwrap.fill(description, 79), epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", type=Path, metavar="PATH",
        help="write to PATH (mode 0644) instead of stdout; refuses to replace an existing file",
    )
    parser.add_argument("--force", action="store_true", help="replace PATH if it exists")


def _write(text: str, output: Path | None, force: bool) -> int:
    if output is None:
        sys.stdout.write(text)
        return EX_OK
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(output, flags, 0o644)
    except FileExistsError:
        print(f"nvdp: {output} already exists; use --force to replace it", file=sys.stderr)
        return EX_CANTCREAT
    except OSError as exc:
        print(f"nvdp: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return EX_CANTCREAT
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return EX_OK


def _notices(notices: list[str]) -> None:
    for notice in notices:
        print(f"nvdp: {notice}", file=sys.stderr)
