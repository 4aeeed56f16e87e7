"""The newcomer path with Docker: the shipped ablation recipe in the CI image, from a shell
with no seglab variables at all (no SEGLAB_DEV_MOUNTS): every variant finishes with a best
mIoU, because the docker runtime mounts what that image needs (docs/images.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from seglab.runtime.docker import IMAGE_MOUNTS_LABEL
from tests.e2e.runlib import REPO

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1800)]


def _fresh_shell(*args: str) -> subprocess.CompletedProcess[str]:
    """`seglab ARGS` with this environment less every SEGLAB_* variable (the test's XDG
    dirs and DOCKER_HOST stay: they are what a user's shell has)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SEGLAB_")}
    return subprocess.run(
        [sys.executable, "-m", "seglab", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=1500,
        check=False,
    )


def _ours(client: Any, root: str) -> list[Any]:
    """The containers of runs whose run dir is under ``root``."""
    found = client.containers.list(all=True, filters={"label": "seglab.run_dir"})
    return [c for c in found if c.labels["seglab.run_dir"].startswith(root)]


def test_the_shipped_ablation_runs_in_the_ci_image_without_variables(
    ci_image: str, docker_client: Any
) -> None:
    root = os.environ["XDG_DATA_HOME"]  # this test's runs root is under it
    try:
        run = _fresh_shell(
            "run", "synthetic-smoke-ablation", "--on", "local:cpu", "--runtime", "docker", "--wait"
        )
        assert run.returncode == 0, (run.stdout, run.stderr)
        rows = json.loads(_fresh_shell("ps", "--all", "--json").stdout)
        labels = {c.labels["seglab.run_id"]: c.labels for c in _ours(docker_client, root)}
    finally:
        for container in _ours(docker_client, root):
            container.remove(force=True)
    assert sorted(row["variant"] for row in rows) == ["lr=high", "lr=low"], rows
    for row in rows:
        assert row["status"] == "finished", row
        assert row["best_miou"] is not None and row["best_miou"] > 0, row
        # What the image got from this machine is recorded on the run's container.
        recorded = labels[row["run_id"]][IMAGE_MOUNTS_LABEL]
        assert "/usr/local/lib/python3.11/dist-packages:ro" in recorded
