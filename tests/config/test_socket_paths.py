"""socket_name and socket_path_problem: which resource names can be served under which directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from nvdp_node.domain.resource_names import socket_name, socket_path_problem


@pytest.mark.parametrize(
    ("resource", "socket"),
    [
        ("nvidia.com/gpu", "nvidia-gpu.sock"),
        ("nvidia.com/mig-1g.10gb", "nvidia-mig-1g.10gb.sock"),
        ("example.com/gpu", "nvidia-example.com-gpu.sock"),
    ],
    ids=["upstream-name", "upstream-mig-name", "other-domain-keeps-its-domain"],
)
def test_socket_names_follow_upstream_and_keep_other_domains(resource: str, socket: str) -> None:
    assert socket_name(resource) == socket


def test_the_default_name_and_directory_can_be_served() -> None:
    assert socket_path_problem(Path("/var/lib/kubelet/device-plugins"), "nvidia.com/gpu") is None


def test_a_socket_path_of_exactly_107_bytes_can_be_served() -> None:
    directory = "/" + "d" * 40  # 41 bytes; "/nvidia-<name>.sock" adds 13 + len(name)
    name = "nvidia.com/" + "g" * (107 - 41 - 13)
    assert len(f"{directory}/{socket_name(name)}") == 107
    assert socket_path_problem(directory, name) is None


def test_a_socket_path_of_108_bytes_is_a_problem_naming_path_and_length() -> None:
    directory = "/" + "d" * 40
    name = "nvidia.com/" + "g" * (108 - 41 - 13)
    problem = socket_path_problem(directory, name)
    assert problem is not None
    assert f"the socket path '{directory}/{socket_name(name)}'" in problem and "is 108 bytes long" in problem


def test_a_socket_file_name_over_255_bytes_is_a_problem() -> None:
    name = "a" * 240 + ".com/" + "g" * 60  # 326-byte socket file name
    problem = socket_path_problem("/run", name)
    assert problem is not None
    assert problem.startswith(f"the socket file name {socket_name(name)!r}")
    assert f"is {len(socket_name(name))} bytes long, over the 255-byte limit of a file name" in problem


@pytest.mark.parametrize(("size", "fits"), [(86, True), (87, False)], ids=["86 bytes", "87 bytes"])
def test_the_socket_dir_needs_room_for_the_private_bind_path(size: int, fits: bool) -> None:
    directory = "/" + "d" * (size - 1)
    problem = socket_path_problem(directory, "nvidia.com/g")
    assert (problem is None) is fits, problem


def test_lengths_count_bytes_not_characters() -> None:
    directory = "/" + "é" * 43  # 87 bytes in UTF-8, 44 characters
    assert socket_path_problem(directory, "nvidia.com/g") is not None
