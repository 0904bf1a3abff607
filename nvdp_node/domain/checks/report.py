"""The vocabulary every check shares: verdicts, the report, file problems, versions.

The rule modules (driver, engines, toolkit, kubelet) build
:class:`CheckResult` values; ``nvdp_node.app.host_checks`` gathers them into a
:class:`CheckReport`, whose ``exit_code`` is what ``nvdp check`` returns. The
host adapters return :class:`FileProblem` instead of raising on a broken file.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from nvdp_node.domain.errors import EX_CONFIG

EXIT_OK = 0
EXIT_ERRORS = 1
EXIT_CONFIG_INVALID = EX_CONFIG
CONFIG_CHECK_ID = "config.valid"
CONFIG_PERMISSIONS_CHECK_ID = "config.permissions"


class Status(enum.Enum):
    """A check's verdict. ``skipped`` means "does not apply here", never "failed"."""

    OK = "ok"
    WARNING = "warning"
    ERROR = "error"
    SKIPPED = "skipped"

    @property
    def severity(self) -> int:
        return {"skipped": 0, "ok": 0, "warning": 1, "error": 2}[self.value]


@dataclass(frozen=True)
class CheckResult:
    """One verdict with the facts that led to it and, unless ok, what to do."""

    id: str
    title: str
    status: Status
    evidence: tuple[str, ...] = ()
    fix: str = ""

    def downgraded(self, status: Status, note: str) -> CheckResult:
        """The same finding at a milder status, saying why it is milder."""
        return replace(self, status=status, evidence=(*self.evidence, note))


@dataclass(frozen=True)
class CheckReport:
    """All verdicts of one run, in the order they were made."""

    results: tuple[CheckResult, ...] = ()

    @property
    def worst(self) -> Status:
        worst = max((r.status for r in self.results), key=lambda s: s.severity, default=Status.OK)
        return Status.OK if worst is Status.SKIPPED else worst

    @property
    def exit_code(self) -> int:
        """78 if the configuration is invalid, else 1 if any check failed, else 0."""
        config = self.get(CONFIG_CHECK_ID)
        if config is not None and config.status is Status.ERROR:
            return EXIT_CONFIG_INVALID
        return EXIT_ERRORS if self.worst is Status.ERROR else EXIT_OK

    def get(self, check_id: str) -> CheckResult | None:
        return next((r for r in self.results if r.id == check_id), None)

    def counts(self) -> dict[Status, int]:
        return {s: sum(r.status is s for r in self.results) for s in Status}


class ProblemKind(enum.Enum):
    MISSING = "does not exist"
    UNREADABLE = "cannot be read"
    INVALID = "is not valid"
    WRONG_TYPE = "has a value of the wrong type"


@dataclass(frozen=True)
class FileProblem:
    """Why a host file could not be used; readers return this instead of raising."""

    path: str
    kind: ProblemKind
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.path} {self.kind.value}" + (f": {self.detail}" if self.detail else "")


def fatal(problems: Iterable[FileProblem]) -> tuple[FileProblem, ...]:
    """A missing file means "defaults apply"; anything else stops the engine reading it."""
    return tuple(p for p in problems if p.kind is not ProblemKind.MISSING)


# ---- versions ---------------------------------------------------------------

def parse_version(text: str) -> tuple[int, ...] | None:
    """``"550.90.07"`` → ``(550, 90, 7)``; a leading ``v`` and any suffix are ignored."""
    m = re.match(r"\s*v?(\d+(?:\.\d+)*)", text)
    return tuple(int(part) for part in m.group(1).split(".")) if m else None


def version_at_least(actual: str, minimum: str) -> bool | None:
    """Numeric, component-wise comparison (``384.81`` == ``384.81.0``); None if unparsable."""
    a, b = parse_version(actual), parse_version(minimum)
    if a is None or b is None:
        return None
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)) >= b + (0,) * (width - len(b))


def parse_kubelet_version(output: str) -> tuple[int, int, int] | None:
    """``"Kubernetes v1.29.3+k3s1"`` → ``(1, 29, 3)``."""
    m = re.search(r"\bv?(\d+)\.(\d+)\.(\d+)", output)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None
