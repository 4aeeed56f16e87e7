"""Runtime choice: which runtime a run uses on a host, each created once per host."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from seglab.errors import RunError
from seglab.hosts import Host, Inventory
from seglab.kinds import RuntimeKind
from seglab.runs.hostio import HostIO
from seglab.runtime import EngineUnavailable, Runtime

if TYPE_CHECKING:
    from seglab.runtime.slurm import SlurmRuntime

log = logging.getLogger(__name__)


def kinds_on(host: Host) -> tuple[RuntimeKind, ...]:
    """The runtimes a host's runs can be on (where reconcile looks for them)."""
    if host.kind == "slurm":
        return (RuntimeKind.SLURM,)
    if host.is_local:
        return (RuntimeKind.DOCKER, RuntimeKind.PROCESS)
    return (RuntimeKind.DOCKER,)


class Runtimes:
    """The runtimes of the inventory's hosts, keyed by ``(host, kind)``."""

    def __init__(
        self,
        inventory: Inventory,
        io: HostIO,
        given: Mapping[tuple[str, str], Runtime] | None = None,
    ) -> None:
        self.inventory = inventory
        self.io = io
        self._runtimes: dict[tuple[str, str], Runtime] = dict(given or {})

    def get(self, host_name: str, kind: str) -> Runtime:
        """The runtime ``kind`` (docker | process | slurm) of a host, created once."""
        key = (host_name, str(kind))
        if key not in self._runtimes:
            self._runtimes[key] = self._create(
                self.inventory.get(host_name), RuntimeKind.parse(str(kind), auto=False)
            )
        return self._runtimes[key]

    def slurm(self, host_name: str) -> SlurmRuntime:
        """The Slurm runtime of a ``kind: slurm`` host (job arrays, requested GPUs)."""
        from seglab.runtime.slurm import SlurmRuntime

        runtime = self.get(host_name, RuntimeKind.SLURM)
        if not isinstance(runtime, SlurmRuntime):
            raise RunError(f"host {host_name} has no Slurm runtime")
        return runtime

    def _create(self, host: Host, kind: RuntimeKind) -> Runtime:
        if kind is RuntimeKind.DOCKER:
            url = self.io.docker_url(host)
            if host.is_local and url.startswith("unix://") and not Path(url[7:]).exists():
                # No socket, no engine: say so without importing the Docker SDK.
                raise EngineUnavailable(f"{host.name} ({url})", "no such socket")
            from seglab.runtime.docker import DockerRuntime

            # A remote engine is reached through its socket forwarded over SSH.
            return DockerRuntime.from_env(url, host=host.name, local=host.is_local)
        if not host.is_local and (kind is RuntimeKind.PROCESS or host.kind != "slurm"):
            raise RunError(
                f"host {host.name} is remote: it runs containers (docker) or "
                f"Slurm jobs (kind: slurm); the {kind} runtime works on this "
                "machine only"
            )
        if kind is RuntimeKind.PROCESS:
            from seglab.runtime.process import ProcessRuntime

            return ProcessRuntime(Path(host.runs_root))
        from seglab.runtime.slurm import SlurmRuntime

        if host.kind != "slurm":
            raise RunError(
                f"host {host.name} is not a Slurm cluster; give it `kind: slurm` in hosts.yaml"
            )
        if host.is_local:
            return SlurmRuntime(Path(host.runs_root), host.slurm, host=host.name)
        # The login node's Slurm commands and files, over SSH.
        return SlurmRuntime(
            self.io.runs_root(host), host.slurm, self.io.machine(host), host=host.name
        )

    def choose(self, host_name: str, requested: str) -> RuntimeKind:
        """The runtime for ``requested`` on a host (``auto``: slurm on a Slurm host, else
        docker when an engine answers, else process)."""
        wanted = RuntimeKind.parse(str(requested))
        host = self.inventory.get(host_name)
        if (host.kind == "slurm") != (wanted is RuntimeKind.SLURM):
            if wanted is RuntimeKind.AUTO:
                return RuntimeKind.SLURM
            raise RunError(
                f"--runtime {wanted} does not fit host {host_name}: Slurm hosts "
                "(kind: slurm) take the slurm runtime, other hosts docker/process"
            )
        if wanted is not RuntimeKind.AUTO:
            return wanted
        if not host.is_local:
            return RuntimeKind.DOCKER
        try:
            self.get(host_name, RuntimeKind.DOCKER).check()
        except EngineUnavailable as exc:
            log.info("no Docker engine on %s (%s): using the process runtime", host_name, exc)
            return RuntimeKind.PROCESS
        return RuntimeKind.DOCKER
