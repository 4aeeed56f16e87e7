"""A run's status from its runtime, and its events from its run dir into the registry."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from seglab import multinode
from seglab.errors import RunError, UnavailableError
from seglab.hosts import Inventory
from seglab.kinds import RuntimeKind
from seglab.registry import FINAL_STATUSES, Registry, RunRecord, RunStatus
from seglab.runs import members
from seglab.runs.hostio import HostIO
from seglab.runs.records import FAILED_TAIL, status_from
from seglab.runs.runtimes import Runtimes
from seglab.runtime import (
    EngineUnavailable,
    HostUnreachable,
    RestartingRuntime,
    RunNotFound,
    RuntimeFailure,
    RuntimeState,
)

UNREACHABLE = "unreachable: "  # the message prefix of a run whose host cannot be reached


class StatusReader:
    """Brings registry records up to date with what the runtimes say."""

    def __init__(
        self, inventory: Inventory, registry: Registry, runtimes: Runtimes, io: HostIO
    ) -> None:
        self.inventory = inventory
        self.registry = registry
        self.runtimes = runtimes
        self.io = io

    def ingest(self, record: RunRecord) -> int:
        """Copy the events appended to the run dir's events.jsonl since the last ingest
        into the registry (idempotent); the read starts at the registry's cursor, so its
        cost follows what is new, not the run's length (a remote file is read over SFTP)."""
        if not record.run_dir:
            return 0
        host = self.inventory.get(record.host)
        before = self.registry.cursor(record.run_id)
        found, after = self.io.new_events(host, record.run_dir, before)
        added = self.registry.add_events(record.run_id, found) if found else 0
        if after != before:
            self.registry.set_cursor(record.run_id, *after)
        return added

    def refresh(self, record: RunRecord) -> RunRecord:
        """Ask the runtime how the run is, ingest its events, and store the result."""
        if record.status == RunStatus.QUEUED or not record.handle:
            return record
        verdict: multinode.Verdict | None = None
        try:
            added = self.ingest(record)
            if record.is_final or record.status == RunStatus.LOST:
                return self.registry.get_run(record.run_id)
            if record.members:
                verdict = members.verdict(self.runtimes, record)
                state = verdict.state
            else:
                state = self.runtimes.get(record.host, record.runtime).inspect(record.handle)
        except RunNotFound:
            state = RuntimeState("dead", error="the run was removed outside seglab")
        except (EngineUnavailable, HostUnreachable, RunError) as exc:
            return self._unreachable(record, exc)
        except RuntimeFailure:
            raise  # the runtime answered with an error: not a reachability problem
        except UnavailableError as exc:  # the SSH link to the host
            return self._unreachable(record, exc)
        status = status_from(state, self._ended_as(record.run_id))
        fields: dict[str, Any] = {"status": status}
        if record.message and record.message.startswith(UNREACHABLE):
            fields["message"] = None  # reachable again
        if state.active and (record.runtime == RuntimeKind.SLURM or state.detail):
            # Slurm: the pending reason, restarts; Docker: the engine's restarts.
            fields["message"] = state.detail
        if verdict is not None and state.active:
            fields["message"] = verdict.message  # a member failed: the others are ending
        if status in FINAL_STATUSES or status == RunStatus.LOST:
            try:
                self._settle(record, state)
            except (EngineUnavailable, HostUnreachable) as exc:
                return self._unreachable(record, exc)  # recorded as ended once settled
            self.ingest(record)  # what was written between the first read and the end
            fields["exit_code"] = state.exit_code
            fields["finished_at"] = (
                state.finished_at.timestamp() if state.finished_at else time.time()
            )
            if verdict is not None and verdict.failed is not None:
                fields["message"] = "\n".join(
                    filter(None, (self._tail(record, verdict.failed), verdict.message))
                )
            elif status in (RunStatus.FAILED, RunStatus.OOM_KILLED, RunStatus.LOST):
                why = state.error or self._tail(record)
                fields["message"] = "\n".join(filter(None, (state.detail, why)))
            elif state.detail:
                fields["message"] = state.detail  # restarted by its engine on the way
            self.registry.release(record.run_id)
        elif all(getattr(record, name) == value for name, value in fields.items()):
            # Nothing to write (the usual poll of a run that goes on).
            return self.registry.get_run(record.run_id) if added else record
        return self.registry.update_run(record.run_id, **fields)

    def _settle(self, record: RunRecord, state: RuntimeState) -> None:
        """Keep a run that ended non-zero ended: its engine's restart policy would start
        it again at the engine's next start (docs/runtimes.md, "Surviving an engine
        restart"), while the registry, which says it ended, no longer looks at it."""
        if record.members or not record.handle:
            return  # a multi-node run (no restart policy)
        if state.exit_code == 0:
            return  # finished: never restarted
        if state.exit_code is None and record.runtime != RuntimeKind.PROCESS:
            return  # a container or job that vanished: nothing of it left to start again
        runtime = self.runtimes.get(record.host, record.runtime)
        if isinstance(runtime, RestartingRuntime):
            with contextlib.suppress(RunNotFound):  # removed meanwhile: nothing to restart
                runtime.settle(record.handle)

    def _unreachable(self, record: RunRecord, exc: Exception) -> RunRecord:
        """The host cannot be reached now (engine down, SSH link lost): the run is not
        lost, its status is simply not known; say why and keep the last one."""
        return self.registry.update_run(record.run_id, message=f"{UNREACHABLE}{exc}")

    def refresh_all(self, include_final: bool = False) -> list[RunRecord]:
        """Refresh every run that can still change (and list them all if asked)."""
        out = []
        for stored in self.registry.list_runs(include_finished=include_final):
            record = stored if stored.is_final else self.refresh(stored)
            if include_final or not record.is_final:
                out.append(record)
        return out

    def _ended_as(self, run_id: str) -> str | None:
        """The status the trainer's last attempt ended with (None: it has not said)."""
        starts = self.registry.events(run_id, kind="start")
        ends = self.registry.events(run_id, kind="end")
        if not ends or (starts and ends[-1].seq < starts[-1].seq):
            return None  # the latest attempt (after a resume) has not ended yet
        status = ends[-1].data.get("status")
        return str(status) if status is not None else None

    def _tail(self, record: RunRecord, member: int = 0) -> str | None:
        host, ref = members.member_ref(record, member)
        try:
            lines = [
                line.text
                for line in self.runtimes.get(host, record.runtime).logs(ref, tail=FAILED_TAIL)
            ]
        except RuntimeFailure as exc:
            return f"(log unavailable: {exc})"
        return "\n".join(lines) or None
