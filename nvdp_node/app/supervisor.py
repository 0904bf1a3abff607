"""The one loop that owns nvdp's lifecycle (``nvdp serve``).

Signal handlers only set events; everything else happens here, in order:
discover GPUs, serve and register each resource, then wait for a reason to
act (stop, reload, a change in the kubelet directory, a lost ListAndWatch
stream, a back-off expiring, the watchdog period) and reconcile. Permanent
errors end the loop with their exit code; temporary ones are retried and
shown in ``STATUS=``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable

from nvdp_node.adapters import nvml
from nvdp_node.adapters.dir_watch import DirWatcher
from nvdp_node.adapters.nvml_health import HealthWorker
from nvdp_node.adapters.servicer import DeviceState
from nvdp_node.adapters.systemd_notify import Notifier, watchdog_interval
from nvdp_node.app.resource_plugin import ResourcePlugin
from nvdp_node.app.settings import ServeSettings, SettingsLoader
from nvdp_node.domain.devices import DeviceSet, Health, NodeInventory
from nvdp_node.domain.health_policy import DeviceRef
from nvdp_node.domain.errors import (
    HostCheckFailed,
    NvdpError,
    NvmlUnavailableError,
    PermanentError,
)

log = logging.getLogger(__name__)

DEBOUNCE = 0.02  # coalesce the burst of events a kubelet restart makes
POLL_WATCHED = 10.0  # safety-net poll while inotify works
POLL_UNWATCHED = 0.5  # poll while the directory is missing or inotify is unavailable
HEALTH_STALL_ALLOWANCE = 10.0  # beyond one NVML wait timeout, before the worker counts as stuck


class Supervisor:
    def __init__(
        self,
        settings: ServeSettings,
        *,
        reload_settings: SettingsLoader | None = None,
        notifier: Notifier | None = None,
        discover: Callable[[ServeSettings], NodeInventory] | None = None,
        health_worker: Callable[..., HealthWorker] = HealthWorker,
        after_registration: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self._reload_settings = reload_settings
        self.notifier = notifier or Notifier()
        self._discover = discover or (lambda s: nvml.discover(sysfs_root=s.host.at(s.host.sysfs_dir)))
        self._wake_event = asyncio.Event()
        self._wake_reasons: list[str] = []
        self._stop = False
        self._reload = False
        self.plugin: ResourcePlugin | None = None
        self._watcher: DirWatcher | None = None
        self._make_worker = health_worker
        self._after_registration = after_registration
        self.health: HealthWorker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- events -------------------------------------------------------------
    def wake(self, reason: str) -> None:
        self._wake_reasons.append(reason)
        self._wake_event.set()

    def request_stop(self) -> None:
        self._stop = True
        self.wake("stop requested")

    def request_reload(self) -> None:
        self._reload = True
        self.wake("reload requested")

    # -- main loop ----------------------------------------------------------
    async def run(self) -> int:
        loop = self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            return await self._run()
        except PermanentError as err:
            log.error("%s", err)
            self.notifier.stopping(f"Failed: {err}")
            return err.exit_code
        finally:
            self._stop_health()
            if self._watcher is not None:
                self._watcher.stop()
            if self.plugin is not None:
                await self.plugin.stop()
            self.notifier.close()

    async def _run(self) -> int:
        self.plugin = self._make_plugin(self.settings)
        self._start_health(self.settings)
        ready = False
        ping_every = watchdog_interval()
        while not self._stop:
            if self._reload:
                self._reload = False
                await self._do_reload()
            await self._reconcile()
            if not ready and (self.plugin is None or self.plugin.serving):
                self.notifier.ready(self._status())
                ready = True
            else:
                self.notifier.set_status(self._status())
            if self._after_registration is not None and (self.plugin is None or self.plugin.registered):
                # Slow, informative work (host checks) runs on a thread once kubelet has the GPUs.
                asyncio.get_running_loop().run_in_executor(None, self._after_registration)
                self._after_registration = None
            if ping_every is not None and await self._alive():
                self.notifier.watchdog()
            await self._wait(self._next_timeout(ping_every))
        self.notifier.stopping("Stopping: removing the plugin socket")
        return 0

    def _make_plugin(self, settings: ServeSettings) -> ResourcePlugin | None:
        try:
            inventory = self._discover(settings)
        except NvmlUnavailableError as err:
            if settings.fail_on_init_error:
                raise
            log.error("%s; fail_on_init_error is false, so serving no devices", err)
            inventory = NodeInventory(driver_version="", cuda_driver_version=None, gpus=())
        devices = inventory.devices()
        log.info(
            "found %d GPU(s), driver %s: %s",
            len(devices),
            inventory.driver_version or "unknown",
            ", ".join(f"{g.index}:{g.name}:{g.uuid}" for g in inventory.gpus) or "none",
        )
        for gpu in inventory.gpus:
            if gpu.mig_enabled:
                log.warning(
                    "GPU %d (%s) has MIG enabled, but nvdp advertises whole GPUs only (MIG strategies are "
                    "not supported yet): containers given this GPU will see no usable CUDA device",
                    gpu.index, gpu.uuid,
                )
        if not devices:
            log.warning("No devices found. Waiting indefinitely (nothing is registered with kubelet).")
            return None
        state = DeviceState(DeviceSet(devices), settings.policy())
        return ResourcePlugin(state, socket_dir=settings.socket_dir, wake=self.wake)

    async def _reconcile(self) -> None:
        if self._watcher is None or not self._watcher.active:
            self._watcher = self._watcher or DirWatcher(self.settings.socket_dir, self.wake)
            self._watcher.directory = self.settings.socket_dir
            self._watcher.start()
        if self.plugin is None:
            return
        await self.plugin.reconcile(self.settings.kubelet_socket, _inode(self.settings.kubelet_socket), time.monotonic())

    async def _wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._wake_event.wait(), timeout)
        except TimeoutError:
            return
        await asyncio.sleep(DEBOUNCE)
        self._wake_event.clear()
        reasons, self._wake_reasons = self._wake_reasons, []
        log.debug("woken: %s", "; ".join(reasons))

    def _next_timeout(self, ping_every: float | None) -> float:
        watched = self._watcher is not None and self._watcher.active
        timeout = POLL_WATCHED if watched else POLL_UNWATCHED
        if self.plugin is not None and (retry := self.plugin.retry_in(time.monotonic())) is not None:
            timeout = min(timeout, retry)
        if ping_every is not None:
            timeout = min(timeout, ping_every)
        return max(timeout, 0.0)

    # -- reload -------------------------------------------------------------
    async def _do_reload(self) -> None:
        self.notifier.reloading()
        if self._reload_settings is None:  # nothing to re-read; still end the RELOADING state
            self.notifier.ready(self._status())
            return
        try:
            new = self._reload_settings()
        except HostCheckFailed:
            raise  # runtime_check.policy = "fail" applies on reload as at start
        except (NvdpError, ValueError) as err:
            log.error("reload failed, keeping the previous configuration:\n%s", err)
            self.notifier.ready(f"Reload failed: {_first_line(err)} (keeping previous config)")
            return
        old_plugin = self.plugin
        try:
            new_plugin = self._make_plugin(new)
        except PermanentError as err:
            log.error("reload failed, keeping the previous devices: %s", err)
            self.notifier.ready(f"Reload failed: {_first_line(err)} (keeping previous config)")
            return
        if (
            old_plugin is not None
            and new_plugin is not None
            and new.registration_key() == self.settings.registration_key()
        ):
            # Same resource, same sockets: update in place, no re-registration, no capacity gap.
            old_plugin.state.replace(new_plugin.state.devices, new_plugin.state.policy)
            new_plugin = old_plugin
        elif new_plugin is not None:
            # Bring the new resource up (served and registered) before the old one goes.
            await new_plugin.reconcile(new.kubelet_socket, _inode(new.kubelet_socket), time.monotonic())
        if old_plugin is not None and old_plugin is not new_plugin:
            await old_plugin.stop()
        self.settings, self.plugin = new, new_plugin
        self._start_health(new)
        if self._watcher is not None and self._watcher.directory != new.socket_dir:
            self._watcher.stop()
        log.info("reloaded configuration")
        self.notifier.ready(self._status())

    async def _alive(self) -> bool:
        """Whether to ping the watchdog: the loop runs (we are here), the server answers, health progresses."""
        if self.health is not None and self.health.stalled(time.monotonic(), allowance=HEALTH_STALL_ALLOWANCE):
            log.error("health worker made no progress for %.0f s; withholding the watchdog ping",
                      time.monotonic() - self.health.last_progress)
            return False
        if self.plugin is not None and self.plugin.serving and not await self.plugin.self_check():
            log.error("own gRPC server does not answer; withholding the watchdog ping")
            return False
        return True

    # -- health -------------------------------------------------------------
    def _start_health(self, settings: ServeSettings) -> None:
        """(Re)start the NVML health worker for the current plugin's devices."""
        self._stop_health()
        if self.plugin is None:
            return
        if not settings.health.enabled:
            log.info("health checking is disabled; devices stay Healthy")
            return
        refs = [DeviceRef(device_id=d.id, gpu_uuid=d.gpu_uuid) for d in self.plugin.state.devices.by_id.values()]
        self.health = self._make_worker(
            refs,
            settings.health.policy,
            self._health_report,
            recovery=settings.health.recovery,
            xid_events=settings.health.xid_events,
        )
        self.health.start()

    def _stop_health(self) -> None:
        if self.health is not None:
            self.health.stop()
            self.health = None

    def _health_report(self, device_ids: tuple[str, ...], health: Health, reason: str) -> None:
        """Called on the worker thread: hand over to the loop."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._apply_health, device_ids, health)

    def _apply_health(self, device_ids: tuple[str, ...], health: Health) -> None:
        if self.plugin is not None and self.plugin.state.set_health(device_ids, health):
            self.wake("device health changed")

    # -- status -------------------------------------------------------------
    def _status(self) -> str:
        plugin = self.plugin
        if plugin is None:
            return "No GPUs found; nothing registered with kubelet (see `nvdp check`)"
        total = len(plugin.state.devices)
        healthy = plugin.state.devices.healthy_count()
        what = f"{total} GPU{'s' if total != 1 else ''}"
        if healthy != total:
            what += f" ({total - healthy} unhealthy)"
        head = f"Serving {what} as {plugin.resource_name}"
        if not plugin.serving:
            return f"Cannot serve {plugin.resource_name} on {plugin.socket_path}: {plugin.last_error or 'starting'}"
        if plugin.registered:
            return f"{head}, registered with kubelet"
        if not self.settings.kubelet_socket.exists():
            return f"{head}; waiting for kubelet socket {self.settings.kubelet_socket}"
        return f"{head}; registration failed: {plugin.last_error}; retrying"


def _inode(path: os.PathLike[str]) -> tuple[int, int, int] | None:
    """kubelet.sock's identity; the ctime tells a re-created socket from one that reused the inode."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
