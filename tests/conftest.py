"""Shared fixtures: an isolated XDG environment per test, and the real parts tests need."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SMI_CAPTURES = REPO / "tests" / "fixtures" / "nvidia-smi"
CI_IMAGE = os.environ.get("SEGLAB_CI_IMAGE", "seglab/ci:latest")
# Tests touch a Docker engine, start sshd or submit to Slurm only when this is "1"
# (`bash .ci/run` sets it after starting engines of its own): a plain `pytest` never uses
# an engine that happens to answer on this machine.
ENGINES_ENV = "SEGLAB_TEST_ENGINES"
ENGINE_MARKERS = ("docker", "sshd", "slurm", "system")


def engines_allowed() -> bool:
    """Whether the user opted in to tests that use engines and servers."""
    return os.environ.get(ENGINES_ENV) == "1"


ENGINES_SKIP = (
    f"uses a Docker engine, sshd or Slurm, or mounts a tmpfs: set {ENGINES_ENV}=1 to allow it "
    "(bash .ci/run starts its own and sets it)"
)


# Tests that train on the CPU for tens of seconds each run when this is "1" (or when a
# `-m` expression names them); `bash .ci/run` sets it, so CI runs the whole suite.
SLOW_ENV = "SEGLAB_TEST_SLOW"
SLOW_SKIP = f"slow (trains on the CPU): set {SLOW_ENV}=1 to run it (bash .ci/run does)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip engine, sshd and Slurm tests unless the user opted in; slow ones likewise
    (unless a ``-m`` expression selects tests by marker)."""
    engines = engines_allowed()
    slow = os.environ.get(SLOW_ENV) == "1" or bool(config.getoption("markexpr", ""))
    for item in items:
        if not engines and any(item.get_closest_marker(name) for name in ENGINE_MARKERS):
            item.add_marker(pytest.mark.skip(reason=ENGINES_SKIP))
        elif not slow and item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.skip(reason=SLOW_SKIP))


@pytest.fixture(autouse=True)
def isolated_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every XDG location at a fresh temporary home so no test touches the user's."""
    home = tmp_path / "home"
    for var, sub in (
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_STATE_HOME", "state"),
        ("XDG_DATA_HOME", "data"),
        ("XDG_CACHE_HOME", "cache"),
    ):
        path = home / sub
        path.mkdir(parents=True)
        monkeypatch.setenv(var, str(path))
    return home


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's top directory."""
    return REPO


@pytest.fixture(scope="session")
def smi_captures() -> Path:
    """The folder of real nvidia-smi captures (MIT, see LICENSE.captures there)."""
    return SMI_CAPTURES


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A client of the local Docker engine; skips the test when no engine answers."""
    if not engines_allowed():
        pytest.skip(ENGINES_SKIP)
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except DockerException as exc:
        pytest.skip(f"no Docker engine answers ({exc}); .ci/run starts one")
    yield client
    client.close()


@pytest.fixture(scope="session")
def ci_image(docker_client: Any) -> str:
    """The CI image (built by .ci/run from images/ci/); skips when it is not built."""
    from docker.errors import ImageNotFound

    try:
        docker_client.images.get(CI_IMAGE)
    except ImageNotFound:
        pytest.skip(f"image {CI_IMAGE} is not built (images/ci/build.sh builds it)")
    return CI_IMAGE
