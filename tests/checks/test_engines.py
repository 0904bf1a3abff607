"""docker, containerd and CRI-O readers on fixture trees, judged by the engine rules."""

from __future__ import annotations

import pytest

from nvdp_node.adapters.host import read_containerd, read_crio, read_docker
from nvdp_node.domain.checks import ProblemKind, Status, evaluate_engine

READERS = {"docker": read_docker, "containerd": read_containerd, "crio": read_crio}
DAEMONS = {"docker": "dockerd", "containerd": "containerd", "crio": "crio"}


def _check(host, engine: str, *layers: str, toolkit: bool = True):
    host.layer(*layers).binaries(DAEMONS[engine])
    if toolkit:
        host.binaries("nvidia-container-runtime")
    facts = READERS[engine](host.paths)
    return facts, evaluate_engine(facts, explicit=False)


def _says(result, text: str) -> bool:
    return any(text in line for line in result.evidence)


CASES = [
    ("docker", "docker-ok", Status.OK, "default runtime 'nvidia' (set in /etc/docker/daemon.json)"),
    ("docker", "docker-bare-name", Status.OK, "runs nvidia-container-runtime"),
    ("docker", "docker-not-default", Status.ERROR, "but the default is 'runc' (built-in default)"),
    ("docker", "docker-path-missing", Status.ERROR, "toolkit/nvidia-container-runtime, which does not exist"),
    ("docker", "docker-invalid-json", Status.ERROR, "JSON syntax error at line 6"),
    ("docker", "docker-wrong-type", Status.ERROR, "runtimes.nvidia.path: expected a string, got a list"),
    ("containerd", "containerd-v1-ok", Status.OK, "default runtime 'nvidia'"),
    ("containerd", "containerd-v2-ok", Status.OK, "default runtime 'nvidia'"),
    ("containerd", "containerd-v3-ok", Status.OK, "default runtime 'nvidia'"),
    ("containerd", "containerd-v3-imports", Status.OK, "default runtime 'nvidia'"),
    ("containerd", "containerd-not-default", Status.ERROR, "but the default is 'runc'"),
    ("containerd", "containerd-no-binaryname", Status.ERROR, "runtime 'nvidia' names no binary"),
    ("containerd", "containerd-invalid-toml", Status.ERROR, "TOML syntax error"),
    ("containerd", "containerd-bad-version", Status.ERROR, "containerd reads 1, 2 or 3"),
    ("containerd", "containerd-cri-disabled", Status.SKIPPED, "CRI plugin is disabled"),
    ("crio", "crio-ok", Status.OK, "set in /etc/crio/crio.conf.d/99-nvidia.conf"),
    ("crio", "crio-dropin-override", Status.ERROR, "the default is 'crun' (set in /etc/crio/crio.conf.d/zz-local.conf)"),
]


@pytest.mark.parametrize(("engine", "layer", "status", "says"), CASES, ids=[case[1] for case in CASES])
def test_each_engine_fixture_gets_the_expected_verdict(host, engine, layer, status, says):
    _, result = _check(host, engine, layer)
    assert result.status is status, result
    assert _says(result, says), result.evidence


def test_docker_names_a_nvidia_runtime_path_that_does_not_exist(host):
    host.layer("docker-ok").binaries("dockerd")  # no nvidia-container-runtime installed
    result = evaluate_engine(read_docker(host.paths), explicit=False)
    assert result.status is Status.ERROR
    assert _says(result, "runs /usr/bin/nvidia-container-runtime, which does not exist")


def test_a_missing_daemon_json_means_docker_runs_runc(host):
    facts, result = _check(host, "docker")
    assert facts.problems[0].kind is ProblemKind.MISSING
    assert result.status is Status.ERROR and _says(result, "/etc/docker/daemon.json does not exist")


def test_an_unreadable_daemon_json_is_reported_not_raised(host):
    host.path("/etc/docker/daemon.json").mkdir(parents=True)  # EISDIR: unreadable even for root
    _, result = _check(host, "docker")
    assert result.status is Status.ERROR
    assert _says(result, "/etc/docker/daemon.json cannot be read: it is a directory")


def test_a_daemon_json_that_is_not_an_object_is_a_wrong_type(host):
    host.write("/etc/docker/daemon.json", '["nvidia"]')
    _, result = _check(host, "docker")
    assert result.status is Status.ERROR and _says(result, "expected a JSON object, got a list")


def test_a_daemon_json_in_latin1_is_reported_as_invalid(host):
    host.path("/etc/docker").mkdir(parents=True)
    host.path("/etc/docker/daemon.json").write_bytes(b'{"default-runtime": "nvidi\xe4"}')
    _, result = _check(host, "docker")
    assert result.status is Status.ERROR and _says(result, "not UTF-8")


def test_containerd_without_config_toml_runs_runc(host):
    _, result = _check(host, "containerd")
    assert result.status is Status.ERROR
    assert _says(result, "/etc/containerd/config.toml does not exist")


def test_a_broken_containerd_import_is_reported_with_its_path(host):
    host.layer("containerd-v3-imports").write("/etc/containerd/conf.d/50-broken.toml", "version = = 3\n")
    _, result = _check(host, "containerd")
    assert result.status is Status.ERROR and _says(result, "/etc/containerd/conf.d/50-broken.toml is not valid")


def test_a_containerd_runtimes_table_of_the_wrong_type_is_reported(host):
    host.write("/etc/containerd/config.toml",
               'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\nruntimes = "nvidia"\n')
    _, result = _check(host, "containerd")
    assert result.status is Status.ERROR
    assert _says(result, 'plugins."io.containerd.grpc.v1.cri".containerd.runtimes: expected a table, got str')


def test_crio_without_any_config_uses_its_built_in_default(host):
    _, result = _check(host, "crio")
    assert result.status is Status.ERROR and _says(result, "no runtime runs nvidia-container-runtime")


def test_an_invalid_crio_drop_in_is_fatal(host):
    host.layer("crio-ok").write("/etc/crio/crio.conf.d/50-typo.conf", "[crio.runtime\n")
    _, result = _check(host, "crio")
    assert result.status is Status.ERROR and _says(result, "50-typo.conf is not valid")


def test_an_engine_that_is_not_installed_is_skipped_under_auto(host):
    host.layer("docker-ok")
    assert evaluate_engine(read_docker(host.paths), explicit=False).status is Status.SKIPPED


def test_a_nul_byte_in_a_runtime_path_is_a_missing_binary_not_a_crash(host):
    host.write("/etc/docker/daemon.json",
               '{"default-runtime": "nvidia", "runtimes": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime\\u0000"}}}')
    _, result = _check(host, "docker")
    assert result.status is Status.ERROR and _says(result, "which does not exist")


def test_a_containerd_import_that_does_not_exist_is_only_noted(host):
    host.layer("containerd-v2-ok").write(
        "/etc/containerd/config.toml",
        host.path("/etc/containerd/config.toml").read_text().replace("version = 2", 'version = 2\nimports = ["extra.toml"]'))
    _, result = _check(host, "containerd")
    assert result.status is Status.OK and _says(result, "/etc/containerd/extra.toml does not exist")


# Debian 13's containerd 1.7.24: its `containerd config default` and the file its package installs.
TRIXIE_CDI_OFF_SET = "CDI: enable_cdi = false (set in /etc/containerd/config.toml), cdi_spec_dirs = /etc/cdi, /var/run/cdi"
TRIXIE_CDI_OFF_BUILTIN = "CDI: enable_cdi = false (built-in default), cdi_spec_dirs = /etc/cdi, /var/run/cdi"


def test_trixies_containerd_default_config_runs_runc_with_cdi_off(host):
    _, result = _check(host, "containerd", "containerd-trixie-default")
    assert result.status is Status.ERROR, result
    assert _says(result, "no runtime runs nvidia-container-runtime"), result.evidence
    assert _says(result, TRIXIE_CDI_OFF_SET), result.evidence


def test_trixies_packaged_containerd_config_leaves_cdi_at_its_default_off(host):
    _, result = _check(host, "containerd", "containerd-trixie-packaged")
    assert _says(result, "no runtime runs nvidia-container-runtime"), result.evidence
    assert _says(result, TRIXIE_CDI_OFF_BUILTIN), result.evidence


def test_a_cdi_strategy_on_trixies_default_containerd_fails_because_cdi_is_off(host):
    host.layer("containerd-trixie-default").binaries("containerd")
    result = evaluate_engine(read_containerd(host.paths), explicit=False, needs_default=False)
    assert result.status is Status.ERROR, result
    assert _says(result, "CDI is off"), result.evidence
    assert "enable_cdi = true" in result.fix


def test_a_cdi_strategy_passes_once_enable_cdi_is_set_in_a_containerd_1_7_config(host):
    host.layer("containerd-trixie-default").binaries("containerd")
    text = (host.root / "etc/containerd/config.toml").read_text()
    host.write("/etc/containerd/config.toml", text.replace("enable_cdi = false", "enable_cdi = true"))
    result = evaluate_engine(read_containerd(host.paths), explicit=False, needs_default=False)
    assert result.status is Status.OK, result
    assert _says(result, "CDI: enable_cdi = true (set in /etc/containerd/config.toml)"), result.evidence


def test_containerd_2_reads_enable_cdi_from_the_cri_runtime_plugin_table(host):
    facts, _ = _check(host, "containerd", "containerd-v3-ok")
    assert (facts.cdi_enabled, facts.cdi_from) == (True, "/etc/containerd/config.toml")


def test_containerd_2_without_enable_cdi_has_cdi_on_by_its_built_in_default(host):
    host.write("/etc/containerd/config.toml", "version = 3\n")
    facts, _ = _check(host, "containerd")
    assert (facts.cdi_enabled, facts.cdi_from, facts.cdi_spec_dirs) == (True, None, ("/etc/cdi", "/var/run/cdi"))
