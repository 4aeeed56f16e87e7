"""Per-GPU ring buffers of the metrics the dashboard draws (10 minutes at 1 Hz).

Each metric of each GPU is a preallocated ``array('d')`` of :data:`CAPACITY` slots; a
missing value is stored as NaN and read back as None. Memory per GPU is constant however
long seglab runs.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable

from seglab.telemetry.sample import GpuSample

CAPACITY = 600
METRICS = (
    "utilization_gpu",
    "utilization_memory",
    "memory_used_mib",
    "temperature_c",
    "power_draw_w",
)


class GpuHistory:
    """The last :data:`CAPACITY` readings of one GPU, one ring per metric."""

    __slots__ = ("_head", "_rings", "_times", "capacity", "size")

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.size = 0
        self._head = 0
        self._rings = {name: array("d", [math.nan]) * capacity for name in METRICS}
        self._times = array("d", [math.nan]) * capacity

    def push(self, sample: GpuSample) -> None:
        """Record one reading, overwriting the oldest once full."""
        at = self._head
        for name, ring in self._rings.items():
            value = getattr(sample, name)
            ring[at] = math.nan if value is None else float(value)
        self._times[at] = sample.time
        self._head = (at + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def values(self, metric: str) -> list[float | None]:
        """A metric's readings, oldest first (None where the driver gave no value)."""
        ring = self._rings[metric]
        return [None if math.isnan(v) else v for v in self._ordered(ring)]

    def tail(self, metric: str, count: int) -> list[float | None]:
        """The last ``count`` readings of a metric, oldest first (for sparklines: no copy
        of the whole ring)."""
        ring = self._rings[metric]
        values: list[float | None] = []
        for back in range(min(count, self.size), 0, -1):
            value = ring[(self._head - back) % self.capacity]
            values.append(None if math.isnan(value) else value)
        return values

    def times(self) -> list[float]:
        """The sample times, oldest first."""
        return list(self._ordered(self._times))

    def _ordered(self, ring: array[float]) -> Iterable[float]:
        start = (self._head - self.size) % self.capacity
        for offset in range(self.size):
            yield ring[(start + offset) % self.capacity]


class HistoryStore:
    """Histories of every GPU seen, keyed by ``(host, uuid)``."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._gpus: dict[tuple[str, str], GpuHistory] = {}

    def push(self, sample: GpuSample) -> None:
        """Record a reading of the sample's GPU."""
        key = (sample.host, sample.uuid)
        history = self._gpus.get(key)
        if history is None:
            history = self._gpus[key] = GpuHistory(self.capacity)
        history.push(sample)

    def get(self, host: str, uuid: str) -> GpuHistory | None:
        """The history of one GPU, if it was ever seen."""
        return self._gpus.get((host, uuid))
