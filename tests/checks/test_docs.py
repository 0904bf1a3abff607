"""docs/troubleshooting.md has a section for every check id `nvdp check` can print."""

from __future__ import annotations

import re
from pathlib import Path

from nvdp_node.app.host_checks import run_checks
from nvdp_node.config import parse_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"


def test_every_check_id_is_a_heading_in_the_troubleshooting_guide(host):
    report = run_checks(parse_config({}), host.paths)
    headings = set(re.findall(r"^### (\S+)$", DOC.read_text(), flags=re.MULTILINE))
    ids = {r.id for r in report.results} | {"config.valid", "config.permissions"}
    assert ids - headings == set()


def test_the_guide_documents_the_check_exit_codes():
    text = DOC.read_text()
    for row in ("| 0 | no errors", "| 1 | at least one error", "| 78 | the configuration is invalid"):
        assert row in text
