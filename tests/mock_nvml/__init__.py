"""A mock ``libnvidia-ml.so.1`` (C, built against the real ``nvml.h``) for GPU-less tests.

nvdp talks to NVML through the real ``pynvml``; tests swap the library, not
the bindings. See README.md in this directory for the node description
schema, the control-file format and the exported symbols.

Plain helpers (no pytest needed)::

    from tests.mock_nvml.environment import build, prepare, profile_path, subprocess_env
    from tests.mock_nvml.control import Control
    env = subprocess_env("h100-sxm-8", control="/tmp/ctl")

The pytest side lives in ``tests.mock_nvml.plugin`` (fixture ``mock_nvml``).
"""

from __future__ import annotations

import importlib
from typing import Any

# Lazy re-exports: `python -m tests.mock_nvml.build` must not find its own
# module already imported by the package (runpy warns about that).
_EXPORTS = {
    # not the function build(): the name belongs to the submodule (import it from .build or .environment)
    "build": ("EXPORTED_SYMBOLS", "BuildError", "find_nvml_header"),
    "control": ("ERROR_NAMES", "FAULTABLE_FUNCTIONS", "Control"),
    "mig": ("MigLayoutError", "cap_minor"),
    "environment": (
        "DRIVER_MISSING", "PROFILES_DIR", "MockNode", "is_driver_missing", "load_profile", "prepare",
        "profile_names", "profile_path", "subprocess_env", "sysfs_bus_id",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "DRIVER_MISSING",
    "ERROR_NAMES",
    "EXPORTED_SYMBOLS",
    "FAULTABLE_FUNCTIONS",
    "PROFILES_DIR",
    "BuildError",
    "Control",
    "MigLayoutError",
    "MockNode",
    "cap_minor",
    "find_nvml_header",
    "is_driver_missing",
    "load_profile",
    "prepare",
    "profile_names",
    "profile_path",
    "subprocess_env",
    "sysfs_bus_id",
]
