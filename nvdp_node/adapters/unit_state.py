"""``systemctl is-active <unit>``, for ``nvdp status`` (``nvdp_node.app.status_cli``).

The systemctl path is a parameter (``nvdp status --systemctl``), so tests
pass a stand-in; a missing systemctl or one that hangs says ``unknown``.
"""

from __future__ import annotations

import subprocess

TIMEOUT = 5.0


def unit_state(systemctl: str, unit: str, *, timeout: float = TIMEOUT) -> str:
    """``active``, ``inactive``, ``failed``, ``activating``, ``reloading``, … or ``unknown``."""
    try:
        done = subprocess.run([systemctl, "is-active", unit], capture_output=True, text=True, timeout=timeout,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else "unknown"
