"""Run every host check and render the report: the engine of ``nvdp check``.

``nvdp_node.app.check_cli`` calls :func:`config_check` and :func:`run_checks` and prints
:func:`render_table` or :func:`render_json`; ``nvdp serve`` calls
:func:`serve_time_checks` at start and on reload and applies
``runtime_check.policy`` to the report. The adapters in
``nvdp_node.adapters.host`` gather facts, ``nvdp_node.domain.checks`` judges
them; this module only decides what to check for a given configuration.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from nvdp_node.adapters.host import (
    ENGINE_READERS,
    HostRoot,
    read_cdi,
    read_driver,
    read_kubelet,
    read_toolkit,
)
from nvdp_node.adapters.host.driver import Discover
from nvdp_node.adapters.host.kubelet import Access
from nvdp_node.app.cdi_check import cdi_spec_result
from nvdp_node.config import CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH, Config, ConfigError, LoadedConfig
from nvdp_node.config.files import permission_problems
from nvdp_node.domain.checks.metrics import evaluate_metrics_listen
from nvdp_node.domain.checks import (
    CONFIG_CHECK_ID,
    CONFIG_PERMISSIONS_CHECK_ID,
    CheckReport,
    CheckResult,
    PathState,
    Status,
    combine_engines,
    evaluate_cdi,
    evaluate_driver,
    evaluate_engine,
    evaluate_kubelet,
    evaluate_toolkit,
    uses_cdi,
)

log = logging.getLogger(__name__)

JSON_FORMAT = 1
_COLORS = {Status.OK: "32", Status.WARNING: "33", Status.ERROR: "1;31", Status.SKIPPED: "2"}


def run_checks(
    config: Config,
    paths: HostRoot = HostRoot(),
    *,
    min_driver_version: str | None = None,
    config_result: CheckResult | tuple[CheckResult, ...] | None = None,
    discover: Discover | None = None,
    access: Access = os.access,
    serving: bool = False,
) -> CheckReport:
    """Check the driver, container engines, toolkit and kubelet for ``config``.

    ``min_driver_version`` None means ``runtime_check.min_driver_version``.
    ``config_result`` (from :func:`config_check`) is put first. With
    ``serving``, a missing kubelet.sock is only a warning: the daemon waits
    for kubelet and registers when the socket appears.
    """
    strategies = tuple(config.plugin.device_list_strategy)
    minimum = min_driver_version or config.runtime_check.min_driver_version
    if isinstance(config_result, CheckResult):
        config_result = (config_result,)
    results: list[CheckResult] = list(config_result or ())
    results += _guarded("driver", lambda: evaluate_driver(read_driver(paths, discover=discover), min_version=minimum))
    results += _guarded("runtime", lambda: _engines(config, paths, strategies))
    results += _guarded("runtime.cdi", lambda: (evaluate_cdi(read_cdi(paths), strategies),))
    if not serving:  # serve checks before it writes the spec; the daemon reports its own write errors
        results += _guarded("cdi.spec", lambda: (cdi_spec_result(config, paths, discover),))
    results += _guarded("toolkit", lambda: evaluate_toolkit(read_toolkit(paths), strategies))
    results += _guarded("kubelet", lambda: _kubelet(config, paths, strategies, access, serving))
    results += _guarded("metrics", lambda: (evaluate_metrics_listen(config.metrics.listen),))
    return CheckReport(tuple(results))


def serve_time_checks(config: Config, paths: HostRoot = HostRoot()) -> CheckReport:
    """The checks ``nvdp serve`` runs at start and on reload (the config is already valid).

    The caller applies ``config.runtime_check.policy``: "warn" logs the
    warnings and errors, "fail" exits when ``report.worst`` is an error,
    "off" does not call this at all.
    """
    return run_checks(config, paths, serving=True)


def config_check(loaded: LoadedConfig | ConfigError) -> tuple[CheckResult, CheckResult]:
    """config.valid (the verdict of ``nvdp config validate``) and config.permissions."""
    problems = permission_problems(loaded.path) if loaded.path is not None else []
    return _config_valid(loaded, problems), _config_permissions(loaded.path, problems)


def _config_valid(loaded: LoadedConfig | ConfigError, problems: list[str]) -> CheckResult:
    title = "nvdp configuration"
    if isinstance(loaded, ConfigError):
        return CheckResult(
            CONFIG_CHECK_ID, title, Status.ERROR,
            (loaded.header, *loaded.lines, "the other checks ran with the default configuration"),
            "correct the listed keys; `nvdp config validate` checks again",
        )
    notices = tuple(n for n in loaded.notices if n not in problems)  # config.permissions reports those
    if loaded.path.exists():
        evidence = (f"{loaded.path}: configuration is valid", *notices)
    else:
        evidence = notices or (f"{loaded.path} does not exist: built-in defaults apply",)
    return CheckResult(CONFIG_CHECK_ID, title, Status.OK, evidence)


def _config_permissions(path: Path | None, problems: list[str]) -> CheckResult:
    """What ``nvdp serve`` demands of the file: only root can change it or its directory."""
    title = "only root can change the nvdp configuration"
    if path is None or not path.exists():
        return CheckResult(CONFIG_PERMISSIONS_CHECK_ID, title, Status.SKIPPED, (f"no config file at {path}",))
    if problems:
        return CheckResult(
            CONFIG_PERMISSIONS_CHECK_ID, title, Status.ERROR,
            (*problems, "nvdp serve refuses a configuration that users other than root can change (exit 78)"),
            "run the `fix with:` commands above",
        )
    return CheckResult(
        CONFIG_PERMISSIONS_CHECK_ID, title, Status.OK,
        (f"{path} and its directory are owned by root and writable only by root",),
    )


def render_table(report: CheckReport, *, color: bool = False) -> str:
    """One block per check: status, id and title, then evidence and the fix, indented."""
    width = max((len(r.id) for r in report.results), default=10)
    indent = " " * (9 + width + 2)
    lines = [f"{'STATUS':<8} {'CHECK':<{width}}  WHAT"]
    for r in report.results:
        lines.append(f"{_paint(r.status, color)} {r.id:<{width}}  {r.title}")
        lines += [indent + e for e in r.evidence]
        if r.fix and r.status in (Status.WARNING, Status.ERROR):
            lines.append(f"{indent}fix: {r.fix}")
    lines += ["", _summary(report)]
    return "\n".join(lines) + "\n"


def render_json(report: CheckReport) -> str:
    """The report for scripts: stable check ids, statuses as strings, evidence as lists."""
    counts = report.counts()
    document = {
        "format": JSON_FORMAT,
        "status": report.worst.value,
        "exit_code": report.exit_code,
        "counts": {s.value: counts[s] for s in Status},
        "checks": [
            {"id": r.id, "title": r.title, "status": r.status.value, "evidence": list(r.evidence), "fix": r.fix}
            for r in report.results
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _engines(config: Config, paths: HostRoot, strategies: tuple[str, ...]) -> tuple[CheckResult, ...]:
    engines = config.runtime_check.engines
    explicit = engines != "auto"
    names: Iterable[str] = engines if explicit else ENGINE_READERS
    results = [
        evaluate_engine(ENGINE_READERS[name](paths), explicit=explicit, needs_default=not uses_cdi(strategies))
        for name in names
    ]
    return combine_engines(results, explicit=explicit)


def _kubelet(
    config: Config, paths: HostRoot, strategies: tuple[str, ...], access: Access, serving: bool,
) -> tuple[CheckResult, ...]:
    facts = read_kubelet(paths, socket_dir=str(config.kubelet.socket_dir),
                         kubelet_socket=str(config.kubelet.kubelet_socket_path), access=access)
    results = evaluate_kubelet(facts, strategies)
    if serving and facts.kubelet_socket_state is PathState.MISSING:
        note = "nvdp keeps running and registers as soon as kubelet creates the socket"
        results = tuple(
            replace(r.downgraded(Status.WARNING, note), fix="") if r.id == "kubelet.socket" else r for r in results
        )
    return results


def _guarded(area: str, check: Callable[[], Iterable[CheckResult]]) -> list[CheckResult]:
    """A bug in one reader becomes one error result; the other checks still run."""
    try:
        return list(check())
    except Exception as err:  # noqa: BLE001 - the report must always be produced
        log.exception("check %s crashed", area)
        return [CheckResult(area, f"{area} checks", Status.ERROR, (f"internal error: {err!r}",),
                            "this is an nvdp bug; please report it with this output")]


def _paint(status: Status, color: bool) -> str:
    word = f"{status.value:<8}"
    return f"\033[{_COLORS[status]}m{word}\033[0m" if color else word


def _summary(report: CheckReport) -> str:
    counts = report.counts()
    plural = {Status.ERROR: "errors", Status.WARNING: "warnings", Status.OK: "ok", Status.SKIPPED: "skipped"}
    tally = ", ".join(f"{counts[s]} {s.value if counts[s] == 1 else plural[s]}" for s in plural)
    if report.worst is Status.ERROR:
        verdict = "GPU pods will not work on this node until the errors are fixed"
    elif report.worst is Status.WARNING:
        verdict = "GPU pods should work; the warnings say what may still go wrong"
    else:
        verdict = "nothing stands between this node and GPU pods"
    return f"{tally}: {verdict} (each check id is a heading in docs/troubleshooting.md)"


def config_path_for(paths: HostRoot, explicit: Path | None, environ: Mapping[str, str] = os.environ) -> Path | None:
    """With ``--root``, the default /etc/nvdp/config.toml is looked for under the root too.

    None leaves the choice to ``load_config`` ($NVDP_CONFIG or the default).
    """
    if explicit is not None or environ.get(CONFIG_PATH_ENV) or paths.root == Path("/"):
        return explicit
    return paths.at(DEFAULT_CONFIG_PATH)
