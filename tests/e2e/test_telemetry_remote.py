"""`seglab gpus` and the exporter for a remote host reached through a real sshd."""

from __future__ import annotations

import json

import pytest

from seglab.cli import main
from tests.e2e.sshd import Lab

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(120)]


def test_gpus_json_for_a_remote_host(
    lab1: Lab,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["gpus", "--host", "lab1", "--json", "--timeout", "60"]) == 0
    (host,) = json.loads(capsys.readouterr().out)
    assert host["host"] == "lab1"
    assert host["source"] == "nvidia-smi"
    assert (host["status"], host["message"]) == ("ok", None)
    assert host["host_sample"] is None  # CPU/RAM are read for this machine only
    assert [gpu["index"] for gpu in host["gpus"]] == [0, 1]
    gpu = host["gpus"][0]
    assert (gpu["name"], gpu["power_draw_w"], gpu["memory_total_mib"]) == (
        "NVIDIA H100 80GB HBM3",
        69.85,
        81559,
    )
    assert gpu["fan_percent"] is None
    # The capture's idle phase has no processes; the process-list poll still ran.
    assert gpu["processes"] == []
