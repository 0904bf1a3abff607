"""pytest plugin: puts the mock ``libnvidia-ml.so.1`` in front of pynvml.

Loaded from ``tests/conftest.py`` (``pytest_plugins``). ``pytest_configure``
builds the library and makes sure this process can load it: glibc reads
``LD_LIBRARY_PATH`` only at process start, so when the build directory is
missing from it the plugin re-executes the same pytest command with it set.
That happens before any test runs, hence before pynvml loads a library.

The ``mock_nvml`` fixture then selects a simulated node per test.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.mock_nvml.build import build
from tests.mock_nvml.environment import (
    DRIVER_MISSING,
    ENV_CALL_LOG,
    ENV_CONFIG,
    ENV_CONTROL,
    MockNode,
    Profile,
    prepare,
)

_REEXEC_MARK = "MOCK_NVML_REEXECUTED"


def _on_loader_path(lib_dir: Path) -> bool:
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    return any(Path(p).resolve() == lib_dir.resolve() for p in paths)


@pytest.hookimpl(tryfirst=True)  # before other plugins do work the re-exec would throw away
def pytest_configure(config: pytest.Config) -> None:
    lib_dir = build()
    if _on_loader_path(lib_dir):
        return
    if os.environ.get(_REEXEC_MARK):
        raise pytest.UsageError(
            f"mock NVML: re-executed pytest but {lib_dir} is still not on LD_LIBRARY_PATH "
            f"({os.environ.get('LD_LIBRARY_PATH', '')!r})"
        )
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(lib_dir), env.get("LD_LIBRARY_PATH", "")]))
    env[_REEXEC_MARK] = "1"
    # fd-level output capture is already active; undo it or the new process writes into its temp files
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        capman.stop_global_capturing()
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(config.invocation_params.dir)
    os.execve(sys.executable, [sys.executable, "-m", "pytest", *config.invocation_params.args], env)


def shutdown_in_process_nvml() -> None:
    """Balance any nvmlInit this process left open, so the next nvmlInit re-reads its profile."""
    import pynvml

    if pynvml.nvmlLib is None:  # library never loaded in this process
        return
    for _ in range(10_000):
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError_Uninitialized:
            return
    raise RuntimeError("mock NVML: nvmlShutdown never reported NVML_ERROR_UNINITIALIZED")


class MockNvml:
    """The ``mock_nvml`` fixture: selects which node this test's NVML simulates."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, workdir: Path) -> None:
        self._monkeypatch = monkeypatch
        self._workdir = workdir
        self._uses = 0

    def use(self, profile: Profile | Mapping[str, Any]) -> MockNode:
        """Point this process (and ``.env()`` subprocesses) at ``profile``.

        ``profile`` is a bundled name (``"a100-mig-8"``), a path, a node
        description dict, or ``"driver-missing"`` (only meaningful for
        subprocesses: this process has the library loaded already, so here
        nvmlInit fails with NVML_ERROR_UNKNOWN because no profile is set).
        """
        shutdown_in_process_nvml()
        self._uses += 1
        label = "custom" if isinstance(profile, Mapping) else Path(str(profile)).stem
        node = prepare(profile, self._workdir / f"{self._uses}-{label}")
        mp = self._monkeypatch
        if node.config_path is None:
            mp.delenv(ENV_CONFIG, raising=False)
        else:
            mp.setenv(ENV_CONFIG, str(node.config_path))
        mp.setenv(ENV_CONTROL, str(node.control_path))
        mp.setenv(ENV_CALL_LOG, str(node.call_log_path))
        return node


@pytest.fixture
def mock_nvml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MockNvml]:
    """Simulated NVML for one test: ``mock_nvml.use("h100-sxm-8")`` returns a :class:`MockNode`."""
    shutdown_in_process_nvml()
    yield MockNvml(monkeypatch, tmp_path / "mock-nvml")
    shutdown_in_process_nvml()


__all__ = ["DRIVER_MISSING", "MockNvml", "mock_nvml", "shutdown_in_process_nvml"]
