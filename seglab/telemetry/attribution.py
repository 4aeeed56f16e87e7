"""Who owns a GPU process: its container (from ``/proc/<pid>/cgroup``) and seglab run.

The container id is read from the process's cgroup path, for cgroup v1 and v2 and for the
usual runtimes (``docker-<id>.scope``, ``/docker/<id>``, ``cri-containerd-<id>.scope``,
``crio-<id>.scope``, ``libpod-<id>.scope``, cgroupfs ``/kubepods/.../<id>``). The run is
found through the container's ``seglab.run_id`` label, looked up with the Docker SDK in a
thread and cached. A process outside any container shows its user and command line, and
belongs to a process-runtime run when its environment (``/proc/<pid>/environ``, readable
for the user's own processes) holds ``SEGLAB_RUN_ID``, as the run's trainer and everything
it starts do.
"""

from __future__ import annotations

import asyncio
import logging
import pwd
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from seglab.kinds import RUN_ID_ENV
from seglab.machines import CommandError, Machine
from seglab.telemetry.sample import ProcessSample

log = logging.getLogger(__name__)

RUN_LABEL = "seglab.run_id"

_CONTAINER = re.compile(
    r"(?:(?P<prefix>docker|cri-containerd|containerd|crio|libpod)[-:/])?"
    r"(?P<id>[0-9a-f]{64})(?:\.scope)?(?=/|$)"
)
_RUNTIME = {
    "docker": "docker",
    "cri-containerd": "containerd",
    "containerd": "containerd",
    "crio": "cri-o",
    "libpod": "podman",
}

ReadText = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """A container id found in a cgroup path, with the runtime its naming points to."""

    runtime: str
    id: str


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """What the engine says about a container."""

    name: str | None
    labels: dict[str, str]


def container_from_cgroup(text: str) -> ContainerRef | None:
    """The container a process runs in, from the contents of ``/proc/<pid>/cgroup``.

    Each line is ``hierarchy-id:controllers:path`` (v2 has the single line ``0::path``).
    The innermost container id in any hierarchy wins.
    """
    found: ContainerRef | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        path = parts[2]
        for match in _CONTAINER.finditer(path):
            prefix = match.group("prefix")
            if prefix:
                runtime = _RUNTIME[prefix]
            elif "kubepods" in path:
                runtime = "kubernetes"
            else:
                runtime = "unknown"
            found = ContainerRef(runtime=runtime, id=match.group("id"))
    return found


def user_and_command(status: str | None, cmdline: str | None) -> tuple[str | None, str | None]:
    """The owner (user name, or ``uid N``) and the command line from /proc files."""
    user: str | None = None
    for line in (status or "").splitlines():
        if line.startswith("Uid:"):
            fields = line.split()
            if len(fields) > 1 and fields[1].isdigit():
                uid = int(fields[1])
                try:
                    user = pwd.getpwuid(uid).pw_name
                except KeyError:
                    user = f"uid {uid}"
            break
    command = None
    if cmdline:
        command = " ".join(part for part in cmdline.split("\0") if part)[:200] or None
    return user, command


def run_from_environ(environ: str | None) -> str | None:
    """The run id in the text of ``/proc/<pid>/environ`` (NUL-separated), if any."""
    prefix = f"{RUN_ID_ENV}="
    for entry in (environ or "").split("\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :] or None
    return None


def local_reader(proc_root: Path = Path("/proc")) -> ReadText:
    """Read /proc files of this machine (in a thread; None when the process is gone)."""

    def read(path: str) -> str | None:
        try:
            return (proc_root / path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None  # the process exited, or its /proc entry is not readable to us

    async def reader(path: str) -> str | None:
        return await asyncio.to_thread(read, path)

    return reader


def machine_reader(machine: Machine) -> ReadText:
    """Read /proc files of a (remote) machine with ``cat``."""

    async def reader(path: str) -> str | None:
        try:
            result = await machine.run(["cat", f"/proc/{path}"], timeout=10.0)
        except (CommandError, TimeoutError) as exc:
            log.debug("cannot read /proc/%s: %s", path, exc)
            return None
        return result.stdout if result.returncode == 0 else None

    return reader


class DockerLabels:
    """Container name and labels by id through the Docker SDK, cached, off the event loop."""

    def __init__(
        self, client: Any | None = None, base_url: str | None = None, ttl: float = 300.0
    ) -> None:
        # Without a client, one is made on first use: for base_url (e.g. the unix://
        # socket forwarding a remote engine) or else the local engine (docker.from_env).
        self.client = client
        self.base_url = base_url
        self.ttl = ttl
        self._cache: dict[str, tuple[float, ContainerInfo | None]] = {}

    async def lookup(self, container_id: str) -> ContainerInfo | None:
        """The container's name and labels, or None when the engine does not know it."""
        hit = self._cache.get(container_id)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]
        info = await asyncio.to_thread(self._inspect, container_id)
        self._cache[container_id] = (time.monotonic(), info)
        return info

    def _inspect(self, container_id: str) -> ContainerInfo | None:
        import docker
        from docker.errors import DockerException, NotFound
        from requests.exceptions import RequestException

        try:
            if self.client is None and self.base_url is not None:
                self.client = docker.DockerClient(base_url=self.base_url, timeout=10)
            elif self.client is None:
                self.client = docker.from_env(timeout=10)
            container = self.client.containers.get(container_id)
        except NotFound:
            return None
        except (DockerException, RequestException) as exc:
            # No engine, or it went away: the process keeps its container id, no run.
            log.warning("cannot inspect container %s: %s", container_id[:12], exc)
            return None
        labels = container.labels or {}
        return ContainerInfo(name=container.name, labels=dict(labels))


class Attributor:
    """Fills in container, run, user and command for a host's GPU processes."""

    def __init__(self, read_text: ReadText, labels: DockerLabels | None = None) -> None:
        self.read_text = read_text
        self.labels = labels

    async def __call__(self, processes: list[ProcessSample]) -> list[ProcessSample]:
        """The same processes with what could be found about their owners."""
        return list(await asyncio.gather(*(self.one(p) for p in processes)))

    async def one(self, process: ProcessSample) -> ProcessSample:
        """One process with its owner filled in where it can be found."""
        cgroup = await self.read_text(f"{process.pid}/cgroup")
        ref = container_from_cgroup(cgroup) if cgroup else None
        if ref is not None:
            info = await self.labels.lookup(ref.id) if self.labels is not None else None
            return replace(
                process,
                container_id=ref.id,
                container_name=info.name if info else None,
                run_id=info.labels.get(RUN_LABEL) if info else None,
            )
        status, cmdline, environ = await asyncio.gather(
            self.read_text(f"{process.pid}/status"),
            self.read_text(f"{process.pid}/cmdline"),
            self.read_text(f"{process.pid}/environ"),
        )
        user, command = user_and_command(status, cmdline)
        return replace(process, user=user, command=command, run_id=run_from_environ(environ))
