"""A `seglab run --on CLUSTER` SIGKILLed around its sbatch, on the real single-node Slurm:
before it the submission is rolled back (no run, no job), after it the job is adopted
(`ps` shows it, `kill` ends it `killed`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.runlib import RECIPES, seglab
from tests.faults.crashlib import consistent, crash

pytestmark = [pytest.mark.faults, pytest.mark.slurm, pytest.mark.slow]

RUN = ("run", str(RECIPES / "tiny-long.yaml"), "--on", "cluster:cpu")


@pytest.fixture
def cluster(isolated_xdg: Path, tmp_path: Path) -> Iterator[Path]:
    """A `kind: slurm` host `cluster` (this machine its login node); its runs root. Jobs
    the test left are cancelled."""
    if shutil.which("sbatch") is None:
        pytest.skip("sbatch is not installed; .ci/slurm.sh WORKDIR installs and starts Slurm")
    ping = subprocess.run(
        ["scontrol", "ping"], capture_output=True, text=True, timeout=15, check=False
    )
    if "is UP" not in ping.stdout + ping.stderr:
        pytest.skip(f"no Slurm controller answers: {(ping.stdout + ping.stderr).strip()}")
    runs_root = tmp_path / "runs"
    config = isolated_xdg / "config" / "seglab" / "hosts.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        textwrap.dedent(f"""
        hosts:
          cluster:
            kind: slurm
            runs_root: {runs_root}
            python: {sys.executable}
            env_setup: [export OMP_NUM_THREADS=1]
            time_limit: "30"
        """)
    )
    yield runs_root
    for record in runs_root.glob("*/slurm.json"):
        jobspec = json.loads(record.read_text())["jobspec"]
        subprocess.run(["scancel", jobspec], capture_output=True, timeout=60, check=False)


def test_a_submission_killed_before_sbatch_leaves_nothing(cluster: Path) -> None:
    crash("submit.rows", *RUN)
    assert consistent() == {}
    assert list(cluster.glob("*/slurm.json")) == []


def test_a_submission_killed_after_sbatch_is_adopted(cluster: Path) -> None:
    crash("submit.sbatch", *RUN)
    found = consistent()
    (run_id,) = found
    assert found[run_id]["status"] in ("starting", "running")
    assert found[run_id]["runtime"] == "slurm"
    assert seglab("kill", run_id).stdout.strip() == f"{run_id}: killed"
    assert consistent()[run_id]["status"] == "killed"
    seglab("rm", run_id)
    assert consistent() == {}
