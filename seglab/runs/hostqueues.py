"""The workstation's side of the host queues (see :mod:`seglab.hostqueue`).

Variants submitted to one local host that cannot start now are appended to that host's
queue (under its runs root) instead of this workstation's registry queue, and the host's
runner is started (detached) to start them as GPUs free up, with or without this
workstation. :meth:`HostQueues.sync` brings the registry's queued records up to date
from the runner's journal (started: its handle, GPUs and run dir; failed: why).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seglab.errors import RunError
from seglab.hostqueue.store import HostQueue, host_settings
from seglab.hosts import Host, Inventory
from seglab.registry import Registry, RunRecord, RunStatus
from seglab.runs.hostio import HostIO
from seglab.scheduler import Pool

log = logging.getLogger(__name__)

HOOK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class QueuedRun:
    """One run waiting in a host's queue."""

    host: str
    position: int  # 1 starts first
    run_id: str
    variant: str
    why: str

    def to_json(self) -> dict[str, Any]:
        """The run as ``seglab queue --json`` prints it."""
        return {
            "host": self.host,
            "position": self.position,
            "run_id": self.run_id,
            "variant": self.variant,
            "why": self.why,
        }


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

    def _queues(self) -> list[tuple[Host, HostQueue]]:
        """The hosts that have a queue, with it."""
        out = []
        for host in self.inventory:
            if host.is_local and host.kind != "slurm":
                queue = self.queue(host)
                if queue.dir.exists():
                    out.append((host, queue))
        return out

    def listing(self) -> list[QueuedRun]:
        """Every host's queue in order (why each waits, as its submitter was told)."""
        out = []
        for host, queue in self._queues():
            for position, item in enumerate(queue.items(), 1):
                run_id = item["run_id"]
                known = self.registry.get_run(run_id) if self.registry.has_run(run_id) else None
                why = (known.message if known else None) or "queued by another workstation"
                variant = item["record"]["variant"]
                out.append(QueuedRun(host.name, position, run_id, variant, why))
        return out

    def move(self, run_id: str, steps: int) -> QueuedRun:
        """Move a queued run ``steps`` places towards the front (negative: the back)."""
        host, queue = self._holder(run_id)
        with queue.booking():
            items = queue.items()
            index = next((i for i, it in enumerate(items) if it["run_id"] == run_id), None)
            if index is None:
                raise RunError(f"run {run_id} left the queue of {host.name} (started?)")
            item = items.pop(index)
            items.insert(max(0, min(len(items), index - steps)), item)
            queue.write(items)
        return next(q for q in self.listing() if q.run_id == run_id)

    def discard(self, run_id: str) -> bool:
        """Take a run out of its host's queue (False when no queue holds it)."""
        for _, queue in self._queues():
            with queue.booking():
                items = queue.items()
                kept = [item for item in items if item["run_id"] != run_id]
                if len(kept) != len(items):
                    queue.write(kept)
                    return True
        return False

    def _holder(self, run_id: str) -> tuple[Host, HostQueue]:
        for host, queue in self._queues():
            if any(item["run_id"] == run_id for item in queue.items()):
                return host, queue
        raise RunError(f"run {run_id} is in no host's queue", "see `seglab queue`")

    def sync(self) -> list[str]:
        """Apply the runners' journals to this registry's queued runs; their ids. A queue
        whose runner is gone (killed) gets a new one."""
        changed = []
        for host, queue in self._queues():
            if queue.items() and not queue.has_runner():
                self.start_runner(queue)  # the last one was killed: its queue goes on
            for entry in queue.journal():
                if self._apply(host, entry):
                    changed.append(entry["run_id"])
        return changed

    def notify(self, hook: Path, seen: Path) -> list[str]:
        """Run the user's run-end ``hook`` once per run of this registry whose end a
        runner journalled (``seen`` keeps a mark per run); the ids it ran for.

        The hook gets SEGLAB_RUN_ID, SEGLAB_RUN_STATUS, SEGLAB_RUN_HOST and
        SEGLAB_RUN_BEST_MIOU (empty when unknown) in its environment.
        """
        if not hook.is_file():
            return []
        fired = []
        for host, queue in self._queues():
            for entry in queue.journal():
                run_id = entry["run_id"]
                if entry["kind"] != "ended" or not self.registry.has_run(run_id):
                    continue
                mark = seen / run_id
                if mark.exists():
                    continue
                seen.mkdir(parents=True, exist_ok=True)
                mark.touch()
                _run_hook(hook, host.name, entry)
                fired.append(run_id)
        return fired

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


def _run_hook(hook: Path, host: str, entry: dict[str, Any]) -> None:
    """Run the hook for one ended run; a failing or slow hook is logged, not fatal."""
    best = entry.get("best_miou")
    env = {
        **os.environ,
        "SEGLAB_RUN_ID": entry["run_id"],
        "SEGLAB_RUN_STATUS": str(entry.get("status", "")),
        "SEGLAB_RUN_HOST": host,
        "SEGLAB_RUN_BEST_MIOU": "" if best is None else str(best),
    }
    try:
        done = subprocess.run(
            [str(hook)], env=env, stdin=subprocess.DEVNULL, timeout=HOOK_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("run-end hook %s for %s: %s", hook, entry["run_id"], exc)
        return
    if done.returncode != 0:
        log.warning("run-end hook %s for %s exited %d", hook, entry["run_id"], done.returncode)


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
