"""A `seglab run --runtime docker` SIGKILLed at each launch step, and a kill cut short, on
the real engine in the CI image: the next `seglab ps` shows the run with its true status
(or not at all), stop/kill/rm handle it, and no container is left untracked."""

from __future__ import annotations

from typing import Any

import pytest

from seglab import paths
from tests.e2e.runlib import DEV_MOUNTS, RECIPES, seglab, wait_for
from tests.faults.crashlib import consistent, crash, held, rows, wait_status

pytestmark = [pytest.mark.faults, pytest.mark.docker, pytest.mark.slow]

RUN = ("run", str(RECIPES / "tiny-long.yaml"), "--on", "local:cpu", "--runtime", "docker")


@pytest.fixture(autouse=True)
def dev_mounts(ci_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give every container the venv's packages and the checkout (read-only)."""
    monkeypatch.setenv("SEGLAB_DEV_MOUNTS", DEV_MOUNTS)


def _ours(docker_client: Any) -> list[Any]:
    """This test's containers (their run dir lies under its runs root), ended ones too."""
    root = str(paths.default_runs_root())
    return [
        c
        for c in docker_client.containers.list(all=True, filters={"label": "seglab.run_id"})
        if c.labels.get("seglab.run_dir", "").startswith(root)
    ]


@pytest.fixture
def containers(docker_client: Any) -> Any:
    """This test's containers, removed afterwards whatever happened."""
    yield lambda: _ours(docker_client)
    for container in _ours(docker_client):
        container.remove(force=True)


@pytest.mark.parametrize("step", ["launch.begin", "launch.prepared", "launch.row"])
def test_a_docker_run_killed_before_its_container_exists_leaves_nothing(
    step: str, containers: Any
) -> None:
    crash(step, *RUN)
    assert consistent() == {}
    assert held() == {}
    assert containers() == []


@pytest.mark.parametrize("step", ["launch.engine", "launch.handle"])
def test_a_docker_run_killed_after_its_container_started_is_adopted(
    step: str, containers: Any
) -> None:
    crash(step, *RUN)
    found = consistent()
    (container,) = containers()
    run_id = container.labels["seglab.run_id"]
    assert found[run_id]["status"] in ("starting", "running")
    wait_for(lambda: (rows()[run_id]["iteration"] or 0) >= 1, 300, f"{run_id} to train")
    assert seglab("kill", run_id).stdout.strip() == f"{run_id}: killed"
    seglab("rm", run_id)
    assert consistent() == {}
    assert containers() == []


def test_a_docker_kill_cut_short_ends_the_run_killed(containers: Any) -> None:
    (run_id,) = seglab(*RUN).stdout.split()
    wait_status(run_id, "running", timeout=300)
    crash("kill.signalled", "kill", run_id)
    row = consistent()[run_id]
    assert (row["status"], row["exit_code"]) == ("killed", 137)
    seglab("rm", run_id)
    assert containers() == []
