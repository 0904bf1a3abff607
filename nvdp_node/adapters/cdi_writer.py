"""Write nvdp's CDI spec file atomically, and remove it when no resource uses CDI any more.

Called on a thread by ``app/cdi_specs.py`` (and by ``nvdp cdi generate
--output DIR``). The spec directory is shared with every other vendor's
specs (``nvidia-ctk cdi generate`` writes ``nvidia.yaml`` there): nvdp writes
and removes only its own file, ``k8s.device-plugin.nvidia.com-gpu.json``, and
its own temporary files. A container engine may read the directory at any
moment, so the file is written to a temporary name in the same directory,
fsynced, chmod 0644 and renamed over the old one: a reader sees the old spec
or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nvdp_node.adapters.atomic_file import write_atomic
from nvdp_node.domain.cdi_spec import SPEC_FILE_NAME

SPEC_MODE = 0o644
TEMP_PREFIX = f".{SPEC_FILE_NAME}."


def spec_json(spec: dict[str, object]) -> str:
    """The file's text: stable key order and indentation, so an unchanged spec gives the same bytes."""
    return json.dumps(spec, indent=2, sort_keys=False) + "\n"


def write_spec(spec_dir: Path, spec: dict[str, object]) -> tuple[Path, bool]:
    """Write ``spec`` as ``<spec_dir>/k8s.device-plugin.nvidia.com-gpu.json``; (path, whether it changed).

    An identical file is left alone (its mtime too, so engines that watch the
    directory do not re-read it for nothing). Raises OSError with the path.
    """
    path = spec_dir / SPEC_FILE_NAME
    text = spec_json(spec)
    try:
        if path.read_text() == text and (path.stat().st_mode & 0o777) == SPEC_MODE:
            return path, False
    except (OSError, UnicodeDecodeError):
        pass
    if not spec_dir.is_dir():
        spec_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(spec_dir, 0o755)  # nvdp.service runs with UMask=0077; engines need to read it
    return write_spec_file(path, spec), True


def write_spec_file(path: Path, spec: dict[str, object]) -> Path:
    """Write ``spec`` as ``path`` by temporary file and rename (``nvdp cdi generate --output FILE`` too)."""
    write_atomic(path, spec_json(spec), mode=SPEC_MODE)
    return path


def remove_spec(spec_dir: Path) -> bool:
    """Remove nvdp's spec (and temporary files a crash left behind); True if the spec was there."""
    for leftover in _listdir(spec_dir):
        if leftover.startswith(TEMP_PREFIX):
            try:
                os.unlink(spec_dir / leftover)
            except OSError:
                pass
    try:
        os.unlink(spec_dir / SPEC_FILE_NAME)
    except FileNotFoundError:
        return False
    return True


def read_spec(path: Path) -> dict[str, object]:
    """A spec file parsed; raises OSError or ValueError (bad JSON, not an object) with the cause."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []
