"""Finishing or rolling back the lifecycle operations a killed seglab left half done.

Each orphaned intent (its seglab process has died) is reconciled against what the runtimes
say: a launch whose every member exists is adopted (its refs recorded, its status read
from the runtime), one that created nothing or only part is rolled back (members removed,
reservation released, the run restored as it was or forgotten); a kill is finished and the
run marked ``killed``; a removal is finished; a stop is re-read. A ``starting`` run without
a handle and without an intent (left by an older seglab) is treated as a cut-short launch.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from seglab.errors import RunError, UnavailableError
from seglab.events import CLEAN_STOP_STATUSES
from seglab.hosts import Inventory
from seglab.kinds import RuntimeKind
from seglab.registry import FINAL_STATUSES, IntentRow, Member, Registry, RunRecord, RunStatus
from seglab.runs import members
from seglab.runs.context import Part, RunContext
from seglab.runs.hostio import HostIO
from seglab.runs.intents import Journal, Op, record_from_json
from seglab.runs.runtimes import kinds_on
from seglab.runtime import EngineUnavailable, HostUnreachable, RunInfo, RunNotFound

log = logging.getLogger(__name__)

# A reservation this old whose run has ended or is gone, with no intent on it, is released
# (younger ones may belong to a grid whose later variants wait for a launch slot).
ORPHAN_RESERVATION_S = 900.0

Found = tuple[str, str, RunInfo]  # (host, runtime kind, the run as listed)


def gpus_of(labels: Mapping[str, str]) -> tuple[str, ...]:
    """The GPUs a run's labels name."""
    return tuple(g for g in labels.get("seglab.gpus", "").split(",") if g)


def record_from_labels(
    inventory: Inventory, io: HostIO, labels: Mapping[str, str], ref: str, kind: str
) -> RunRecord:
    """A run record rebuilt from a run's labels and its run dir (creation time included)."""
    run_dir = labels.get("seglab.run_dir", "")
    host = labels.get("seglab.host", "local")
    resolved = io.recipe_text(inventory.get(host), run_dir) if run_dir else ""
    created = labels.get("seglab.created_at")
    record = RunRecord(
        run_id=labels["seglab.run_id"],
        recipe=labels.get("seglab.recipe", ""),
        variant=labels.get("seglab.variant", ""),
        recipe_sha=labels.get("seglab.recipe_sha", ""),
        resolved_recipe=resolved,
        host=host,
        gpus=gpus_of(labels),
        runtime=kind,
        handle=ref,
        run_dir=run_dir,
        status=RunStatus.STARTING,
        message="found again on the runtime",
    )
    return replace(record, created_at=float(created)) if created else record


def mark_killed(registry: Registry, record: RunRecord) -> RunRecord:
    """A run ended by ``seglab kill`` is ``killed`` (not ``failed`` with exit 137)."""
    # "stopped" by an earlier attempt's end event, but this attempt ended by a signal
    # (a resumed run killed before its own start event): not a clean stop's status.
    signalled = record.status == RunStatus.STOPPED and record.exit_code not in (
        None,
        *CLEAN_STOP_STATUSES,
    )
    if record.status not in (RunStatus.FAILED, RunStatus.LOST) and not signalled:
        return record  # it finished, stopped or ran out of memory before the signal
    registry.release(record.run_id)
    return registry.update_run(
        record.run_id,
        status=RunStatus.KILLED,
        message="killed by seglab kill",
        finished_at=record.finished_at or time.time(),
    )


class Recovery(Part):
    """Reconciles orphaned intents (and intent-less ``starting`` rows) with the runtimes."""

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self.journal = Journal(ctx.registry)

    def recover_all(self) -> list[str]:
        """Reconcile every orphaned intent and stray reservation; the run ids dealt with."""
        done = [row.run_id for row in self.journal.orphans() if self._reconcile(row)]
        for record in self.registry.list_runs(include_finished=False):
            if self._stranded(record) and self._legacy(record):
                done.append(record.run_id)
        self.registry.release_orphans(ORPHAN_RESERVATION_S)
        return done

    def recover_run(self, run_id: str) -> None:
        """Reconcile the orphaned intent on one run (or its stranded launch), if any."""
        for row in self.journal.orphans():
            if row.run_id == run_id:
                self._reconcile(row)
                return
        if self.registry.has_run(run_id):
            record = self.registry.get_run(run_id)
            if self._stranded(record):
                self._legacy(record)

    def _stranded(self, record: RunRecord) -> bool:
        """A ``starting`` run without a handle that no seglab is launching."""
        return (
            record.status == RunStatus.STARTING
            and not record.handle
            and not any(row.run_id == record.run_id for row in self.registry.intents())
        )

    def _legacy(self, record: RunRecord) -> bool:
        hosts = [m.host for m in members.parts(record)]
        detail = {"hosts": hosts, "kind": record.runtime, "before": None, "legacy": True}
        row = IntentRow(record.run_id, Op.LAUNCHING, "", record.created_at, detail)
        return self._reconcile(row)

    def _reconcile(self, row: IntentRow) -> bool:
        """Finish or roll back one intent; False when a host cannot be asked now."""
        try:
            if row.op == Op.LAUNCHING:
                self._launching(row.run_id, row.detail)
            elif row.op == Op.KILLING:
                self._killing(row.run_id)
            elif row.op == Op.REMOVING:
                self._removing(row.run_id, row.detail)
            elif self.registry.has_run(row.run_id):  # stopping: the signal went or not
                self.refresh(self.registry.get_run(row.run_id))
        except (EngineUnavailable, HostUnreachable, UnavailableError, RunError) as exc:
            log.warning("cannot finish the %s of %s yet: %s", row.op, row.run_id, exc)
            return False
        if row.owner:
            self.registry.clear_intent(row.run_id, row.owner)
        log.info("finished the %s of %s cut short by a killed seglab", row.op, row.run_id)
        return True

    # -- launching ------------------------------------------------------------------------

    def _found(self, run_id: str, hosts: Sequence[str], kind: str | None) -> list[Found]:
        found: list[Found] = []
        for host in dict.fromkeys(hosts):
            kinds = [kind] if kind else list(kinds_on(self.inventory.get(host)))
            for each in kinds:
                try:
                    infos = self.runtimes.get(host, each).list({"seglab.run_id": run_id})
                except EngineUnavailable:
                    if kind:
                        raise
                    continue  # no engine here: nothing of this run is on it
                found.extend((host, each, info) for info in infos)
        return found

    def _launching(self, run_id: str, detail: Mapping[str, Any]) -> None:
        nodes = len(detail["hosts"])
        found = self._found(run_id, detail["hosts"], detail.get("kind"))
        indexed = {
            int(info.labels.get("seglab.member", "0")): (host, kind, info)
            for host, kind, info in found
        }
        never_started = any(
            kind == RuntimeKind.DOCKER and info.state.status == "created" for _, kind, info in found
        )
        if len(found) == nodes and sorted(indexed) == list(range(nodes)) and not never_started:
            self._adopt(run_id, [indexed[i] for i in range(nodes)], multi=nodes > 1)
            return
        for host, kind, info in found:  # part of a multi-node run, or a never-started one
            with contextlib.suppress(RunNotFound):
                self.runtimes.get(host, kind).remove(info.ref, force=True)
        self._roll_back(run_id, detail)

    def _adopt(self, run_id: str, found: Sequence[Found], *, multi: bool) -> None:
        _, kind, first = found[0]
        if self.registry.has_run(run_id):
            record = replace(self.registry.get_run(run_id), handle=first.ref, runtime=kind)
        else:
            record = record_from_labels(self.inventory, self.io, first.labels, first.ref, kind)
        if multi:
            parts = tuple(
                Member(h, gpus_of(i.labels), i.ref, i.labels.get("seglab.run_dir", ""))
                for h, _, i in found
            )
            record = replace(record, members=parts)
        started = first.state.started_at
        record = replace(
            record,
            status=RunStatus.STARTING,
            started_at=record.started_at or (started.timestamp() if started else time.time()),
            message=None,
        )
        self.registry.upsert_run(record)
        if any(info.state.active for _, _, info in found):
            for part in members.parts(record):
                self.registry.reserve(part.host, part.gpus, run_id)
        self.refresh(record)

    def _roll_back(self, run_id: str, detail: Mapping[str, Any]) -> None:
        self.registry.release(run_id)
        before = detail.get("before")
        if before is not None:
            restored = record_from_json(before)
            self.registry.upsert_run(restored)
            queued = {item.run_id for item in self.registry.pending()}
            if restored.status == RunStatus.QUEUED and detail.get("queue") and run_id not in queued:
                self.registry.enqueue(run_id, detail["queue"])
        elif detail.get("legacy"):
            self.registry.update_run(
                run_id,
                status=RunStatus.FAILED,
                finished_at=time.time(),
                message="a seglab was killed while starting this run; nothing had started",
            )
        else:
            self.registry.delete_run(run_id)
        for path in detail.get("dirs") or ():
            shutil.rmtree(Path(path), ignore_errors=True)

    # -- ending and removing --------------------------------------------------------------

    def _killing(self, run_id: str) -> None:
        if not self.registry.has_run(run_id):
            return
        record = self.registry.get_run(run_id)
        if record.status not in FINAL_STATUSES and record.handle:
            with contextlib.suppress(RunNotFound):
                members.each_member(self.runtimes, record, lambda runtime, ref: runtime.kill(ref))
            record = self.refresh(record)
        mark_killed(self.registry, record)

    def _removing(self, run_id: str, detail: Mapping[str, Any]) -> None:
        parts = [Member.from_dict(p) for p in detail["parts"]]
        for part in parts:
            if part.handle:
                with contextlib.suppress(RunNotFound):
                    self.runtimes.get(part.host, detail["runtime"]).remove(part.handle, force=True)
        self.registry.release(run_id)
        self.registry.delete_run(run_id)
        if detail.get("purge"):
            for part in parts:
                if part.run_dir:
                    self.io.purge(self.inventory.get(part.host), part.run_dir)
