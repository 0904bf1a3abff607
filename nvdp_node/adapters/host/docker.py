"""docker: /etc/docker/daemon.json's ``default-runtime`` and ``runtimes.<name>.path``.

Called by ``nvdp_node.app.host_checks``. The seed documents' setup is exactly
this file with ``"default-runtime": "nvidia"`` and a ``nvidia`` runtime whose
path is /usr/bin/nvidia-container-runtime. dockerd refuses to start with an
invalid or wrongly typed daemon.json, so those are reported as fatal.
"""

from __future__ import annotations

from collections.abc import Callable

from nvdp_node.adapters.host.paths import HostRoot, lookup, read_json
from nvdp_node.domain.checks import EngineFacts, FileProblem, Runtime


def read_docker(paths: HostRoot) -> EngineFacts:
    """What docker on this host would run containers with."""
    data = read_json(paths, paths.docker_daemon_json)
    return docker_facts(data, file=paths.docker_daemon_json, binary=paths.locate("dockerd"), locate=paths.locate)


def docker_facts(
    data: dict[str, object] | FileProblem, *, file: str, binary: str | None,
    locate: Callable[[str], str | None],
) -> EngineFacts:
    """Normalise a parsed daemon.json (or why it could not be parsed)."""
    if isinstance(data, FileProblem):
        return EngineFacts("docker", binary, (file,), (data,))
    problems: list[FileProblem] = []
    default = lookup(data, ("default-runtime",), str, file=file, problems=problems)
    table = lookup(data, ("runtimes",), dict, file=file, problems=problems) or {}
    runtimes: dict[str, Runtime] = {}
    for name in table:
        # "path" may be a bare name: dockerd looks it up in its $PATH.
        path = lookup(table, (name, "path"), str, file=file, problems=problems, prefix="runtimes")
        runtimes[name] = Runtime(name, path, path is not None and locate(path) is not None)
    return EngineFacts(
        "docker", binary, (file,), tuple(problems),
        default_runtime=default, default_from=file if default else None,
        builtin_default="runc", runtimes=runtimes,
    )
