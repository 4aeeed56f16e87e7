"""Runs on a "remote" server over real SSH: a second dockerd reached only through sshd.

The server is this machine (sshd on loopback, its own engine socket); the workstation talks
to that engine only through the socket forwarded over the SSH connection.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.errors import NotFound

from seglab.events import PREFIX, parse_line
from tests.e2e.runlib import (
    RECIPES,
    events_file,
    final,
    ps,
    run_row,
    seglab,
    wait_for,
)
from tests.e2e.sshd import SecondEngine

pytestmark = [pytest.mark.sshd, pytest.mark.docker, pytest.mark.slow]


def test_hosts_and_gpus_of_the_remote(remote_lab: Path) -> None:
    hosts = {h["name"]: h for h in json.loads(seglab("hosts", "--json").stdout)["hosts"]}
    status = hosts["lab1"]["status"]
    assert status["state"] == "online", status
    assert status["docker_version"] and status["latency_ms"] is not None
    assert status["gpu_count"] == 2 and status["driver_version"] == "590.48.01"
    gpus = json.loads(seglab("gpus", "--host", "lab1", "--json").stdout)
    assert [g["index"] for g in gpus[0]["gpus"]] == [0, 1]
    assert gpus[0]["status"] == "ok"


def test_grid_on_the_remote_engine(
    remote_lab: Path, remote_engine: SecondEngine, docker_client: Any, tmp_path: Path
) -> None:
    started = json.loads(
        seglab("run", str(RECIPES / "tiny-grid.yaml"), "--on", "lab1:cpu", "--json").stdout
    )
    ids = [row["run_id"] for row in started]
    assert len(ids) == 2 and all(row["host"] == "lab1" for row in started)
    assert all(row["runtime"] == "docker" for row in started)
    remote = docker.DockerClient(base_url=f"unix://{remote_engine.socket}")
    try:
        for run_id in ids:
            container = remote.containers.get(f"seglab-{run_id}")
            assert container.labels["seglab.host"] == "lab1"
            with pytest.raises(NotFound):
                docker_client.containers.get(f"seglab-{run_id}")
            assert container.labels["seglab.run_dir"].startswith(str(remote_lab))

        followed = seglab("logs", "--events", "-f", ids[0], timeout=600).stdout.splitlines()
        kinds = [e.kind for e in (parse_line(x) for x in followed if PREFIX in x) if e]
        assert kinds[0] == "start" and kinds[-1] == "end" and "eval" in kinds

        rows = {
            r["run_id"]: r
            for r in wait_for(
                lambda: all(final(i) for i in ids) and ps(), 600, "both remote runs to end"
            )
        }
        for run_id in ids:
            assert rows[run_id]["status"] == "finished", rows[run_id]
            assert rows[run_id]["best_miou"] is not None
            metrics = json.loads(seglab("metrics", run_id, "--json").stdout)
            on_disk = events_file(rows[run_id]["run_dir"])  # the "remote" disk is ours
            assert len(metrics["loss"]) == sum(r["kind"] == "train" for r in on_disk)
        pulled = tmp_path / "pulled"
        seglab("pull", ids[0], "--what", "all", "--dest", str(pulled))
        assert (pulled / ids[0] / "events.jsonl").read_text() == (
            Path(rows[ids[0]]["run_dir"]) / "events.jsonl"
        ).read_text()
        assert (pulled / ids[0] / "checkpoints" / "best.pt").is_file()
        for run_id in ids:
            seglab("rm", run_id)
            with pytest.raises(NotFound):
                remote.containers.get(f"seglab-{run_id}")
    finally:
        remote.close()


def test_stop_and_resume_on_the_remote(remote_lab: Path) -> None:
    (run_id,) = seglab("run", str(RECIPES / "tiny-long.yaml"), "--on", "lab1:cpu").stdout.split()
    row = wait_for(
        lambda: (r := run_row(run_id))["iteration"] and r["iteration"] >= 6 and r,
        300,
        "a few iterations on the remote",
    )
    assert f"{run_id}: stopped" in seglab("stop", run_id, "--timeout", "60").stdout
    records = events_file(row["run_dir"])
    saved = max(r["iter"] for r in records if r["kind"] == "checkpoint")
    seglab("resume", run_id)
    wait_for(
        lambda: sum(r["kind"] == "start" for r in events_file(row["run_dir"])) == 2,
        120,
        "the resumed remote trainer",
    )
    start = [r for r in events_file(row["run_dir"]) if r["kind"] == "start"][1]
    assert start["resumed_from"] == saved > 0
    seglab("kill", run_id)
    seglab("rm", run_id)
