"""Submitting variants: placement, the persistent queue, parallel starts."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from seglab.errors import PlacementError, RunError, SeglabError
from seglab.hostqueue.ops import SUBMIT_WAIT_S
from seglab.hostqueue.store import HostQueue, host_settings
from seglab.hosts import Host, Inventory
from seglab.kinds import RuntimeKind
from seglab.registry import Registry, RunRecord, RunStatus
from seglab.runs.hostqueues import HostQueues, request
from seglab.runs.launch import Launcher
from seglab.runs.queueaccess import LocalQueueAccess, QueueUnavailable
from seglab.runs.reconcile import Reconciler
from seglab.runs.records import Submitted, new_run_id, resolved_recipe
from seglab.runs.runtimes import Runtimes
from seglab.runs.spread import choose, host_pools, queue_hosts, targets
from seglab.scheduler import Placement, Pool, Scheduler

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from seglab import recipes


class Submitter:
    """Places new runs, queues the ones that find no free GPU, and starts queued ones."""

    def __init__(
        self,
        inventory: Inventory,
        registry: Registry,
        runtimes: Runtimes,
        launcher: Launcher,
        *,
        host_queues: bool = True,
    ) -> None:
        """``host_queues``: queue on a host's own queue (see :mod:`seglab.hostqueue`)
        when the variants name one local host; else in this workstation's registry."""
        self.inventory = inventory
        self.registry = registry
        self.runtimes = runtimes
        self.launcher = launcher
        self.reconciler = Reconciler(launcher.ctx)
        self.host_queues = HostQueues(inventory, registry, launcher.io, launcher.refresh)
        self.use_host_queues = host_queues

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
        """Place and start each variant; the ones that find no free GPU are queued.

        With ``queue=False`` a variant that finds no free GPU is an error instead.
        """
        if not variants:
            raise RunError(f"{recipe_file.path}: no variants selected")
        self.launcher.gpu_states = scheduler.states  # the launch-time memory check reads it
        slurm = [p for p in pools if p.host and self.inventory.get(p.host).kind == "slurm"]
        if slurm:
            if len(pools) != 1 or slurm[0].gpus:
                raise RunError(
                    f"--on {','.join(map(str, pools))}: a Slurm host is placed "
                    "whole (--on CLUSTER, or CLUSTER:cpu for no GPUs); Slurm "
                    "picks the nodes and GPUs"
                )
            return self._submit_slurm(recipe_file, variants, slurm[0], runtime, image)
        pools = pools_with_data(self.inventory, pools, variants)
        gpus_per_run = max(v.recipe.resources.gpus for v in variants)
        nodes = max(v.recipe.resources.nodes for v in variants)
        if nodes > 1:
            scheduler.check_nodes(pools, gpus_per_run, nodes)
        elif not all(pool.cpu for pool in pools):
            scheduler.check([p for p in pools if not p.cpu] or pools, gpus_per_run)
        for pool in pools:
            if pool.host is not None:
                self.inventory.get(pool.host)
        host = self.host_queues.host_for(pools, nodes) if self.use_host_queues else None
        if host is not None and not host.is_local:
            remote = self._submit_remote(
                recipe_file, variants, pools, host, runtime=runtime, image=image, queue=queue
            )
            if remote is not None:
                return remote
        elif host is not None:
            return self._submit_host(
                recipe_file,
                variants,
                pools,
                scheduler,
                host,
                runtime=runtime,
                image=image,
                queue=queue,
            )
        hosts = queue_hosts(pools, self.host_queues) if self.use_host_queues and nodes == 1 else {}
        if hosts:
            return self._submit_spread(
                recipe_file,
                variants,
                pools,
                scheduler,
                hosts,
                runtime=runtime,
                image=image,
                queue=queue,
            )
        out: list[Submitted | None] = []
        placed: list[tuple[int, RunRecord, list[Placement]]] = []
        for variant in variants:
            record, recipe = _new_record(recipe_file, variant, image, pools[0].host or "", runtime)
            placement = scheduler.place_members(
                pools, recipe.resources.gpus, recipe.resources.nodes, record.run_id
            )
            if placement is None:
                reason = scheduler.explain_busy(pools)
                if not queue:
                    for _, held, _ in placed:
                        self.registry.release(held.run_id)
                    raise RunError(
                        f"no free GPU for {variant.name} on {','.join(map(str, pools))}: {reason}"
                    )
                self.registry.upsert_run(replace(record, message=f"queued: {reason}"))
                self.registry.enqueue(
                    record.run_id, {"pools": [p.to_dict() for p in pools], "runtime": runtime}
                )
                out.append(Submitted(self.registry.get_run(record.run_id), reason))
                continue
            placed.append((len(out), record, placement))
            out.append(None)
        for slot, started in self._start_all(placed):
            out[slot] = Submitted(started)
        return [item for item in out if item is not None]

    def _submit_host(
        self,
        recipe_file: recipes.RecipeFile,
        variants: Sequence[recipes.Variant],
        pools: Sequence[Pool],
        scheduler: Scheduler,
        host: Host,
        *,
        runtime: str,
        image: str | None,
        queue: bool,
    ) -> list[Submitted]:
        """Variants on one local host, under its booking lock: the ones that fit start now,
        the others join the host's queue (behind the ones already there) and its runner
        starts them as GPUs free up."""
        host_queue = self.host_queues.access(host)
        assert isinstance(host_queue, LocalQueueAccess)
        files = host_queue.files
        out: list[Submitted | None] = []
        placed: list[tuple[int, RunRecord, list[Placement]]] = []
        waiting: list[RunRecord] = []
        with host_queue.booking():
            # What the runner (or another workstation) started meanwhile holds its GPUs.
            for entry in files.journal():
                self.host_queues.apply(host, entry)
            self.reconciler.reconcile()
            behind = bool(files.items())
            for variant in variants:
                record, _ = _new_record(recipe_file, variant, image, host.name, runtime)
                resources = resolved_recipe(record).resources
                placement = (
                    None
                    if behind
                    else scheduler.place_members(pools, resources.gpus, 1, record.run_id)
                )
                if placement is not None:
                    placed.append((len(out), record, placement))
                    out.append(None)
                    continue
                reason = (
                    "behind the runs queued before it" if behind else scheduler.explain_busy(pools)
                )
                if not queue:
                    for _, held, _ in placed:
                        self.registry.release(held.run_id)
                    raise RunError(
                        f"no free GPU for {variant.name} on {','.join(map(str, pools))}: {reason}"
                    )
                record = replace(record, message=f"queued on {host.name}: {reason}")
                self.registry.upsert_run(record)
                waiting.append(record)
                out.append(Submitted(record, reason))
            if waiting:
                files.set_host(host_settings(host))
                files.write([*files.items(), *(request(r, pools) for r in waiting)])
            started = self._start_all(placed) if placed else []
        if waiting:
            host_queue.op("ensure-runner", {})
        for slot, record in started:
            out[slot] = Submitted(record)
        return [item for item in out if item is not None]

    def _submit_spread(
        self,
        recipe_file: recipes.RecipeFile,
        variants: Sequence[recipes.Variant],
        pools: Sequence[Pool],
        scheduler: Scheduler,
        hosts: dict[str, Pool],
        *,
        runtime: str,
        image: str | None,
        queue: bool,
    ) -> list[Submitted]:
        """Variants over several hosts (see :mod:`seglab.runs.spread`): the ones that fit
        start now on hosts of this machine, under their booking locks; the others go to
        the queue of the host :func:`seglab.runs.spread.choose` picks."""
        local = sorted(n for n in hosts if self.inventory.get(n).is_local)
        out: list[Submitted | None] = []
        placed: list[tuple[int, RunRecord, list[Placement]]] = []
        spill: list[tuple[int, RunRecord]] = []
        chosen: dict[str, list[tuple[int, RunRecord]]] = {}
        with ExitStack() as locks:
            behind = set()
            for name in local:
                host = self.inventory.get(name)
                files = self._local_queue(host)
                locks.enter_context(files.booking())
                for entry in files.journal():
                    self.host_queues.apply(host, entry)
                if files.items():
                    behind.add(name)  # never overtake the runs waiting there
            self.reconciler.reconcile()
            # Remote hosts' runners place their runs themselves: only this machine's here.
            direct = [
                p
                for p in host_pools(self.inventory, pools)
                if p.host not in behind and (p.host in local or p.host not in hosts)
            ]
            for variant in variants:
                record, recipe = _new_record(recipe_file, variant, image, "", runtime)
                gpus = recipe.resources.gpus
                placement = (
                    scheduler.place_members(direct, gpus, 1, record.run_id) if direct else None
                )
                if placement is not None:
                    placed.append((len(out), record, placement))
                    out.append(None)
                    continue
                if not queue:
                    for _, held, _ in placed:
                        self.registry.release(held.run_id)
                    raise RunError(
                        f"no free GPU for {variant.name} on {','.join(map(str, pools))}: "
                        f"{scheduler.explain_busy(pools)}"
                    )
                spill.append((len(out), record))
                out.append(None)
            if spill:
                gpus_per_run = max(resolved_recipe(r).resources.gpus for _, r in spill)
                on = Counter(m.host for _, _, members in placed for m in members)
                found = targets(hosts, self.host_queues, scheduler, gpus_per_run, on)
                if not found:
                    raise PlacementError(
                        f"no host in --on {','.join(map(str, pools))} can ever hold a run "
                        f"of {gpus_per_run} GPUs"
                    )
            for slot, unplaced in spill:
                name = choose(found)
                target = found[name]
                why = (
                    "a free slot there; its runner starts it"
                    if target.free >= 0
                    else f"the shortest expected wait: {target.load - 1} runs ahead "
                    f"for {target.slots} slots"
                )
                record = replace(unplaced, host=name, message=f"queued on {name}: {why}")
                self.registry.upsert_run(record)
                chosen.setdefault(name, []).append((slot, record))
                out[slot] = Submitted(record, f"queued on {name}: {why}")
            for name in local:
                if name in chosen:
                    host = self.inventory.get(name)
                    files = self._local_queue(host)
                    files.set_host(host_settings(host))
                    requests = [request(r, [hosts[name]]) for _, r in chosen[name]]
                    files.write([*files.items(), *requests])
            started = self._start_all(placed) if placed else []
        for slot, started_record in started:
            out[slot] = Submitted(started_record)
        for name, waiting in chosen.items():
            host = self.inventory.get(name)
            if host.is_local:
                self.host_queues.access(host).op("ensure-runner", {})
                continue
            records = [record for _, record in waiting]
            try:
                self.host_queues.enqueue(host, records, [hosts[name]], wait_s=0)
            except QueueUnavailable as exc:
                log.warning("%s; queueing in this workstation instead", exc)
                for record in records:
                    request_here = {"pools": [hosts[name].to_dict()], "runtime": runtime}
                    self.registry.enqueue(record.run_id, request_here)
        return [item for item in out if item is not None]

    def _local_queue(self, host: Host) -> HostQueue:
        """The queue files of a host of this machine."""
        return HostQueue(Path(self.host_queues.access(host).root))

    def _submit_remote(
        self,
        recipe_file: recipes.RecipeFile,
        variants: Sequence[recipes.Variant],
        pools: Sequence[Pool],
        host: Host,
        *,
        runtime: str,
        image: str | None,
        queue: bool,
    ) -> list[Submitted] | None:
        """Variants on one remote host, all through its queue: its runner places them
        (the one arbiter of its GPUs) and this waits for its next round to say which
        started. None when the host cannot run a queue runner (no seglab there): the
        variants then wait in this workstation's queue."""
        records = []
        for variant in variants:
            record, _ = _new_record(recipe_file, variant, image, host.name, runtime)
            record = replace(record, message=f"queued on {host.name}: waiting for its runner")
            self.registry.upsert_run(record)
            records.append(record)
        try:
            answer = self.host_queues.enqueue(host, records, pools, wait_s=SUBMIT_WAIT_S)
        except QueueUnavailable as exc:
            for record in records:
                self.registry.delete_run(record.run_id)
            log.warning("%s; queueing in this workstation instead", exc)
            return None
        for entry in answer["journal"]:
            self.host_queues.apply(host, entry)
        waiting = {item["run_id"]: (n, item) for n, item in enumerate(answer["items"], 1)}
        out = []
        for record in records:
            current = self.registry.get_run(record.run_id)
            if record.run_id not in waiting or current.status != RunStatus.QUEUED:
                out.append(Submitted(current))
                continue
            position, item = waiting[record.run_id]
            reason = f"position {position} on {host.name}: {item.get('why') or 'not yet placed'}"
            if not queue:
                self.host_queues.discard(record.run_id)
                self.registry.delete_run(record.run_id)
                raise RunError(f"no free GPU for {record.variant} on {host.name}: {reason}")
            current = self.registry.update_run(record.run_id, message=f"queued: {reason}")
            out.append(Submitted(current, reason))
        return out

    def _start_all(
        self, placed: Sequence[tuple[int, RunRecord, list[Placement]]]
    ) -> list[tuple[int, RunRecord]]:
        """Start placed runs in parallel (a grid on N free GPUs starts at once).

        A run that fails to start leaves nothing behind (see :meth:`Launcher.launch`); the
        others keep going, and the failures are raised together afterwards.
        """
        for host in {member.host for _, _, members in placed for member in members}:
            for kind in {record.runtime for _, record, _ in placed}:
                # Connect once, before the threads race to do it.
                self.runtimes.get(host, self.runtimes.choose(host, kind)).check()
        started: list[tuple[int, RunRecord]] = []
        failures: list[tuple[RunRecord, BaseException]] = []
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(placed)))) as pool:
            futures = {
                pool.submit(self.launcher.launch, record, members): (slot, record)
                for slot, record, members in placed
            }
        for future, (slot, record) in futures.items():
            error = future.exception()
            if error is None:
                started.append((slot, future.result()))
            else:
                failures.append((record, error))
        if len(failures) == 1 and len(placed) == 1:
            raise failures[0][1]
        if failures:
            ok = ", ".join(record.run_id for _, record in started) or "none"
            raise RunError(
                "; ".join(f"{record.variant}: {exc}" for record, exc in failures)
                + f" (started: {ok})"
            ) from failures[0][1]
        return started

    def sync_host_queues(self, *, throttle: bool = False) -> list[str]:
        """Bring queued runs up to date with their hosts' runners (started or failed)."""
        return self.host_queues.sync(throttle=throttle)

    def _submit_slurm(
        self,
        recipe_file: recipes.RecipeFile,
        variants: Sequence[recipes.Variant],
        pool: Pool,
        runtime: str,
        image: str | None,
    ) -> list[Submitted]:
        """Variants on a Slurm host: one job array per GPU count (a task per variant)."""
        host = pool.host or ""
        self.runtimes.choose(host, runtime)
        if any(v.recipe.resources.nodes > 1 for v in variants):
            raise RunError(
                f"{recipe_file.path}: resources.nodes > 1 places members on SSH "
                f"hosts (--on lab1:0-7,lab2:0-7); on the Slurm host {host} "
                "ask for the GPUs of one node (resources.gpus) instead"
            )
        groups: dict[int, list[RunRecord]] = {}
        for variant in variants:
            record, recipe = _new_record(recipe_file, variant, image, host, RuntimeKind.SLURM)
            gpus = 0 if pool.cpu else recipe.resources.gpus
            groups.setdefault(gpus, []).append(record)
        return [
            Submitted(record)
            for gpus, records in groups.items()
            for record in self.launcher.submit_slurm(records, gpus)
        ]

    def pump_queue(self, scheduler: Scheduler) -> list[RunRecord]:
        """Start queued runs whose GPUs are free now, oldest first (the runs in host
        queues are their runners' to start: see :meth:`sync_host_queues`)."""
        self.sync_host_queues(throttle=True)
        started = []
        self.launcher.gpu_states = scheduler.states
        for item in self.registry.pending():
            claimed = self.registry.claim(item.id)
            if claimed is None:
                continue  # another seglab took it
            record = self.registry.get_run(item.run_id)
            if record.status != RunStatus.QUEUED:
                self.registry.drop(item.id)
                continue
            pools = [Pool.from_dict(p) for p in item.request["pools"]]
            resources = resolved_recipe(record).resources
            try:
                placement = scheduler.place_members(
                    pools, resources.gpus, resources.nodes, record.run_id
                )
            except PlacementError as exc:
                self.registry.drop(item.id)
                self.registry.update_run(
                    record.run_id, status=RunStatus.FAILED, message=f"cannot be placed: {exc}"
                )
                continue
            if placement is None:
                self.registry.unclaim(item.id)
                continue
            self.registry.drop(item.id)
            try:
                started.append(
                    self.launcher.launch(record, placement, known=True, queue_request=item.request)
                )
            except SeglabError as exc:
                self.registry.update_run(
                    record.run_id,
                    status=RunStatus.FAILED,
                    message=str(exc),
                    finished_at=time.time(),
                )
        return started


def pools_with_data(
    inventory: Inventory, pools: Sequence[Pool], variants: Sequence[recipes.Variant]
) -> list[Pool]:
    """The pools with ``auto`` (every host) narrowed to the hosts that have the variants'
    dataset under ``datasets:`` in hosts.yaml (synthetic data needs none). A pool naming
    its host is kept: the launch check says what it lacks. PlacementError when no host
    has the dataset."""
    needed = {v.recipe.data.root_name for v in variants if v.recipe.data.dataset != "synthetic"}
    if not needed or all(pool.host is not None for pool in pools):
        return list(pools)
    having = [
        host.name
        for host in inventory
        if host.kind != "slurm" and all(name in host.datasets for name in needed)
    ]
    out: list[Pool] = []
    for pool in pools:
        if pool.host is not None:
            out.append(pool)
            continue
        out.extend(replace(pool, host=name) for name in having)
    if not out:
        keys = ", ".join(sorted(needed))
        raise PlacementError(
            f"no host has the dataset {keys} under `datasets:` in hosts.yaml "
            f"(hosts: {', '.join(inventory.hosts)})",
            f"add `datasets: {{{keys}: /absolute/path}}` to a host's entry, "
            "or name a host with --on",
        )
    return out


def _new_record(
    recipe_file: recipes.RecipeFile,
    variant: recipes.Variant,
    image: str | None,
    host: str,
    runtime: str,
) -> tuple[RunRecord, recipes.Recipe]:
    """A new queued run of ``variant`` and its recipe (``image`` overrides the recipe's)."""
    recipe = variant.recipe if image is None else variant.recipe.model_copy(update={"image": image})
    record = RunRecord(
        run_id=new_run_id(recipe_file.name, variant),
        recipe=recipe_file.name,
        variant=variant.name,
        recipe_sha=recipe.sha(),
        resolved_recipe=recipe.to_yaml(),
        host=host,
        runtime=runtime,
        status=RunStatus.QUEUED,
    )
    return record, recipe
