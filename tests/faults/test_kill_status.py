"""`seglab kill` of a real running process ends the run as `killed`, a final status of its
own (not `failed` with exit 137), in the command's answer and in `ps --json`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seglab import paths
from seglab.registry import Registry, RunRecord, RunStatus
from seglab.runtime import LaunchSpec
from seglab.runtime.process import ProcessRuntime

pytestmark = pytest.mark.faults

RUN_ID = "sleeper.default.a1b2c3"


def _seglab(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seglab", *argv],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


def test_kill_ends_a_run_as_killed() -> None:
    runtime = ProcessRuntime(paths.default_runs_root())
    ref = runtime.launch(
        LaunchSpec(
            name=RUN_ID,
            image="unused",
            command=(sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"),
            labels={"seglab.run_id": RUN_ID, "seglab.recipe": "sleeper"},
            log_path=paths.default_runs_root() / RUN_ID / "train.log",
        )
    )
    try:
        with Registry() as registry:
            registry.upsert_run(
                RunRecord(
                    run_id=RUN_ID,
                    recipe="sleeper",
                    variant="default",
                    host="local",
                    runtime="process",
                    handle=ref,
                    run_dir=str(Path(ref)),
                    status=RunStatus.RUNNING,
                    started_at=time.time(),
                )
            )
        killed = _seglab("kill", RUN_ID)
        assert killed.stdout.strip() == f"{RUN_ID}: killed"
        (row,) = json.loads(_seglab("ps", "--json", "--all").stdout)
        assert (row["status"], row["exit_code"]) == ("killed", 137)
    finally:
        if runtime.inspect(ref).active:
            runtime.kill(ref)
