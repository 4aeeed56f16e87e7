"""The workstation's side of the host queues (see :mod:`seglab.hostqueue`).

Variants submitted to one local host that cannot start now are appended to that host's
queue (under its runs root) instead of this workstation's registry queue, and the host's
runner is started (detached) to start them as GPUs free up, with or without this
workstation. :meth:`HostQueues.sync` brings the registry's queued records up to date
from the runner's journal (started: its handle, GPUs and run dir; failed: why).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from seglab.hostqueue.store import HostQueue, host_settings
from seglab.hosts import Host, Inventory
from seglab.registry import Registry, RunRecord, RunStatus
from seglab.runs.hostio import HostIO
from seglab.scheduler import Pool

log = logging.getLogger(__name__)


class HostQueues:
    """The queues of this workstation's local hosts, and their runners."""

    def __init__(
        self,
        inventory: Inventory,
        registry: Registry,
        io: HostIO,
        refresh: Callable[[RunRecord], RunRecord],
    ) -> None:
        self.inventory = inventory
        self.registry = registry
        self.io = io
        self.refresh = refresh

    def host_for(self, pools: Sequence[Pool], nodes: int) -> Host | None:
        """The one host the pools name when its queue serves them: a local host that is
        not a Slurm cluster, for single-node GPU runs; else None (this workstation
        queues)."""
        names = {pool.host for pool in pools}
        if nodes > 1 or len(names) != 1 or None in names or any(p.cpu for p in pools):
            return None
        host = self.inventory.get(str(names.pop()))
        return host if host.is_local and host.kind != "slurm" else None

    def queue(self, host: Host) -> HostQueue:
        """The queue files of ``host``."""
        return HostQueue(self.io.runs_root(host))

    def enqueue(
        self, queue: HostQueue, host: Host, records: Sequence[RunRecord], pools: Sequence[Pool]
    ) -> None:
        """Append queued runs to the host's queue (hold its booking lock)."""
        queue.set_host(host_settings(host))
        queue.write([*queue.items(), *(_request(r, pools) for r in records)])

    def start_runner(self, queue: HostQueue) -> None:
        """Start the host's runner, detached (it exits at once if one is running)."""
        queue.dir.mkdir(parents=True, exist_ok=True)
        with open(queue.log_file, "ab") as out:
            subprocess.Popen(
                [sys.executable, "-m", "seglab.hostqueue", "--root", str(queue.root)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )

    def sync(self) -> list[str]:
        """Apply the runners' journals to this registry's queued runs; their ids."""
        changed = []
        for host in self.inventory:
            if not host.is_local or host.kind == "slurm":
                continue
            queue = self.queue(host)
            if not queue.journal_file.exists():
                continue
            for entry in queue.journal():
                if self._apply(host, entry):
                    changed.append(entry["run_id"])
        return changed

    def _apply(self, host: Host, entry: dict[str, Any]) -> bool:
        run_id = entry["run_id"]
        if entry["kind"] not in ("started", "failed") or not self.registry.has_run(run_id):
            return False
        if self.registry.get_run(run_id).status != RunStatus.QUEUED:
            return False
        if entry["kind"] == "failed":
            self.registry.update_run(
                run_id, status=RunStatus.FAILED, message=entry["message"], finished_at=entry["time"]
            )
            return True
        gpus = tuple(entry["gpus"])
        self.registry.reserve(host.name, gpus, run_id)
        record = self.registry.update_run(
            run_id,
            status=RunStatus.STARTING,
            handle=entry["handle"],
            gpus=gpus,
            run_dir=entry["run_dir"],
            runtime=entry["runtime"],
            started_at=entry["started_at"],
            message=None,
        )
        self.refresh(record)
        return True


def _request(record: RunRecord, pools: Sequence[Pool]) -> dict[str, Any]:
    """A queued run's full launch request, as the host's runner reads it."""
    return {
        "run_id": record.run_id,
        "record": {
            "recipe": record.recipe,
            "variant": record.variant,
            "recipe_sha": record.recipe_sha,
            "resolved_recipe": record.resolved_recipe,
            "host": record.host,
            "runtime": record.runtime,
            "created_at": record.created_at,
        },
        "pools": [pool.to_dict() for pool in pools],
    }
