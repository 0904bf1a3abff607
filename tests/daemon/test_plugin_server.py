"""PluginServer's socket file: born 0600, published by link(), only ever our own removed.

Real grpc.aio servers on real unix sockets in tmp dirs; an inotify thread
acts the moment the socket's name appears (the instant a hostile or racing
process would), and root-only tests mount small tmpfs file systems to get
real EROFS and ENOSPC errors.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import select
import socket
import stat
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nvdp_node.adapters.plugin_server import PluginServer, remove_leftover_private_dirs
from nvdp_node.adapters.servicer import DevicePluginServicer, DeviceState
from nvdp_node.domain.allocation import AllocationPolicy
from nvdp_node.domain.devices import DeviceSet
from nvdp_node.domain.errors import TemporaryError

IN_CREATE = 0x100
SOCK = "nvidia-gpu.sock"


def new_server(socket_dir: Path) -> PluginServer:
    return PluginServer(socket_dir / SOCK, DevicePluginServicer(DeviceState(DeviceSet([]), AllocationPolicy())))


class OnCreate:
    """Calls ``action(path)`` on an inotify thread as soon as ``name`` is created in ``directory``."""

    def __init__(self, directory: Path, name: str, action: Callable[[Path], None]) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0 and libc.inotify_add_watch(self.fd, bytes(directory), IN_CREATE) >= 0
        self.path = directory / name
        self.action = action
        self.fired = threading.Event()
        self.errors: list[BaseException] = []
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while not self.fired.is_set():
            if any(fd == self._stop_r for fd, _ in poller.poll()):
                return
            data = os.read(self.fd, 65536)
            while data:
                _, _, _, size = struct.unpack_from("iIII", data)
                name = data[16 : 16 + size].rstrip(b"\0").decode()
                data = data[16 + size :]
                if name == self.path.name and not self.fired.is_set():
                    try:
                        self.action(self.path)
                    except BaseException as err:  # reported by close()
                        self.errors.append(err)
                    self.fired.set()

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self._thread.join(5)
        for fd in (self.fd, self._stop_r, self._stop_w):
            os.close(fd)
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual interactive umask, so a socket bound without care would be 0755."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_the_socket_is_0600_at_the_moment_its_name_appears(tmp_path, umask_022):
    modes: list[int] = []
    watch = OnCreate(tmp_path, SOCK, lambda path: modes.append(stat.S_IMODE(os.lstat(path).st_mode)))

    async def scenario() -> None:
        server = new_server(tmp_path)
        await server.start()
        await server.stop()

    try:
        asyncio.run(scenario())
    finally:
        watch.close()
    assert modes == [0o600]


def test_a_symlink_swapped_in_as_the_socket_appears_is_never_followed(tmp_path, umask_022):
    target = tmp_path / "precious"
    target.write_text("not nvdp's")
    target.chmod(0o644)

    def swap(path: Path) -> None:
        path.unlink()
        path.symlink_to(target)

    watch = OnCreate(tmp_path, SOCK, swap)
    outcome: list[object] = []

    async def scenario() -> None:
        server = new_server(tmp_path)
        try:
            await server.start()
        except TemporaryError as err:  # replaced before the self-dial: a clean, retryable failure
            outcome.append(err)
        else:
            watch.fired.wait(5)
            outcome.append(server.intact())
            await server.stop()

    try:
        asyncio.run(scenario())
    finally:
        watch.close()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert (tmp_path / SOCK).is_symlink(), "a file that is not our socket is never removed"
    assert outcome != [True], "a replaced socket is not intact"


def test_a_foreign_socket_bound_after_kubelet_deleted_ours_survives_our_stop(tmp_path):
    foreign = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    async def scenario() -> None:
        server = new_server(tmp_path)
        await server.start()
        (tmp_path / SOCK).unlink()  # kubelet starting: every plugin socket goes
        foreign.bind(str(tmp_path / SOCK))  # another plugin, or a new nvdp, is quicker than our re-serve
        assert not server.intact()
        await server.stop()

    with foreign:
        asyncio.run(scenario())
        assert (tmp_path / SOCK).is_socket()
        assert os.listdir(tmp_path) == [SOCK], "nothing else of ours is left behind"


def test_stop_removes_our_socket_and_our_private_directory(tmp_path):
    async def scenario() -> list[str]:
        server = new_server(tmp_path)
        await server.start()
        during = sorted(os.listdir(tmp_path))
        await server.stop()
        return during

    during = asyncio.run(scenario())
    assert during[1] == SOCK and during[0].startswith(".nvdp-")
    assert os.listdir(tmp_path) == []


@pytest.fixture
def tmpfs(tmp_path) -> Iterator[Callable[[str], Path]]:
    """``tmpfs("ro,size=64k")`` mounts a small tmpfs and returns its path; root only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounts: list[Path] = []

    def mount(options: str) -> Path:
        point = tmp_path / f"fs{len(mounts)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "nvdp-test", str(point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounts.append(point)
        return point

    yield mount
    for point in reversed(mounts):
        subprocess.run(["umount", str(point)], check=True)


def start_error(socket_dir: Path) -> str:
    async def scenario() -> str:
        with pytest.raises(TemporaryError) as err:
            await new_server(socket_dir).start()
        return str(err.value)

    return asyncio.run(scenario())


def test_a_read_only_directory_gives_the_os_error_text(tmpfs):
    socket_dir = tmpfs("ro,size=64k")
    assert start_error(socket_dir) == f"cannot listen on {socket_dir / SOCK}: [Errno 30] Read-only file system"


# tmpfs counts an inode for its root, the private directory, the socket and each extra hard link.
@pytest.mark.parametrize("inodes", [1, 2, 3], ids=["at-mkdir", "at-bind", "at-link"])
def test_a_full_file_system_gives_enospc_and_leaves_nothing_behind(tmpfs, inodes):
    socket_dir = tmpfs(f"size=64k,nr_inodes={inodes}")
    assert start_error(socket_dir) == f"cannot listen on {socket_dir / SOCK}: [Errno 28] No space left on device"
    assert os.listdir(socket_dir) == []


def dead_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))
        s.listen()


def test_private_directories_of_dead_processes_are_removed_at_start(tmp_path):
    (tmp_path / ".nvdp-0123456789ab").mkdir()
    dead_socket(tmp_path / ".nvdp-0123456789ab" / "s")
    (tmp_path / ".nvdp-ba9876543210").mkdir()  # died between mkdir and bind

    async def scenario() -> None:
        server = new_server(tmp_path)
        await server.start()
        await server.stop()

    asyncio.run(scenario())
    assert os.listdir(tmp_path) == []


def listening(path: Path, keep: list[socket.socket]) -> None:
    path.mkdir()
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    keep.append(live)
    live.bind(str(path / "s"))
    live.listen()


@pytest.fixture
def keep_open() -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    yield sockets
    for s in sockets:
        s.close()


@pytest.mark.parametrize(
    "make",
    [
        listening,
        lambda p, _: (p.mkdir(), (p / "s").write_text("a file")),
        lambda p, _: (p.mkdir(), dead_socket(p / "s"), (p / "other").write_text("")),
        lambda p, _: p.write_text("a file named like a private dir"),
        lambda p, _: ((p.parent / "elsewhere").mkdir(), p.symlink_to(p.parent / "elsewhere")),
    ],
    ids=["socket-still-listening", "s-is-a-file", "more-than-s", "not-a-directory", "symlink-to-a-directory"],
)
def test_anything_else_named_like_a_private_directory_is_left_alone(tmp_path, make, keep_open):
    make(tmp_path / ".nvdp-0123456789ab", keep_open)
    before = sorted(os.listdir(tmp_path))
    assert remove_leftover_private_dirs(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == before


def test_a_directory_not_named_by_the_pattern_is_left_alone(tmp_path):
    for name in (".nvdp-0123", ".nvdp-0123456789AB", "nvdp-0123456789ab", ".nvdp-0123456789abc"):
        (tmp_path / name).mkdir()
    assert remove_leftover_private_dirs(tmp_path) == []
    assert len(os.listdir(tmp_path)) == 4


def test_a_file_at_the_socket_path_is_an_error_and_is_kept(tmp_path):
    (tmp_path / SOCK).write_text("someone's file")
    assert start_error(tmp_path) == f"{tmp_path / SOCK} exists and is not a socket; not removing it"
    assert (tmp_path / SOCK).read_text() == "someone's file"
    assert os.listdir(tmp_path) == [SOCK], "our private directory is gone again"


def test_a_stale_socket_at_the_path_is_replaced_by_ours(tmp_path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(tmp_path / SOCK))

    async def scenario() -> bool:
        server = new_server(tmp_path)
        await server.start()
        try:
            return server.intact() and await server.answers()
        finally:
            await server.stop()

    assert asyncio.run(scenario())
