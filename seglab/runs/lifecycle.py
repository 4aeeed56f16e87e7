"""Ending and resuming runs, removing them, and reading their logs."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

from seglab.errors import RunError
from seglab.kinds import RuntimeKind
from seglab.registry import RunRecord, RunStatus
from seglab.runs import members
from seglab.runs.context import Part, RunContext
from seglab.runs.intents import Journal, Op, fault_point, record_to_json
from seglab.runs.launch import Launcher
from seglab.runs.recover import Recovery, mark_killed
from seglab.runtime import EngineUnavailable, LogCursor, LogLine, RunNotFound
from seglab.scheduler import Placement

LOG_RECONNECT_S = 300.0  # how long `logs -f` waits for a lost engine to come back


class Lifecycle(Part):
    """Stop, kill, resume, remove and logs of runs that have started."""

    def __init__(self, ctx: RunContext, *, launcher: Launcher) -> None:
        super().__init__(ctx)
        self.launcher = launcher
        self.journal = Journal(ctx.registry)
        self.recovery = Recovery(ctx)

    def _current(self, run_id: str) -> RunRecord:
        """The run refreshed, after finishing what a killed seglab left half done on it;
        RunError while another seglab is still starting it."""
        self.recovery.recover_run(run_id)
        record = self.refresh(self.registry.get_run(run_id))
        holder = self.journal.holder(run_id)
        if holder is not None and holder.op == Op.LAUNCHING and not record.handle:
            raise RunError(
                f"run {run_id} is being started by seglab process {holder.owner.split(':')[0]}",
                "run the command again once `seglab ps` shows it started",
            )
        return record

    def _active(self, run_id: str) -> RunRecord:
        record = self._current(run_id)
        if record.status == RunStatus.QUEUED:
            return record
        if record.is_final or record.status == RunStatus.LOST or not record.handle:
            raise RunError(f"run {run_id} is not running (status {record.status})")
        return record

    def _dequeue(self, run_id: str) -> bool:
        dropped = False
        for item in self.registry.pending():
            if item.run_id == run_id:
                dropped = self.registry.drop(item.id) or dropped
        return dropped

    def stop(self, run_id: str, timeout: float = 60.0) -> RunRecord:
        """SIGTERM (the trainer checkpoints and exits 0), ``timeout`` s of grace, then kill."""
        record = self._active(run_id)
        if record.status == RunStatus.QUEUED:
            self._dequeue(run_id)
            return self.registry.update_run(
                run_id, status=RunStatus.STOPPED, finished_at=time.time(), message="never started"
            )
        with self.journal.intent(run_id, Op.STOPPING):
            fault_point("stop.begin")
            members.each_member(
                self.runtimes, record, lambda runtime, ref: runtime.stop(ref, timeout=timeout)
            )
            fault_point("stop.signalled")
            ended = self.refresh(record)
        if (
            record.runtime == RuntimeKind.SLURM
            and ended.status == RunStatus.FAILED
            and not self.registry.events(run_id, kind="start")
        ):
            # scancel of a job still pending in Slurm: stopped before it ever ran.
            return self.registry.update_run(
                run_id, status=RunStatus.STOPPED, message="cancelled while pending in Slurm"
            )
        return ended

    def kill(self, run_id: str) -> RunRecord:
        """SIGKILL now (work since the last checkpoint is lost)."""
        record = self._active(run_id)
        if record.status == RunStatus.QUEUED:
            return self.stop(run_id)
        with self.journal.intent(run_id, Op.KILLING):
            fault_point("kill.begin")
            members.each_member(self.runtimes, record, lambda runtime, ref: runtime.kill(ref))
            fault_point("kill.signalled")
            return mark_killed(self.registry, self.refresh(record))

    def resume(self, run_id: str) -> RunRecord:
        """Start an ended run again in its run dir on its GPUs (the trainer resumes)."""
        record = self._current(run_id)
        if not (record.is_final or record.status == RunStatus.LOST):
            raise RunError(f"run {run_id} is {record.status}; only ended runs resume")
        if record.status == RunStatus.FINISHED:
            raise RunError(f"run {run_id} already finished; start a new run instead")
        if not record.run_dir or not record.handle:
            raise RunError(f"run {run_id} never started; nothing to resume")
        if record.runtime == RuntimeKind.SLURM:
            slurm = self.runtimes.slurm(record.host)
            gpus = slurm.requested_gpus(record.handle)
            slurm.remove(record.handle)
            return self.launcher.submit_slurm([record], gpus)[0]
        with self.journal.intent(run_id, Op.LAUNCHING, self._resuming(record)):
            return self._resume(record)

    def _resuming(self, record: RunRecord) -> dict[str, object]:
        """The intent of a resume: roll back to the ended run, or adopt the new start."""
        return {
            "hosts": [p.host for p in members.parts(record)],
            "kind": record.runtime,
            "before": record_to_json(record),
        }

    def _resume(self, record: RunRecord) -> RunRecord:
        run_id = record.run_id
        parts = members.parts(record)
        for part in parts:  # the same GPUs again (member 0's host holds last.pt)
            if not self.registry.reserve(part.host, part.gpus, run_id):
                self.registry.release(run_id)
                holders = self.registry.holders(part.host)
                busy = [
                    f"{part.host}:{gpu} held by {holders[(part.host, gpu)]}"
                    for gpu in part.gpus
                    if (part.host, gpu) in holders
                ]
                raise RunError(f"cannot resume {run_id}: its GPUs are busy ({'; '.join(busy)})")
        fault_point("resume.reserved")
        for part in parts:
            with contextlib.suppress(RunNotFound):  # the container or record is already gone
                self.runtimes.get(part.host, record.runtime).remove(part.handle or "", force=False)
        fault_point("resume.removed")
        return self.launcher.launch(
            record,
            [Placement(p.host, p.gpus, tuple(range(len(p.gpus)))) for p in parts],
            known=True,
        )

    def remove(self, run_id: str, purge: bool = False, force: bool = False) -> None:
        """Forget a run: its container/process record goes; the run dir stays unless purged."""
        record = self._current(run_id)
        parts = members.parts(record)
        if record.handle and not (record.is_final or record.status == RunStatus.LOST or force):
            raise RunError(f"run {run_id} is {record.status}; stop it first or use --force")
        detail = {
            "parts": [dataclasses.asdict(p) for p in parts],
            "runtime": record.runtime,
            "purge": purge,
        }
        with self.journal.intent(run_id, Op.REMOVING, detail):
            fault_point("rm.begin")
            self._dequeue(run_id)
            for part in parts:
                if part.handle:
                    with contextlib.suppress(RunNotFound):  # already gone on the runtime
                        self.runtimes.get(part.host, record.runtime).remove(
                            part.handle, force=force
                        )
            fault_point("rm.runtime")
            self.registry.release(run_id)
            self.registry.delete_run(run_id)
            fault_point("rm.forgotten")
            if purge:
                for part in parts:
                    if part.run_dir:
                        self.io.purge(self.inventory.get(part.host), part.run_dir)

    def logs(
        self, run_id: str, follow: bool = False, tail: int | None = None, member: int = 0
    ) -> Iterator[LogLine]:
        """The run's log (of member ``member`` of a multi-node run) as whole lines,
        following until it ends if asked."""
        record = self.registry.get_run(run_id)
        if not record.handle:
            raise RunError(f"run {run_id} has not started yet (status {record.status})")
        host, ref = members.member_ref(record, member)
        runtime = self.runtimes.get(host, record.runtime)
        cursor: LogCursor | None = None
        offline_since: float | None = None
        try:
            while True:
                try:
                    for line in runtime.logs(
                        ref, follow=follow, since=cursor, tail=None if cursor else tail
                    ):
                        offline_since = None
                        cursor = line.cursor
                        yield line
                    return
                except EngineUnavailable:
                    # The engine went away (a remote host's link dropped): resume from the
                    # last whole line once it answers again, so nothing repeats or is lost.
                    if not follow:
                        raise
                    offline_since = offline_since or time.monotonic()
                    if time.monotonic() - offline_since > LOG_RECONNECT_S:
                        raise
                    time.sleep(1.0)
        except RunNotFound as exc:
            log_path = Path(record.run_dir) / "train.log"
            raise RunError(
                f"run {run_id} is gone from its runtime; its run dir is "
                f"{record.run_dir}" + (f" (see {log_path})" if log_path.exists() else "")
            ) from exc
