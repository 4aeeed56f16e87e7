"""TensorBoard and JupyterLab next to the runs: a container on a host's loopback, reached here
(or, on this machine without Docker, a local process: :mod:`seglab.forwards_local`).

The container uses host networking (the only way a container can bind the host's own
loopback) and listens on a free port of that host; for a remote host that port is forwarded
over the host's SSH connection to a port on this machine's 127.0.0.1. :meth:`OpenForward.close`
removes the container and closes the forward. These containers carry ``seglab.forward`` and
never ``seglab.run_id``, so `seglab ps` and reconciliation leave them alone.
"""

from __future__ import annotations

import logging
import random
import secrets
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from seglab.errors import RunError
from seglab.forwards_local import (
    answers_within,
    start_local_notebook,
    start_local_tensorboard,
)
from seglab.forwards_remote import (
    RemoteProcess,
    start_remote_notebook,
    start_remote_tensorboard,
    wait_answering,
)
from seglab.hosts import Host
from seglab.registry import RunRecord, UnknownRunError
from seglab.runs import resolved_recipe
from seglab.runtime import EngineUnavailable, LaunchSpec, Mount, RunNotFound, RuntimeFailure
from seglab.runtime.docker import DockerRuntime

if TYPE_CHECKING:
    from seglab.workstation import Workstation

log = logging.getLogger(__name__)

Kind = Literal["tensorboard", "notebook"]

FORWARD_LABEL = "seglab.forward"
DEFAULT_NOTEBOOK_IMAGE = "seglab/full:latest"
RUNS_MOUNT = "/runs"
PORT_RANGE = (20000, 60999)
READY_TIMEOUT = 180.0

_PROGRAM = {"tensorboard": "python3 -m tensorboard", "notebook": "jupyter"}
_HINT = {
    "tensorboard": "the run's image needs the tensorboard package (the seglab images have it)",
    "notebook": "use an image with JupyterLab, such as the full image "
    "(`seglab image build full`, then --image seglab/full:latest)",
}


def listening_ports(proc_net_tcp: str) -> set[int]:
    """Local ports in use, from the text of ``/proc/net/tcp`` (and ``tcp6``)."""
    ports = set()
    for line in proc_net_tcp.splitlines():
        fields = line.split()
        if len(fields) > 1 and fields[0].endswith(":") and ":" in fields[1]:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def pick_port(used: set[int], rng: random.Random | None = None) -> int:
    """A port of :data:`PORT_RANGE` not in ``used``."""
    free = [port for port in range(PORT_RANGE[0], PORT_RANGE[1] + 1) if port not in used]
    if free:
        return (rng or random.SystemRandom()).choice(free)
    raise RunError(f"no free TCP port between {PORT_RANGE[0]} and {PORT_RANGE[1]}")


def tensorboard_command(run_ids: Sequence[str], port: int) -> tuple[str, ...]:
    """TensorBoard over each run's ``tb/`` folder (mounted at ``/runs/<id>``) on loopback."""
    spec = ",".join(f"{run_id}:{RUNS_MOUNT}/{run_id}/tb" for run_id in run_ids)
    return (
        "python3",
        "-m",
        "tensorboard.main",
        "--logdir_spec",
        spec,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    )


def notebook_command(port: int, token: str) -> tuple[str, ...]:
    """JupyterLab on loopback, guarded by ``token``."""
    return (
        "jupyter",
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--ServerApp.token={token}",
    )


def parse_where(where: str) -> tuple[str, str | None]:
    """``HOST``, ``HOST:cpu`` or ``HOST:<GPU UUID>`` as (host, GPU UUID or None)."""
    host, _, gpu = where.partition(":")
    if not host:
        raise RunError(f"{where!r}: expected HOST, HOST:cpu or HOST:<GPU UUID>")
    if gpu in ("", "cpu"):
        return host, None
    if not gpu.startswith(("GPU-", "MIG-")):
        raise RunError(
            f"{where!r}: give the GPU by UUID (`seglab gpus --host {host}` shows "
            "them) or cpu; notebooks are pinned by UUID"
        )
    return host, gpu


@dataclass
class OpenForward:
    """A running TensorBoard or Jupyter container and the way to it from this machine."""

    kind: Kind
    host: str
    container: str
    remote_port: int
    local_port: int
    url: str
    runtime: DockerRuntime | None  # None for a local process (``process``)
    _undo: list[Callable[[], None]] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    probe: Callable[[], bool] | None = None  # whether a remote process still runs

    def alive(self) -> bool:
        """Whether the container (or process) still runs (True while its engine or host
        cannot be reached: a remote host's forward comes back by itself after a reconnect)."""
        if self.probe is not None:
            return self.probe()
        if self.runtime is None:
            return self.process is not None and self.process.poll() is None
        try:
            return self.runtime.inspect(self.container).active
        except RunNotFound:
            return False
        except EngineUnavailable as exc:
            log.warning("%s on %s: cannot check the container now: %s", self.kind, self.host, exc)
            return True

    def close(self) -> None:
        """Close the forward, then stop and remove the container (idempotent)."""
        while self._undo:
            step = self._undo.pop()
            try:
                step()
            except (RuntimeFailure, RunError, OSError) as exc:
                log.warning("%s on %s: cleaning up failed: %s", self.kind, self.host, exc)


def open_tensorboard(ws: Workstation, target: str, port: int | None = None) -> OpenForward:
    """TensorBoard over run ``target``'s dir, or over every run of recipe ``target`` on the
    host of its newest run; ``port`` is the local port of the URL (default: a free one).
    Where runs are processes it runs as one (as :func:`open_notebook` does): the host's
    ``python`` over SSH on a remote Slurm host, this Python's on this machine for process
    runs, a local Slurm host or when no Docker engine answers; else in the run's image."""
    runs = _runs_for(ws, target)
    host = ws.inventory().get(runs[0].host)
    slurm = host.slurm
    if slurm is not None and not host.is_local:
        return _remote_process(
            ws,
            "tensorboard",
            host,
            lambda p: start_remote_tensorboard(ws.machine(host.name), slurm, runs, p),
            port=port,
            path="",
        )
    if host.is_local and (
        runs[0].runtime == "process" or host.kind == "slurm" or _no_engine(ws, host)
    ):
        port = _local_port(ws, host, port)
        process, stop = start_local_tensorboard(runs, port)
        return _local_forward("tensorboard", host, process, stop, port=port, path="")
    image = resolved_recipe(runs[0]).image
    mounts = tuple(Mount(Path(r.run_dir), f"{RUNS_MOUNT}/{r.run_id}") for r in runs)
    ids = [r.run_id for r in runs]
    name, labels = _identity("tensorboard", host)
    return _open(
        ws,
        "tensorboard",
        host,
        port,
        path="",
        build=lambda p: LaunchSpec(
            name=name,
            labels=labels,
            network_mode="host",
            image=image,
            command=tensorboard_command(ids, p),
            mounts=mounts,
        ),
    )


def open_notebook(
    ws: Workstation, where: str, image: str | None = None, port: int | None = None
) -> OpenForward:
    """JupyterLab on a host (pinned to a GPU by UUID, or CPU-only) over the host's runs
    root: in ``image`` (default :data:`DEFAULT_NOTEBOOK_IMAGE`) with the root read-only at
    /runs; or, when no image is asked for, as a process where runs are processes: this
    Python's JupyterLab (the notebook extra) on this machine when no Docker engine answers
    or it is a Slurm login node, the host's ``python`` over SSH on a remote Slurm host."""
    name, gpu = parse_where(where)
    host = ws.inventory().get(name)
    token = secrets.token_hex(24)
    slurm = host.slurm
    if image is None and slurm is not None and not host.is_local:
        remote_root = str(ws._run_manager().runs_root(host))
        return _remote_process(
            ws,
            "notebook",
            host,
            lambda p: start_remote_notebook(
                ws.machine(host.name), slurm, remote_root, p, token=token, gpu=gpu
            ),
            port=port,
            path=f"lab?token={token}",
            ready="api",
        )
    if image is None and host.is_local and (host.kind == "slurm" or _no_engine(ws, host)):
        port = _local_port(ws, host, port)
        process, stop = start_local_notebook(ws._run_manager().runs_root(host), port, token, gpu)
        return _local_forward("notebook", host, process, stop, port=port, path=f"lab?token={token}")
    image = image or DEFAULT_NOTEBOOK_IMAGE
    root = ws._run_manager().runs_root(host) if host.kind != "slurm" else None
    mounts = () if root is None else (Mount(root, RUNS_MOUNT),)
    name, labels = _identity("notebook", host)
    return _open(
        ws,
        "notebook",
        host,
        port,
        path=f"lab?token={token}",
        build=lambda p: LaunchSpec(
            name=name,
            labels=labels,
            network_mode="host",
            image=image,
            command=notebook_command(p, token),
            mounts=mounts,
            gpus=(gpu,) if gpu else (),
            env={"HOME": "/tmp"},
            workdir="/tmp",
        ),
    )


def _remote_process(
    ws: Workstation,
    kind: Kind,
    host: Host,
    start: Callable[[int], RemoteProcess],
    *,
    port: int | None,
    path: str,
    ready: str = "",
) -> OpenForward:
    """``start`` a process on a free port of a remote host's loopback and forward it here
    (to ``port``, or a free one); it is ready when ``/<ready>`` answers there."""
    remote_port = pick_port(listening_ports(_proc_net_tcp(ws, host)))
    process = start(remote_port)
    opened = OpenForward(
        kind,
        host.name,
        f"pid {process.pid} on {host.name}",
        remote_port,
        remote_port,
        "",
        None,
        [process.stop],
        probe=process.alive,
    )
    try:
        opened.local_port = _forward(ws, host.name, remote_port, port or 0, opened)
        base = f"http://127.0.0.1:{opened.local_port}/"
        opened.url = base + path
        wait_answering(base + ready, process, f"{kind} on {host.name}")
    except BaseException:
        opened.close()
        raise
    return opened


def _no_engine(ws: Workstation, host: Host) -> bool:
    return ws.engine(host.name) == "no docker engine"


def _local_port(ws: Workstation, host: Host, port: int | None) -> int:
    """``port`` if it is free on this machine (else an error), or a free one."""
    used = listening_ports(_proc_net_tcp(ws, host))
    if port is not None and port in used:
        raise RunError(f"port {port} is in use on this machine; choose another --port")
    return port or pick_port(used)


def _local_forward(
    kind: Kind,
    host: Host,
    process: subprocess.Popen[bytes],
    stop: Callable[[], None],
    *,
    port: int,
    path: str,
) -> OpenForward:
    """The forward of a local process serving on ``port``; closing it calls ``stop``."""
    url = f"http://127.0.0.1:{port}/{path}"
    opened = OpenForward(
        kind, host.name, f"pid {process.pid}", port, port, url, None, process=process
    )
    opened._undo.append(stop)
    return opened


def _runs_for(ws: Workstation, target: str) -> list[RunRecord]:
    registry = ws._run_registry()
    try:
        runs = [registry.get_run(target)]
    except UnknownRunError as unknown:
        same = [r for r in registry.list_runs() if r.recipe == target and r.run_dir]
        if not same:
            raise RunError(
                f"{unknown}; nor is {target!r} the recipe of any started run "
                "(`seglab ps -a` lists them)"
            ) from unknown
        newest = max(same, key=lambda r: r.created_at)
        return [r for r in same if r.host == newest.host]
    if not runs[0].run_dir:
        raise RunError(f"run {target} has no run directory yet (status {runs[0].status})")
    return runs


def _identity(kind: Kind, host: Host) -> tuple[str, dict[str, str]]:
    """Name (``tb-``/``nb-`` and a short id) and labels of a forward's container."""
    prefix = "tb" if kind == "tensorboard" else "nb"
    return f"{prefix}-{secrets.token_hex(3)}", {FORWARD_LABEL: kind, "seglab.host": host.name}


def _open(
    ws: Workstation,
    kind: Kind,
    host: Host,
    port: int | None,
    *,
    path: str,
    build: Callable[[int], LaunchSpec],
) -> OpenForward:
    if host.kind == "slurm":
        raise RunError(
            f"host {host.name} is a Slurm cluster; {kind} runs in a container on a docker host"
        )
    runtime = ws._run_manager().runtime(host.name, "docker")
    assert isinstance(runtime, DockerRuntime)
    used = listening_ports(_proc_net_tcp(ws, host))
    if host.is_local and port is not None and port in used:
        raise RunError(f"port {port} is in use on this machine; choose another --port")
    remote_port = port if host.is_local and port is not None else pick_port(used)
    spec = build(remote_port)
    container = runtime.launch(spec)
    opened = OpenForward(
        kind,
        host.name,
        spec.container_name,
        remote_port,
        remote_port,
        "",
        runtime,
        [lambda: runtime.remove(container, force=True)],
    )
    try:
        opened.local_port = _forward(ws, host.name, remote_port, port or 0, opened)
        opened.url = f"http://127.0.0.1:{opened.local_port}/{path}"
        _wait_ready(opened, runtime, spec.image)
    except BaseException:
        opened.close()
        raise
    return opened


def _proc_net_tcp(ws: Workstation, host: Host) -> str:
    result = ws.machine(host.name).run(
        ["sh", "-c", "cat /proc/net/tcp; cat /proc/net/tcp6 2>/dev/null || true"]
    )
    if result.returncode != 0:
        raise RunError(f"cannot list the ports in use on {host.name}: {result.output}")
    return result.stdout


def _forward(
    ws: Workstation, name: str, remote_port: int, local_port: int, opened: OpenForward
) -> int:
    """Make ``remote_port`` of host ``name`` reachable on 127.0.0.1 here (a local host's
    port is reachable as it is); the forward is stopped when ``opened`` closes."""
    machine = ws.machine(name)
    try:
        forward = machine.forward_port(remote_port, local_port)
    except OSError as exc:
        raise RunError(f"cannot listen on 127.0.0.1:{local_port}: {exc}") from exc
    opened._undo.append(lambda: machine.stop_forward(forward))
    return forward.local_port


def _wait_ready(
    opened: OpenForward, runtime: DockerRuntime, image: str, timeout: float = READY_TIMEOUT
) -> None:
    """Until the server answers HTTP on the URL; a container that exits first is an error."""
    base = f"http://127.0.0.1:{opened.local_port}/"

    def check() -> None:
        state = runtime.inspect(opened.container)
        if not state.active:
            raise RunError(_exit_message(opened, runtime, image, state.exit_code))

    if not answers_within(base, timeout, check):
        raise RunError(
            f"{opened.kind} on {opened.host} did not answer on {base} within "
            f"{timeout:.0f} s; `docker logs {opened.container}` there may say why"
        )


def _exit_message(opened: OpenForward, runtime: DockerRuntime, image: str, code: int | None) -> str:
    tail = [line.text for line in runtime.logs(opened.container, tail=8)]
    message = f"{opened.kind} on {opened.host} exited (code {code}) before answering"
    if code in (126, 127):
        message = (
            f"image {image} on {opened.host} has no `{_PROGRAM[opened.kind]}` "
            f"command (exit {code}); {_HINT[opened.kind]}"
        )
    elif any("No module named tensorboard" in line for line in tail):
        message = f"image {image} has no tensorboard; {_HINT[opened.kind]}"
    return message + ("\n  " + "\n  ".join(tail) if tail else "")
