"""`--on auto` places only on hosts that have the recipe's dataset under `datasets:`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from seglab import recipes
from seglab.errors import PlacementError
from seglab.hostqueue.store import HostQueue
from seglab.hosts import Inventory, local_host
from seglab.registry import Registry, RunStatus
from seglab.runs import RunManager
from seglab.runs.hostio import HostIO
from seglab.runs.hostqueues import HostQueues
from seglab.runs.spread import choose, queue_hosts, targets
from seglab.runs.submit import pools_with_data
from seglab.runtime import Runtime
from seglab.scheduler import Pool, Scheduler, parse_on
from seglab.telemetry.sample import HostState, HostStatus
from tests.e2e.runlib import REPO
from tests.fakes.runtime import FakeRuntime
from tests.unit.test_data_layouts import mini_cityscapes
from tests.unit.test_run_lifecycle import replayed_gpus

CITYSCAPES = REPO / "recipes" / "cityscapes-deeplabv3plus-r50-resolution.yaml"


def _two_hosts(tmp_path: Path, data: Path | None) -> Inventory:
    """`local` without datasets and `lab2` with cityscapes (at ``data``) if given."""
    datasets = {"cityscapes": str(data)} if data is not None else {}
    hosts = {
        "local": local_host(runs_root=tmp_path / "runs-local"),
        "lab2": replace(
            local_host(runs_root=tmp_path / "runs-lab2", datasets=datasets), name="lab2"
        ),
    }
    return Inventory(hosts, tmp_path / "hosts.yaml")


def _fake_manager(inventory: Inventory, registry: Registry) -> RunManager:
    """A run manager whose hosts run fake Docker and process runtimes."""
    runtimes: dict[tuple[str, str], Runtime] = {
        (name, kind): FakeRuntime(kind)
        for name in inventory.hosts
        for kind in ("docker", "process")
    }
    return RunManager(inventory, registry, runtimes=runtimes)


def test_auto_places_every_variant_on_the_host_with_the_dataset(tmp_path: Path) -> None:
    data = mini_cityscapes(tmp_path / "cityscapes")  # launches check the dataset first
    inventory = _two_hosts(tmp_path, data)
    registry = Registry(tmp_path / "registry.sqlite3")
    manager = _fake_manager(inventory, registry)
    states = {
        name: HostState(name, "replay", HostStatus.OK, gpus=replayed_gpus("idle"))
        for name in inventory.hosts
    }
    loaded = recipes.load(CITYSCAPES)
    assert len(loaded.variants) == 2
    submitted = manager.submit(
        loaded,
        loaded.variants,
        parse_on("auto"),
        Scheduler(inventory, registry, states),
        runtime="docker",
    )
    assert [s.record.host for s in submitted] == ["lab2", "lab2"]
    assert all(s.queued_because is None for s in submitted)


def test_a_dataset_on_no_host_names_the_hosts_and_the_key(tmp_path: Path) -> None:
    inventory = _two_hosts(tmp_path, None)
    variants = recipes.load(CITYSCAPES).variants
    with pytest.raises(PlacementError, match=r"cityscapes under `datasets:`.*local, lab2"):
        pools_with_data(inventory, parse_on("auto"), variants)
    # A named host is the user's choice (the launch check reports what it lacks).
    assert pools_with_data(inventory, parse_on("local:0"), variants) == [Pool("local", gpus=("0",))]
    synthetic = recipes.load(REPO / "recipes" / "synthetic-smoke.yaml").variants
    assert pools_with_data(inventory, parse_on("auto"), synthetic) == parse_on("auto")


def test_waiting_variants_go_to_a_free_host_first_then_the_shortest_wait(tmp_path: Path) -> None:
    inventory = _two_hosts(tmp_path, None)
    registry = Registry(tmp_path / "registry.sqlite3")
    queues = HostQueues(inventory, registry, HostIO(), lambda record: record)
    states = {
        "local": HostState("local", "replay", HostStatus.OK, gpus=replayed_gpus("idle")),
        "lab2": HostState("lab2", "replay", HostStatus.OK, gpus=replayed_gpus("idle")),
    }
    scheduler = Scheduler(inventory, registry, states)
    for gpu in replayed_gpus("idle"):  # local's two GPUs are held by seglab runs
        assert registry.reserve("local", (gpu.uuid,), f"held-{gpu.index}")
    hosts = queue_hosts(parse_on("auto"), queues)
    assert hosts == {"local": Pool("local"), "lab2": Pool("lab2")}
    found = targets(hosts, queues, scheduler, 1, {})
    assert {name: (t.slots, t.free) for name, t in found.items()} == {
        "local": (2, 0),
        "lab2": (2, 2),
    }
    HostQueue(tmp_path / "runs-lab2").write([{"run_id": "x"}] * 3)  # three wait on lab2
    found = targets(hosts, queues, scheduler, 1, {})
    assert found["lab2"].load == 3 and found["local"].load == 0
    # lab2's two free GPUs first (its runner starts them), then local (0 per slot) until
    # the loads per slot are even, then the name breaks the tie.
    picks = [choose(found) for _ in range(6)]
    assert picks == ["lab2", "lab2", "local", "local", "local", "local"]
    assert (found["local"].load, found["lab2"].load) == (4, 5)
    assert choose(found) == "local"
    assert queue_hosts(parse_on("local:cpu"), queues) == {}, "CPU runs there never wait"


def test_a_grid_over_two_hosts_starts_what_fits_and_spreads_the_rest(tmp_path: Path) -> None:
    inventory = _two_hosts(tmp_path, None)
    registry = Registry(tmp_path / "registry.sqlite3")
    manager = _fake_manager(inventory, registry)
    manager.submitter.use_host_queues = True
    held = [HostQueue(tmp_path / f"runs-{name}").try_runner_lock() for name in inventory.hosts]
    states = {
        name: HostState(name, "replay", HostStatus.OK, gpus=replayed_gpus("idle"))
        for name in inventory.hosts
    }
    loaded = recipes.load(REPO / "tests" / "fixtures" / "recipes" / "tiny-six.yaml")
    submitted = manager.submit(
        loaded, loaded.variants, parse_on("auto"), Scheduler(inventory, registry, states)
    )
    started = [s.record for s in submitted if s.queued_because is None]
    waiting = [s.record for s in submitted if s.queued_because is not None]
    assert sorted(r.host for r in started) == ["lab2", "lab2", "local", "local"]
    assert [r.host for r in waiting] == ["lab2", "local"], "one more on each, by name"
    assert all(r.status == RunStatus.QUEUED for r in waiting)
    assert "the shortest expected wait: 2 runs ahead for 2 slots" in (waiting[0].message or "")
    for record in waiting:
        queued = HostQueue(tmp_path / f"runs-{record.host}").items()
        assert [item["run_id"] for item in queued] == [record.run_id]
        assert queued[0]["pools"] == [Pool(record.host).to_dict()]
    assert registry.pending() == [], "nothing waits in this workstation's queue"
    for lock in held:
        assert lock is not None
        lock.close()
