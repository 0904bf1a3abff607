"""Make the venv built by dh_virtualenv independent of the build directory.

Usage: python3 -B -I debian/tidy-venv.py VENV BUILD_DIR  (from debian/build-venv and debian/rules)

* pyvenv.cfg: drop the ``command =`` line, which records the build path.
* RECORD files: dh_virtualenv rewrote the shebang of the console scripts
  (bin/nvdp, ...) after pip had hashed them with the build path in the
  shebang, and dh_strip changes the wheels' shared objects; recompute hash and
  size of every recorded file whose content changed since, so the RECORDs
  describe the shipped files. (Run after dh_virtualenv and again after dh_strip.)
* Fail if BUILD_DIR still appears in any file or symlink of the venv.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import sys
from pathlib import Path


def record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def tidy_pyvenv_cfg(venv: Path) -> None:
    cfg = venv / "pyvenv.cfg"
    lines = cfg.read_text().splitlines(keepends=True)
    cfg.write_text("".join(line for line in lines if not line.startswith("command =")))


def fix_records(venv: Path) -> list[str]:
    fixed = []
    for record in sorted(venv.glob("lib/python3*/site-packages/*.dist-info/RECORD")):
        site = record.parent.parent
        rows = list(csv.reader(io.StringIO(record.read_text())))
        changed = False
        for row in rows:
            if len(row) != 3 or not row[1]:
                continue
            path = site / row[0]
            if not path.is_file() or path.is_symlink():
                continue
            data = path.read_bytes()
            new = [row[0], record_hash(data), str(len(data))]
            if new != row:
                row[:] = new
                changed = True
                fixed.append(os.path.relpath(os.path.normpath(path), venv))
        if changed:
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerows(rows)
            record.write_text(out.getvalue())
    return fixed


def leaks(venv: Path, build_dir: str) -> list[str]:
    needle = build_dir.encode()
    found = []
    for root, dirs, files in os.walk(venv):
        for name in dirs + files:
            path = Path(root, name)
            if path.is_symlink():
                if build_dir in os.readlink(path):
                    found.append(str(path))
            elif path.is_file() and needle in path.read_bytes():
                found.append(str(path))
    return found


def main(argv: list[str]) -> int:
    venv, build_dir = Path(argv[1]), argv[2]
    tidy_pyvenv_cfg(venv)
    for path in fix_records(venv):
        print(f"tidy-venv: RECORD hash updated for {path}")
    bad = leaks(venv, build_dir)
    if bad:
        print(f"tidy-venv: the build path {build_dir} is still in:", *bad, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
