"""Ring buffers: 600 samples per GPU metric, oldest dropped, constant memory."""

from __future__ import annotations

import tracemalloc

from seglab.telemetry.history import CAPACITY, GpuHistory, HistoryStore
from seglab.telemetry.sample import GpuSample


def _sample(i: int, uuid: str = "GPU-a", power: float | None = 100.0) -> GpuSample:
    return GpuSample(
        host="h",
        index=0,
        uuid=uuid,
        utilization_gpu=float(i % 101),
        memory_used_mib=float(i),
        power_draw_w=power,
        time=float(i),
    )


def test_capacity_covers_ten_minutes_at_one_hertz() -> None:
    assert CAPACITY == 600


def test_values_come_back_oldest_first_and_wrap() -> None:
    history = GpuHistory(capacity=5)
    for i in range(8):
        history.push(_sample(i))
    assert history.size == 5
    assert history.values("memory_used_mib") == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert history.times() == [3.0, 4.0, 5.0, 6.0, 7.0]


def test_missing_values_stay_none() -> None:
    history = GpuHistory(capacity=3)
    history.push(_sample(1, power=None))
    history.push(_sample(2, power=250.5))
    assert history.values("power_draw_w") == [None, 250.5]
    assert history.values("temperature_c") == [None, None]


def test_store_keeps_one_history_per_gpu() -> None:
    store = HistoryStore(capacity=4)
    store.push(_sample(1, uuid="GPU-a"))
    store.push(_sample(2, uuid="GPU-b"))
    store.push(_sample(3, uuid="GPU-a"))
    history_a = store.get("h", "GPU-a")
    assert history_a is not None
    assert history_a.values("memory_used_mib") == [1.0, 3.0]
    assert store.get("h", "GPU-zzz") is None


def test_memory_is_constant_once_full() -> None:
    history = GpuHistory()
    samples = [_sample(i) for i in range(3 * CAPACITY)]
    for sample in samples[:CAPACITY]:
        history.push(sample)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for sample in samples[CAPACITY:]:
            history.push(sample)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(
        stat.size_diff
        for stat in after.compare_to(before, "filename")
        if "history.py" in str(stat.traceback)
    )
    assert grown <= 0
    assert history.size == CAPACITY
    assert history.values("memory_used_mib")[0] == float(2 * CAPACITY)
