"""One run, several processes: the trainer under torchrun (gloo on CPU), stopped and resumed.

`resources.gpus: 2` on a CPU placement starts two gloo ranks in one container; on GPUs it
would be two NCCL ranks on the run's two GPUs. Either way seglab shows one run with one
event stream. (The process runtime starts the same command; tests/unit/test_train_run.py
covers torchrun outside containers.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.runlib import (
    DEV_MOUNTS,
    RECIPES,
    events_file,
    ps,
    run_row,
    seglab,
    stop_then_resume,
    wait_for,
)

pytestmark = pytest.mark.slow


def _two_ranks_stop_resume(runtime: str) -> None:
    (run_id,) = seglab(
        "run", str(RECIPES / "tiny-ddp.yaml"), "--on", "local:cpu", "--runtime", runtime
    ).stdout.split()
    row = wait_for(
        lambda: (r := run_row(run_id))["iteration"] and r["iteration"] >= 4 and r,
        300,
        "a few iterations on two ranks",
    )
    run_dir = Path(row["run_dir"])
    assert [r["run_id"] for r in ps()].count(run_id) == 1  # one row for the whole run
    start = next(r for r in events_file(str(run_dir)) if r["kind"] == "start")
    assert start["world_size"] == 2
    # The global batch of 8 is split over the ranks: 32 images make 4 iterations per epoch.
    assert start["total_iters"] == 1600
    rank_logs = list((run_dir / "ranks").rglob("stdout.log"))
    assert len(rank_logs) == 2, rank_logs

    stop_then_resume(run_id, run_dir, world_size=2)
    seglab("kill", run_id)
    seglab("rm", run_id, "--purge")


@pytest.mark.docker
def test_two_gloo_ranks_in_one_container(
    ci_image: str, docker_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGLAB_DEV_MOUNTS", DEV_MOUNTS)
    _two_ranks_stop_resume("docker")
