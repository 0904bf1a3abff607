"""kubelet.* on fixture trees: the device-plugin directory, kubelet.sock and `kubelet --version`."""

from __future__ import annotations

import os
from dataclasses import replace

from nvdp_node.adapters.host import read_kubelet
from nvdp_node.domain.checks import PathState, Status, evaluate_kubelet

DIR = "/var/lib/kubelet/device-plugins"
SOCK = f"{DIR}/kubelet.sock"


def _facts(host, **kwargs):
    return read_kubelet(host.paths, socket_dir=DIR, kubelet_socket=SOCK, **kwargs)


def test_a_running_kubelet_gives_a_writable_dir_a_socket_and_a_version(host):
    host.kubelet_dir().kubelet("Kubernetes v1.30.2")
    facts = _facts(host)
    assert (facts.socket_dir_state, facts.kubelet_socket_state) == (PathState.PRESENT, PathState.PRESENT)
    assert [r.status for r in evaluate_kubelet(facts)] == [Status.OK] * 3
    assert evaluate_kubelet(facts)[2].evidence == ("kubelet v1.30.2",)


def test_a_missing_device_plugin_dir_is_reported_with_the_k3s_hint(host):
    facts = _facts(host)
    assert (facts.socket_dir_state, facts.kubelet_socket_state) == (PathState.MISSING, PathState.MISSING)
    assert "k3s" in evaluate_kubelet(facts)[0].fix


def test_a_dir_nvdp_may_not_write_to_is_reported(host):
    host.kubelet_dir()
    # Tests run as root, for whom mode bits never refuse; the access check is injected instead.
    facts = _facts(host, access=lambda path, mode: False)
    assert facts.socket_dir_state is PathState.NOT_WRITABLE
    assert evaluate_kubelet(facts)[0].status is Status.ERROR


def test_the_writability_check_asks_for_write_and_search_permission(host):
    host.kubelet_dir()
    asked = []
    _facts(host, access=lambda path, mode: asked.append((str(path), mode)) or True)
    assert asked == [(str(host.path(DIR)), os.W_OK | os.X_OK)]


def test_a_file_where_the_dir_should_be_is_the_wrong_kind(host):
    host.write(DIR, "")
    assert _facts(host).socket_dir_state is PathState.WRONG_KIND


def test_a_regular_file_named_kubelet_sock_is_not_a_socket(host):
    host.kubelet_dir(socket=False).write(SOCK, "")
    facts = _facts(host)
    assert facts.kubelet_socket_state is PathState.WRONG_KIND
    assert evaluate_kubelet(facts)[1].evidence == (f"{SOCK} exists but is not a socket",)


def test_without_a_kubelet_binary_the_version_is_unknown_not_an_error(host):
    host.kubelet_dir()
    version = evaluate_kubelet(_facts(host))[2]
    assert version.status is Status.SKIPPED


def test_a_kubelet_that_hangs_is_given_up_on_after_the_timeout(host):
    host.executable("/usr/bin/kubelet", "#!/bin/sh\nexec sleep 30\n")
    paths = replace(host.paths, command_timeout=0.2)
    facts = read_kubelet(paths, socket_dir=DIR, kubelet_socket=SOCK)
    assert facts.version_output is None and facts.version_error == "no answer within 0.2 s"


def test_a_kubelet_that_fails_reports_its_exit_status_and_first_stderr_line(host):
    host.executable("/usr/bin/kubelet", "#!/bin/sh\necho 'flag provided but not defined' >&2\nexit 2\n")
    facts = _facts(host)
    assert facts.version_error == "exit status 2: flag provided but not defined"
    assert evaluate_kubelet(facts)[2].status is Status.SKIPPED


def test_the_kubelet_binary_path_is_configurable(host):
    host.executable("/opt/k8s/bin/kubelet", "#!/bin/sh\necho 'Kubernetes v1.18.3'\n")
    paths = replace(host.paths, kubelet_binary="/opt/k8s/bin/kubelet")
    facts = read_kubelet(paths, socket_dir=DIR, kubelet_socket=SOCK)
    assert facts.binary == "/opt/k8s/bin/kubelet"
    assert evaluate_kubelet(facts)[2].status is Status.WARNING
