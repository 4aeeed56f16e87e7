"""Prometheus metrics for every GPU on every host and every active run.

A custom collector (the official ``prometheus_client``) reads the latest host states and
the registry's active runs at scrape time. GPU series are labelled ``host``, ``index``,
``uuid`` and ``name``; a value the driver does not give is left out, never exported as 0.

The HTTP server answers each scrape in its own thread and listens with a backlog of
:data:`LISTEN_BACKLOG`, so a burst of concurrent scrapers is queued, not dropped.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer

from seglab.telemetry.sample import GpuSample, HostState, HostStatus

log = logging.getLogger(__name__)

GPU_LABELS = ("host", "index", "uuid", "name")
MIB = 1024 * 1024
LISTEN_BACKLOG = 1024  # the kernel caps it at net.core.somaxconn

# (metric name, help, sample attribute, scale)
GPU_GAUGES: tuple[tuple[str, str, str, float], ...] = (
    ("seglab_gpu_utilization_percent", "GPU utilisation (%)", "utilization_gpu", 1.0),
    (
        "seglab_gpu_memory_utilization_percent",
        "GPU memory controller utilisation (%)",
        "utilization_memory",
        1.0,
    ),
    ("seglab_gpu_memory_used_bytes", "GPU memory in use", "memory_used_mib", MIB),
    ("seglab_gpu_memory_total_bytes", "GPU memory in total", "memory_total_mib", MIB),
    ("seglab_gpu_temperature_celsius", "GPU temperature", "temperature_c", 1.0),
    ("seglab_gpu_power_draw_watts", "GPU power draw", "power_draw_w", 1.0),
    ("seglab_gpu_power_limit_watts", "GPU power limit", "power_limit_w", 1.0),
    ("seglab_gpu_fan_speed_percent", "GPU fan speed (%)", "fan_percent", 1.0),
    ("seglab_gpu_sm_clock_hertz", "GPU SM clock", "clock_sm_mhz", 1e6),
    ("seglab_gpu_memory_clock_hertz", "GPU memory clock", "clock_memory_mhz", 1e6),
    (
        "seglab_gpu_ecc_volatile_uncorrected_errors",
        "Uncorrected ECC errors since the driver loaded",
        "ecc_volatile_uncorrected",
        1.0,
    ),
)


@dataclass(frozen=True, slots=True)
class RunMetrics:
    """The latest training numbers of one active run."""

    run_id: str
    host: str
    loss: float | None
    miou: float | None
    img_per_s: float | None
    iteration: int | None


def registry_runs() -> list[RunMetrics]:
    """Active runs from the seglab registry (the last train and eval events of each)."""
    from seglab.registry import Registry

    with Registry() as registry:
        out = []
        for run in registry.list_runs(include_finished=False):
            evals = registry.events(run.run_id, kind="eval")
            miou = evals[-1].data.get("miou") if evals else None
            out.append(
                RunMetrics(
                    run_id=run.run_id,
                    host=run.host,
                    loss=run.last_loss,
                    miou=float(miou) if isinstance(miou, (int, float)) else None,
                    img_per_s=run.img_per_s,
                    iteration=run.last_iter,
                )
            )
        return out


class TelemetryCollector:
    """Builds the metric families at each scrape."""

    def __init__(
        self,
        states: Callable[[], Iterable[HostState]],
        runs: Callable[[], Iterable[RunMetrics]] | None = None,
    ) -> None:
        self.states = states
        self.runs = runs

    def describe(self) -> list[Any]:
        """Nothing up front: the series depend on the hosts found at scrape time."""
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Every host's status, every GPU's readings, every active run's numbers."""
        states = list(self.states())
        up = GaugeMetricFamily(
            "seglab_host_telemetry_up",
            "1 when the host's GPU telemetry is current, 0 when degraded or failing",
            labels=("host", "source", "status"),
        )
        for state in states:
            ok = state.status in (HostStatus.OK, HostStatus.NO_GPU)
            up.add_metric((state.host, state.source, state.status.value), 1.0 if ok else 0.0)
        yield up
        gpus = [gpu for state in states for gpu in state.gpus]
        for name, help_text, attribute, scale in GPU_GAUGES:
            family = GaugeMetricFamily(name, help_text, labels=GPU_LABELS)
            for gpu in gpus:
                value = getattr(gpu, attribute)
                if value is not None:
                    family.add_metric(_labels(gpu), float(value) * scale)
            yield family
        processes = GaugeMetricFamily(
            "seglab_gpu_processes", "Processes holding memory on the GPU", labels=GPU_LABELS
        )
        for gpu in gpus:
            processes.add_metric(_labels(gpu), float(len(gpu.processes)))
        yield processes
        if self.runs is not None:
            yield from self._run_families()

    def _run_families(self) -> Iterator[GaugeMetricFamily]:
        assert self.runs is not None
        try:
            runs = list(self.runs())
        except Exception as exc:
            # A scrape must still return the GPU metrics when the registry is unreadable.
            log.warning("run metrics unavailable: %s", exc)
            return
        labels = ("run_id", "host")
        families = (
            ("seglab_run_loss", "Training loss of the last logged iteration", "loss"),
            ("seglab_run_miou", "mIoU (0-1) of the last evaluation", "miou"),
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
