"""The host's queue runner: starts queued variants as the host's GPUs free up.

One tick, under the booking lock: adopt and refresh every run on the host (so runs a
workstation started directly hold their GPUs, and ended runs free theirs), journal the
end of each run this runner started, then place and start queued variants in order (a
variant that does not fit waits; later ones that fit may start). The runner exits when
its queue is empty and none of the runs it started is still going.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from seglab.errors import PlacementError, SeglabError
from seglab.hostqueue.ops import OPS
from seglab.hostqueue.store import HostQueue, host_of, latest
from seglab.hosts import Host, Inventory
from seglab.machines import LoopThread
from seglab.registry import Registry, RunRecord, RunStatus
from seglab.runs import RunManager, resolved_recipe
from seglab.scheduler import Pool, Scheduler
from seglab.telemetry.sample import HostState
from seglab.telemetry.source import Telemetry

log = logging.getLogger(__name__)

DEFAULT_POLL_S = 1.0


def record_of(item: Mapping[str, Any]) -> RunRecord:
    """The queued run of a request, as the workstation created it."""
    run = item["record"]
    return RunRecord(
        run_id=item["run_id"],
        recipe=run["recipe"],
        variant=run["variant"],
        recipe_sha=run["recipe_sha"],
        resolved_recipe=run["resolved_recipe"],
        host=run["host"],
        runtime=run["runtime"],
        created_at=run["created_at"],
        status=RunStatus.QUEUED,
    )


class Runner:
    """The queue runner of one host (the runs root ``queue.root`` is on this machine)."""

    def __init__(self, queue: HostQueue, poll_s: float = DEFAULT_POLL_S) -> None:
        self.queue = queue
        self.poll_s = poll_s
        self.registry = Registry(queue.state_dir / "registry.sqlite3")
        self.loop = LoopThread("seglab-hostqueue")
        self.telemetry = Telemetry()
        self._host: Host | None = None
        self._manager: RunManager | None = None

    def run(self) -> int:
        """Serve the queue until it is empty and the runs started here have ended."""
        lock = self.queue.try_runner_lock()
        if lock is None:
            log.info("another runner serves %s", self.queue.root)
            return 0
        log.info("runner %d serving %s", os.getpid(), self.queue.root)
        try:
            while True:
                with self.queue.booking():
                    going = self.tick()
                    self.queue.mark_round()
                    if not going:
                        # Let go of the runner lock before the booking lock: a workstation
                        # queueing next finds no runner and starts a new one.
                        self.queue.pid_file.unlink(missing_ok=True)
                        lock.close()
                        break
                time.sleep(self.poll_s)
        finally:
            self.loop.call(self.telemetry.close(), 30)
            self.loop.close()
            self.registry.close()
        log.info("queue empty and no run of ours going: runner %d exits", os.getpid())
        return 0

    def tick(self) -> bool:
        """One round (hold the booking lock); False once there is nothing left to do."""
        items = self.queue.items()
        host = self._ensure_host()
        if host is None:
            return False
        manager = self._ensure_manager(host)
        manager.reconcile()
        self._journal_ends()
        if items:
            items = self._start(manager, host, items)
            self.queue.write(items)
        return bool(items) or bool(self._own_going())

    def _own_going(self) -> list[str]:
        return [
            run_id
            for run_id, entry in latest(self.queue.journal()).items()
            if entry["kind"] == "started"
        ]

    def _journal_ends(self) -> None:
        """Journal each run of ours that has ended (the notifications)."""
        for run_id in self._own_going():
            record = self.registry.get_run(run_id) if self.registry.has_run(run_id) else None
            if record is not None and not record.is_final:
                continue
            if record is None:  # its run dir was removed on the host
                self.queue.note("ended", run_id, status="lost", message="removed on the host")
                continue
            self.queue.note(
                "ended",
                run_id,
                status=str(record.status),
                exit_code=record.exit_code,
                best_miou=record.best_miou,
                message=record.message,
            )

    def _start(
        self, manager: RunManager, host: Host, items: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Start the requests that fit now; the ones left waiting, in order."""
        scheduler = Scheduler(manager.inventory, self.registry, self._states(host))
        manager.launcher.gpu_states = scheduler.states  # the launch-time memory check
        waiting = []
        for item in items:
            record = record_of(item)
            if not self.registry.has_run(record.run_id):
                self.registry.upsert_run(record)
            resources = resolved_recipe(record).resources
            pools = [Pool.from_dict(p) for p in item["pools"]]
            try:
                placement = scheduler.place_members(
                    pools, resources.gpus, resources.nodes, record.run_id
                )
            except PlacementError as exc:
                self._failed(record, f"cannot be placed: {exc}")
                continue
            if placement is None:
                waiting.append({**item, "why": scheduler.explain_busy(pools)})
                continue
            try:
                started = manager.launch(record, placement, known=True)
            except SeglabError as exc:
                self._failed(record, str(exc))
                continue
            self.queue.note(
                "started",
                record.run_id,
                handle=started.handle,
                gpus=list(started.gpus),
                run_dir=started.run_dir,
                runtime=started.runtime,
                started_at=started.started_at,
            )
            log.info("started %s on %s", record.run_id, placement)
        return waiting

    def _failed(self, record: RunRecord, message: str) -> None:
        log.warning("%s failed to start: %s", record.run_id, message)
        self.registry.upsert_run(
            replace(record, status=RunStatus.FAILED, message=message, finished_at=time.time())
        )
        self.queue.note("failed", record.run_id, message=message)

    def _ensure_host(self) -> Host | None:
        """The host from ``host.json`` (None before any workstation queued here)."""
        settings = self.queue.host_settings()
        if settings is None:
            return None
        if self._host is None:
            self._host = host_of(settings, self.queue.root)
        return self._host

    def _ensure_manager(self, host: Host) -> RunManager:
        if self._manager is None:
            inventory = Inventory({host.name: host}, self.queue.dir / "host")
            self._manager = RunManager(inventory, self.registry)
            self.loop.call(self.telemetry.add_host(host), 60)
        return self._manager

    def _states(self, host: Host) -> dict[str, HostState]:
        """The host's GPUs now (waits for the first reading)."""
        states = self.loop.call(self.telemetry.wait_ready(30.0), 60)
        return {state.host: state for state in states if state.host == host.name}


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m seglab.hostqueue --root RUNS_ROOT [--poll SECONDS]`` serves the queue;
    with ``--op NAME`` it does one workstation operation (JSON in on stdin, out on stdout)."""
    parser = argparse.ArgumentParser(prog="python3 -m seglab.hostqueue", description=__doc__)
    parser.add_argument("--root", required=True, type=Path, help="the host's runs root")
    parser.add_argument("--poll", type=float, default=DEFAULT_POLL_S, help="seconds a round")
    parser.add_argument("--op", choices=sorted(OPS), help="one operation instead of serving")
    args = parser.parse_args(argv)
    queue = HostQueue(args.root.resolve())
    if args.op is not None:
        answer = OPS[args.op](queue, json.loads(sys.stdin.read() or "{}"))
        print(json.dumps(answer))
        return 0
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    return Runner(queue, args.poll).run()
