"""A cheap fingerprint of the installed driver, so a running nvdp notices an upgrade without rereading it all.

``app/cdi_specs.py`` takes one (on a thread) with every spec it writes and
again on each periodic check (``plugin.mig_check_interval``): a driver
upgrade replaces ``libnvidia-*.so.<version>`` and reruns ldconfig, which
replaces ``<driver_root>/etc/ld.so.cache`` (a new inode, size or mtime), and
loading the new kernel module changes ``/proc/driver/nvidia/version``. Only
two ``stat``/small reads: finding the driver's files (``driver_files.py``)
walks directories and is done only when this changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from nvdp_node.adapters.host.driver_files import LD_CACHE, DriverRoots

KERNEL_VERSION_FILE = "driver/nvidia/version"  # under the proc root
MAX_VERSION_BYTES = 4096


@dataclass(frozen=True)
class DriverFingerprint:
    """(dev, ino, size, mtime ns) of the ld cache and the kernel module's version line; None where absent."""

    ld_cache: tuple[int, int, int, int] | None
    kernel_module: str | None

    def differences(self, other: DriverFingerprint) -> list[str]:
        """What changed from ``other`` to this one, in words (for the log)."""
        changed = []
        if self.ld_cache != other.ld_cache:
            changed.append("the ld cache was rewritten" if self.ld_cache else "the ld cache is gone")
        if self.kernel_module != other.kernel_module:
            changed.append(f"kernel module now {self.kernel_module or 'not loaded'}")
        return changed


def driver_fingerprint(roots: DriverRoots) -> DriverFingerprint:
    """The fingerprint of the driver under ``roots`` (``--proc-root`` via ``roots.host``); never raises."""
    try:
        st = os.stat(roots.driver_root / LD_CACHE.lstrip("/"))
        ld_cache: tuple[int, int, int, int] | None = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    except (OSError, ValueError):
        ld_cache = None
    try:
        with open(roots.host.at(roots.host.proc_dir) / KERNEL_VERSION_FILE, "rb") as f:
            first = f.read(MAX_VERSION_BYTES).decode("utf-8", "replace").splitlines()
        kernel: str | None = " ".join(first[0].split()) if first else ""
    except (OSError, ValueError):
        kernel = None
    return DriverFingerprint(ld_cache, kernel)
