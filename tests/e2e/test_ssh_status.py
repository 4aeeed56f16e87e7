"""check_hosts: one report per host, from a real sshd and the stand-in nvidia-smi."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from seglab.hosts import load_inventory
from seglab.remote.connection import ConnectOptions
from seglab.remote.manager import check_hosts
from tests.e2e.sshd import Lab, free_port, write_hosts_yaml

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(60)]


def test_reports_online_offline_and_missing_engine(
    lab1: Lab, isolated_xdg: Path, tmp_path: Path
) -> None:
    dead_port = free_port()
    write_hosts_yaml(
        isolated_xdg / "config",
        {
            "lab1": {
                "ssh": "lab1",
                "nvidia_smi": str(lab1.nvidia_smi),
                "docker_socket": str(tmp_path / "no-engine.sock"),
            },
            "lab2": {"ssh": f"127.0.0.1:{dead_port}"},
        },
    )
    reports = asyncio.run(
        check_hosts(load_inventory(), timeout=10, options=ConnectOptions(backoff_initial=5.0))
    )
    by_name = {report.name: report for report in reports}
    assert list(by_name) == ["lab1", "lab2"]

    lab = by_name["lab1"]
    assert lab.state == "online"
    assert (lab.driver_version, lab.cuda_version, lab.gpu_count) == ("590.48.01", "13.1", 2)
    assert lab.latency_ms is not None and lab.latency_ms > 0
    assert lab.docker_version is None and lab.nvidia_runtime is None
    (problem,) = lab.problems  # in plain words, not the Docker SDK's wrapped exception text
    assert "lab1's Docker socket (through SSH)" in problem, problem
    assert "Error while fetching" not in problem and "Connection aborted" not in problem

    down = by_name["lab2"]
    assert down.state == "offline"
    assert f"127.0.0.1:{dead_port}" in (down.message or "")
    assert "refused" in (down.message or "").lower()
    assert down.latency_ms is None and down.gpu_count is None

    encoded = json.loads(json.dumps([r.to_json() for r in reports]))
    assert encoded[1]["driver_version"] is None
    assert isinstance(encoded[0]["gpu_count"], int)
    assert isinstance(encoded[0]["latency_ms"], float)
