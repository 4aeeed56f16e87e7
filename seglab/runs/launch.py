"""The launch transaction: a placed run (one member, or one per host of a multi-node run)
starts completely or leaves nothing behind; and Slurm submissions (one job or array)."""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from seglab import multinode
from seglab.data.checks import require_data
from seglab.errors import RunError
from seglab.hosts import Host
from seglab.kinds import RuntimeKind
from seglab.registry import Member, RunRecord, RunStatus
from seglab.runs.context import Part, RunContext
from seglab.runs.intents import Journal, Op, fault_point, record_to_json
from seglab.runs.records import resolved_recipe
from seglab.runs.resources import check_disk, check_memory
from seglab.runs.specs import build_spec
from seglab.runtime import LaunchSpec, Runtime, RuntimeFailure
from seglab.scheduler import Placement
from seglab.telemetry.sample import HostState

log = logging.getLogger(__name__)

MULTI_NODE_KINDS = (RuntimeKind.DOCKER, RuntimeKind.PROCESS)


@dataclass
class _Made:
    """What a launch has created so far (undone if it fails)."""

    dirs: list[Path] = field(default_factory=list)
    launched: list[tuple[Runtime, str]] = field(default_factory=list)


class Launcher(Part):
    """Starts placed runs and Slurm submissions; ``refresh`` reads a run's first state."""

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self.journal = Journal(ctx.registry)
        self.gpu_states: Mapping[str, HostState] = {}  # telemetry of the latest placement

    def launch(
        self,
        record: RunRecord,
        placements: Sequence[Placement],
        *,
        known: bool = False,
        queue_request: Mapping[str, Any] | None = None,
    ) -> RunRecord:
        """Start ``record`` (its GPUs already reserved) on one placement, or as a
        multi-node run with one member per placement, joined by a c10d rendezvous served
        on member 0's host (see :mod:`seglab.multinode`).

        If the launch fails nothing is left half-created: members already started are
        removed, the reservation is released, run dirs this call made are removed, and the
        registry keeps the run as it was (``known``: a queued or resumed run) or forgets
        it (a new one). If this seglab is killed instead, its ``launching`` intent tells the
        next one what to adopt or roll back (``queue_request``: how to queue it again).
        """
        before = record
        made = _Made()
        detail: dict[str, Any] = {
            "hosts": [p.host for p in placements],
            "kind": self._kind(record, placements),
            "before": record_to_json(before) if known else None,
            "queue": dict(queue_request) if queue_request is not None else None,
        }
        with self.journal.intent(record.run_id, Op.LAUNCHING, detail):
            fault_point("launch.begin")
            try:
                record, specs = self._prepare(record, placements, made)
                detail["dirs"] = [str(d) for d in made.dirs]
                self.journal.note(record.run_id, Op.LAUNCHING, detail)
                fault_point("launch.prepared")
                self.registry.upsert_run(record)
                fault_point("launch.row")
                self._start(record, specs, made)
                fault_point("launch.engine")
            except BaseException:
                self._undo(record, made)
                self.registry.release(record.run_id)
                if known:
                    self.registry.upsert_run(before)
                else:
                    self.registry.delete_run(record.run_id)
                raise
            refs = [ref for _, ref in made.launched]
            members = record.members
            if members:
                members = tuple(replace(m, handle=r) for m, r in zip(members, refs, strict=True))
            record = replace(record, handle=refs[0], started_at=time.time(), members=members)
            self.registry.upsert_run(record)
            fault_point("launch.handle")
        return self.refresh(record)

    def _kind(self, record: RunRecord, placements: Sequence[Placement]) -> RuntimeKind:
        kinds = {self.runtimes.choose(p.host, record.runtime) for p in placements}
        kind = kinds.pop()
        if len(placements) > 1 and (kinds or kind not in MULTI_NODE_KINDS):
            raise RunError(
                "the members of a multi-node run must all use the docker "
                "runtime, or all the process runtime (on this machine)"
            )
        return kind

    def _prepare(
        self, record: RunRecord, placements: Sequence[Placement], made: _Made
    ) -> tuple[RunRecord, list[tuple[Host, LaunchSpec]]]:
        """The run as it starts, and each member's host and launch spec."""
        kind = self._kind(record, placements)
        hosts = [self.inventory.get(p.host) for p in placements]
        recipe = resolved_recipe(record)
        if len(placements) == 1:
            dirs = [self.io.run_dir(hosts[0], record.run_id)]
        else:
            dirs = [
                self.io.run_dir(host, multinode.member_name(record.run_id, index))
                for index, host in enumerate(hosts)
            ]
        check_memory(recipe, placements, self.gpu_states, {h.name: h.is_local for h in hosts})
        for host, folder in zip(hosts, dirs, strict=True):
            if host.is_local:
                check_disk(recipe, host.name, folder)
        state_dir = self.registry.path.parent
        unique = {host.name: host for host in hosts}.values()
        for host in unique:  # the dataset, once per host, before any side effect
            for note in require_data(host, recipe.data, state_dir, machine=self.io.machine(host)):
                log.warning("%s (host %s)", note, host.name)
        made.dirs = [d for d, h in zip(dirs, hosts, strict=True) if h.is_local and not d.exists()]
        record = replace(
            record,
            host=placements[0].host,
            gpus=placements[0].gpus,
            runtime=kind,
            run_dir=str(dirs[0]),
            status=RunStatus.STARTING,
            message=None,
        )
        if len(placements) == 1:
            spec = build_spec(self.io, record, recipe, hosts[0], kind=kind, run_dir=dirs[0])
            return record, [(hosts[0], spec)]
        addresses, interfaces = multinode.addresses(hosts)
        rendezvous = multinode.Rendezvous(
            record.run_id,
            addresses[0],
            self.io.free_port(hosts[0]),
            addresses,
            interfaces,
            recipe.resources.node_timeout_s,
        )
        members = tuple(
            Member(p.host, p.gpus, None, str(d)) for p, d in zip(placements, dirs, strict=True)
        )
        record = replace(record, members=members)
        specs = [
            (
                host,
                build_spec(
                    self.io,
                    replace(record, host=m.host, gpus=m.gpus, run_dir=m.run_dir),
                    recipe,
                    host,
                    kind=kind,
                    run_dir=Path(m.run_dir),
                    member=(rendezvous, index),
                ),
            )
            for index, (m, host) in enumerate(zip(members, hosts, strict=True))
        ]
        return record, specs

    def _start(
        self, record: RunRecord, specs: Sequence[tuple[Host, LaunchSpec]], made: _Made
    ) -> None:
        """Launch every member at once; the first failure is raised once all have tried."""
        runtimes = [self.runtimes.get(host.name, record.runtime) for host, _ in specs]
        if len(specs) == 1:
            made.launched.append((runtimes[0], runtimes[0].launch(specs[0][1])))
            return

        def one(index: int, runtime: Runtime, spec: LaunchSpec) -> str:
            ref = runtime.launch(spec)
            if index == 0:
                fault_point("launch.member")  # member 0 up, the others maybe not yet
            return ref

        with ThreadPoolExecutor(max_workers=len(specs)) as pool:
            futures = [
                pool.submit(one, index, runtime, spec)
                for index, (runtime, (_, spec)) in enumerate(zip(runtimes, specs, strict=True))
            ]
        errors: list[BaseException] = []
        for runtime, future in zip(runtimes, futures, strict=True):
            error = future.exception()
            if error is None:
                made.launched.append((runtime, future.result()))
            else:
                errors.append(error)
        if errors:
            raise errors[0]

    @staticmethod
    def _undo(record: RunRecord, made: _Made) -> None:
        for runtime, ref in made.launched:
            try:
                runtime.remove(ref, force=True)
            except RuntimeFailure as exc:
                log.warning("could not remove member %s of %s: %s", ref, record.run_id, exc)
        for path in made.dirs:
            shutil.rmtree(path, ignore_errors=True)

    def submit_slurm(self, records: Sequence[RunRecord], gpus: int) -> list[RunRecord]:
        """Submit runs of one Slurm host as one job (one run) or one job array, asking
        ``gpus`` GPUs (GRES) per run; a failed sbatch marks them failed."""
        with contextlib.ExitStack() as intents:
            for given in records:
                known = self.registry.has_run(given.run_id)
                detail = {
                    "hosts": [given.host],
                    "kind": RuntimeKind.SLURM,
                    "before": record_to_json(given) if known else None,
                }
                intents.enter_context(self.journal.intent(given.run_id, Op.LAUNCHING, detail))
            fault_point("submit.begin")
            launched = self._submit_slurm(records, gpus)
        return [self.refresh(record) for record in launched]

    def _submit_slurm(self, records: Sequence[RunRecord], gpus: int) -> list[RunRecord]:
        host = self.inventory.get(records[0].host)
        runtime = self.runtimes.slurm(host.name)
        prepared: list[RunRecord] = []
        specs: list[LaunchSpec] = []
        for given in records:
            run_dir = self.io.run_dir(host, given.run_id)
            record = replace(
                given,
                runtime=RuntimeKind.SLURM,
                run_dir=str(run_dir),
                status=RunStatus.STARTING,
                message=None,
            )
            specs.append(
                build_spec(
                    self.io,
                    record,
                    resolved_recipe(record),
                    host,
                    kind=RuntimeKind.SLURM,
                    run_dir=run_dir,
                )
            )
            self.registry.upsert_run(record)
            prepared.append(record)
        fault_point("submit.rows")
        try:
            refs = runtime.submit(specs, gpus)
        except RuntimeFailure as exc:
            for record in prepared:
                self.registry.update_run(
                    record.run_id,
                    status=RunStatus.FAILED,
                    message=str(exc),
                    finished_at=time.time(),
                )
            raise
        fault_point("submit.sbatch")
        out = []
        for record, ref in zip(prepared, refs, strict=True):
            launched = replace(record, handle=ref, started_at=time.time())
            self.registry.upsert_run(launched)
            out.append(launched)
        return out
