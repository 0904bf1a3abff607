"""The one loop that owns nvdp's process (``nvdp serve``).

It owns only process concerns: signals (their handlers just set events), the
set of resources to run (start new ones, stop vanished ones), reload, READY,
the watchdog and ``STATUS=``. Each resource's
:class:`~nvdp_node.app.resource_plugin.ResourcePlugin` owns its devices,
serving and registration in its own task; one NVML health worker fans its
verdicts out to every resource holding that GPU. Nothing slow is awaited
here: config reads, host checks and NVML enumeration run on daemon threads
(:func:`~nvdp_node.app.threads.in_thread`), Register and self-dials in the
resources' tasks, the watchdog's self-checks in the watchdog's task.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from nvdp_node.adapters import nvml
from nvdp_node.adapters.dir_watch import DirWatcher
from nvdp_node.adapters.systemd_notify import Notifier, watchdog_interval
from nvdp_node.app.health_fanout import HealthFanout
from nvdp_node.app.cdi_specs import CdiSpecs
from nvdp_node.app.mps_units import MpsUnits
from nvdp_node.app.publish import Publisher
from nvdp_node.app.inventory import carry_health, describe_inventory, describe_layout_change, mig_layout
from nvdp_node.app.link_reader import LinkReader
from nvdp_node.app.resource_plugin import ResourcePlugin, plan_resources
from nvdp_node.app.settings import ServeSettings
from nvdp_node.app.status import ResourceView, status_line
from nvdp_node.app.threads import in_thread
from nvdp_node.domain.devices import NodeInventory
from nvdp_node.domain.errors import NvmlUnavailableError, PermanentError
from nvdp_node.domain.topology import LinkTable

log = logging.getLogger(__name__)

POLL_WATCHED = 10.0  # safety-net poll while inotify works
POLL_UNWATCHED = 0.5  # poll while the directory is missing or inotify is unavailable
LAYOUT_IDLE_RECHECK = 5.0  # while MIG layout checks are off, look at the settings again this often
READY_WAIT = 0.8  # READY goes out by then even if serving is still being tried
HANDOVER_WAIT = 5.0  # on a rename, how long the new resource may take to register before the old stops

Loader = Callable[[], ServeSettings]
Discover = Callable[[ServeSettings], NodeInventory]


def nvml_discover(settings: ServeSettings) -> NodeInventory:
    return nvml.discover(host=settings.host)  # LinkReader reads the links once serving


class Supervisor:
    def __init__(
        self,
        settings: ServeSettings,
        *,
        loader: Loader | None = None,
        notifier: Notifier | None = None,
        discover: Discover = nvml_discover,
        health: HealthFanout | None = None,
        after_registration: Callable[[], None] | None = None,
        on_reloaded: Callable[[ServeSettings], None] = lambda _s: None,
        read_links: Callable[[], LinkTable] = nvml.read_links,
        publisher: Publisher | None = None,
    ) -> None:
        self.settings = settings
        self._loader = loader
        self.notifier = notifier or Notifier()
        self._discover = discover
        self.health = health or HealthFanout()
        self._after_registration = after_registration
        self._on_reloaded = on_reloaded
        self.plugins: dict[object, ResourcePlugin] = {}
        self.inventory = NodeInventory(driver_version="", cuda_driver_version=None, gpus=())
        self.reload_error: str | None = None
        self._wake_event = asyncio.Event()
        self._stop = asyncio.Event()
        self._reload_wanted = False
        self._reload_task: asyncio.Task[None] | None = None
        self._watcher: DirWatcher | None = None
        self._applying = asyncio.Lock()  # a reload and a MIG layout change never apply at once
        self.plan_errors: tuple[str, ...] = ()
        self.mps_units = MpsUnits()
        self.links = LinkReader(read_links)
        self.publisher = publisher or Publisher(state_file=None)  # metrics, labels, state file
        self.observer = self.publisher.observer
        self.cdi_specs = CdiSpecs()

    # -- events (signal handlers and callbacks only set these) ---------------
    def wake(self, reason: str = "") -> None:
        self._wake_event.set()

    def request_stop(self) -> None:
        self._stop.set()
        self.wake()

    def request_reload(self) -> None:
        self._reload_wanted = True
        self.wake()

    # -- main loop ----------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        self.health.attach(loop, self._health_changed, on_verdict=self.observer.health_verdict)
        self.publisher.attach(self)
        self.publisher.start()
        watchdog = asyncio.create_task(self._watchdog(), name="watchdog")
        layout = asyncio.create_task(self._watch_mig_layout(), name="mig-layout")
        try:
            return await self._run()
        except PermanentError as err:
            log.error("%s", err)
            self.notifier.stopping(f"Failed: {err}")
            return err.exit_code
        finally:
            watchdog.cancel()
            layout.cancel()
            self.links.stop()
            if self._reload_task is not None:
                self._reload_task.cancel()
            self.health.stop()
            if self._watcher is not None:
                self._watcher.stop()
            await asyncio.gather(*(p.stop() for p in self.plugins.values()), return_exceptions=True)
            await self.publisher.stop()
            self.notifier.close()

    async def _run(self) -> int:
        try:
            inventory = await self._first(in_thread(lambda: self._discover(self.settings), name="nvml-discover"))
        except NvmlUnavailableError as err:
            if self.settings.fail_on_init_error:
                raise
            log.error("%s; fail_on_init_error is false, so serving no devices", err)
            inventory = NodeInventory(driver_version="", cuda_driver_version=None, gpus=())
        if inventory is None:  # stopped while NVML enumerated
            return self._stopped()
        await self._apply(self.settings, inventory, handover=False)
        self.links.refresh(lambda: [p.state for p in self.plugins.values()])
        pending = [p.first_pass.wait() for p in self.plugins.values()]
        if pending:
            await asyncio.wait([asyncio.ensure_future(w) for w in pending], timeout=READY_WAIT)
        self.notifier.ready(self._status())
        while not self._stop.is_set():
            if self._reload_wanted and self._reload_task is None:
                self._reload_wanted = False
                self._reload_task = asyncio.create_task(self._reload(), name="reload")
            self._watch_dir()
            for plugin in self.plugins.values():
                plugin.poke()
            self.notifier.set_status(self._status())
            self._maybe_run_after_registration()
            await self._wait()
        return self._stopped()

    async def _first(self, work: asyncio.Future | object) -> NodeInventory | None:
        """``work``'s result, or None if a stop request comes first."""
        task = asyncio.ensure_future(work)  # type: ignore[arg-type]
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not task.done():
            task.cancel()
            return None
        return task.result()

    def _stopped(self) -> int:
        self.notifier.stopping("Stopping: removing the plugin socket")
        return 0

    async def _wait(self) -> None:
        watched = self._watcher is not None and self._watcher.active
        try:
            await asyncio.wait_for(self._wake_event.wait(), POLL_WATCHED if watched else POLL_UNWATCHED)
        except TimeoutError:
            return
        # No debounce: the resources act on the first event at once, and the events that come
        # while their pass (a Register) runs coalesce into one more pass (ResourcePlugin.poke).
        self._wake_event.clear()

    def _watch_dir(self) -> None:
        directory = self.settings.socket_dir
        if self._watcher is not None and self._watcher.directory != directory:
            self._watcher.stop()
            self._watcher = None
        if self._watcher is None:
            self._watcher = DirWatcher(directory, self.wake)
        if not self._watcher.active:
            self._watcher.start()

    def _maybe_run_after_registration(self) -> None:
        if self._after_registration is None:
            return
        if all(p.registered for p in self.plugins.values()):
            # Slow, informative work (host checks) runs on a thread once kubelet has the GPUs.
            work, self._after_registration = self._after_registration, None
            asyncio.ensure_future(in_thread(work, name="host-checks"))

    # -- the set of resources -------------------------------------------------
    async def _apply(
        self, settings: ServeSettings, inventory: NodeInventory, *, handover: bool, keep_health: bool = False
    ) -> None:
        """Run exactly the resources ``settings`` and ``inventory`` call for; the rest stop.

        ``keep_health`` (a MIG layout change, not a reload): a resource whose
        devices did not change is left untouched, and devices that stay keep
        their health.
        """
        async with self._applying:
            inventory = self.links.attach(inventory)
            describe_inventory(inventory)
            planned = await self.cdi_specs.apply(settings, inventory, plan_resources(settings, inventory))
            for warning in planned.warnings:
                log.warning("%s", warning)
            for error in planned.errors:
                log.error("%s (devices concerned are not advertised)", error)
            started: list[ResourcePlugin] = []
            keep: dict[object, ResourcePlugin] = {}
            for key, (name, state) in planned.resources.items():
                gate = None
                if name in planned.mps:
                    parents = {d.gpu_uuid for d in state.devices.by_id.values()}
                    gpus = [g for g in inventory.gpus if g.uuid in parents]
                    gate = await self.mps_units.ensure(settings, name, planned.mps[name], gpus)
                plugin = self.plugins.get(key)
                if plugin is not None:
                    plugin.set_gate(gate)
                    plugin.kubelet_socket = settings.kubelet_socket
                    plugin.pod_resources_socket = settings.pod_resources_socket
                    if keep_health:
                        if state.devices.by_id != plugin.state.devices.by_id:
                            carry_health(plugin.state, state)
                            plugin.update(state)
                    else:
                        plugin.update(state)
                else:
                    plugin = ResourcePlugin(
                        name, state, socket_dir=settings.socket_dir, kubelet_socket=settings.kubelet_socket,
                        pod_resources_socket=settings.pod_resources_socket, on_change=self._resource_changed,
                        gate=gate, observer=self.observer,
                    )
                    plugin.start()
                    started.append(plugin)
                keep[key] = plugin
            gone = [p for k, p in self.plugins.items() if k not in keep]
            self.plugins, self.settings, self.inventory = keep, settings, inventory
            self.plan_errors = planned.errors
            self.health.update(settings.health, self.plugins.values())
            if handover and gone and started:
                await self._registered_or_timeout(started)
            if gone:
                for plugin in gone:
                    log.info("%s has no devices any more; stopping it", plugin.resource_name)
                await asyncio.gather(*(p.stop() for p in gone))
            for resource in self.mps_units.managed() - set(planned.mps):
                await self.mps_units.stop(resource)
            self.publisher.configure(settings, inventory)
            self.wake()

    async def _registered_or_timeout(self, plugins: list[ResourcePlugin]) -> None:
        """Bring the new resources up (served and registered) before the old ones go, within a bound."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANDOVER_WAIT
        while loop.time() < deadline and not all(p.registered for p in plugins):
            await asyncio.sleep(0.02)

    # -- reload -------------------------------------------------------------
    async def _reload(self) -> None:
        """Re-read everything off the loop, then apply only the difference; never end the daemon."""
        try:
            self.notifier.reloading()
            if self._loader is None:  # nothing to re-read; still end the RELOADING state
                self.notifier.ready(self._status())
                return
            try:
                new = await in_thread(self._loader, name="reload-config")
                inventory = await in_thread(lambda: self._discover(new), name="nvml-discover")
            except Exception as err:  # noqa: BLE001 - whatever it is, keep what runs
                self.reload_error = first_problem(err)
                log.error("reload failed, keeping the previous configuration:\n%s", err)
                self.publisher.reloaded(self.reload_error)
                self.notifier.ready(self._status())
                return
            try:
                await self._apply(new, inventory, handover=True)
                self.links.refresh(lambda: [p.state for p in self.plugins.values()])
                self._on_reloaded(new)
            except Exception as err:  # noqa: BLE001 - a bug here must not end the daemon either
                self.reload_error = first_problem(err)
                log.exception("reload could not be applied completely")
                self.publisher.reloaded(self.reload_error)
                self.notifier.ready(self._status())
                return
            self.reload_error = None
            self.publisher.reloaded(None)
            log.info("reloaded configuration")
            self.notifier.ready(self._status())
        finally:
            self._reload_task = None
            self.wake()

    # -- MIG layout ---------------------------------------------------------
    async def _watch_mig_layout(self) -> None:
        """Apply a changed MIG layout by itself (upstream needs a restart, #1645): only the difference.
        Otherwise rewrite the CDI spec if the driver changed under it (``CdiSpecs.refresh``)."""
        while True:
            interval = self.settings.mig_check_interval
            if interval <= 0 or (self.settings.naming.strategy == "none" and not self.settings.policy.uses_cdi):
                await asyncio.sleep(LAYOUT_IDLE_RECHECK)  # the settings may change on reload
                continue
            await asyncio.sleep(interval)
            if self._reload_task is not None or self._stop.is_set():
                continue  # a reload re-enumerates anyway
            settings = self.settings
            try:
                inventory = await in_thread(lambda: self._discover(settings), name="nvml-mig-check")
            except Exception as err:  # noqa: BLE001 - try again next time
                log.warning("MIG layout check failed: %s", err)
                continue
            before, after = mig_layout(self.inventory), mig_layout(inventory)
            if settings is not self.settings:
                continue
            if after == before or settings.naming.strategy == "none":
                async with self._applying:  # the same check rewrites the CDI spec for a new driver
                    if settings is self.settings and await self.cdi_specs.refresh(
                            settings, inventory, [p.state for p in self.plugins.values()]):
                        self.notifier.set_status(self._status())
                continue
            log.info("MIG layout changed (%s); applying it", describe_layout_change(before, after))
            await self._apply(settings, inventory, handover=True, keep_health=True)
            self.observer.layout_changed()
            self.notifier.set_status(self._status())

    # -- what resources and health report -------------------------------------
    def _resource_changed(self, why: str = "") -> None:
        """A resource finished a pass or changed state: show it. Never pokes the resources back
        (that would be a loop); only changes in the world (inotify, signals, timers) do."""
        if not self._stop.is_set():
            self.notifier.set_status(self._status())
            self.publisher.changed()
            self._maybe_run_after_registration()

    def _health_changed(self) -> None:
        self._resource_changed("device health changed")

    # -- watchdog -----------------------------------------------------------
    async def _watchdog(self) -> None:
        ping_every = watchdog_interval()
        if ping_every is None:
            return
        while True:
            await asyncio.sleep(ping_every)
            if await self._alive():
                self.notifier.watchdog()

    async def _alive(self) -> bool:
        """Whether to ping the watchdog: the loop runs (we are here), the servers answer, health progresses."""
        if self.health.stalled():
            log.error("health worker made no progress; withholding the watchdog ping")
            return False
        for plugin in list(self.plugins.values()):
            if plugin.serving and not await plugin.self_check():
                log.error("own gRPC server for %s does not answer; withholding the watchdog ping",
                          plugin.resource_name)
                return False
        return True

    # -- status -------------------------------------------------------------
    def status_text(self) -> str:
        return self._status()

    def _status(self) -> str:
        views = [
            ResourceView(
                resource_name=p.resource_name, socket_path=str(p.socket_path), devices=len(p.state.devices),
                healthy=p.state.healthy_count(), held=len(p.state.held), serving=p.serving,
                registered=p.registered, error=p.last_error, claims_error=p.claims_error,
            )
            for p in self.plugins.values()
        ]
        return status_line(
            views, found=len(self.inventory.gpus), expected=self.inventory.expected,
            kubelet_socket_present=self.settings.kubelet_socket.exists(),
            kubelet_socket=str(self.settings.kubelet_socket), reload_error=self.reload_error,
            plan_errors=self.plan_errors + ((self.cdi_specs.problem,) if self.cdi_specs.problem else ()),
        )


def first_problem(err: BaseException) -> str:
    """The first line that names a problem: a ConfigError's first entry, else the message's first line."""
    lines = getattr(err, "lines", None)
    if lines:
        return str(lines[0])
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
