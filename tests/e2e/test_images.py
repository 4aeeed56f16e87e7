"""Image builds through seglab's build path on a real engine (marker `docker`).

The real base/full/dev images start from python:3.11-slim-bookworm and install wheels,
which needs a registry; CI has none, so these tests build small Dockerfiles on top of the
CI image through the same context and progress machinery.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seglab import __version__
from seglab.runtime.images import ImageBuildFailed, build_dockerfile

pytestmark = pytest.mark.docker

TAG = "seglab/test-probe:latest"


@pytest.fixture
def source(tmp_path: Path, repo_root: Path) -> Path:
    """A small source tree: the seglab package and a probe Dockerfile."""
    shutil.copytree(
        repo_root / "seglab", tmp_path / "seglab", ignore=shutil.ignore_patterns("__pycache__")
    )
    (tmp_path / "images" / "probe").mkdir(parents=True)
    return tmp_path


@pytest.fixture
def cleanup(docker_client: Any) -> Iterator[None]:
    yield
    for image in docker_client.images.list(name="seglab/test-probe"):
        docker_client.images.remove(image.id, force=True)


def test_build_streams_progress_and_labels_the_image(
    docker_client: Any, ci_image: str, source: Path, cleanup: None
) -> None:
    (source / "images" / "probe" / "Dockerfile").write_text(
        f"FROM {ci_image}\n"
        "COPY seglab /opt/seglab/seglab\n"
        'RUN ["python3", "-c", "import seglab.events as e; print(\'probe\', e.SCHEMA_VERSION)"]\n'
    )
    lines: list[str] = []
    image_id = build_dockerfile(
        docker_client, source, "images/probe/Dockerfile", TAG, on_output=lines.append
    )
    text = "".join(lines)
    assert "Step 3/4 : RUN" in text and "probe 1" in text
    image = docker_client.images.get(TAG)
    assert image.id == image_id
    assert image.labels["seglab.version"] == __version__


def test_a_failing_step_is_reported_with_its_message(
    docker_client: Any, ci_image: str, source: Path, cleanup: None
) -> None:
    (source / "images" / "probe" / "Dockerfile").write_text(
        f'FROM {ci_image}\nRUN ["python3", "-c", "raise SystemExit(4)"]\n'
    )
    with pytest.raises(ImageBuildFailed, match="returned a non-zero code: 4"):
        build_dockerfile(docker_client, source, "images/probe/Dockerfile", TAG)


def test_full_and_dev_build_their_missing_parents_first(
    docker_client: Any, ci_image: str, source: Path
) -> None:
    from seglab.runtime.images import build

    repository = f"seglab-test-{os.getpid()}"
    dockerfiles = {
        "base": f"FROM {ci_image}\nLABEL layer.base=yes\n",
        "full": "ARG BASE\nFROM ${BASE}\nLABEL layer.full=yes\n",
        "dev": "ARG BASE\nFROM ${BASE}\nLABEL layer.dev=yes\n",
    }
    for name, text in dockerfiles.items():
        (source / "images" / name).mkdir(parents=True)
        (source / "images" / name / "Dockerfile").write_text(text)
    try:
        lines: list[str] = []
        built = build(
            docker_client,
            "dev",
            root=source,
            base_url="",
            repository=repository,
            on_output=lines.append,
        )
        assert built == [f"{repository}/{name}:latest" for name in ("base", "full", "dev")]
        assert [line for line in lines if line.startswith("==> ")] == [
            f"==> {tag} (images/{name}/Dockerfile)\n"
            for tag, name in zip(built, ("base", "full", "dev"), strict=True)
        ]
        labels = docker_client.images.get(built[-1]).labels
        assert labels["layer.base"] == labels["layer.full"] == labels["layer.dev"] == "yes"
        # The parents are there now: only dev is rebuilt.
        assert build(docker_client, "dev", root=source, base_url="", repository=repository) == [
            built[-1]
        ]
    finally:
        for name in ("dev", "full", "base"):
            for image in docker_client.images.list(name=f"{repository}/{name}"):
                docker_client.images.remove(image.id, force=True)
