"""Prometheus metrics for every GPU on every host and every recent run.

A custom collector (the official ``prometheus_client``) reads the latest host states at
scrape time, and the runs a :class:`RunBook` holds (the exporter fills it on its own
cadence; ended runs stay for :data:`ENDED_RETENTION_S`). Names follow Prometheus
conventions: base units, ``_ratio`` for 0-1 values, ``_total`` for counters, label sets
that do not change over a series' life. GPU series are labelled ``host``, ``index``,
``uuid`` and ``name``; a value the driver does not give is left out, never exported as 0.

The HTTP server answers each scrape in its own thread and listens with a backlog of
:data:`LISTEN_BACKLOG`, so a burst of concurrent scrapers is queued, not dropped.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer

from seglab.telemetry.sample import GpuSample, HostState, HostStatus
from seglab.telemetry.values import THROTTLE_BITS

GPU_LABELS = ("host", "index", "uuid", "name")
MIB = 1024 * 1024
LISTEN_BACKLOG = 1024  # the kernel caps it at net.core.somaxconn
ENDED_RETENTION_S = 3600.0
MAX_POWER_GAP_S = 60.0  # a longer gap between power readings is not integrated

# (metric name, help, sample attribute, scale)
GPU_GAUGES: tuple[tuple[str, str, str, float], ...] = (
    ("seglab_gpu_utilization_ratio", "GPU utilisation (0-1)", "utilization_gpu", 0.01),
    (
        "seglab_gpu_memory_utilization_ratio",
        "GPU memory controller utilisation (0-1)",
        "utilization_memory",
        0.01,
    ),
    ("seglab_gpu_memory_used_bytes", "GPU memory in use", "memory_used_mib", MIB),
    ("seglab_gpu_memory_total_bytes", "GPU memory in total", "memory_total_mib", MIB),
    ("seglab_gpu_temperature_celsius", "GPU temperature", "temperature_c", 1.0),
    ("seglab_gpu_power_draw_watts", "GPU power draw", "power_draw_w", 1.0),
    ("seglab_gpu_power_limit_watts", "GPU power limit", "power_limit_w", 1.0),
    ("seglab_gpu_fan_speed_ratio", "GPU fan speed (0-1)", "fan_percent", 0.01),
    ("seglab_gpu_sm_clock_hertz", "GPU SM clock", "clock_sm_mhz", 1e6),
    ("seglab_gpu_memory_clock_hertz", "GPU memory clock", "clock_memory_mhz", 1e6),
)
THROTTLE_REASONS = tuple(name for _, name in THROTTLE_BITS)
HOST_STATUSES = tuple(status.value for status in HostStatus)


@dataclass(frozen=True, slots=True)
class RunMetrics:
    """The latest training numbers of one run."""

    run_id: str
    host: str
    loss: float | None
    best_miou: float | None
    img_per_s: float | None
    iteration: int | None
    ended: bool = False
    age_s: float = 0.0


class RunBook:
    """The runs to export: active ones as last ingested, ended ones for ``retention`` s.

    A run seen ending stays ``retention`` s from then; one already ended when first seen
    stays until ``retention`` s after it was created. Thread-safe.
    """

    def __init__(self, retention: float = ENDED_RETENTION_S) -> None:
        self.retention = retention
        self._runs: dict[str, tuple[RunMetrics, float | None]] = {}
        self._lock = threading.Lock()

    def update(self, runs: Iterable[RunMetrics], now: float) -> None:
        """Record one ingestion of ``runs`` (at ``now``) and drop expired ended runs."""
        with self._lock:
            for run in runs:
                known = self._runs.get(run.run_id)
                expires: float | None = None
                if run.ended:
                    if known is not None and known[1] is not None:
                        expires = known[1]
                    elif known is not None:
                        expires = now + self.retention
                    else:
                        expires = now + self.retention - run.age_s
                self._runs[run.run_id] = (run, expires)
            self._runs = {
                run_id: entry
                for run_id, entry in self._runs.items()
                if entry[1] is None or entry[1] > now
            }

    def runs(self) -> list[RunMetrics]:
        """The runs to export now."""
        with self._lock:
            return [run for run, _ in self._runs.values()]


class EnergyMeter:
    """Energy per GPU uuid (J), integrated from successive power readings (trapezoids)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, float]] = {}
        self._joules: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, states: Iterable[HostState]) -> None:
        """Integrate every GPU reading newer than the last one seen for its uuid."""
        with self._lock:
            for gpu in (gpu for state in states for gpu in state.gpus):
                if gpu.power_draw_w is None or not gpu.time:
                    continue
                last = self._last.get(gpu.uuid)
                if last is not None and last[0] >= gpu.time:
                    continue
                self._joules.setdefault(gpu.uuid, 0.0)
                if last is not None and gpu.time - last[0] <= MAX_POWER_GAP_S:
                    self._joules[gpu.uuid] += (
                        (gpu.time - last[0]) * (gpu.power_draw_w + last[1]) / 2
                    )
                self._last[gpu.uuid] = (gpu.time, gpu.power_draw_w)

    def joules(self, uuid: str) -> float | None:
        """The energy integrated so far for ``uuid`` (None before its first reading)."""
        with self._lock:
            return self._joules.get(uuid)


class TelemetryCollector:
    """Builds the metric families at each scrape."""

    def __init__(
        self,
        states: Callable[[], Iterable[HostState]],
        runs: Callable[[], Iterable[RunMetrics]] | None = None,
        energy: EnergyMeter | None = None,
    ) -> None:
        self.states = states
        self.runs = runs
        self.energy = energy

    def describe(self) -> list[Any]:
        """Nothing up front: the series depend on the hosts found at scrape time."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every host's status, every GPU's readings, every exported run's numbers."""
        states = list(self.states())
        yield from _host_families(states)
        gpus = [gpu for state in states for gpu in state.gpus]
        for name, help_text, attribute, scale in GPU_GAUGES:
            family = GaugeMetricFamily(name, help_text, labels=GPU_LABELS)
            for gpu in gpus:
                value = getattr(gpu, attribute)
                if value is not None:
                    family.add_metric(_labels(gpu), float(value) * scale)
            yield family
        yield from _gpu_extras(gpus, self.energy)
        if self.runs is not None:
            yield from _run_families(list(self.runs()))


def _host_families(states: list[HostState]) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "seglab_host_telemetry_up",
        "1 when the host's GPU telemetry is current, 0 when degraded or failing",
        labels=("host", "source"),
    )
    status = GaugeMetricFamily(
        "seglab_host_telemetry_status",
        "1 for the host's telemetry status, 0 for the others (one series per status)",
        labels=("host", "source", "status"),
    )
    for state in states:
        ok = state.status in (HostStatus.OK, HostStatus.NO_GPU)
        up.add_metric((state.host, state.source), 1.0 if ok else 0.0)
        for value in HOST_STATUSES:
            status.add_metric(
                (state.host, state.source, value), 1.0 if state.status.value == value else 0.0
            )
    yield up
    yield status


def _gpu_extras(gpus: list[GpuSample], energy: EnergyMeter | None) -> Iterator[Metric]:
    ecc = CounterMetricFamily(
        "seglab_gpu_ecc_volatile_uncorrected_errors",
        "Uncorrected ECC errors since the driver loaded",
        labels=GPU_LABELS,
    )
    joules = CounterMetricFamily(
        "seglab_gpu_energy_joules",
        "GPU energy: NVML's total since the driver loaded, else the power draw the "
        "exporter integrated since it started",
        labels=GPU_LABELS,
    )
    throttle = GaugeMetricFamily(
        "seglab_gpu_throttle_reason",
        "1 while the clocks-event (throttle) reason is active, else 0",
        labels=(*GPU_LABELS, "reason"),
    )
    processes = GaugeMetricFamily(
        "seglab_gpu_processes", "Processes holding memory on the GPU", labels=GPU_LABELS
    )
    info = GaugeMetricFamily(
        "seglab_gpu_process_info",
        "1 for each (GPU uuid, seglab run, container) with a process on the GPU",
        labels=("uuid", "run_id", "container"),
    )
    for gpu in gpus:
        labels = _labels(gpu)
        if gpu.ecc_volatile_uncorrected is not None:
            ecc.add_metric(labels, float(gpu.ecc_volatile_uncorrected))
        total = gpu.energy_mj / 1000 if gpu.energy_mj is not None else None
        if total is None and energy is not None:
            total = energy.joules(gpu.uuid)
        if total is not None:
            joules.add_metric(labels, total)
        if gpu.throttle_reasons is not None:
            for reason in THROTTLE_REASONS:
                throttle.add_metric((*labels, reason), float(reason in gpu.throttle_reasons))
        processes.add_metric(labels, float(len(gpu.processes)))
        owners = {
            (p.run_id or "", p.container_name or p.container_id or "")
            for p in gpu.processes
            if p.run_id or p.container_name or p.container_id
        }
        for run_id, container in sorted(owners):
            info.add_metric((gpu.uuid, run_id, container), 1.0)
    yield from (ecc, joules, throttle, processes, info)


def _run_families(runs: list[RunMetrics]) -> Iterator[Metric]:
    labels = ("run_id", "host")
    families = (
        ("seglab_run_loss", "Training loss of the last logged iteration", "loss"),
        ("seglab_run_best_miou_ratio", "Best mIoU (0-1) of the run's evaluations", "best_miou"),
        ("seglab_run_images_per_second", "Training throughput", "img_per_s"),
        ("seglab_run_iteration", "Last logged training iteration", "iteration"),
    )
    for name, help_text, attribute in families:
        family = GaugeMetricFamily(name, help_text, labels=labels)
        for run in runs:
            value = getattr(run, attribute)
            if value is not None:
                family.add_metric((run.run_id, run.host), float(value))
        yield family
    ended = GaugeMetricFamily(
        "seglab_run_ended", "1 once the run has ended (kept for an hour), else 0", labels=labels
    )
    for run in runs:
        ended.add_metric((run.run_id, run.host), float(run.ended))
    yield ended


def _labels(gpu: GpuSample) -> tuple[str, str, str, str]:
    return (gpu.host, str(gpu.index), gpu.uuid, gpu.name or "")


class _Server(ThreadingWSGIServer):
    """A thread per scrape, daemon threads, and a listen backlog that holds a burst."""

    request_queue_size = LISTEN_BACKLOG


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr for every scrape."""

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing."""


def serve(
    collector: TelemetryCollector, port: int, bind: str
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``/metrics`` from a daemon thread; returns (server, thread)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    family, address = _family(bind, port)

    class Server(_Server):
        address_family = family

    server = make_server(address, port, make_wsgi_app(registry), Server, _QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="seglab-exporter")
    thread.start()
    return server, thread


def _family(bind: str, port: int) -> tuple[socket.AddressFamily, str]:
    """The address family (IPv4 or IPv6) and address to listen on for ``bind``."""
    family, _, _, _, address = socket.getaddrinfo(
        bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return family, str(address[0])
