"""The image a Docker run's container was created from, asked of its engine."""

from __future__ import annotations

from docker.errors import NotFound

from seglab.runtime import EngineUnavailable
from seglab.runtime.docker import DockerRuntime


def image_digest(runtime: object, handle: str) -> str | None:
    """The image id (``sha256:...``) of container `handle` of a Docker runtime; None for
    another runtime, a removed container or an engine that does not answer."""
    if not isinstance(runtime, DockerRuntime):
        return None
    try:
        attrs = runtime.client.containers.get(handle).attrs
    except (NotFound, EngineUnavailable):
        return None
    image = attrs.get("Image")
    return str(image) if image else None
