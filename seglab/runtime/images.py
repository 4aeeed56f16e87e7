"""Building seglab's images (images/base|full|dev Dockerfiles, and the registry-free CI one),
and what the CI image needs from this machine to run a trainer.

The Docker build context is a tar of only the files an image needs (the package, its
metadata and shipped data), never the whole checkout with its virtual environment.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import sysconfig
import tarfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import seglab
from seglab import __version__, paths
from seglab.runtime.errors import RuntimeFailure, SpecError
from seglab.runtime.spec import Mount

TARGETS = ("base", "full", "dev", "ci")
PARENT = {"full": "base", "dev": "full"}
CONTEXT_PATHS = ("pyproject.toml", "README.md", "LICENSE", "seglab", "layouts", "recipes", "images")
_SKIP = ("__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache")

Progress = Callable[[str], None]

IMAGE_LABEL = "seglab.image"
PYTHON_LABEL = "seglab.python"
SITE_LABEL = "seglab.mount.site-packages"
SOURCE_LABEL = "seglab.mount.seglab"
CI_DEFAULTS = {
    PYTHON_LABEL: "3.11",
    SITE_LABEL: "/usr/local/lib/python3.11/dist-packages",
    SOURCE_LABEL: "/opt/seglab",
}
"""Where the CI image expects the trainer's packages and seglab (images/ci/build.sh sets
these labels; an image built before they existed gets these values)."""


class ImageBuildFailed(RuntimeFailure):
    """The engine (or the CI build script) reported a failed build."""


def image_tag(target: str, repository: str = "seglab") -> str:
    """The tag seglab builds ``target`` as (``seglab/<target>:latest``)."""
    return f"{repository}/{target}:latest"


def source_root() -> Path:
    """The seglab source tree holding ``images/`` and ``pyproject.toml``.

    Raises ImageBuildFailed when seglab runs from an installed wheel without one.
    """
    root = paths.shipped("images").parent
    if not (root / "pyproject.toml").is_file():
        raise ImageBuildFailed(
            f"building images needs a seglab source tree (pyproject.toml); {root} has none: "
            "run from a checkout or pass --source DIR"
        )
    return root


def context_tar(root: Path, names: Iterable[str] = CONTEXT_PATHS) -> io.BytesIO:
    """An uncompressed tar of the named paths under ``root`` that exist, caches left out."""
    buffer = io.BytesIO()

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if any(part in _SKIP for part in parts) or info.name.endswith(".pyc"):
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in names:
            if (root / name).exists():
                tar.add(root / name, arcname=name, filter=keep)
    buffer.seek(0)
    return buffer


def _describe(chunk: Mapping[str, Any]) -> str | None:
    if "stream" in chunk:
        return str(chunk["stream"])
    if "status" in chunk:
        parts = [str(chunk.get("id", "")), str(chunk["status"]), str(chunk.get("progress", ""))]
        return " ".join(part for part in parts if part) + "\n"
    return None


def build_dockerfile(
    client: Any,
    root: Path,
    dockerfile: str,
    tag: str,
    *,
    buildargs: Mapping[str, str] | None = None,
    on_output: Progress = lambda text: None,
) -> str:
    """Build ``dockerfile`` (a path inside ``root``) as ``tag``; returns the image id.

    Every line of the engine's output goes to ``on_output`` as it arrives. Nothing is
    pulled: base images must be on the engine or reachable by it.
    """
    context = context_tar(root)
    image_id = None
    stream = client.api.build(
        fileobj=context,
        custom_context=True,
        dockerfile=dockerfile,
        tag=tag,
        buildargs=dict(buildargs or {}),
        labels={"seglab.version": __version__},
        rm=True,
        forcerm=True,
        decode=True,
    )
    for chunk in stream:
        if "error" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
            raise ImageBuildFailed(f"building {tag} from {dockerfile} failed: {detail.strip()}")
        text = _describe(chunk)
        if text:
            on_output(text)
        aux = chunk.get("aux")
        if isinstance(aux, dict) and "ID" in aux:
            image_id = str(aux["ID"])
    if image_id is None:
        image_id = str(client.images.get(tag).id)
    return image_id


def build_ci(root: Path, base_url: str, on_output: Progress) -> None:
    """Run images/ci/build.sh against the engine at ``base_url`` (root, mmdebstrap)."""
    if os.getuid() != 0:
        raise ImageBuildFailed("the CI image is built with mmdebstrap as root: run as root")
    script = root / "images" / "ci" / "build.sh"
    env = {**os.environ, "DOCKER_HOST": base_url}
    with subprocess.Popen(
        ["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            on_output(line)
    if proc.returncode:
        raise ImageBuildFailed(f"{script} failed with exit status {proc.returncode}")


def build(
    client: Any,
    target: str,
    *,
    root: Path,
    base_url: str,
    buildargs: Mapping[str, str] | None = None,
    on_output: Progress = lambda text: None,
    repository: str = "seglab",
) -> list[str]:
    """Build ``target`` and, for full/dev, the parents missing on the engine; the tags built.

    Tags are ``<repository>/<name>:latest``; each child gets its parent as ``BASE``.
    """
    if target not in TARGETS:
        raise ImageBuildFailed(f"unknown image {target!r}; choose from {', '.join(TARGETS)}")
    if target == "ci":
        build_ci(root, base_url, on_output)
        return [image_tag("ci")]
    chain = [target]
    while chain[-1] in PARENT and not _present(client, image_tag(PARENT[chain[-1]], repository)):
        chain.append(PARENT[chain[-1]])
    built = []
    for name in reversed(chain):
        tag = image_tag(name, repository)
        args = dict(buildargs or {})
        if name in PARENT:
            args.setdefault("BASE", image_tag(PARENT[name], repository))
        on_output(f"==> {tag} (images/{name}/Dockerfile)\n")
        build_dockerfile(
            client, root, f"images/{name}/Dockerfile", tag, buildargs=args, on_output=on_output
        )
        built.append(tag)
    return built


def _present(client: Any, tag: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True


def host_mounts(labels: Mapping[str, str]) -> tuple[Mount, ...]:
    """What an image with ``labels`` needs from this machine to run the trainer, read-only.

    The CI image (``seglab.image=ci``) carries only Debian's python3: it gets this
    interpreter's site-packages and the folder holding the ``seglab`` package (unless that
    is the site-packages itself) where its labels say. Other images carry seglab: nothing.
    Raises SpecError when this Python's packages cannot load in the image's Python.
    """
    if labels.get(IMAGE_LABEL) != "ci":
        return ()
    wanted = {**CI_DEFAULTS, **labels}
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if wanted[PYTHON_LABEL] != here:
        raise SpecError(
            f"the CI image runs Python {wanted[PYTHON_LABEL]} and takes its packages from "
            f"this seglab's environment, which is Python {here}: run seglab from a Python "
            f"{wanted[PYTHON_LABEL]} environment, or use an image that carries seglab "
            "(seglab image build base)"
        )
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    mounts = [Mount(site, wanted[SITE_LABEL])]
    source = Path(seglab.__file__).resolve().parent.parent
    if source != site:
        mounts.append(Mount(source, wanted[SOURCE_LABEL]))
    return tuple(mounts)
