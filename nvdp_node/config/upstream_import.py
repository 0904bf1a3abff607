"""Translate an upstream NVIDIA k8s-device-plugin config file into nvdp TOML.

``nvdp config import FILE`` calls :func:`import_upstream_file`. Upstream's
format (nvidia-plugin.md §1b) is YAML or JSON with ``version: v1`` and the
tables ``flags``, ``flags.plugin``, ``resources``, ``sharing`` and ``imex``.
Keys with an nvdp equivalent become TOML keys; everything else becomes a
warning, because upstream ignores unknown keys and nvdp must not pretend to
honour what it does not implement. ``resources`` is carried over with a
warning the other way round: upstream ignores it, nvdp honours it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nvdp_node.config.errors import UNSUPPORTED_UPSTREAM, ConfigError, show_value
from nvdp_node.config.files import read_regular_file
from nvdp_node.config.loader import parse_config
from nvdp_node.config.render import render_template
from nvdp_node.config.schema import Config
from nvdp_node.config.sharing import MpsConfig, describe_device_selection
from nvdp_node.config.sources import assign

# Upstream key path -> nvdp key.
EQUIVALENTS: dict[tuple[str, ...], str] = {
    ("flags", "failOnInitError"): "plugin.fail_on_init_error",
    ("flags", "nvidiaDriverRoot"): "plugin.nvidia_driver_root",
    ("flags", "nvidiaDevRoot"): "plugin.nvidia_dev_root",
    ("flags", "plugin", "passDeviceSpecs"): "plugin.pass_device_specs",
    ("flags", "plugin", "deviceListStrategy"): "plugin.device_list_strategy",
    ("flags", "plugin", "deviceIDStrategy"): "plugin.device_id_strategy",
    ("flags", "plugin", "cdiAnnotationPrefix"): "plugin.cdi_annotation_prefix",
    ("flags", "plugin", "nvidiaCTKPath"): "plugin.nvidia_cdi_hook_path",
    ("flags", "migStrategy"): "plugin.mig_strategy",
    ("flags", "mpsRoot"): "sharing.mps.root",
    ("flags", "plugin", "sharedDevicesAllocationPolicy"): "plugin.shared_devices_allocation_policy",
    ("resources", "gpus"): "resources.gpus",
    ("resources", "mig"): "resources.mig",
}
# Upstream parses these but DisableResourceNamingInConfig replaces them by its defaults.
IGNORED_UPSTREAM = {("resources", "gpus"), ("resources", "mig")}
# Upstream key path -> (values under which nvdp behaves the same, why others are dropped).
WITHOUT_EQUIVALENT: dict[tuple[str, ...], tuple[tuple[object, ...], str]] = {
    ("flags", "gdrcopyEnabled"): ((False,), UNSUPPORTED_UPSTREAM["gdrcopy_enabled"]),
    ("flags", "gdsEnabled"): ((False,), UNSUPPORTED_UPSTREAM["gds_enabled"]),
    ("flags", "mofedEnabled"): ((False,), UNSUPPORTED_UPSTREAM["mofed_enabled"]),
    ("flags", "deviceDiscoveryStrategy"): (("auto", "nvml"), UNSUPPORTED_UPSTREAM["device_discovery_strategy"]),
    ("flags", "useNodeFeatureAPI"): ((False,), "a GPU feature discovery setting; nvdp writes GFD's labels to an "
                                     "NFD features.d file itself (see [labels])"),
    ("flags", "gfd"): (({},), "GPU feature discovery settings; nvdp writes GFD's labels itself (see [labels])"),
    ("flags", "plugin", "containerDriverRoot"): (("/driver-root", "/"), UNSUPPORTED_UPSTREAM["container_driver_root"]),
    ("imex", "channelIDs"): (([],), UNSUPPORTED_UPSTREAM["imex"]),
    ("imex", "required"): ((False,), UNSUPPORTED_UPSTREAM["imex"]),
}
_TABLES = {("flags",), ("flags", "plugin"), ("imex",), ("resources",), ("sharing",)}
# upstream sharing.<mode> -> nvdp [sharing.<mode>]; both have the shape of upstream's ReplicatedResources.
SHARING_MODES = {"timeSlicing": "time_slicing", "mps": "mps"}
_REPLICATED = {"renameByDefault": "rename_by_default", "failRequestsGreaterThanOne": "fail_requests_greater_than_one"}


@dataclass(frozen=True)
class ImportResult:
    """The TOML to install, the config it describes, and what could not be carried over."""

    toml: str
    config: Config
    warnings: list[str] = field(default_factory=list)


def import_upstream_file(path: Path) -> ImportResult:
    """Read ``path`` ("-" for stdin) and translate it; raise :class:`ConfigError` if it is unusable."""
    header = f"cannot import {path}"
    try:
        raw = sys.stdin.buffer.read() if str(path) == "-" else read_regular_file(path, header)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(header, [f"cannot read {path}: {reason}"], path=path) from None
    return import_upstream_text(text, path)


def import_upstream_text(text: str, path: Path = Path("<input>")) -> ImportResult:
    header = f"cannot import {path}"
    document = _parse(text, path, header)
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    warnings: list[str] = []
    errors: list[str] = []
    if document is None:
        document = {}  # upstream: an empty file is a valid v1 config
    if not isinstance(document, Mapping):
        raise ConfigError(header, ["expected a mapping with the keys version, flags, resources, sharing, imex"])
    version = document.get("version")
    if version not in (None, "", "v1"):
        raise ConfigError(header, [f"version: unknown version {show_value(version)} (upstream knows only v1)"])
    rest = {k: v for k, v in document.items() if k != "version"}
    _walk((), rest, values, sources, warnings, errors)
    _sharing_mode_chosen(values, warnings)

    nested: dict[str, Any] = {}
    for key, value in values.items():
        assign(nested, key, value)
    config = parse_config(nested, header=header, sources=sources, path=path, errors=errors)
    preamble = [f"Imported from {path} by `nvdp config import`."]
    preamble += [f"warning: {w}" for w in warnings]
    return ImportResult(render_template(config, active=values, preamble=preamble), config, warnings)


def _parse(text: str, path: Path, header: str) -> object:
    # sigs.k8s.io/yaml reads both; JSON first so its errors name JSON positions.
    if path.suffix == ".json" or text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(header, [f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(header, [f"{where}: invalid YAML: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(header, [f"{path}: invalid YAML: {exc}"]) from None


def _walk(
    prefix: tuple[str, ...],
    table: Mapping[object, object],
    values: dict[str, object],
    sources: dict[str, str],
    warnings: list[str],
    errors: list[str],
) -> None:
    for key, value in table.items():
        path = (*prefix, str(key))
        name = ".".join(path)
        if value is None:  # upstream: null means "not set"
            continue
        if path in _TABLES:
            if isinstance(value, Mapping):
                _walk(path, value, values, sources, warnings, errors)
            else:
                errors.append(f"{name}: expected a mapping (got {show_value(value)})")
        elif len(path) == 2 and path[0] == "sharing" and path[1] in SHARING_MODES:
            _replicated_resources(name, SHARING_MODES[path[1]], value, values, sources, warnings, errors)
        elif path == ("flags", "mpsRoot") and value == "":
            continue  # upstream's default: not set
        elif path in EQUIVALENTS:
            values[EQUIVALENTS[path]], sources[EQUIVALENTS[path]] = value, f"upstream {name}"
            if path in IGNORED_UPSTREAM and value != []:
                warnings.append(
                    f"{name}: upstream ignores custom resource names and advertises its default names; "
                    "nvdp honours this list, so the devices it matches are advertised under the names given"
                )
        elif path in WITHOUT_EQUIVALENT:
            same, why = WITHOUT_EQUIVALENT[path]
            if value not in same:
                shown = "" if isinstance(value, (Mapping, list)) and value else f" = {show_value(value)}"
                warnings.append(f"{name}{shown} dropped: {why}")
        else:
            warnings.append(f"{name}: unknown upstream key, ignored (upstream ignores it too)")


def _replicated_resources(
    name: str,
    mode: str,
    table: object,
    values: dict[str, object],
    sources: dict[str, str],
    warnings: list[str],
    errors: list[str],
) -> None:
    """Upstream's sharing.timeSlicing or sharing.mps, into [sharing.<mode>]."""
    if not isinstance(table, Mapping):
        errors.append(f"{name}: expected a mapping (got {show_value(table)})")
        return
    for key, value in table.items():
        if key in _REPLICATED and value is not None:
            values[f"sharing.{mode}.{_REPLICATED[key]}"] = value
            sources[f"sharing.{mode}.{_REPLICATED[key]}"] = f"upstream {name}.{key}"
        elif key != "resources":
            warnings.append(f"{name}.{key}: unknown upstream key, ignored (upstream ignores it too)")
    resources = table.get("resources")
    if not resources or not isinstance(resources, list):
        # Upstream's own parse error; an empty list or a mapping is no list of resources either.
        shown = "" if resources is None else f" (got {show_value(resources)})"
        errors.append(f"{name}.resources: no resources specified{shown}; upstream refuses this file too")
        return
    entries = [_replicated_resource(f"{name}.resources[{i}]", entry, warnings, errors) for i, entry in enumerate(resources)]
    values[f"sharing.{mode}.resources"] = entries
    sources[f"sharing.{mode}.resources"] = f"upstream {name}.resources"


def _replicated_resource(name: str, entry: object, warnings: list[str], errors: list[str]) -> object:
    """One upstream resources[] entry: name and replicas kept, rename and a device selection dropped as upstream drops them."""
    if not isinstance(entry, Mapping):
        return entry  # nvdp's validation says "expected a table"
    out: dict[object, object] = {}
    for key, value in entry.items():
        if value is None:
            continue
        if key in ("name", "replicas"):
            out[key] = value
        elif key == "rename":
            if isinstance(value, str):
                warnings.append(
                    f"{name}.rename = {show_value(value)} dropped: upstream ignores a custom name (renameByDefault "
                    "advertises <name>.shared)"
                )
            else:
                errors.append(f"{name}.rename: expected a resource name (got {show_value(value)})")
        elif key == "devices":
            if value == "all":
                continue
            try:
                what = describe_device_selection(value)
            except ValueError as exc:
                errors.append(f"{name}.devices: {exc}")
            else:
                warnings.append(f"{name}.devices dropped: {what}, but upstream ignores a selection and shares every device")
        else:
            warnings.append(f"{name}.{key}: unknown upstream key, ignored (upstream ignores it too)")
    return out


def _sharing_mode_chosen(values: dict[str, object], warnings: list[str]) -> None:
    """Upstream shares by MPS when both modes list resources; nvdp refuses both, so time-slicing is dropped."""
    if "sharing.mps.resources" in values and "sharing.time_slicing.resources" in values:
        for key in [k for k in values if k.startswith("sharing.time_slicing.")]:
            del values[key]
        warnings.append("sharing.timeSlicing dropped: upstream shares by MPS alone when sharing.mps lists resources")
    if "sharing.mps.resources" in values and "sharing.mps.root" not in values:
        warnings.append(
            "flags.mpsRoot is not set: upstream needs --mps-root for MPS (its helm chart passes /run/nvidia/mps); "
            f'nvdp uses sharing.mps.root = "{MpsConfig().root}"'
        )
