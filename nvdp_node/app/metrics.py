"""nvdp's Prometheus metrics: the families, and the one observer the daemon reports to.

The supervisor creates one :class:`Observer` and hands it to every
:class:`~nvdp_node.app.resource_plugin.ResourcePlugin` (registrations, their
causes, RPCs through :meth:`Observer.rpc_metrics`) and to the health fan-out
(XID events, lost GPUs). Events are counted at once (a counter ``inc`` and a
histogram ``observe``: Allocate stays as fast as it was); what is a *state*
(devices, health, registered, holders) is taken as an immutable snapshot on
the loop whenever something changed (:meth:`Observer.refresh`) and rendered
from that snapshot, so the textfile writer's and the HTTP endpoint's threads
never read live daemon state. Every family is listed, with its labels, in
docs/operations.md; names and labels are a stable interface.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from nvdp_node import __version__
from nvdp_node.domain.health_policy import Verdict

# Kubelet's Allocate deadline is seconds; nvdp answers in well under a millisecond.
RPC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5)
# No "<counter>_created" series: they double the textfile and no alert needs them (process-wide switch).
disable_created_metrics()
CAUSES = ("kubelet_restart", "socket_deleted", "stream_lost", "no_stream", "other")


@dataclass(frozen=True)
class DeviceFacts:
    """One advertised device as the metrics and ``nvdp status`` show it."""

    resource: str
    device: str
    gpu_uuid: str
    index: str
    model: str
    healthy: bool
    reason: str  # "" when healthy: "XID 79 at …", "lost at …", "held by …"
    holder: tuple[str, str, str] | None  # (namespace, pod, container) from PodResources


@dataclass(frozen=True)
class ResourceFacts:
    resource: str
    devices: int
    healthy: int
    serving: bool
    registered: bool
    state: str
    since: float  # wall-clock time the registration state was entered


@dataclass(frozen=True)
class GpuEvents:
    """What the health worker said about one physical GPU since start."""

    last_xid: int | None = None
    last_xid_at: float | None = None
    lost_at: float | None = None


@dataclass(frozen=True)
class Snapshot:
    resources: tuple[ResourceFacts, ...] = ()
    devices: tuple[DeviceFacts, ...] = ()
    gpus: tuple[tuple[str, str, str], ...] = ()  # (uuid, index, model) of every GPU found
    events: tuple[tuple[str, GpuEvents], ...] = ()
    kubelet_socket_present: bool = False
    driver: str = ""
    nvml: str = ""
    cuda: str = ""


class RpcMetrics:
    """One resource's RPC counters, bound once per serve (children are looked up per call otherwise)."""

    def __init__(self, observer: Observer, resource: str) -> None:
        self._observer, self._resource = observer, resource
        self._durations: dict[str, object] = {}  # children made on first use: no empty histograms
        self._requests: dict[tuple[str, str], object] = {}
        self._updates = observer.listandwatch_updates.labels(resource)

    def rpc_done(self, method: str, code: str, seconds: float) -> None:
        counter = self._requests.get((method, code))
        if counter is None:
            counter = self._requests[(method, code)] = self._observer.rpc_requests.labels(
                self._resource, method, code)
        counter.inc()  # type: ignore[attr-defined]
        duration = self._durations.get(method)
        if duration is None:
            duration = self._durations[method] = self._observer.rpc_duration.labels(self._resource, method)
        duration.observe(seconds)  # type: ignore[attr-defined]
        if method == "Allocate":
            self._observer.allocated()
        self._observer.changed()

    def stream_sent(self, method: str) -> None:
        self._updates.inc()
        self._observer.changed()


class Observer:
    """Counts what happens and snapshots what is; the publisher writes it out."""

    def __init__(self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._clock = clock
        self.snapshot = Snapshot()
        self._on_change: Callable[[], None] = lambda: None
        self._on_allocate: Callable[[], None] = lambda: None
        self._events: dict[str, GpuEvents] = {}
        r = self.registry
        self.registrations = Counter("nvdp_registrations", "Successful Register calls to kubelet.",
                                     ["resource"], registry=r)
        self.reregistrations = Counter(
            "nvdp_reregistrations", "Registrations made again, by cause: kubelet_restart (kubelet.sock "
            "replaced), socket_deleted (our socket removed), stream_lost (kubelet ended ListAndWatch), "
            "no_stream (kubelet opened no ListAndWatch after Register), other.", ["resource", "cause"], registry=r)
        self.register_failures = Counter("nvdp_register_failures", "Register calls that failed.",
                                         ["resource"], registry=r)
        self.rpc_requests = Counter("nvdp_rpc_requests", "DevicePlugin RPCs answered, by gRPC status code.",
                                    ["resource", "method", "code"], registry=r)
        self.rpc_duration = Histogram("nvdp_rpc_duration_seconds", "Time to answer a unary DevicePlugin RPC.",
                                      ["resource", "method"], buckets=RPC_BUCKETS, registry=r)
        self.listandwatch_updates = Counter("nvdp_listandwatch_updates", "ListAndWatch messages sent.",
                                            ["resource"], registry=r)
        self.xid_events = Counter("nvdp_gpu_xid_events", "XID events NVML reported, ignored ones included.",
                                  ["uuid", "xid"], registry=r)
        self.reloads = Counter("nvdp_reloads", "Reloads (SIGHUP), by result: success or failure.",
                               ["result"], registry=r)
        self.mig_layout_changes = Counter("nvdp_mig_layout_changes", "MIG layout changes applied.", registry=r)
        self.config_generation = Gauge("nvdp_config_generation",
                                       "Configurations applied since start (1 after start, +1 per good reload).",
                                       registry=r)
        self.start_time = Gauge("nvdp_start_time_seconds", "When nvdp started (Unix time).", registry=r)
        self.start_time.set(self._clock())
        for result in ("success", "failure"):
            self.reloads.labels(result)
        r.register(_StateCollector(self))

    # -- hooks: called on the event loop ----------------------------------------
    def attach(self, on_change: Callable[[], None], on_allocate: Callable[[], None]) -> None:
        self._on_change, self._on_allocate = on_change, on_allocate

    def changed(self) -> None:
        self._on_change()

    def allocated(self) -> None:
        """A pod got devices: the publisher asks PodResources who holds them."""
        self._on_allocate()

    def rpc_metrics(self, resource: str) -> RpcMetrics:
        return RpcMetrics(self, resource)

    def registered(self, resource: str, cause: str | None) -> None:
        self.registrations.labels(resource).inc()
        if cause is not None:
            self.reregistrations.labels(resource, cause).inc()
        self.changed()

    def register_failed(self, resource: str) -> None:
        self.register_failures.labels(resource).inc()
        self.changed()

    def applied(self) -> None:
        self.config_generation.inc()
        self.changed()

    def reloaded(self, ok: bool) -> None:
        self.reloads.labels("success" if ok else "failure").inc()
        self.changed()

    def layout_changed(self) -> None:
        self.mig_layout_changes.inc()

    def health_verdict(self, verdict: Verdict) -> None:
        """An XID event (marking or ignored) or a lost GPU, from the health worker via the loop."""
        now = self._clock()
        if verdict.gpu_uuid is None:
            if verdict.xid is not None:
                self.xid_events.labels("unknown", str(verdict.xid)).inc()
            return
        before = self._events.get(verdict.gpu_uuid, GpuEvents())
        if verdict.lost:
            self._events[verdict.gpu_uuid] = GpuEvents(before.last_xid, before.last_xid_at, now)
        elif verdict.xid is not None:
            self.xid_events.labels(verdict.gpu_uuid, str(verdict.xid)).inc()
            self._events[verdict.gpu_uuid] = GpuEvents(verdict.xid, now, before.lost_at)
        self.changed()

    def gpu_events(self) -> dict[str, GpuEvents]:
        return dict(self._events)

    def publish(self, snapshot: Snapshot) -> None:
        """The loop's new view of the state (see ``nvdp_node.app.daemon_state``)."""
        self.snapshot = snapshot


class _StateCollector(Collector):
    """Gauges built from the latest snapshot at each scrape or textfile write (any thread)."""

    def __init__(self, observer: Observer) -> None:
        self._observer = observer

    def collect(self) -> Iterator[Metric]:
        s = self._observer.snapshot
        fams = {
            "devices": GaugeMetricFamily("nvdp_resource_devices", "Devices advertised.", labels=["resource"]),
            "healthy": GaugeMetricFamily("nvdp_resource_healthy_devices", "Devices advertised Healthy.",
                                         labels=["resource"]),
            "serving": GaugeMetricFamily("nvdp_resource_serving", "1 while the plugin socket serves.",
                                         labels=["resource"]),
            "registered": GaugeMetricFamily("nvdp_resource_registered", "1 while registered with kubelet.",
                                            labels=["resource"]),
        }
        for r in s.resources:
            fams["devices"].add_metric([r.resource], r.devices)
            fams["healthy"].add_metric([r.resource], r.healthy)
            fams["serving"].add_metric([r.resource], int(r.serving))
            fams["registered"].add_metric([r.resource], int(r.registered))
        yield from fams.values()
        dev_labels = ["resource", "device", "uuid", "index", "model"]
        healthy = GaugeMetricFamily("nvdp_device_healthy", "1 while the device is advertised Healthy.",
                                    labels=dev_labels)
        holder = InfoMetricFamily("nvdp_device_allocation", "The pod container holding the device "
                                  "(kubelet's PodResources).", labels=[*dev_labels, "namespace", "pod", "container"])
        for d in s.devices:
            values = [d.resource, d.device, d.gpu_uuid, d.index, d.model]
            healthy.add_metric(values, int(d.healthy))
            if d.holder is not None:
                holder.add_metric([*values, *d.holder], {})
        yield healthy
        yield holder
        gpu_labels = ["uuid", "index", "model"]
        lost = GaugeMetricFamily("nvdp_gpu_lost", "1 once NVML said the GPU is lost.", labels=gpu_labels)
        last = GaugeMetricFamily("nvdp_gpu_last_xid", "The last XID NVML reported.", labels=gpu_labels)
        last_at = GaugeMetricFamily("nvdp_gpu_last_xid_timestamp_seconds", "When the last XID came (Unix time).",
                                    labels=gpu_labels)
        events = dict(s.events)
        for uuid, index, model in s.gpus:
            e = events.get(uuid, GpuEvents())
            lost.add_metric([uuid, index, model], int(e.lost_at is not None))
            if e.last_xid is not None and e.last_xid_at is not None:
                last.add_metric([uuid, index, model], e.last_xid)
                last_at.add_metric([uuid, index, model], e.last_xid_at)
        yield lost
        yield last
        yield last_at
        kubelet = GaugeMetricFamily("nvdp_kubelet_socket_present", "1 while kubelet's registration socket exists.")
        kubelet.add_metric([], int(s.kubelet_socket_present))
        yield kubelet
        build = InfoMetricFamily("nvdp_build", "nvdp's version and the driver, NVML and CUDA versions it found.")
        build.add_metric([], {"version": __version__, "driver": s.driver, "nvml": s.nvml, "cuda": s.cuda})
        yield build
