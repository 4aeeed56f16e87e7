"""The workstation's side of the host queues (see :mod:`seglab.hostqueue`).

Variants submitted to one host that cannot start now are appended to that host's queue
(under its runs root) instead of this workstation's registry queue, and the host's
runner is started (detached) to start them as GPUs free up, with or without this
workstation. On a remote host every variant goes through its queue: the runner there is
the one that places runs on its GPUs. :meth:`HostQueues.sync` brings the registry's
queued records up to date from the runner's journal (started: its handle, GPUs and run
dir; failed: why) and runs the user's run-end hook for the ends it journalled.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seglab.errors import RunError
from seglab.hostqueue.store import host_settings, latest
from seglab.hosts import Host, Inventory
from seglab.registry import Registry, RunRecord, RunStatus
from seglab.runs.hostio import HostIO
from seglab.runs.queueaccess import LocalQueueAccess, QueueAccess
from seglab.scheduler import Pool

log = logging.getLogger(__name__)

HOOK_TIMEOUT_S = 30.0
REMOTE_SYNC_S = 10.0
RUNNER_SILENT_S = 5.0
"""How long a remote runner's round mark may stand still before seglab asks the host to
start a runner (a living one marks a round every second or so)."""


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
    """The queues of this workstation's hosts, and their runners.

    A local host's queue is watched while its folder exists; a remote host's from this
    workstation's first submission to it until its queue is empty and every run its
    runner started has ended (a mark per host under ``<state dir>/host-queues/``), and
    read at most every :data:`REMOTE_SYNC_S` seconds by a long-lived process.
    """

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
        self.hook: Path | None = None  # the user's run-end hook (see :meth:`sync`)
        self.seen: Path | None = None  # a mark per run the hook ran for
        self._access: dict[str, QueueAccess] = {}
        self._synced: dict[str, float] = {}
        self._waiting: dict[str, list[dict[str, Any]]] = {}  # each host's queue, last read

    @property
    def _marks(self) -> Path:
        return self.registry.path.parent / "host-queues"

    def host_for(self, pools: Sequence[Pool], nodes: int) -> Host | None:
        """The one host the pools name when its queue serves them: a host that is not a
        Slurm cluster, for single-node runs on its GPUs (or on its CPU when it has
        ``cpu_slots``); else None (this workstation queues)."""
        names = {pool.host for pool in pools}
        if nodes > 1 or len(names) != 1 or None in names:
            return None
        host = self.inventory.get(str(names.pop()))
        if host.kind == "slurm" or (not host.is_local and not self.io.reaches_remote):
            return None
        if any(p.cpu for p in pools) and host.cpu_slots is None:
            return None  # CPU runs never wait there
        return host

    def access(self, host: Host) -> QueueAccess:
        """The queue of ``host``."""
        if host.name not in self._access:
            kind = LocalQueueAccess if host.is_local else QueueAccess
            root = str(self.io.runs_root(host))
            self._access[host.name] = kind(host, self.io.machine(host), root)
        return self._access[host.name]

    def enqueue(
        self, host: Host, records: Sequence[RunRecord], pools: Sequence[Pool], *, wait_s: float
    ) -> dict[str, Any]:
        """Append queued runs to the host's queue and see that its runner serves it; the
        runner's answer after its next round (``wait_s`` at most): see
        :func:`seglab.hostqueue.ops.submit`. A local host's booking lock must not be held."""
        if not host.is_local:
            self._marks.mkdir(parents=True, exist_ok=True)
            (self._marks / host.name).touch()
        args = {
            "host": host_settings(host),
            "items": [request(r, pools) for r in records],
            "wait_s": wait_s,
        }
        return self.access(host).op("submit", args)

    def _queues(self, *, all_remote: bool = False) -> list[QueueAccess]:
        """The queues to look at: local hosts' that exist, remote hosts' this workstation
        queued on (or every remote host's with ``all_remote``)."""
        out = []
        for host in self.inventory:
            if host.kind == "slurm":
                continue
            if host.is_local:
                queue = self.access(host)
                if queue.exists():
                    out.append(queue)
            elif self.io.reaches_remote and (all_remote or (self._marks / host.name).exists()):
                out.append(self.access(host))
        return out

    def listing(self) -> list[QueuedRun]:
        """Every host's queue in order, with why each run waits (as the runner last saw)."""
        out = []
        for queue in self._queues():
            for position, item in enumerate(queue.items(), 1):
                run_id = item["run_id"]
                known = self.registry.get_run(run_id) if self.registry.has_run(run_id) else None
                why = item.get("why") or (known.message if known else None)
                if known is None:
                    why = f"queued by another workstation; {why or 'not yet placed'}"
                variant = item["record"]["variant"]
                out.append(QueuedRun(queue.host.name, position, run_id, variant, why or ""))
        return out

    def positions(self) -> dict[str, int]:
        """Each run's place in its host's queue (1 starts first) as :meth:`sync` last
        read it."""
        return {
            item["run_id"]: place
            for items in self._waiting.values()
            for place, item in enumerate(items, 1)
        }

    def move(self, run_id: str, steps: int) -> QueuedRun:
        """Move a queued run ``steps`` places towards the front (negative: the back)."""
        queue = self._holder(run_id)
        answer = queue.op("move", {"run_id": run_id, "steps": steps})
        if answer["position"] is None:
            raise RunError(f"run {run_id} left the queue of {queue.host.name} (started?)")
        return next(q for q in self.listing() if q.run_id == run_id)

    def discard(self, run_id: str) -> bool:
        """Take a run out of its host's queue (False when no queue holds it)."""
        for queue in self._queues():
            if any(item["run_id"] == run_id for item in queue.items()):
                return bool(queue.op("discard", {"run_id": run_id})["discarded"])
        return False

    def _holder(self, run_id: str) -> QueueAccess:
        for queue in self._queues():
            if any(item["run_id"] == run_id for item in queue.items()):
                return queue
        raise RunError(f"run {run_id} is in no host's queue", "see `seglab queue`")

    def sync(self, *, throttle: bool = False) -> list[str]:
        """Apply the runners' journals to this registry's queued runs (their ids), run the
        user's run-end hook for the runs they saw end, and start a runner where one is
        needed and gone (killed, or the host restarted): for requests still waiting, or
        for runs it started that have not ended (it journals their ends, and a process
        run a reboot took down starts again). ``throttle``: a remote host at most every
        :data:`REMOTE_SYNC_S` seconds."""
        changed = []
        now = time.monotonic()
        for queue in self._queues():
            name = queue.host.name
            if (
                throttle
                and not queue.host.is_local
                and now - self._synced.get(name, -1e9) < (REMOTE_SYNC_S)
            ):
                continue
            self._synced[name] = now
            items = self._waiting[name] = queue.items()
            journal = queue.journal()
            if items or not _all_ended(journal):
                self._ensure_runner(queue)
            for entry in journal:
                if self.apply(queue.host, entry):
                    changed.append(entry["run_id"])
            self._notify(queue.host, journal)
            if not queue.host.is_local and not items and _all_ended(journal):
                (self._marks / name).unlink(missing_ok=True)
        return changed

    def _ensure_runner(self, queue: QueueAccess) -> None:
        """Start the host's runner where none lives. Locally that is one in-process check.
        A remote host is asked (a command over SSH) only when its runner's ``round`` mark,
        which a living runner rewrites every round, has stood still for
        :data:`RUNNER_SILENT_S` seconds: the mark and when it was first seen are kept
        under ``<state dir>/host-rounds/``, so one-shot commands (`seglab ps`) spare the
        host too."""
        if queue.host.is_local:
            queue.op("ensure-runner", {})
            return
        mark = queue.round_mark()
        saved = self._marks.parent / "host-rounds" / queue.host.name
        try:
            seen, since = json.loads(saved.read_text())
        except (FileNotFoundError, ValueError, TypeError):  # none yet, or damaged
            seen, since = None, 0.0
        now = time.time()
        if mark is None or mark != seen:
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps([mark, now]))
            if mark is not None and seen is not None:
                return  # it moved since the last look: a runner lives
        elif now - since < RUNNER_SILENT_S:
            return  # too soon to tell
        queue.op("ensure-runner", {})

    def _notify(self, host: Host, journal: Sequence[dict[str, Any]]) -> None:
        """Run the user's run-end hook once per run of this registry whose end the
        runner journalled (a mark per run under :attr:`seen`).

        The hook gets SEGLAB_RUN_ID, SEGLAB_RUN_STATUS, SEGLAB_RUN_HOST and
        SEGLAB_RUN_BEST_MIOU (empty when unknown) in its environment.
        """
        if self.hook is None or self.seen is None or not self.hook.is_file():
            return
        for entry in journal:
            run_id = entry["run_id"]
            if entry["kind"] != "ended" or not self.registry.has_run(run_id):
                continue
            mark = self.seen / run_id
            if mark.exists():
                continue
            self.seen.mkdir(parents=True, exist_ok=True)
            mark.touch()
            _run_hook(self.hook, host.name, entry)

    def apply(self, host: Host, entry: dict[str, Any]) -> bool:
        """Apply one journal line to this registry's queued run; whether it changed."""
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


def _all_ended(journal: Sequence[dict[str, Any]]) -> bool:
    """Whether every run the journal says was started has ended."""
    return all(entry["kind"] != "started" for entry in latest(list(journal)).values())


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


def request(record: RunRecord, pools: Sequence[Pool]) -> dict[str, Any]:
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
