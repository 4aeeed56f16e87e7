"""The workstation façade: the one object the CLI and the TUI drive.

It owns the host inventory, the registry, telemetry, the scheduler and the runtimes, so
every behaviour the dashboard shows is reachable, and testable, headless.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from seglab import paths
from seglab.errors import RunError, did_you_mean
from seglab.hosts import Inventory, load_inventory
from seglab.kinds import RuntimeKind
from seglab.registry import Registry, RunRecord
from seglab.telemetry.sample import HostStatus
from seglab.yamlpos import ConfigError, Problem

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from seglab import recipes
    from seglab.data.checks import HostRows
    from seglab.desk import RunDesk
    from seglab.forwards import OpenForward
    from seglab.machines import LoopThread, Machine, MachineSync
    from seglab.polling import Poller
    from seglab.remote.bridge import RemoteBridge
    from seglab.report.gather import RunSummary, SampleImage
    from seglab.report.select import Selection
    from seglab.runs import RunManager, Submitted
    from seglab.runs.hostqueues import QueuedRun
    from seglab.runtime import LogLine
    from seglab.scheduler import Pool, Scheduler
    from seglab.telemetry.live import LiveTelemetry
    from seglab.telemetry.sample import HostState
    from seglab.views import Comparison, Curves, RunMetrics, RunRow, Snapshot


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
        from seglab import recipes  # pydantic models: only for commands that read recipes

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

    def _run_registry(self) -> Registry:
        """The run registry in the state dir (opened once). The façade's own helpers use
        it; the CLI and the dashboard go through the run methods below."""
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

    def _run_manager(self) -> RunManager:
        """The run manager (runtimes per host, backed by the registry); for the façade's
        own helpers, like :meth:`_run_registry`."""
        if self._manager is None:
            from seglab.runs import RunManager  # run machinery: not for `seglab data`

            self._manager = RunManager(self.inventory(), self._run_registry(), self.machine)
            host_queues = self._manager.submitter.host_queues
            host_queues.hook = self.config_dir / "hooks" / "run-end"
            host_queues.seen = self.state_dir / "notified"
        return self._manager

    def _remote(self) -> RemoteBridge:
        """The SSH connections to remote hosts (opened on first use, closed by
        :meth:`close`): the one SSH stack of this workstation, on :meth:`loop`."""
        with self._stack_lock:
            if self._bridge is None:
                from seglab.remote.bridge import RemoteBridge

                self._bridge = RemoteBridge(self.inventory(), self.loop())
            return self._bridge

    _stack_lock = threading.RLock()
    _loop: LoopThread | None = None
    _live: LiveTelemetry | None = None

    def loop(self) -> LoopThread:
        """The one event loop (a daemon thread) that SSH, telemetry and machines run on."""
        with self._stack_lock:
            if self._loop is None:
                from seglab.machines import LoopThread

                self._loop = LoopThread()
                atexit.register(self.close)
            return self._loop

    def machine(self, name: str) -> MachineSync:
        """Host ``name`` as a machine for synchronous code (remote ones over SSH)."""
        from seglab.machines import MachineSync

        return MachineSync(self._machine(name), self.loop())

    def _machine(self, name: str) -> Machine:
        host = self.inventory().get(name)
        if host.is_local:
            from seglab.machines import LocalMachine

            return LocalMachine(name, host.docker_socket)
        return self._remote().remotes.machine(name)

    def telemetry(self, names: Sequence[str] | None = None) -> LiveTelemetry:
        """Live telemetry of every host: one per workstation, shared (the dashboard's feed,
        and what placement reuses); with ``names``, a new one of those hosts only. Await
        its ``start()``; ``close()`` stops it (the connections stay)."""
        from seglab.telemetry.live import LiveTelemetry

        inventory = self.inventory()
        if names is not None:
            hosts = [inventory.get(name) for name in names]
            return LiveTelemetry(self.loop(), hosts, self._machine)
        with self._stack_lock:
            if self._live is None:
                self._live = LiveTelemetry(
                    self.loop(), list(inventory), self._machine, self._forget_live
                )
            return self._live

    def _forget_live(self, live: LiveTelemetry) -> None:
        with self._stack_lock:
            if self._live is live:
                self._live = None

    def current_states(self, names: Sequence[str]) -> dict[str, HostState] | None:
        """The named hosts' states from the live telemetry when it has a reading of each
        (placement and queue pumping reuse them), else None."""
        live = self._live
        return live.readings(names) if live is not None else None

    def host_links(self) -> dict[str, tuple[str, str | None]]:
        """Link state and message of each remote host connected so far."""
        return self._bridge.remotes.links() if self._bridge is not None else {}

    def close(self) -> None:
        """Stop telemetry, close SSH connections and forwards (runs keep going)."""
        loop, live, bridge = self._loop, self._live, self._bridge
        if loop is None:
            return
        atexit.unregister(self.close)
        if live is not None:
            loop.call(live.close(), 30)
        if bridge is not None:
            bridge.close()
        loop.close()
        self._loop = self._bridge = self._live = None

    async def gpu_states(self, hosts: Sequence[str], timeout: float = 15.0) -> dict[str, HostState]:
        """One telemetry reading of each named host (what placement decides on)."""
        telemetry = self.telemetry(hosts)
        try:
            await telemetry.start()
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
                self._remote().ensure(name)
            except RemoteUnavailable:
                if name in named:
                    raise
                log.warning("%s is unreachable; placing on the other hosts", name)
                remote.remove(name)
                names.remove(name)
        live = self.current_states(names)
        if not names:
            states: dict[str, HostState] = {}
        elif live is not None:
            states = live
        else:
            states = self.loop().call(self.gpu_states(names, timeout), timeout + 30)
        from seglab.scheduler import Scheduler

        return Scheduler(self.inventory(), self._run_registry(), states)

    def launch(
        self,
        recipe: str | Path,
        variants: Sequence[str] = (),
        *,
        on: str = "auto",
        runtime: str = RuntimeKind.AUTO,
        image: str | None = None,
        queue: bool = True,
    ) -> list[Submitted]:
        """Place and start the chosen variants of a recipe (all of them by default)."""
        loaded = self.load_recipe(recipe)
        chosen = [loaded.variant(name) for name in variants] if variants else loaded.variants
        from seglab.scheduler import parse_on

        pools = parse_on(on)
        manager = self._run_manager()
        manager.reconcile()
        return manager.submit(
            loaded, chosen, pools, self.scheduler(pools), runtime=runtime, image=image, queue=queue
        )

    def pump_queue(self) -> list[RunRecord]:
        """Start queued runs whose GPUs have become free (and learn what the hosts'
        queue runners started)."""
        pending = self._run_registry().pending()
        if not pending:
            self._run_manager().submitter.sync_host_queues(throttle=True)
            return []
        from seglab.scheduler import Pool

        pools = [Pool.from_dict(p) for item in pending for p in item.request["pools"]]
        return self._run_manager().pump_queue(self.scheduler(pools))

    # -- runs: what the CLI and the dashboard do with them ------------------------------

    _desk: RunDesk | None = None

    def _runs_desk(self) -> RunDesk:
        if self._desk is None:
            from seglab.desk import RunDesk

            self._desk = RunDesk(
                self._run_manager, self._run_registry, self.pump_queue, self._queue_positions
            )
        return self._desk

    def _queue_positions(self) -> dict[str, int]:
        """Each queued run's place: in this workstation's queue, or in its host's queue
        as last read."""
        places = {item.run_id: n for n, item in enumerate(self._run_registry().pending(), 1)}
        places.update(self._run_manager().submitter.host_queues.positions())
        return places

    def run_row(self, record: RunRecord) -> RunRow:
        """The row of one run record (as :meth:`launch` returns them)."""
        return self._runs_desk().row(record)

    def find_runs(self) -> list[str]:
        """Adopt runs the registry lacks (left by a seglab that was killed); their ids."""
        return self._runs_desk().find()

    def runs_now(self, include_final: bool = False) -> list[RunRow]:
        """Every run that can still change, refreshed (and the ended ones if asked)."""
        return self._runs_desk().rows(include_final)

    def watch(self, run_ids: Iterable[str]) -> list[RunRow]:
        """Start queued runs whose GPUs are free, then the named runs, refreshed."""
        return self._runs_desk().watch(run_ids)

    def resolve_run(self, text: str) -> str:
        """The full id of the run ``text`` names (a whole id, a unique prefix, or a unique
        short id); every method here that takes a run id accepts those."""
        return self._run_registry().resolve(text)

    def stop(self, run_id: str, timeout: float = 60.0) -> RunRow:
        """Stop a run gracefully: SIGTERM, ``timeout`` s to checkpoint, then SIGKILL."""
        run_id = self.resolve_run(run_id)
        self._leave_host_queue(run_id)
        return self._runs_desk().stop(run_id, timeout)

    def host_queue(self) -> list[QueuedRun]:
        """Every host's queue of runs waiting for its runner, in order."""
        return self._run_manager().submitter.host_queues.listing()

    def move_queued(self, run_id: str, steps: int) -> QueuedRun:
        """Move a run ``steps`` places up its host's queue (negative: down)."""
        run_id = self.resolve_run(run_id)
        return self._run_manager().submitter.host_queues.move(run_id, steps)

    def _leave_host_queue(self, run_id: str) -> None:
        """Take a run out of its host's queue, then learn if the runner started it first."""
        submitter = self._run_manager().submitter
        submitter.host_queues.discard(run_id)
        submitter.sync_host_queues()

    def kill(self, run_id: str) -> RunRow:
        """Kill a run now (work since its last checkpoint is lost)."""
        run_id = self.resolve_run(run_id)
        return self._runs_desk().kill(run_id)

    def resume(self, run_id: str) -> RunRow:
        """Start a stopped or failed run again from its last checkpoint."""
        run_id = self.resolve_run(run_id)
        return self._runs_desk().resume(run_id)

    def remove(self, run_id: str, purge: bool = False, force: bool = False) -> None:
        """Forget an ended run (``force``: a running one too); its run dir stays unless
        ``purge``."""
        run_id = self.resolve_run(run_id)
        self._leave_host_queue(run_id)
        self._runs_desk().remove(run_id, purge, force)

    def logs(
        self, run_id: str, follow: bool = False, tail: int | None = None, member: int = 0
    ) -> Iterator[LogLine]:
        """A run's log as whole lines (of member ``member``), followed if asked."""
        run_id = self.resolve_run(run_id)
        return self._runs_desk().logs(run_id, follow, tail, member)

    def metrics(self, run_id: str) -> RunMetrics:
        """A run's evaluations and training progress."""
        run_id = self.resolve_run(run_id)
        return self._runs_desk().metrics(run_id)

    def run_exports(self, run_id: str) -> list[str]:
        """``FORMAT: PATH`` (or ``FORMAT failed: why``) of each export a run's end event lists."""
        run_id = self.resolve_run(run_id)
        record = self._run_registry().get_run(run_id)
        ends = self._run_registry().events(run_id, kind="end")
        exports = ends[-1].data.get("exports") or [] if ends else []
        out = []
        for export in exports:
            if not isinstance(export, dict):
                continue
            fmt = export.get("format", "?")
            if not export.get("path"):
                out.append(f"{fmt} failed: {export.get('error', 'unknown error')}")
                continue
            path = Path(str(export["path"]))
            if not path.is_absolute() and record.run_dir:
                path = Path(record.run_dir) / path
            out.append(f"{fmt}: {path}")
        return out

    _poller: Poller | None = None

    def poll(self, selected: str | None = None) -> Snapshot:
        """The dashboard's poll: every run, the selected recipe's curves, and now and then
        the local engines; runs are found again at first and the queue pumped often."""
        if self._poller is None:
            from seglab.polling import Poller

            self._poller = Poller(self)
        return self._poller.poll(selected)

    # -- views for the dashboard -----------------------------------------------------

    def placement_choices(self, states: Iterable[HostState]) -> list[tuple[str, str]]:
        """``(--on value, label)`` pairs: auto, each free GPU, and each host's CPU
        (hosts of the inventory only)."""
        from seglab.scheduler import Scheduler

        scheduler = Scheduler(self.inventory(), self._run_registry())
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

    def curves(self, run_id: str, since: Curves | None = None) -> Curves:
        """The loss and mIoU curves of a run, from its ingested events (``since``: the
        run's curves from an earlier call, extended by the newer events only)."""
        return self._runs_desk().curves(run_id, since)

    def comparison(self, run_ids: Iterable[str], now: float | None = None) -> list[Comparison]:
        """Per run of an ablation: best mIoU with that evaluation's pixel accuracy and
        per-class IoU, img/s and wall time (``now`` ends the time of runs still going)."""
        return self._runs_desk().comparison(run_ids, now)

    def class_names(self, run_id: str) -> list[str] | None:
        """The class names a run's trainer announced in its start event."""
        run_id = self.resolve_run(run_id)
        return self._runs_desk().class_names(run_id)

    # -- run files and shells --------------------------------------------------------

    def pull(self, run_id: str, what: Literal["export", "best", "all"], dest: Path) -> list[Path]:
        """Copy a run's export folder, best checkpoint or whole run dir into ``dest``."""
        run_id = self.resolve_run(run_id)
        record = self._run_registry().get_run(run_id)
        if not record.run_dir:
            raise RunError(f"run {run_id} has no run directory yet (status {record.status})")
        host = self.inventory().get(record.host)
        if not host.is_local:
            bridge = self._remote()
            bridge.ensure(host.name)
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
        run_id = self.resolve_run(run_id)
        record = self._run_registry().get_run(run_id)
        if record.runtime != RuntimeKind.DOCKER:
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
        url = self._run_manager().docker_url(self.inventory().get(record.host))
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
        """JupyterLab on ``HOST[:cpu|:<GPU UUID>]``, on 127.0.0.1 here (URL with its token):
        in ``image`` (default: the full image), or a local process when no engine answers."""
        from seglab.forwards import open_notebook

        return open_notebook(self, where, image, port)

    def engine(self, host: str) -> str | None:
        """``docker <version>`` of a local host's engine, or ``no docker engine`` (blocking;
        None for a remote host: its engine is reached through its SSH link)."""
        from seglab.runtime import EngineUnavailable

        if not self.inventory().get(host).is_local:
            return None
        try:
            runtime = self._run_manager().runtime(host, RuntimeKind.DOCKER)
            from seglab.runtime.docker import DockerRuntime  # an engine socket is there

            if not isinstance(runtime, DockerRuntime):
                return runtime.__class__.__name__
            version = runtime.client.version().get("Version")
        except EngineUnavailable:
            return "no docker engine"
        return f"docker {version}" if version else "docker"

    _data_rows: HostRows | None = None

    def data_rows(self) -> dict[str, str]:
        """Each host's datasets as the dashboard shows them (``cityscapes ✓ ade20k ✗``), from
        the last ``seglab data ls``: no host is contacted, and the stored results are read
        again only when they change (one ``stat`` a call otherwise)."""
        if self._data_rows is None:
            from seglab.data.checks import HostRows

            self._data_rows = HostRows(self.state_dir)
        return self._data_rows.rows()

    # -- reports: `seglab report`, `seglab show`, the dashboard's preview ------------------

    def run_summary(self, run_id: str, images: bool = True) -> RunSummary:
        """A run's provenance and numbers; with ``images``, its latest prediction samples
        (a remote run's read over its host's connection)."""
        run_id = self.resolve_run(run_id)
        from seglab.report.gather import gather
        from seglab.report.provenance import image_digest

        record = self._run_registry().get_run(run_id)
        digest = None
        if record.runtime == RuntimeKind.DOCKER and record.handle:
            runtime = self._run_manager().runtime(record.host, RuntimeKind.DOCKER)
            digest = image_digest(runtime, record.handle)
        return gather(
            self._run_registry(), self.machine, run_id, images=images, image_digest=digest
        )

    def report_selection(self, targets: Sequence[str]) -> Selection:
        """The runs `seglab report TARGET...` covers: run ids, or each recipe's latest run of
        every variant (with the recipe's base for the diffs)."""
        from seglab.report.select import select

        return select(self._run_registry().list_runs(), targets, self.load_recipe)

    def sample_iterations(self, run_id: str) -> list[int]:
        """The evaluations of a run that have complete prediction samples, ascending."""
        run_id = self.resolve_run(run_id)
        from seglab.report.gather import sample_iterations

        record = self._run_registry().get_run(run_id)
        if not record.run_dir:
            return []
        return sample_iterations(self.machine(record.host), record.run_dir)

    def samples(self, run_id: str, iteration: int) -> list[SampleImage]:
        """The prediction samples of one evaluation of a run (PNG bytes per view)."""
        run_id = self.resolve_run(run_id)
        from seglab.report.gather import read_index, read_samples

        record = self._run_registry().get_run(run_id)
        files = self.machine(record.host)
        return read_samples(files, record.run_dir, read_index(files, record.run_dir, iteration))
