"""`--on auto` places only on hosts that have the recipe's dataset under `datasets:`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from seglab import recipes
from seglab.errors import PlacementError
from seglab.hosts import Inventory, local_host
from seglab.registry import Registry
from seglab.runs import RunManager
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


def test_auto_places_every_variant_on_the_host_with_the_dataset(tmp_path: Path) -> None:
    data = mini_cityscapes(tmp_path / "cityscapes")  # launches check the dataset first
    inventory = _two_hosts(tmp_path, data)
    registry = Registry(tmp_path / "registry.sqlite3")
    runtimes: dict[tuple[str, str], Runtime] = {
        (name, kind): FakeRuntime(kind)
        for name in inventory.hosts
        for kind in ("docker", "process")
    }
    manager = RunManager(inventory, registry, runtimes=runtimes)
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
