"""Writes what the daemon knows where others read it: textfile, HTTP, NFD labels, state file.

The supervisor creates one :class:`Publisher` (the CLI passes the real one;
tests pass paths under ``tmp_path``), attaches itself, calls
:meth:`Publisher.configure` after every applied plan (start, reload, MIG
change) and :meth:`Publisher.stop` at the end. Everything here runs in the
publisher's own task: a change (any observer hook) sets an event; the task
takes a snapshot on the loop (cheap, no I/O), then writes the files on a
thread (:func:`~nvdp_node.app.threads.in_thread`), at most every
``metrics.textfile_interval`` seconds and at least every
:data:`HEARTBEAT` seconds, so node_exporter's ``node_textfile_mtime_seconds``
tells a stale file from a quiet one. A missing directory or a failed write
is a note in the log and in ``nvdp status``, never fatal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import generate_latest

from nvdp_node.adapters.atomic_file import read_text, remove_file, write_atomic
from nvdp_node.adapters.metrics_http import MetricsEndpoint
from nvdp_node.adapters.pod_resources import PodResourcesUnavailable, list_assignments
from nvdp_node.app.daemon_state import Holders, state_document, take_snapshot
from nvdp_node.app.metrics import Observer, Snapshot
from nvdp_node.app.threads import in_thread
from nvdp_node.domain.listen_address import parse_listen
from nvdp_node.domain.labels import features_file, node_labels

if TYPE_CHECKING:
    from nvdp_node.app.settings import ServeSettings
    from nvdp_node.app.supervisor import Supervisor
    from nvdp_node.domain.devices import NodeInventory

log = logging.getLogger(__name__)

STATE_FILE = Path("/run/nvdp/state.json")
HEARTBEAT = 60.0  # rewrite at least this often, changed or not
HOLDERS_AFTER_ALLOCATE = 2.0  # kubelet records an allocation right after Allocate; ask PodResources then
HOLDERS_MIN_GAP = 10.0
HOLDERS_POLL = 60.0


class Publisher:
    def __init__(self, *, observer: Observer | None = None, state_file: Path | None = STATE_FILE,
                 clock: Callable[[], float] = time.time) -> None:
        self.observer = observer or Observer(clock=clock)
        self.state_file = state_file
        self._clock = clock
        self._supervisor: Supervisor | None = None
        self._settings: ServeSettings | None = None
        self._dirty = asyncio.Event()
        self._allocated = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._endpoint: MetricsEndpoint | None = None
        self._labels: str | None = None  # the text to write, None: remove
        self._labels_written: tuple[Path, str | None] | None = None
        self._textfile_written: Path | None = None
        self._holders: Holders = {}
        self.notes: dict[str, str] = {}
        self.last_reload: dict[str, Any] | None = None
        self._io = threading.Lock()  # a write pass still running must not outlive the final one
        self._closed = False

    # -- hooks (event loop) -----------------------------------------------------
    def attach(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self.observer.attach(self.changed, self._allocated.set)

    def changed(self) -> None:
        self._dirty.set()

    def reloaded(self, error: str | None) -> None:
        self.observer.reloaded(error is None)
        self.last_reload = {"at": self._clock(), "ok": error is None, "error": error}

    def configure(self, settings: ServeSettings, inventory: NodeInventory) -> None:
        """After a plan was applied: labels to write, the endpoint to (re)start."""
        self._settings = settings
        self.observer.applied()
        labels = settings.labels
        self._labels = (features_file(node_labels(inventory, mig_strategy=settings.naming.strategy,
                                                  sharing=settings.sharing)) if labels.enabled else None)
        self._configure_endpoint(settings.metrics.listen)
        self._allocated.set()  # ask PodResources who holds what after every applied plan, too
        self.changed()

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run(), name="publish"),
                           asyncio.create_task(self._poll_holders(), name="holders")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._endpoint is not None:
            self._endpoint.stop()
            self._endpoint = None
        if self._supervisor is not None and self._settings is not None:
            textfile, state = self._textfile_written, self._state_text(stopped=True)
            # Left in place, the textfile would say "registered" until the next start.
            await in_thread(lambda: self._final(textfile, state), name="publish-stop")

    # -- the task -------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._dirty.wait(), HEARTBEAT)
            except TimeoutError:
                pass
            self._dirty.clear()
            if self._supervisor is None or self._settings is None:
                continue
            try:
                now = self._clock()
                self.observer.publish(take_snapshot(self._supervisor, self.observer, self._holders,
                                                    self.observer.snapshot, now))
                self._set_notes(await in_thread(self._job(), name="publish"))
            except Exception:  # a bug here must not end the metrics for good
                log.exception("could not publish the metrics and the state; trying again")
            await asyncio.sleep(self._settings.metrics.textfile_interval)

    def _job(self) -> Callable[[], dict[str, str | None]]:
        """What to write, captured on the loop; the returned callable does only I/O."""
        assert self._settings is not None
        textfile = Path(self._settings.metrics.textfile) if self._settings.metrics.textfile else None
        old_textfile, self._textfile_written = self._textfile_written, textfile
        registry = self.observer.registry  # rendered on the thread: counters lock, the snapshot is immutable
        labels_path, labels = self._settings.labels.path, self._labels
        labels_job = None if self._labels_written == (labels_path, labels) else (labels_path, labels,
                                                                                 self._labels_written)
        self._labels_written = (labels_path, labels)
        state = self._state_text(stopped=False)

        def job() -> dict[str, str | None]:
            notes: dict[str, str | None] = {}
            with self._io:
                if self._closed:
                    return notes
                if old_textfile is not None and old_textfile != textfile:
                    _quietly(remove_file, old_textfile)
                if textfile is not None:
                    notes["textfile"] = _write(textfile, generate_latest(registry).decode(), "metrics textfile")
                if labels_job is not None:
                    notes["labels"] = _write_labels(*labels_job)
                if self.state_file is not None:
                    notes["state_file"] = _write(self.state_file, state, "state file")
            return notes

        return job

    def _state_text(self, *, stopped: bool) -> str:
        assert self._supervisor is not None
        doc = state_document(self.observer.snapshot, self._supervisor, self.notes, self._clock(),
                             self.last_reload)
        if stopped:
            doc |= {"status": "Stopped", "serving": False, "stopped": True}
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"

    def _final(self, textfile: Path | None, state: str) -> None:
        with self._io:
            self._closed = True
        if textfile is not None:
            _quietly(remove_file, textfile)
        if self.state_file is not None:
            _write(self.state_file, state, "state file")

    def _set_notes(self, notes: dict[str, str | None]) -> None:
        if notes.get("labels") is not None:
            self._labels_written = None  # try again with the next pass
        for key, note in notes.items():
            if note is None and key in self.notes:
                log.info("%s is written again", key.replace("_", " "))
                del self.notes[key]
            elif note is not None and self.notes.get(key) != note:
                log.warning("%s", note)
                self.notes[key] = note

    def _configure_endpoint(self, listen: str) -> None:
        current = self._endpoint.address if self._endpoint is not None else ""
        wanted = ""
        if listen:
            host, port = parse_listen(listen)
            wanted = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if wanted == current and (wanted == "" or "endpoint" not in self.notes):
            return
        if self._endpoint is not None:
            self._endpoint.stop()
            self._endpoint = None
            log.info("metrics endpoint on %s closed", current)
        self.notes.pop("endpoint", None)
        if not listen:
            return
        try:
            self._endpoint = MetricsEndpoint(self.observer.registry, host, port)
        except OSError as err:
            self.notes["endpoint"] = f"cannot serve metrics on {wanted}: {err}"
            log.error("%s (retried on reload)", self.notes["endpoint"])
            return
        log.info("serving metrics on http://%s/metrics", wanted)

    # -- who holds which device (PodResources) ---------------------------------------
    async def _poll_holders(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._allocated.wait(), HOLDERS_POLL)
                await asyncio.sleep(HOLDERS_AFTER_ALLOCATE)
            except TimeoutError:
                pass
            self._allocated.clear()
            socket = self._settings.pod_resources_socket if self._settings is not None else None
            if socket is None:
                continue
            try:
                assignments = await list_assignments(socket)
            except PodResourcesUnavailable as err:
                self.notes["holders"] = str(err).split("; last error:", 1)[0]
            except Exception:  # a bug must not end the polling
                log.exception("could not ask PodResources who holds the devices")
            else:
                self.notes.pop("holders", None)
                holders = {(a.resource_name, d): (a.namespace, a.pod, a.container)
                           for a in assignments for d in a.device_ids}
                if holders != self._holders:
                    self._holders = holders
                    self.changed()
            await asyncio.sleep(HOLDERS_MIN_GAP)


def _write(path: Path, text: str, what: str) -> str | None:
    try:
        write_atomic(path, text)
    except OSError as err:
        hint = " (its directory is missing)" if isinstance(err, FileNotFoundError) else ""
        return f"cannot write the {what} {path}{hint}: {err.strerror or err}"
    return None


def _write_labels(path: Path, text: str | None, before: tuple[Path, str | None] | None) -> str | None:
    if before is not None and before[0] != path and before[1] is not None:
        _quietly(remove_file, before[0])
    if text is None:
        if read_text(path) is not None:
            _quietly(remove_file, path)
        return None
    return _write(path, text, "NFD features file")


def _quietly(fn: Callable[[Path], object], path: Path) -> None:
    try:
        fn(path)
    except OSError as err:
        log.warning("cannot remove %s: %s", path, err)
