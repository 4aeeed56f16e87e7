"""The host queue with the Docker runtime: a 6-variant grid on a host with two CPU slots
(``cpu_slots: 2``) goes on after the workstation is SIGKILLed, on this machine's engine
and on a "remote" host reached only through sshd (its own engine; its runner started over
SSH). No seglab command is run between the kill and the last run's end."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.e2e.runlib import RECIPES, grid_ran_once, ps, seglab, start_seglab
from tests.e2e.sshd import Lab, SecondEngine, write_hosts_yaml

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1500)]


def _submit_and_kill(on: str) -> list[str]:
    """`seglab run tiny-six --on ON --runtime docker --wait`, SIGKILLed once the grid is
    submitted (two started, four waiting in the host's queue) and the last variant moved
    to the front of the queue; the six run ids."""
    workstation = start_seglab(
        "run", str(RECIPES / "tiny-six.yaml"), "--on", on, "--runtime", "docker", "--wait"
    )
    assert workstation.stdout is not None
    ids = [workstation.stdout.readline().strip() for _ in range(6)]
    waiting = json.loads(seglab("queue", "--json").stdout)
    host = on.split(":", maxsplit=1)[0]
    assert [(w["host"], w["position"]) for w in waiting] == [(host, i) for i in (1, 2, 3, 4)]
    assert [w["run_id"] for w in waiting] == ids[2:], "two start at once, four wait"
    assert "CPU slots" in waiting[0]["why"], waiting[0]
    moved = seglab("queue", "up", ids[5], "3").stdout  # through the host's lock (over SSH)
    assert f"position 1 on {host}" in moved, moved
    workstation.send_signal(signal.SIGKILL)
    workstation.wait()
    return ids


def _all_six_ran_once_two_at_a_time(runs: Path, ids: list[str], by_runner: list[str]) -> None:
    """Every variant ended once, never more than two at a time; the runner started
    ``by_runner``; `seglab ps` shows all six finished with a best mIoU."""
    started = grid_ran_once(runs, 6, 2, 1200)
    assert sorted(started) == sorted(by_runner)
    assert started.index(ids[5]) < min(started.index(i) for i in ids[2:5]), "moved up first"

    rows = {row["run_id"]: row for row in ps()}
    assert set(ids) <= set(rows)
    for run_id in ids:
        row = rows[run_id]
        assert row["status"] == "finished", row
        assert row["runtime"] == "docker" and row["gpus"] == []
        assert row["best_miou"] is not None and 0 < row["best_miou"] <= 1


def _remove(ids: list[str], engine: Any) -> None:
    for run_id in ids:
        for container in engine.containers.list(all=True, filters={"name": f"seglab-{run_id}"}):
            container.remove(force=True)


def test_docker_grid_on_cpu_slots_goes_on_without_the_workstation(
    isolated_xdg: Path, ci_image: str, docker_client: Any
) -> None:
    runs = isolated_xdg / "runs"
    write_hosts_yaml(isolated_xdg / "config", {"local": {"runs_root": str(runs), "cpu_slots": "2"}})
    ids = _submit_and_kill("local:cpu")
    try:
        # The workstation started two under the booking lock; the runner the four others.
        _all_six_ran_once_two_at_a_time(runs, ids, ids[2:])
    finally:
        _remove(ids, docker_client)


@pytest.mark.sshd
def test_the_same_grid_through_the_ssh_host(
    remote_lab: Path, lab1: Lab, remote_engine: SecondEngine
) -> None:
    write_hosts_yaml(
        lab1.hosts_yaml.parent.parent,
        {
            "lab1": {
                "ssh": "lab1",
                "nvidia_smi": str(lab1.nvidia_smi),
                "runs_root": str(remote_lab),
                "docker_socket": str(remote_engine.socket),
                "cpu_slots": "2",
                "python": sys.executable,  # the host's Python that imports seglab
            }
        },
    )
    ids = _submit_and_kill("lab1:cpu")
    remote = docker.DockerClient(base_url=f"unix://{remote_engine.socket}")
    try:
        # On a remote host the runner places every variant (the one arbiter of its slots).
        _all_six_ran_once_two_at_a_time(remote_lab, ids, ids)
        labels = remote.containers.get(f"seglab-{ids[5]}").labels
        assert labels["seglab.host"] == "lab1", "started by the runner on lab1's own engine"
    finally:
        _remove(ids, remote)
        remote.close()
