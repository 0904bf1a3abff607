"""Whatever a host file holds, the readers and rules produce verdicts and never raise."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from nvdp_node.adapters.host import HostRoot, read_cdi, read_containerd, read_crio, read_docker, read_toolkit
from nvdp_node.domain.checks import evaluate_cdi, evaluate_engine, evaluate_toolkit

KEYS = st.sampled_from(["version", "plugins", "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime",
                        "containerd", "default_runtime_name", "runtimes", "nvidia", "options", "BinaryName",
                        "crio", "runtime", "default_runtime", "runtime_path", "default-runtime", "path",
                        "imports", "disabled_plugins", "kind", "accept-nvidia-visible-devices-as-volume-mounts",
                        "accept-nvidia-visible-devices-envvar-when-unprivileged"]) | st.text(max_size=8)
SCALARS = st.booleans() | st.integers(-5, 5) | st.text(max_size=12) | st.sampled_from(
    ["nvidia", "runc", "/usr/bin/nvidia-container-runtime", "conf.d/*.toml", "nvidia.com/gpu"])
TOML_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
                           max_leaves=20)
TABLES = st.dictionaries(KEYS, TOML_VALUES, max_size=6)
JSON_VALUES = st.recursive(st.none() | SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(KEYS, inner, max_size=4), max_leaves=20)
FILES = {
    "docker": "/etc/docker/daemon.json",
    "containerd": "/etc/containerd/config.toml",
    "crio": "/etc/crio/crio.conf.d/50-x.conf",
    "toolkit": "/etc/nvidia-container-runtime/config.toml",
    "cdi": "/etc/cdi/x.yaml",
}


def _judge_everything(root: Path) -> None:
    paths = HostRoot(root=root)
    for reader in (read_docker, read_containerd, read_crio):
        evaluate_engine(reader(paths), explicit=True)
    evaluate_toolkit(read_toolkit(paths), ("volume-mounts",))
    evaluate_cdi(read_cdi(paths), ("cdi-cri",))


def _write(root: Path, host_path: str, data: bytes) -> None:
    path = root / host_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@settings(max_examples=150, deadline=None)
@given(docker=JSON_VALUES, toml=TABLES, cdi=JSON_VALUES)
def test_structurally_odd_but_parsable_files_never_crash_a_check(docker, toml, cdi):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write(root, FILES["docker"], json.dumps(docker).encode())
        for name in ("containerd", "crio", "toolkit"):
            _write(root, FILES[name], tomli_w.dumps(toml).encode())
        _write(root, FILES["cdi"], json.dumps(cdi).encode())
        _judge_everything(root)


@settings(max_examples=100, deadline=None)
@given(content=st.binary(max_size=200))
def test_arbitrary_bytes_in_every_host_file_never_crash_a_check(content):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for host_path in FILES.values():
            _write(root, host_path, content)
        _judge_everything(root)
