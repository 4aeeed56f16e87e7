"""GPU processes of process-runtime runs carry their run id (as containers' do): the run's
trainer and what it starts have SEGLAB_RUN_ID in their environment, attribution reads it
from /proc, and the exporter's seglab_gpu_process_info joins the GPU to the run."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from seglab import paths
from seglab.kinds import RUN_ID_ENV
from seglab.runtime import LaunchSpec
from seglab.runtime.process import ProcessRuntime
from seglab.telemetry.attribution import Attributor, local_reader, run_from_environ
from seglab.telemetry.sample import ProcessSample
from tests.exporterlib import serving_exporter
from tests.serving import fetch
from tests.standin import use_standin

RUN_ID = "seed.default.77aa01"
# A "trainer" that starts a worker (as DataLoader or torchrun do), then waits.
TRAINER = (
    "import subprocess, sys, time\n"
    "worker = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
    "print('worker', worker.pid, flush=True)\n"
    "time.sleep(300)\n"
)


@pytest.fixture
def run() -> Iterator[tuple[int, int]]:
    """A real process-runtime run: (trainer pid, its worker's pid); killed afterwards."""
    runtime = ProcessRuntime(paths.default_runs_root())
    log = paths.default_runs_root() / RUN_ID / "train.log"
    spec = LaunchSpec(
        name=RUN_ID,
        image="unused",
        command=(sys.executable, "-c", TRAINER),
        labels={"seglab.run_id": RUN_ID},
        log_path=log,
    )
    ref = runtime.launch(spec)
    try:
        deadline = time.monotonic() + 30
        while "worker" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "the run's worker never started"
            time.sleep(0.1)
        trainer = json.loads((Path(ref) / "process.json").read_text())["pid"]
        worker = int(log.read_text().split()[1])
        yield trainer, worker
    finally:
        runtime.kill(ref)


def test_run_id_from_environ_text() -> None:
    assert run_from_environ(f"PATH=/bin\0{RUN_ID_ENV}={RUN_ID}\0HOME=/root\0") == RUN_ID
    assert run_from_environ("PATH=/bin\0HOME=/root\0") is None
    assert run_from_environ(f"{RUN_ID_ENV}=\0") is None
    assert run_from_environ(None) is None


def test_a_process_runs_trainer_and_worker_are_attributed_to_it(run: tuple[int, int]) -> None:
    trainer, worker = run
    outsider = os.getpid()  # this test: a process of no run
    found = asyncio.run(
        Attributor(local_reader())(
            [
                ProcessSample(pid=pid, gpu_uuid="GPU-x", used_memory_mib=1.0, process_name="p")
                for pid in (trainer, worker, outsider)
            ]
        )
    )
    assert [p.run_id for p in found] == [RUN_ID, RUN_ID, None]
    assert found[0].owner == RUN_ID and found[0].container_id is None
    assert found[0].command is not None and "python" in found[0].command


def test_exporter_joins_the_gpu_to_a_process_run(
    run: tuple[int, int], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    trainer, _ = run
    exe = use_standin(monkeypatch)
    pids = tmp_path / "pids"
    pids.write_text(f"{trainer}\n")  # the stand-in reports the run's trainer on GPU 0
    monkeypatch.setenv("SEGLAB_STANDIN_PIDS_FILE", str(pids))
    paths.hosts_file().parent.mkdir(parents=True, exist_ok=True)
    paths.hosts_file().write_text(
        f"hosts:\n  local:\n    telemetry: nvidia-smi\n    nvidia_smi: {exe}\n"
        "    telemetry_interval: 0.5\n"
    )
    with serving_exporter() as (exporter, url):
        deadline = time.monotonic() + 60
        while f'run_id="{RUN_ID}"' not in (text := fetch(url)):
            assert time.monotonic() < deadline, text
            time.sleep(0.3)
        children = exporter.children(recursive=True)
    psutil.wait_procs(children, timeout=10)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    joined = [s.labels for s in families["seglab_gpu_process_info"].samples]
    assert {"uuid": joined[0]["uuid"], "run_id": RUN_ID, "container": ""} in joined
    assert joined[0]["uuid"].startswith("GPU-")
