"""RunManager: the run lifecycle's one public class, delegating to its parts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from seglab.hosts import Host, Inventory
from seglab.kinds import RuntimeKind
from seglab.registry import Registry, RunRecord
from seglab.runs.context import RunContext
from seglab.runs.hostio import HostIO, MachineGetter
from seglab.runs.launch import Launcher
from seglab.runs.lifecycle import Lifecycle
from seglab.runs.reconcile import Reconciler
from seglab.runs.records import Submitted
from seglab.runs.runtimes import Runtimes
from seglab.runs.status import StatusReader
from seglab.runs.submit import Submitter
from seglab.runtime import LogLine, Runtime
from seglab.scheduler import Placement, Pool, Scheduler

if TYPE_CHECKING:
    from seglab import recipes


class RunManager:
    """Starts, watches and ends runs on the hosts of an inventory.

    The runtimes (Docker engine, detached processes, Slurm) hold the truth; the registry
    caches it. Every run carries labels (``seglab.run_id`` and friends), so a seglab that
    starts after another was killed finds the runs again (:meth:`reconcile`).
    """

    def __init__(
        self,
        inventory: Inventory,
        registry: Registry,
        machine: MachineGetter | None = None,
        runtimes: Mapping[tuple[str, str], Runtime] | None = None,
    ) -> None:
        """``machine`` gives a host's machine by name (without it, local hosts only);
        ``runtimes`` pre-sets the runtime of ``(host, kind)`` pairs (tests give a fake)."""
        self.inventory = inventory
        self.registry = registry
        self.io = HostIO(machine)
        self.runtimes = Runtimes(inventory, self.io, runtimes)
        self.status = StatusReader(inventory, registry, self.runtimes, self.io)
        ctx = RunContext(inventory, registry, self.runtimes, self.io, self.refresh)
        self.launcher = Launcher(ctx)
        # Runtimes given in-process (tests' fakes) cannot travel to a host's queue runner.
        self.submitter = Submitter(
            inventory, registry, self.runtimes, self.launcher, host_queues=runtimes is None
        )
        self.reconciler = Reconciler(ctx)
        self.lifecycle = Lifecycle(ctx, launcher=self.launcher)

    # -- runtimes and hosts -----------------------------------------------------------

    def runtime(self, host_name: str, kind: str) -> Runtime:
        """The runtime ``kind`` (docker | process | slurm) of a host, created once."""
        return self.runtimes.get(host_name, kind)

    def docker_url(self, host: Host) -> str:
        """The engine socket of ``host`` (``DOCKER_HOST`` overrides the local default)."""
        return self.io.docker_url(host)

    def runs_root(self, host: Host) -> Path:
        """The host's runs root as an absolute path (on that host), created if missing."""
        return self.io.runs_root(host)

    # -- submitting and starting ------------------------------------------------------

    def submit(
        self,
        recipe_file: recipes.RecipeFile,
        variants: Sequence[recipes.Variant],
        pools: Sequence[Pool],
        scheduler: Scheduler,
        *,
        runtime: str = RuntimeKind.AUTO,
        image: str | None = None,
        queue: bool = True,
    ) -> list[Submitted]:
        """Place and start each variant; the ones that find no free GPU are queued
        (with ``queue=False`` that is an error instead)."""
        return self.submitter.submit(
            recipe_file, variants, pools, scheduler, runtime=runtime, image=image, queue=queue
        )

    def launch(
        self, record: RunRecord, placements: Sequence[Placement], *, known: bool = False
    ) -> RunRecord:
        """Start ``record`` on one placement, or as a multi-node run on several; a failed
        launch leaves nothing behind (``known``: the registry keeps the run as it was)."""
        return self.launcher.launch(record, placements, known=known)

    def start(self, record: RunRecord, placement: Placement, *, known: bool = False) -> RunRecord:
        """Launch ``record`` at one ``placement`` (its GPUs already reserved)."""
        return self.launcher.launch(record, [placement], known=known)

    def pump_queue(self, scheduler: Scheduler) -> list[RunRecord]:
        """Start queued runs whose GPUs are free now, oldest first."""
        return self.submitter.pump_queue(scheduler)

    # -- truth from the runtimes ------------------------------------------------------

    def ingest(self, record: RunRecord) -> int:
        """Copy new events from the run dir's events.jsonl into the registry."""
        return self.status.ingest(record)

    def refresh(self, record: RunRecord) -> RunRecord:
        """Ask the runtime how the run is, ingest its events, and store the result."""
        return self.status.refresh(record)

    def refresh_all(self, include_final: bool = False) -> list[RunRecord]:
        """Refresh every run that can still change (and list them all if asked)."""
        return self.status.refresh_all(include_final)

    def reconcile(self) -> list[str]:
        """Adopt this workstation's runs the registry lacks; returns their ids."""
        return self.reconciler.reconcile()

    # -- ending, resuming, logs -------------------------------------------------------

    def stop(self, run_id: str, timeout: float = 60.0) -> RunRecord:
        """SIGTERM (the trainer checkpoints and exits 0), ``timeout`` s of grace, then kill."""
        return self.lifecycle.stop(run_id, timeout)

    def kill(self, run_id: str) -> RunRecord:
        """SIGKILL now (work since the last checkpoint is lost)."""
        return self.lifecycle.kill(run_id)

    def resume(self, run_id: str) -> RunRecord:
        """Start an ended run again in its run dir on its GPUs (the trainer resumes)."""
        return self.lifecycle.resume(run_id)

    def remove(self, run_id: str, purge: bool = False, force: bool = False) -> None:
        """Forget a run; its run dir stays unless ``purge``."""
        self.lifecycle.remove(run_id, purge, force)

    def logs(
        self, run_id: str, follow: bool = False, tail: int | None = None, member: int = 0
    ) -> Iterator[LogLine]:
        """The run's log (of member ``member``) as whole lines, followed if asked."""
        return self.lifecycle.logs(run_id, follow, tail, member)
