"""Fixtures of the end-to-end tests, defined once for the folder.

Importing them here (not in each module) keeps the session-scoped ones (the second
dockerd, the CI image copied into it) to one instance per test session.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.runlib import DEV_MOUNTS
from tests.e2e.sshd import (  # noqa: F401 - fixtures
    Lab,
    SecondEngine,
    lab1,
    remote_ci_image,
    remote_engine,
    ssh_home,
    ssh_keys,
    sshd,
    write_hosts_yaml,
)


@pytest.fixture
def remote_lab(
    lab1: Lab,  # noqa: F811
    remote_engine: SecondEngine,  # noqa: F811
    remote_ci_image: str,  # noqa: F811
    isolated_xdg: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """hosts.yaml with lab1's engine at the second dockerd's socket; its runs root."""
    runs = tmp_path / "lab1-runs"
    write_hosts_yaml(
        isolated_xdg / "config",
        {
            "lab1": {
                "ssh": "lab1",
                "nvidia_smi": str(lab1.nvidia_smi),
                "runs_root": str(runs),
                "docker_socket": str(remote_engine.socket),
            }
        },
    )
    monkeypatch.setenv("SEGLAB_DEV_MOUNTS", DEV_MOUNTS)
    return runs
