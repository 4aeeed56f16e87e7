"""Run lifecycle: submit variants, start them on a runtime, find them again, end them.

The runtimes (Docker engine, detached processes) hold the truth; the registry caches it.
Every run carries labels (``seglab.run_id`` and friends), so a seglab that starts after
another was killed finds the runs again (:meth:`RunManager.reconcile`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from seglab import __version__, events, multinode, recipes
from seglab.errors import PlacementError, RunError
from seglab.hosts import DEFAULT_DOCKER_SOCKET, Host, Inventory
from seglab.registry import FINAL_STATUSES, Member, Registry, RunRecord, RunStatus
from seglab.runtime import (
    EngineUnavailable,
    HostUnreachable,
    LaunchSpec,
    LogCursor,
    LogLine,
    Mount,
    RunInfo,
    RunNotFound,
    Runtime,
    RuntimeFailure,
    RuntimeState,
    default_user,
    own_run_dir,
)
from seglab.scheduler import Placement, Pool, Scheduler

if TYPE_CHECKING:
    from seglab.remote.bridge import RemoteBridge

log = logging.getLogger(__name__)
T = TypeVar("T")

RUN_MOUNT = "/seglab/run"  # the run directory inside a container
DATA_MOUNT = "/seglab/data"  # the dataset root inside a container (read-only)
RUNTIMES = ("auto", "docker", "process", "slurm")
FAILED_TAIL = 20  # log lines kept in the registry for a failed run
LOG_RECONNECT_S = 300.0  # how long `logs -f` waits for a lost engine to come back


@dataclass(frozen=True)
class Submitted:
    """The outcome of submitting one variant: started, or queued with the reason."""

    record: RunRecord
    queued_because: str | None = None


def new_run_id(recipe: str, variant: recipes.Variant) -> str:
    """``<recipe>.<variant slug>.<6 hex>``: unique, readable, fit for container names."""
    return f"{recipe}.{variant.slug}.{secrets.token_hex(3)}"


def labels_for(record: RunRecord) -> dict[str, str]:
    """The labels every run carries (DESIGN.md: run identity)."""
    return {
        "seglab.run_id": record.run_id,
        "seglab.recipe": record.recipe,
        "seglab.variant": record.variant,
        "seglab.recipe_sha": record.recipe_sha,
        "seglab.gpus": ",".join(record.gpus),
        "seglab.version": __version__,
        "seglab.host": record.host,
        "seglab.run_dir": record.run_dir,
    }


def trainer_command(python: str, run_dir: str, nproc: int) -> tuple[str, ...]:
    """The trainer's command line: one process, or ``nproc`` under torchrun.

    Under torchrun (one node, ``--standalone`` rendezvous on loopback) each rank's output
    also goes to ``<run dir>/ranks/``; only rank 0 writes events and checkpoints.
    """
    train = ("-m", "seglab.train", "--config", f"{run_dir}/recipe.yaml", "--run-dir", run_dir)
    if nproc <= 1:
        return (python, *train)
    # --local-addr: a container without a network cannot resolve its own host name.
    return (
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--local-addr=127.0.0.1",
        f"--nproc-per-node={nproc}",
        f"--log-dir={run_dir}/ranks",
        "--tee=3",
        *train,
    )


def resolved_recipe(record: RunRecord) -> recipes.Recipe:
    """The resolved recipe a run was started with."""
    return recipes.Recipe.model_validate(yaml.safe_load(record.resolved_recipe))


def status_from(state: RuntimeState, ended_as: str | None) -> RunStatus:
    """The registry status for what the runtime says (``ended_as``: the end event's status)."""
    if state.status == "created":
        return RunStatus.STARTING
    if state.status in ("running", "paused"):
        return RunStatus.RUNNING
    if state.status == "dead":
        return RunStatus.LOST
    if state.oom_killed:
        return RunStatus.OOM_KILLED
    if ended_as == "stopped":
        # The trainer checkpointed and said so; torchrun exits non-zero when it is the one
        # that received SIGTERM, so the end event, not the exit code, tells a graceful stop.
        return RunStatus.STOPPED
    if state.exit_code == 0:
        return RunStatus.FINISHED
    return RunStatus.FAILED


class RunManager:
    """Starts, watches and ends runs on the hosts of an inventory."""

    def __init__(
        self,
        inventory: Inventory,
        registry: Registry,
        remote: Callable[[], RemoteBridge] | None = None,
        runtimes: Mapping[tuple[str, str], Runtime] | None = None,
    ) -> None:
        """``runtimes`` pre-sets the runtime of ``(host, kind)`` pairs (tests give a fake)."""
        self.inventory = inventory
        self.registry = registry
        self._remote = remote
        self._runtimes: dict[tuple[str, str], Runtime] = dict(runtimes or {})
        self._offsets: dict[str, int] = {}  # remote events.jsonl bytes already ingested
        self._roots: dict[str, str] = {}  # remote runs roots, resolved to absolute paths

    def remote(self) -> RemoteBridge:
        """The SSH bridge (remote hosts are reached only through it)."""
        if self._remote is None:
            raise RunError("remote hosts need the SSH layer; this run manager has none")
        return self._remote()

    # -- runtimes ------------------------------------------------------------------

    def docker_url(self, host: Host) -> str:
        """The engine socket of ``host`` (``DOCKER_HOST`` overrides the local default)."""
        env = os.environ.get("DOCKER_HOST")
        if host.is_local and env and host.docker_socket == DEFAULT_DOCKER_SOCKET:
            return env
        return f"unix://{host.docker_socket}"

    def runtime(self, host_name: str, kind: str) -> Runtime:
        """The runtime ``kind`` (docker | process | slurm) of a host, created once."""
        key = (host_name, kind)
        if key not in self._runtimes:
            host = self.inventory.get(host_name)
            if not host.is_local and kind == "docker":
                from seglab.runtime.docker import DockerRuntime

                # The remote engine, through its socket forwarded over SSH.
                self._runtimes[key] = DockerRuntime.from_env(
                    self._guard_remote(lambda: self.remote().docker_url(host_name)), host=host_name
                )
                return self._runtimes[key]
            if not host.is_local and kind == "slurm" and host.kind == "slurm":
                from seglab.remote.commands import RemoteCommands
                from seglab.runtime.slurm import CommandFiles, SlurmRuntime

                # The login node's Slurm commands and files, over SSH.
                commands = RemoteCommands(
                    self.remote, host_name, host.slurm.env_setup if host.slurm else ()
                )
                self._runtimes[key] = SlurmRuntime(
                    self.runs_root(host),
                    host.slurm,
                    commands,
                    host=host_name,
                    files=CommandFiles(commands),
                )
                return self._runtimes[key]
            if not host.is_local:
                raise RunError(
                    f"host {host_name} is remote: it runs containers (docker) or "
                    f"Slurm jobs (kind: slurm); the {kind} runtime works on this "
                    "machine only"
                )
            if kind == "slurm":
                from seglab.runtime.slurm import SlurmRuntime

                if host.kind != "slurm":
                    raise RunError(
                        f"host {host_name} is not a Slurm cluster; give it "
                        "`kind: slurm` in hosts.yaml"
                    )
                self._runtimes[key] = SlurmRuntime(Path(host.runs_root), host.slurm, host=host_name)
            elif kind == "docker":
                from seglab.runtime.docker import DockerRuntime

                self._runtimes[key] = DockerRuntime.from_env(self.docker_url(host), host=host_name)
            elif kind == "process":
                from seglab.runtime.process import ProcessRuntime

                self._runtimes[key] = ProcessRuntime(Path(host.runs_root))
            else:
                raise RunError(f"unknown runtime {kind!r}; choose one of docker, process, slurm")
        return self._runtimes[key]

    def choose_runtime(self, host_name: str, requested: str) -> str:
        """``docker`` or ``process`` for ``requested`` (``auto``: docker when it answers)."""
        if requested not in RUNTIMES:
            raise RunError(f"unknown runtime {requested!r}; choose one of {', '.join(RUNTIMES)}")
        if (self.inventory.get(host_name).kind == "slurm") != (requested == "slurm"):
            if requested == "auto":
                return "slurm"
            raise RunError(
                f"--runtime {requested} does not fit host {host_name}: Slurm hosts "
                "(kind: slurm) take the slurm runtime, other hosts docker/process"
            )
        if requested != "auto":
            return requested
        if not self.inventory.get(host_name).is_local:
            return "docker"
        try:
            from seglab.runtime.docker import DockerRuntime

            runtime = self.runtime(host_name, "docker")
            assert isinstance(runtime, DockerRuntime)
            runtime.client  # noqa: B018 - connecting is the check
        except EngineUnavailable as exc:
            log.info("no Docker engine on %s (%s): using the process runtime", host_name, exc)
            return "process"
        return "docker"

    # -- submitting and starting ---------------------------------------------------

    def submit(
        self,
        recipe_file: recipes.RecipeFile,
        variants: Sequence[recipes.Variant],
        pools: Sequence[Pool],
        scheduler: Scheduler,
        *,
        runtime: str = "auto",
        image: str | None = None,
        queue: bool = True,
    ) -> list[Submitted]:
        """Place and start each variant; the ones that find no free GPU are queued.

        With ``queue=False`` a variant that finds no free GPU is an error instead.
        """
        if not variants:
            raise RunError(f"{recipe_file.path}: no variants selected")
        slurm = [p for p in pools if p.host and self.inventory.get(p.host).kind == "slurm"]
        if slurm:
            if len(pools) != 1 or slurm[0].gpus:
                raise RunError(
                    f"--on {','.join(map(str, pools))}: a Slurm host is placed "
                    "whole (--on CLUSTER, or CLUSTER:cpu for no GPUs); Slurm "
                    "picks the nodes and GPUs"
                )
            return self._submit_slurm(recipe_file, variants, slurm[0], runtime, image)
        gpus_per_run = max(v.recipe.resources.gpus for v in variants)
        nodes = max(v.recipe.resources.nodes for v in variants)
        if nodes > 1:
            scheduler.check_nodes(pools, gpus_per_run, nodes)
        elif not all(pool.cpu for pool in pools):
            scheduler.check([p for p in pools if not p.cpu] or pools, gpus_per_run)
        for pool in pools:
            if pool.host is not None:
                self.inventory.get(pool.host)
        out: list[Submitted | None] = []
        placed: list[tuple[int, RunRecord, list[Placement]]] = []
        for variant in variants:
            recipe = (
                variant.recipe
                if image is None
                else variant.recipe.model_copy(update={"image": image})
            )
            run_id = new_run_id(recipe_file.name, variant)
            record = RunRecord(
                run_id=run_id,
                recipe=recipe_file.name,
                variant=variant.name,
                recipe_sha=recipe.sha(),
                resolved_recipe=recipe.to_yaml(),
                host=pools[0].host or "",
                runtime=runtime,
                status=RunStatus.QUEUED,
            )
            placement = scheduler.place_members(
                pools, recipe.resources.gpus, recipe.resources.nodes, run_id
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
                    run_id, {"pools": [p.to_dict() for p in pools], "runtime": runtime}
                )
                out.append(Submitted(self.registry.get_run(run_id), reason))
                continue
            placed.append((len(out), record, placement))
            out.append(None)
        for slot, started in self._start_all(placed):
            out[slot] = Submitted(started)
        return [item for item in out if item is not None]

    def _start_all(
        self, placed: Sequence[tuple[int, RunRecord, list[Placement]]]
    ) -> list[tuple[int, RunRecord]]:
        """Start placed runs in parallel (a grid on N free GPUs starts at once).

        A run that fails to start leaves nothing behind (see :meth:`start`); the others
        keep going, and the failures are raised together afterwards.
        """
        for host in {member.host for _, _, members in placed for member in members}:
            kinds = {record.runtime for _, record, _ in placed}
            for kind in kinds:  # connect once, before the threads race to do it
                runtime = self.runtime(host, self.choose_runtime(host, kind))
                getattr(runtime, "client", None)
        started: list[tuple[int, RunRecord]] = []
        failures: list[tuple[RunRecord, Exception]] = []
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(placed)))) as pool:
            futures = {
                pool.submit(self.launch, record, members): (slot, record)
                for slot, record, members in placed
            }
            for future, (slot, record) in futures.items():
                try:
                    started.append((slot, future.result()))
                except Exception as exc:  # collected and raised below, with the others
                    failures.append((record, exc))
        if len(failures) == 1 and len(placed) == 1:
            raise failures[0][1]
        if failures:
            ok = ", ".join(record.run_id for _, record in started) or "none"
            raise RunError(
                "; ".join(f"{record.variant}: {exc}" for record, exc in failures)
                + f" (started: {ok})"
            ) from failures[0][1]
        return started

    def _submit_slurm(
        self,
        recipe_file: recipes.RecipeFile,
        variants: Sequence[recipes.Variant],
        pool: Pool,
        runtime: str,
        image: str | None,
    ) -> list[Submitted]:
        """Variants on a Slurm host: one job array per GPU count (a task per variant)."""
        assert pool.host is not None
        self.choose_runtime(pool.host, runtime)
        if any(v.recipe.resources.nodes > 1 for v in variants):
            raise RunError(
                f"{recipe_file.path}: resources.nodes > 1 places members on SSH "
                f"hosts (--on lab1:0-7,lab2:0-7); on the Slurm host {pool.host} "
                "ask for the GPUs of one node (resources.gpus) instead"
            )
        groups: dict[int, list[RunRecord]] = {}
        for variant in variants:
            recipe = (
                variant.recipe
                if image is None
                else variant.recipe.model_copy(update={"image": image})
            )
            record = RunRecord(
                run_id=new_run_id(recipe_file.name, variant),
                recipe=recipe_file.name,
                variant=variant.name,
                recipe_sha=recipe.sha(),
                resolved_recipe=recipe.to_yaml(),
                host=pool.host,
                runtime="slurm",
                status=RunStatus.QUEUED,
            )
            gpus = 0 if pool.cpu else recipe.resources.gpus
            groups.setdefault(gpus, []).append(record)
        return [
            Submitted(record)
            for gpus, records in groups.items()
            for record in self.submit_slurm(records, gpus)
        ]

    def submit_slurm(self, records: Sequence[RunRecord], gpus: int) -> list[RunRecord]:
        """Submit runs of one Slurm host as one job (one run) or one job array, asking
        ``gpus`` GPUs (GRES) per run; a failed sbatch marks them failed."""
        from seglab.runtime.slurm import SlurmRuntime

        host = self.inventory.get(records[0].host)
        runtime = self.runtime(host.name, "slurm")
        assert isinstance(runtime, SlurmRuntime)
        prepared: list[RunRecord] = []
        specs: list[LaunchSpec] = []
        for given in records:
            run_dir = self._run_dir(host, given.run_id)
            record = replace(
                given,
                runtime="slurm",
                run_dir=str(run_dir),
                status=RunStatus.STARTING,
                message=None,
            )
            specs.append(self._spec(record, resolved_recipe(record), host, "slurm", run_dir))
            self.registry.upsert_run(record)
            prepared.append(record)
        try:
            handles = runtime.submit(specs, gpus)
        except RuntimeFailure as exc:
            for record in prepared:
                self.registry.update_run(
                    record.run_id,
                    status=RunStatus.FAILED,
                    message=str(exc),
                    finished_at=time.time(),
                )
            raise
        out = []
        for record, handle in zip(prepared, handles, strict=True):
            launched = replace(record, handle=handle, started_at=time.time())
            self.registry.upsert_run(launched)
            out.append(self.refresh(launched))
        return out

    def launch(
        self, record: RunRecord, placements: Sequence[Placement], *, known: bool = False
    ) -> RunRecord:
        """Start ``record`` on one placement, or as a multi-node run on several."""
        if len(placements) == 1:
            return self.start(record, placements[0], known=known)
        return self.start_members(record, placements, known=known)

    def start(self, record: RunRecord, placement: Placement, *, known: bool = False) -> RunRecord:
        """Launch ``record`` at ``placement`` (its GPUs already reserved).

        If the launch fails nothing is left half-created: the reservation is released, a
        run dir this call made is removed, and the registry keeps the run as it was
        (``known``: a queued or resumed run) or forgets it (a new one).
        """
        before = record
        made_dir: Path | None = None
        try:
            kind = self.choose_runtime(placement.host, record.runtime)
            host = self.inventory.get(placement.host)
            recipe = resolved_recipe(record)
            run_dir = self._run_dir(host, record.run_id)
            made_dir = None if run_dir.exists() else run_dir
            record = replace(
                record,
                host=placement.host,
                gpus=placement.gpus,
                runtime=kind,
                run_dir=str(run_dir),
                status=RunStatus.STARTING,
                message=None,
            )
            spec = self._spec(record, recipe, host, kind, run_dir)
            self.registry.upsert_run(record)
            handle = self.runtime(host.name, kind).launch(spec)
        except BaseException:
            self.registry.release(record.run_id)
            if known:
                self.registry.upsert_run(before)
            else:
                self.registry.delete_run(record.run_id)
            if made_dir is not None:
                shutil.rmtree(made_dir, ignore_errors=True)
            raise
        record = replace(record, handle=handle, started_at=time.time())
        self.registry.upsert_run(record)
        return self.refresh(record)

    def start_members(
        self, record: RunRecord, placements: Sequence[Placement], *, known: bool = False
    ) -> RunRecord:
        """Launch a multi-node run: one member per placement, joined by a c10d rendezvous
        served on member 0's host (see :mod:`seglab.multinode`).

        The members start together; if one fails to start, the others are removed and
        nothing is left half-created (as for :meth:`start`).
        """
        before = record
        made: list[Path] = []
        launched: list[tuple[Runtime, str]] = []
        try:
            kinds = {self.choose_runtime(p.host, record.runtime) for p in placements}
            kind = kinds.pop()
            if kinds or kind not in ("docker", "process"):
                raise RunError(
                    "the members of a multi-node run must all use the docker "
                    "runtime, or all the process runtime (on this machine)"
                )
            hosts = [self.inventory.get(p.host) for p in placements]
            recipe = resolved_recipe(record)
            try:
                addresses, interfaces = multinode.addresses(hosts)
            except multinode.MultiNodeError as exc:
                raise RunError(str(exc)) from exc
            rendezvous = multinode.Rendezvous(
                record.run_id,
                addresses[0],
                self._free_port(hosts[0]),
                addresses,
                interfaces,
                recipe.resources.node_timeout_s,
            )
            dirs = [
                self._run_dir(host, multinode.member_name(record.run_id, index))
                for index, host in enumerate(hosts)
            ]
            made = [
                d for d, host in zip(dirs, hosts, strict=True) if host.is_local and not d.exists()
            ]
            members = tuple(
                Member(p.host, p.gpus, None, str(d)) for p, d in zip(placements, dirs, strict=True)
            )
            record = replace(
                record,
                host=placements[0].host,
                gpus=placements[0].gpus,
                runtime=kind,
                run_dir=str(dirs[0]),
                status=RunStatus.STARTING,
                message=None,
                members=members,
            )
            specs = [
                self._spec(
                    replace(record, host=m.host, gpus=m.gpus, run_dir=m.run_dir),
                    recipe,
                    host,
                    kind,
                    Path(m.run_dir),
                    member=(rendezvous, index),
                )
                for index, (m, host) in enumerate(zip(members, hosts, strict=True))
            ]
            self.registry.upsert_run(record)
            runtimes = [self.runtime(host.name, kind) for host in hosts]
            with ThreadPoolExecutor(max_workers=len(specs)) as pool:
                futures = [
                    pool.submit(runtime.launch, spec)
                    for runtime, spec in zip(runtimes, specs, strict=True)
                ]
                errors: list[Exception] = []
                for runtime, future in zip(runtimes, futures, strict=True):
                    try:
                        launched.append((runtime, future.result()))
                    except Exception as exc:  # raised below, once the rest is cleaned up
                        errors.append(exc)
            if errors:
                raise errors[0]
        except BaseException:
            for runtime, handle in launched:
                try:
                    runtime.remove(handle, force=True)
                except RuntimeFailure as exc:
                    log.warning("could not remove member %s of %s: %s", handle, record.run_id, exc)
            self.registry.release(record.run_id)
            if known:
                self.registry.upsert_run(before)
            else:
                self.registry.delete_run(record.run_id)
            for path in made:
                shutil.rmtree(path, ignore_errors=True)
            raise
        handles = [handle for _, handle in launched]
        record = replace(
            record,
            handle=handles[0],
            started_at=time.time(),
            members=tuple(replace(m, handle=h) for m, h in zip(members, handles, strict=True)),
        )
        self.registry.upsert_run(record)
        return self.refresh(record)

    def _free_port(self, host: Host) -> int:
        """A TCP port free now on ``host`` (member 0's: the rendezvous endpoint)."""
        if host.is_local:
            return multinode.free_local_port()
        out = self._guard_remote(
            lambda: self.remote().run(host.name, ["python3", "-c", multinode.FREE_PORT_SCRIPT])
        )
        return int(out.stdout.strip())

    def _guard_remote(self, action: Callable[[], T]) -> T:
        from seglab.remote.bridge import RemoteUnavailable

        try:
            return action()
        except RemoteUnavailable as exc:
            raise RunError(str(exc)) from exc

    def runs_root(self, host: Host) -> Path:
        """The host's runs root as an absolute path (on that host), created if missing."""
        if host.is_local:
            return Path(host.runs_root).expanduser()
        if host.name not in self._roots:
            root = str(host.runs_root)
            # `~` is expanded by the remote shell; the rest of the path is quoted.
            shell_root = (
                ("~/" + shlex.quote(root[2:])) if root.startswith("~/") else shlex.quote(root)
            )
            out = self._guard_remote(
                lambda: self.remote().run(
                    host.name, ["sh", "-c", f"mkdir -p {shell_root} && cd {shell_root} && pwd"]
                )
            )
            self._roots[host.name] = out.stdout.strip()
        return Path(self._roots[host.name])

    def _run_dir(self, host: Host, run_id: str) -> Path:
        if not host.is_local:
            root = self.runs_root(host)
            out = self._guard_remote(lambda: self.remote().run(host.name, ["df", "-Pk", str(root)]))
            free = int(out.stdout.strip().splitlines()[-1].split()[3]) * 1024
            if free < 256 * 2**20:
                raise RunError(
                    f"runs root {root} on {host.name} has only {free // 2**20} MiB "
                    "free; free some space (seglab rm --purge old runs) or move "
                    "runs_root"
                )
            return root / run_id
        root = Path(host.runs_root).expanduser()
        run_dir = root / run_id
        try:
            root.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(root).free
        except OSError as exc:
            raise RunError(f"runs root {root} on {host.name} is not usable: {exc}") from exc
        if free < 256 * 2**20:
            raise RunError(
                f"runs root {root} on {host.name} has only {free // 2**20} MiB free; "
                "free some space (seglab rm --purge old runs) or move runs_root"
            )
        return run_dir

    def _spec(
        self,
        record: RunRecord,
        recipe: recipes.Recipe,
        host: Host,
        kind: str,
        run_dir: Path,
        *,
        member: tuple[multinode.Rendezvous, int] | None = None,
    ) -> LaunchSpec:
        """The launch spec of a run (or of member ``member[1]`` of a multi-node run)."""
        dataset: str | None = None
        if recipe.data.dataset != "synthetic":
            dataset = host.dataset_root(recipe.data.root_name)
            exists = (
                Path(dataset).is_dir()
                if host.is_local
                else self._guard_remote(
                    lambda: self.remote().succeeds(host.name, ["test", "-d", str(dataset)])
                )
            )
            if not exists:
                raise RunError(
                    f"dataset root {dataset} ({recipe.data.root_name}) does not "
                    f"exist on {host.name}; fix `datasets:` in hosts.yaml"
                )
        env: dict[str, str] = {}
        labels = labels_for(record)
        name = record.run_id
        if member is not None:
            rendezvous, index = member
            env.update(rendezvous.env(index))
            labels.update({"seglab.member": str(index), "seglab.nodes": str(rendezvous.nodes)})
            name = multinode.member_name(record.run_id, index)
        network = recipe.resources.network
        common: dict[str, Any] = {
            "name": name,
            "image": recipe.image,
            "gpus": record.gpus,
            "user": self._run_user(host),
            "shm_size": recipe.resources.shm_size,
            "labels": labels,
            "memory": recipe.resources.memory,
            "cpus": recipe.resources.cpus,
            "network": network is True,
            "network_mode": "host" if network == "host" else None,
        }
        nproc = len(record.gpus) or recipe.resources.gpus

        def command(python: str, folder: str) -> tuple[str, ...]:
            if member is None:
                return trainer_command(python, folder, nproc)
            return member[0].command(python, folder, nproc, member[1])

        if kind == "docker":
            mounts = [Mount(run_dir, RUN_MOUNT, read_only=False)]
            if dataset is not None:
                mounts.append(Mount(Path(dataset), DATA_MOUNT, read_only=True))
                env["SEGLAB_DATA_ROOT"] = DATA_MOUNT
            spec = LaunchSpec(
                command=command("python3", RUN_MOUNT),
                env=env,
                mounts=tuple(mounts),
                workdir=RUN_MOUNT,
                **common,
            )
        elif kind == "slurm":
            if dataset is not None:
                env["SEGLAB_DATA_ROOT"] = dataset
            python = host.slurm.python if host.slurm is not None else "python3"
            mounts = [Mount(run_dir, str(run_dir), read_only=False)]
            if dataset is not None:
                mounts.append(Mount(Path(dataset), dataset, read_only=True))
            spec = LaunchSpec(
                command=command(python, str(run_dir)),
                env=env,
                mounts=tuple(mounts),
                log_path=run_dir / "train.log",
                workdir=str(run_dir),
                **common,
            )
        else:
            if dataset is not None:
                env["SEGLAB_DATA_ROOT"] = dataset
            spec = LaunchSpec(
                command=command(sys.executable, str(run_dir)),
                env=env,
                log_path=run_dir / "train.log",
                workdir=str(run_dir),
                **common,
            )
        if not host.is_local:
            self._guard_remote(
                lambda: self._remote_run_dir(host, run_dir, spec.user, record.resolved_recipe)
            )
            return spec
        own_run_dir(run_dir, spec.user)
        recipe_path = run_dir / "recipe.yaml"
        if not recipe_path.exists():
            recipe_path.write_text(record.resolved_recipe)
        return spec

    def _run_user(self, host: Host) -> str:
        """``uid:gid`` runs use on ``host``: the login user's there, never root."""
        if host.is_local:
            return default_user()
        out = self._guard_remote(lambda: self.remote().run(host.name, ["sh", "-c", "id -u; id -g"]))
        uid, gid = out.stdout.split()
        return default_user() if uid == "0" else f"{uid}:{gid}"

    def _remote_run_dir(self, host: Host, run_dir: Path, user: str, recipe_yaml: str) -> None:
        bridge = self.remote()
        recipe = str(run_dir / "recipe.yaml")
        if not bridge.succeeds(host.name, ["test", "-e", recipe]):
            bridge.write_file(host.name, recipe, recipe_yaml)
        # A root login hands the folder to the run's user (runs never run as root).
        bridge.run(
            host.name,
            ["sh", "-c", f'[ "$(id -u)" != 0 ] || chown -R {user} {shlex.quote(str(run_dir))}'],
        )

    # -- the queue -------------------------------------------------------------------

    def pump_queue(self, scheduler: Scheduler) -> list[RunRecord]:
        """Start queued runs whose GPUs are free now, oldest first."""
        started = []
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
                started.append(self.launch(record, placement, known=True))
            except (RuntimeFailure, RunError) as exc:
                self.registry.update_run(
                    record.run_id,
                    status=RunStatus.FAILED,
                    message=str(exc),
                    finished_at=time.time(),
                )
        return started

    # -- truth from the runtimes -----------------------------------------------------

    def ingest(self, record: RunRecord) -> int:
        """Copy new events from the run dir's events.jsonl into the registry (idempotent).

        A remote run dir is read over SFTP from the offset already ingested.
        """
        if not record.run_dir:
            return 0
        if not self.inventory.get(record.host).is_local:
            from seglab.remote.files import RemoteFileError

            offset = self._offsets.get(record.run_id, 0)
            try:
                chunk = self._guard_remote(
                    lambda: self.remote().read_events(record.host, record.run_dir, offset)
                )
            except RemoteFileError:
                return 0  # no events.jsonl yet
            self._offsets[record.run_id] = chunk.offset
            return self.registry.add_events(record.run_id, chunk.events)
        path = Path(record.run_dir) / "events.jsonl"
        try:
            with open(path, encoding="utf-8") as handle:
                return self.registry.add_events(record.run_id, events.read_jsonl(handle))
        except FileNotFoundError:
            return 0

    def refresh(self, record: RunRecord) -> RunRecord:
        """Ask the runtime how the run is, ingest its events, and store the result."""
        if record.status == RunStatus.QUEUED or not record.handle:
            return record
        try:
            self.ingest(record)
            if record.is_final or record.status == RunStatus.LOST:
                return self.registry.get_run(record.run_id)
            verdict: multinode.Verdict | None = None
            if record.members:
                verdict = self._members_verdict(record)
                state = verdict.state
            else:
                state = self.runtime(record.host, record.runtime).inspect(record.handle)
        except RunNotFound:
            state = RuntimeState("dead", error="the run was removed outside seglab")
        except (EngineUnavailable, HostUnreachable, RunError) as exc:
            # The host cannot be reached now (engine down, SSH link lost): the run is not
            # lost, its status is simply not known; say why and keep the last one.
            return self.registry.update_run(record.run_id, message=f"unreachable: {exc}")
        ended_as = self._ended_as(record.run_id)
        status = status_from(state, ended_as)
        fields: dict[str, Any] = {"status": status}
        if record.message and record.message.startswith("unreachable: "):
            fields["message"] = None  # reachable again
        if record.runtime == "slurm" and state.active:
            fields["message"] = state.detail  # pending reason, restarts
        if verdict is not None and state.active:
            fields["message"] = verdict.message  # a member failed: the others are ending
        if status in FINAL_STATUSES or status == RunStatus.LOST:
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
                fields["message"] = state.error or self._tail(record)
            self.registry.release(record.run_id)
        return self.registry.update_run(record.run_id, **fields)

    def _ended_as(self, run_id: str) -> str | None:
        """The status the trainer's last attempt ended with (None: it has not said)."""
        starts = self.registry.events(run_id, kind="start")
        ends = self.registry.events(run_id, kind="end")
        if not ends or (starts and ends[-1].seq < starts[-1].seq):
            return None  # the latest attempt (after a resume) has not ended yet
        status = ends[-1].data.get("status")
        return str(status) if status is not None else None

    def _tail(self, record: RunRecord, member: int = 0) -> str | None:
        host, handle = self._member_ref(record, member)
        try:
            lines = [
                line.text
                for line in self.runtime(host, record.runtime).logs(handle, tail=FAILED_TAIL)
            ]
        except RuntimeFailure as exc:
            return f"(log unavailable: {exc})"
        return "\n".join(lines) or None

    @staticmethod
    def _parts(record: RunRecord) -> tuple[Member, ...]:
        """A multi-node run's members; a run on one host is its own single member."""
        return record.members or (Member(record.host, record.gpus, record.handle, record.run_dir),)

    def _member_ref(self, record: RunRecord, member: int) -> tuple[str, str]:
        """(host, runtime handle) of member ``member`` (0: the run itself)."""
        parts = self._parts(record)
        if not 0 <= member < len(parts):
            if not record.members:
                raise RunError(
                    f"run {record.run_id} is not a multi-node run; it has no member {member}"
                )
            raise RunError(f"run {record.run_id} has members 0-{len(parts) - 1}, not {member}")
        return parts[member].host, parts[member].handle or ""

    def _members_verdict(self, record: RunRecord) -> multinode.Verdict:
        """The members' states combined; members still running ``node_timeout_s`` after
        another failed are killed here (the trainer's own timeouts end them sooner)."""
        timeout = resolved_recipe(record).resources.node_timeout_s
        hosts = [m.host for m in record.members]

        def states() -> list[RuntimeState]:
            out = []
            for member in record.members:
                try:
                    out.append(
                        self.runtime(member.host, record.runtime).inspect(member.handle or "")
                    )
                except RunNotFound:
                    out.append(RuntimeState("dead", error="removed outside seglab"))
            return out

        verdict = multinode.combine(states(), hosts, timeout)
        if not verdict.kill:
            return verdict
        self._each_member(record, lambda runtime, handle: runtime.kill(handle), only=verdict.kill)
        after = multinode.combine(states(), hosts, timeout)
        message = (
            f"{after.message}; the other members still ran {timeout:.0f} s later "
            "(resources.node_timeout_s) and were killed"
        )
        return replace(after, message=message)

    def _each_member(
        self,
        record: RunRecord,
        action: Callable[[Runtime, str], None],
        only: Sequence[int] | None = None,
    ) -> None:
        """Do ``action`` to the members' handles at once (all get a signal together); the
        first error is raised once every member has been dealt with."""
        chosen = [m for i, m in enumerate(self._parts(record)) if only is None or i in only]
        with ThreadPoolExecutor(max_workers=max(1, len(chosen))) as pool:
            futures = [
                pool.submit(action, self.runtime(m.host, record.runtime), m.handle or "")
                for m in chosen
            ]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]  # type: ignore[misc]

    def refresh_all(self, include_final: bool = False) -> list[RunRecord]:
        """Refresh every run that can still change (and list them all if asked)."""
        out = []
        for stored in self.registry.list_runs():
            record = stored if stored.is_final else self.refresh(stored)
            if include_final or not record.is_final:
                out.append(record)
        return out

    def reconcile(self) -> list[str]:
        """Find runs on the local runtimes that the registry lacks; returns their ids.

        Runs are this workstation's when their run dir lies under the host's runs root, so
        several users (or test sessions) sharing one engine never adopt each other's runs.
        """
        found = []
        members: dict[str, dict[int, tuple[str, str, RunInfo]]] = {}
        for host in self.inventory.hosts.values():
            if not host.is_local and self._remote is None:
                continue
            if host.kind == "slurm":
                kinds: tuple[str, ...] = ("slurm",)
            else:
                kinds = ("docker", "process") if host.is_local else ("docker",)
            for kind in kinds:
                try:
                    infos = self.runtime(host.name, kind).list({"seglab.run_id": None})
                    root = self.runs_root(host)
                except EngineUnavailable:
                    continue  # no engine here: nothing of ours can be on it
                except HostUnreachable as exc:
                    log.warning("cannot reach %s to find its runs: %s", host.name, exc)
                    continue
                except (RuntimeFailure, RunError) as exc:
                    log.warning("cannot list the runs of %s (%s): %s", host.name, kind, exc)
                    continue
                for info in infos:
                    run_id = info.labels["seglab.run_id"]
                    if not Path(info.labels.get("seglab.run_dir", "/")).is_relative_to(root):
                        continue  # another seglab's run (its own runs root) on this engine
                    if "seglab.member" in info.labels:  # put together below
                        index = int(info.labels["seglab.member"])
                        members.setdefault(run_id, {})[index] = (host.name, kind, info)
                        continue
                    if self.registry.has_run(run_id):
                        continue
                    self.registry.upsert_run(self._record_from_labels(info.labels, info.ref, kind))
                    if info.state.active:
                        gpus = [g for g in info.labels.get("seglab.gpus", "").split(",") if g]
                        self.registry.reserve(host.name, gpus, run_id)
                    found.append(run_id)
        found.extend(self._adopt_members(members))
        for record in self.registry.list_runs():
            if not record.is_final:
                self.refresh(record)
        return found

    def _adopt_members(
        self, found: Mapping[str, Mapping[int, tuple[str, str, RunInfo]]]
    ) -> list[str]:
        """Multi-node runs the registry lacks, put together from their members' labels."""
        adopted = []
        for run_id, parts in found.items():
            if self.registry.has_run(run_id):
                continue
            nodes = int(parts[min(parts)][2].labels.get("seglab.nodes", "0"))
            if sorted(parts) != list(range(nodes)):
                log.warning(
                    "multi-node run %s: found members %s of %d (a host is "
                    "unreachable?); not adopted yet",
                    run_id,
                    sorted(parts),
                    nodes,
                )
                continue
            ordered = [parts[i] for i in range(nodes)]
            _, kind, first = ordered[0]
            members = tuple(
                Member(
                    h,
                    tuple(g for g in info.labels.get("seglab.gpus", "").split(",") if g),
                    info.ref,
                    info.labels.get("seglab.run_dir", ""),
                )
                for h, _, info in ordered
            )
            record = replace(
                self._record_from_labels(first.labels, first.ref, kind), members=members
            )
            self.registry.upsert_run(record)
            for member, (_, _, info) in zip(members, ordered, strict=True):
                if info.state.active:
                    self.registry.reserve(member.host, member.gpus, run_id)
            adopted.append(run_id)
        return adopted

    def _record_from_labels(self, labels: Mapping[str, str], ref: str, kind: str) -> RunRecord:
        run_dir = labels.get("seglab.run_dir", "")
        host = labels.get("seglab.host", "local")
        resolved = ""
        if run_dir and self.inventory.get(host).is_local:
            recipe_path = Path(run_dir) / "recipe.yaml"
            resolved = recipe_path.read_text() if recipe_path.is_file() else ""
        elif run_dir:
            resolved = self._guard_remote(
                lambda: self.remote().run(host, ["cat", f"{run_dir}/recipe.yaml"])
            ).stdout
        return RunRecord(
            run_id=labels["seglab.run_id"],
            recipe=labels.get("seglab.recipe", ""),
            variant=labels.get("seglab.variant", ""),
            recipe_sha=labels.get("seglab.recipe_sha", ""),
            resolved_recipe=resolved,
            host=host,
            gpus=tuple(g for g in labels.get("seglab.gpus", "").split(",") if g),
            runtime=kind,
            handle=ref,
            run_dir=run_dir,
            status=RunStatus.STARTING,
            message="found again on the runtime",
        )

    # -- ending and resuming ---------------------------------------------------------

    def _active(self, run_id: str) -> RunRecord:
        record = self.refresh(self.registry.get_run(run_id))
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
        self._each_member(record, lambda runtime, handle: runtime.stop(handle, timeout=timeout))
        ended = self.refresh(record)
        if (
            record.runtime == "slurm"
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
        self._each_member(record, lambda runtime, handle: runtime.kill(handle))
        return self.refresh(record)

    def resume(self, run_id: str, scheduler: Scheduler) -> RunRecord:
        """Start an ended run again in its run dir on its GPUs (the trainer resumes)."""
        record = self.refresh(self.registry.get_run(run_id))
        if not (record.is_final or record.status == RunStatus.LOST):
            raise RunError(f"run {run_id} is {record.status}; only ended runs resume")
        if record.status == RunStatus.FINISHED:
            raise RunError(f"run {run_id} already finished; start a new run instead")
        if not record.run_dir or not record.handle:
            raise RunError(f"run {run_id} never started; nothing to resume")
        if record.runtime == "slurm":
            from seglab.runtime.slurm import SlurmRuntime

            slurm = self.runtime(record.host, "slurm")
            assert isinstance(slurm, SlurmRuntime)
            gpus = slurm.requested_gpus(record.handle)
            slurm.remove(record.handle)
            return self.submit_slurm([record], gpus)[0]
        parts = self._parts(record)
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
        for part in parts:
            with contextlib.suppress(RunNotFound):  # the container or record is already gone
                self.runtime(part.host, record.runtime).remove(part.handle or "", force=False)
        return self.launch(
            record,
            [Placement(p.host, p.gpus, tuple(range(len(p.gpus)))) for p in parts],
            known=True,
        )

    def remove(self, run_id: str, purge: bool = False, force: bool = False) -> None:
        """Forget a run: its container/process record goes; the run dir stays unless purged."""
        record = self.refresh(self.registry.get_run(run_id))
        self._dequeue(run_id)
        parts = self._parts(record)
        if record.handle:
            if not (record.is_final or record.status == RunStatus.LOST) and not force:
                raise RunError(f"run {run_id} is {record.status}; stop it first or use --force")
            for part in parts:
                with contextlib.suppress(RunNotFound):  # already gone on the runtime
                    self.runtime(part.host, record.runtime).remove(part.handle or "", force=force)
        self.registry.release(run_id)
        self.registry.delete_run(run_id)
        if purge:
            for part in parts:
                if part.run_dir:
                    self._purge(self.inventory.get(part.host), part.run_dir)

    def _purge(self, host: Host, run_dir: str) -> None:
        """Delete a run dir on its host (only ever one inside the host's runs root)."""
        root = self.runs_root(host)
        if not Path(run_dir).is_relative_to(root) or Path(run_dir) == root:
            raise RunError(
                f"{run_dir} is not inside the runs root {root} of {host.name}; not deleting it"
            )
        if host.is_local:
            shutil.rmtree(run_dir)
        else:
            self._guard_remote(lambda: self.remote().run(host.name, ["rm", "-rf", "--", run_dir]))

    # -- logs ------------------------------------------------------------------------

    def logs(
        self, run_id: str, follow: bool = False, tail: int | None = None, member: int = 0
    ) -> Iterator[LogLine]:
        """The run's log (of member ``member`` of a multi-node run) as whole lines,
        following until it ends if asked."""
        record = self.registry.get_run(run_id)
        if not record.handle:
            raise RunError(f"run {run_id} has not started yet (status {record.status})")
        host, handle = self._member_ref(record, member)
        runtime = self.runtime(host, record.runtime)
        cursor: LogCursor | None = None
        offline_since: float | None = None
        try:
            while True:
                try:
                    for line in runtime.logs(
                        handle, follow=follow, since=cursor, tail=None if cursor else tail
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
