"""The two kinds of failure nvdp distinguishes (style rule 7).

A :class:`PermanentError` cannot be fixed by waiting: the supervisor exits
with the error's ``exit_code`` and systemd decides about restarts. A
:class:`TemporaryError` is retried after a delay and shown in ``STATUS=``.
"""

from __future__ import annotations

import os

# sysexits(3) codes, as systemd's RestartPreventExitStatus= and the man page name them.
EX_SOFTWARE = os.EX_SOFTWARE  # 70
EX_UNAVAILABLE = os.EX_UNAVAILABLE  # 69
EX_OSFILE = os.EX_OSFILE  # 72
EX_CONFIG = os.EX_CONFIG  # 78


class NvdpError(Exception):
    """Base of nvdp's own errors."""


class PermanentError(NvdpError):
    """Retrying is useless: exit with ``exit_code`` and a message naming the cause."""

    exit_code: int = EX_SOFTWARE

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class TemporaryError(NvdpError):
    """Worth retrying after at least ``delay`` seconds (kubelet not up yet, NVML busy).

    The resource owner's back-off waits ``max(delay, its own back-off)``.
    """

    def __init__(self, message: str, *, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class NvmlUnavailableError(PermanentError):
    """NVML could not be initialised: no driver, library missing, module not loaded."""

    exit_code = EX_UNAVAILABLE


class HostCheckFailed(PermanentError):
    """``runtime_check.policy = "fail"`` and a host check found an error."""

    exit_code = EX_OSFILE
