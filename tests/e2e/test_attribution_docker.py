"""Attribution against a real container: its real /proc/<pid>/cgroup read from the host."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from seglab.telemetry.attribution import (
    RUN_LABEL,
    Attributor,
    DockerLabels,
    container_from_cgroup,
    local_reader,
)
from seglab.telemetry.sample import ProcessSample

pytestmark = pytest.mark.docker


@pytest.fixture
def sleeper(docker_client: Any, ci_image: str) -> Any:
    """A container of the CI image running `sleep`, labelled like a seglab run."""
    run_id = f"attr-test.default.{uuid.uuid4().hex[:6]}"
    container = docker_client.containers.run(
        ci_image,
        ["sleep", "300"],
        detach=True,
        labels={RUN_LABEL: run_id, "seglab.recipe": "attr-test"},
        network_mode="none",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        name=f"seglab-attr-{uuid.uuid4().hex[:8]}",
    )
    try:
        container.reload()
        yield container
    finally:
        container.remove(force=True)


def test_container_process_maps_to_its_run(docker_client: Any, sleeper: Any) -> None:
    pid = int(sleeper.attrs["State"]["Pid"])
    assert pid > 0
    cgroup = Path(f"/proc/{pid}/cgroup").read_text()
    ref = container_from_cgroup(cgroup)
    assert ref is not None, cgroup
    assert ref.id == sleeper.id
    assert ref.runtime == "docker"

    attributor = Attributor(local_reader(), DockerLabels(docker_client))
    process = ProcessSample(pid=pid, gpu_uuid="GPU-x", used_memory_mib=100.0, process_name="sleep")
    (found,) = asyncio.run(attributor([process]))
    assert found.container_id == sleeper.id
    assert found.container_name == sleeper.name
    assert found.run_id == sleeper.labels[RUN_LABEL]
    assert found.owner == found.run_id


def test_unknown_container_id_has_no_run(docker_client: Any) -> None:
    labels = DockerLabels(docker_client)
    assert asyncio.run(labels.lookup("f" * 64)) is None
