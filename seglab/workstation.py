"""The workstation façade: the one object the CLI and the TUI drive.

It owns the host inventory, the registry, telemetry, the scheduler and the runtimes, so
every behaviour the dashboard shows is reachable, and testable, headless.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from seglab import paths, recipes
from seglab.errors import RunError, did_you_mean
from seglab.hosts import Inventory, load_inventory
from seglab.registry import Registry, RunRecord
from seglab.runs import RunManager, Submitted
from seglab.scheduler import Pool, Scheduler, parse_on
from seglab.telemetry.sample import HostStatus
from seglab.yamlpos import ConfigError, Problem

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from seglab.forwards import OpenForward
    from seglab.remote.bridge import RemoteBridge
    from seglab.telemetry.sample import HostState


@dataclass(frozen=True)
class Curves:
    """A run's training loss and evaluation mIoU, as (iteration, value) points."""

    run_id: str
    variant: str
    loss: list[tuple[int, float]]
    miou: list[tuple[int, float]]


@dataclass(frozen=True)
class Comparison:
    """One run of an ablation with the numbers the comparison table shows (None: unknown)."""

    run_id: str
    variant: str
    status: str
    best_miou: float | None
    pixel_acc: float | None
    per_class_iou: tuple[float | None, ...]
    img_per_s: float | None
    time_s: float | None


class Workstation:
    """Entry point to everything seglab manages from this machine."""

    def __init__(self, config_dir: Path | None = None, state_dir: Path | None = None) -> None:
        self.config_dir = config_dir or paths.config_dir()
        self.state_dir = state_dir or paths.state_dir()

    # -- recipes ---------------------------------------------------------------------

    def load_recipe(self, path: str | Path) -> recipes.RecipeFile:
        """Load and expand one recipe (raises ConfigError with every problem).

        `path` is a file, or the name of a shipped recipe (`synthetic-smoke`).
        """
        return recipes.load(self.find_recipe(path))

    def find_recipe(self, path: str | Path) -> Path:
        """A recipe file path: `path` itself if it exists, else a shipped recipe so named."""
        candidate = Path(path)
        if candidate.exists():
            return candidate
        if len(candidate.parts) == 1:
            shipped = paths.shipped("recipes") / f"{candidate.name.removesuffix('.yaml')}.yaml"
            if shipped.is_file():
                return shipped
        names = [p.stem for p in self.shipped_recipes()]
        raise ConfigError(
            [
                Problem(
                    str(path),
                    1,
                    "(file)",
                    "no such recipe file, nor a shipped recipe of that name"
                    f"{did_you_mean(candidate.stem, names)}; "
                    "`seglab recipe list` shows the shipped ones",
                )
            ]
        )

    def shipped_recipes(self) -> list[Path]:
        """The example recipes that come with seglab."""
        return sorted(paths.shipped("recipes").glob("*.yaml"))

    def check_recipes(self, files: Iterable[str | Path]) -> Iterator[tuple[str, list[Problem]]]:
        """Each file with its problems (an empty list when it is valid)."""
        for file in files:
            try:
                self.load_recipe(file)
            except ConfigError as exc:
                yield str(file), list(exc.problems)
            else:
                yield str(file), []

    # -- hosts and registry ----------------------------------------------------------

    def hosts(self) -> Inventory:
        """The host inventory from `hosts.yaml` in the config dir (ConfigError if invalid)."""
        return load_inventory(self.config_dir / paths.hosts_file().name)

    _registry: Registry | None = None

    def registry(self) -> Registry:
        """The run registry in the state dir (opened once, shared by this workstation)."""
        if self._registry is None:
            self._registry = Registry(self.state_dir / paths.registry_file().name)
        return self._registry

    # -- runs ------------------------------------------------------------------------

    _inventory: Inventory | None = None
    _manager: RunManager | None = None

    def inventory(self) -> Inventory:
        """The host inventory, loaded once per workstation."""
        if self._inventory is None:
            self._inventory = self.hosts()
        return self._inventory

    _bridge: RemoteBridge | None = None

    def runs(self) -> RunManager:
        """The run manager (runtimes per host, backed by the registry)."""
        if self._manager is None:
            self._manager = RunManager(self.inventory(), self.registry(), self.remote)
        return self._manager

    def remote(self) -> RemoteBridge:
        """The SSH connections to remote hosts (opened on first use, closed at exit)."""
        if self._bridge is None:
            from seglab.remote.bridge import RemoteBridge

            self._bridge = RemoteBridge(self.inventory())
        return self._bridge

    def close(self) -> None:
        """Close SSH connections and forwards (runs keep going)."""
        if self._bridge is not None:
            self._bridge.close()
            self._bridge = None

    async def gpu_states(self, hosts: Sequence[str], timeout: float = 15.0) -> dict[str, HostState]:
        """One telemetry reading of each named host (what placement decides on)."""
        from seglab.telemetry.source import Telemetry

        telemetry = Telemetry()
        try:
            for name in hosts:
                host = self.inventory().get(name)
                if host.is_local:
                    await telemetry.add_host(host)
                else:  # runs on the bridge's loop, where the SSH connection lives
                    remotes = self.remote().remotes
                    await telemetry.add_host(
                        host,
                        executor=remotes.executor(name),
                        docker_url=f"unix://{remotes.docker_socket(name)}",
                    )
            states = await telemetry.wait_ready(timeout)
        finally:
            await telemetry.close()
        return {state.host: state for state in states}

    def scheduler(self, pools: Sequence[Pool], timeout: float = 15.0) -> Scheduler:
        """A scheduler over fresh telemetry of the hosts the pools name (none for CPU)."""
        names: list[str] = []
        for pool in pools:
            if pool.cpu or (pool.host and self.inventory().get(pool.host).kind == "slurm"):
                continue  # no GPUs to read: the CPU, or a cluster where Slurm places runs
            for name in [pool.host] if pool.host is not None else list(self.inventory().hosts):
                if name not in names:
                    names.append(name)
        named = {pool.host for pool in pools if pool.host is not None}
        remote = [n for n in names if not self.inventory().get(n).is_local]
        if remote:
            from seglab.remote.bridge import RemoteUnavailable
        for name in list(remote):
            try:
                self.remote().ensure(name)
            except RemoteUnavailable:
                if name in named:
                    raise
                log.warning("%s is unreachable; placing on the other hosts", name)
                remote.remove(name)
                names.remove(name)
        if not names:
            states: dict[str, HostState] = {}
        elif remote:
            states = self.remote().call(self.gpu_states(names, timeout), timeout + 30)
        else:
            states = asyncio.run(self.gpu_states(names, timeout))
        return Scheduler(self.inventory(), self.registry(), states)

    def launch(
        self,
        recipe: str | Path,
        variants: Sequence[str] = (),
        *,
        on: str = "auto",
        runtime: str = "auto",
        image: str | None = None,
        queue: bool = True,
    ) -> list[Submitted]:
        """Place and start the chosen variants of a recipe (all of them by default)."""
        loaded = self.load_recipe(recipe)
        chosen = [loaded.variant(name) for name in variants] if variants else loaded.variants
        pools = parse_on(on)
        manager = self.runs()
        manager.reconcile()
        return manager.submit(
            loaded, chosen, pools, self.scheduler(pools), runtime=runtime, image=image, queue=queue
        )

    def pump_queue(self) -> list[RunRecord]:
        """Start queued runs whose GPUs have become free."""
        pending = self.registry().pending()
        if not pending:
            return []
        pools = [Pool.from_dict(p) for item in pending for p in item.request["pools"]]
        return self.runs().pump_queue(self.scheduler(pools))

    def resume(self, run_id: str) -> RunRecord:
        """Start a stopped or failed run again from its last checkpoint."""
        manager = self.runs()
        return manager.resume(run_id, Scheduler(self.inventory(), self.registry()))

    # -- views for the dashboard -----------------------------------------------------

    def placement_choices(self, states: Iterable[HostState]) -> list[tuple[str, str]]:
        """``(--on value, label)`` pairs: auto, each free GPU, and each host's CPU
        (hosts of the inventory only)."""
        scheduler = Scheduler(self.inventory(), self.registry())
        choices = [("auto", "auto: free GPUs on any host")]
        for state in states:
            if state.host not in self.inventory().hosts:
                continue
            if state.status not in (HostStatus.NO_GPU, HostStatus.ERROR):
                for gpu in sorted(state.gpus, key=lambda g: g.index):
                    if scheduler.busy_reason(state.host, gpu) is None:
                        choices.append(
                            (
                                f"{state.host}:{gpu.index}",
                                f"{state.host}:{gpu.index} {gpu.name or gpu.uuid}",
                            )
                        )
            choices.append((f"{state.host}:cpu", f"{state.host}:cpu (no GPU)"))
        return choices

    def curves(self, run_id: str) -> Curves:
        """The loss and mIoU curves of a run, from its ingested events."""
        registry = self.registry()
        record = registry.get_run(run_id)
        loss = [
            (int(e.data["iter"]), float(e.data["loss"]))
            for e in registry.events(run_id, kind="train")
            if e.data.get("loss") is not None
        ]
        miou = [
            (int(e.data["iter"]), float(e.data["miou"]))
            for e in registry.events(run_id, kind="eval")
            if e.data.get("miou") is not None
        ]
        return Curves(run_id, record.variant, loss, miou)

    def comparison(self, run_ids: Iterable[str], now: float | None = None) -> list[Comparison]:
        """Per run: best mIoU with the pixel accuracy and per-class IoU of that evaluation,
        img/s and wall time (``now`` ends the time of runs still going)."""
        registry = self.registry()
        rows = []
        for run_id in run_ids:
            record = registry.get_run(run_id)
            evals = [
                e.data
                for e in registry.events(run_id, kind="eval")
                if e.data.get("miou") is not None
            ]
            best = max(evals, key=lambda d: float(d["miou"])) if evals else None
            end = record.finished_at or (now if now is not None else time.time())
            rows.append(
                Comparison(
                    run_id=run_id,
                    variant=record.variant,
                    status=str(record.status),
                    best_miou=record.best_miou if best is None else float(best["miou"]),
                    pixel_acc=None if best is None else best.get("pixel_acc"),
                    per_class_iou=tuple(best.get("per_class_iou") or ()) if best else (),
                    img_per_s=record.img_per_s,
                    time_s=None if record.started_at is None else end - record.started_at,
                )
            )
        return rows

    def class_names(self, run_id: str) -> list[str] | None:
        """The class names a run's trainer announced in its start event."""
        start = self.registry().events(run_id, kind="start")
        names = start[-1].data.get("class_names") if start else None
        return [str(n) for n in names] if names else None

    # -- run files and shells --------------------------------------------------------

    def pull(self, run_id: str, what: Literal["export", "best", "all"], dest: Path) -> list[Path]:
        """Copy a run's export folder, best checkpoint or whole run dir into ``dest``."""
        record = self.registry().get_run(run_id)
        if not record.run_dir:
            raise RunError(f"run {run_id} has no run directory yet (status {record.status})")
        host = self.inventory().get(record.host)
        if not host.is_local:
            from seglab.remote.bridge import RemoteUnavailable

            bridge = self.remote()
            try:
                bridge.ensure(host.name)
            except RemoteUnavailable as exc:
                raise RunError(str(exc)) from exc
            return bridge.call(bridge.remotes.files(host.name).fetch(record.run_dir, what, dest))
        source = Path(record.run_dir)
        part = {
            "export": source / "export",
            "best": source / "checkpoints" / "best.pt",
            "all": source,
        }[what]
        if not part.exists():
            raise RunError(f"{part} does not exist (the run has not written it yet)")
        target = dest if what == "all" else dest / part.name
        dest.mkdir(parents=True, exist_ok=True)
        if part.is_dir():
            shutil.copytree(part, target, dirs_exist_ok=True)
            return sorted(p for p in target.rglob("*") if p.is_file())
        shutil.copy2(part, target)
        return [target]

    def shell_command(self, run_id: str) -> tuple[list[str], dict[str, str]]:
        """The `docker exec -it` command (and environment) for a shell in a run's container."""
        record = self.registry().get_run(run_id)
        if record.runtime != "docker":
            where = record.run_dir or "its run dir"
            raise RunError(
                f"run {run_id} runs as a {record.runtime} job, not in a container; "
                f"its files are in {where}"
            )
        docker = shutil.which("docker")
        if docker is None:
            raise RunError(
                "the docker command-line client is not installed on this "
                "machine; install it (Debian: docker.io or docker-ce-cli)"
            )
        host = self.inventory().get(record.host)
        if host.is_local:
            url = self.runs().docker_url(host)
        else:
            from seglab.remote.bridge import RemoteUnavailable

            try:
                url = self.remote().docker_url(host.name)
            except RemoteUnavailable as exc:
                raise RunError(str(exc)) from exc
        env = {**os.environ, "DOCKER_HOST": url}
        return [docker, "exec", "-it", f"seglab-{run_id}", "/bin/sh"], env

    def tensorboard(self, target: str, port: int | None = None) -> OpenForward:
        """TensorBoard over a run's dir (or a recipe's runs on one host), on 127.0.0.1 here;
        :meth:`OpenForward.close` removes it."""
        from seglab.forwards import open_tensorboard

        return open_tensorboard(self, target, port)

    def notebook(
        self, where: str, image: str | None = None, port: int | None = None
    ) -> OpenForward:
        """JupyterLab on ``HOST[:cpu|:<GPU UUID>]``, on 127.0.0.1 here (URL with its token)."""
        from seglab.forwards import DEFAULT_NOTEBOOK_IMAGE, open_notebook

        return open_notebook(self, where, image or DEFAULT_NOTEBOOK_IMAGE, port)

    def engine(self, host: str) -> str | None:
        """``docker <version>`` of a local host's engine, or ``no docker engine`` (blocking;
        None for a remote host: its engine is reached through its SSH link)."""
        from seglab.runtime import EngineUnavailable
        from seglab.runtime.docker import DockerRuntime

        if not self.inventory().get(host).is_local:
            return None
        runtime = self.runs().runtime(host, "docker")
        if not isinstance(runtime, DockerRuntime):
            return runtime.__class__.__name__
        try:
            version = runtime.client.version().get("Version")
        except EngineUnavailable:
            return "no docker engine"
        return f"docker {version}" if version else "docker"
