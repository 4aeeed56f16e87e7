"""TensorBoard and JupyterLab as plain processes on a remote host whose runs are processes
(a Slurm login node reached over SSH), on that host's loopback.

The host's own interpreter (hosts.yaml ``python``, after its ``env_setup`` lines) runs the
app detached (``nohup``): JupyterLab over the host's runs root, its token on stdin, never
on a command line other users of the host could read (:func:`start_remote_notebook`), or
TensorBoard over runs' ``tb/`` folders (:func:`start_remote_tensorboard`).
:meth:`RemoteProcess.stop` ends it (SIGTERM, then SIGKILL) and removes its log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from seglab.errors import RunError
from seglab.forwards_local import (
    answers_within,
    notebook_process_command,
    tensorboard_process_command,
)
from seglab.hosts import SlurmOptions
from seglab.machines import CommandError, MachineSync

if TYPE_CHECKING:
    from seglab.registry import RunRecord

READY_TIMEOUT = 120.0
# Started in $1 with the optional NAME=VALUE line from stdin exported and its output in a
# temporary file named after $2; prints "<pid> <log path>".
_START = """read -r secret || exit 1
if [ -n "$secret" ]; then export "$secret"; fi
cd "$1" || exit 1
log=$(mktemp "${TMPDIR:-/tmp}/seglab-$2.XXXXXX") || exit 1
shift 2
nohup "$@" >"$log" 2>&1 </dev/null &
echo "$! $log"
"""
_STOP = (
    'kill "$0" 2>/dev/null; for _ in 1 2 3 4 5 6 7 8 9 10; do '
    'kill -0 "$0" 2>/dev/null || break; sleep 0.5; done; kill -9 "$0" 2>/dev/null; rm -f "$1"'
)


def _shell(setup: str, script: str, args: Sequence[str]) -> list[str]:
    """``script`` after the host's setup lines (in bash, as for its Slurm commands)."""
    if setup:
        return ["bash", "-c", f"{setup}\n{script}", "bash", *args]
    return ["sh", "-c", script, "sh", *args]


@dataclass(frozen=True)
class RemoteProcess:
    """A detached process on a host, by pid, with its output in ``log`` there."""

    machine: MachineSync
    pid: str
    log: str

    def alive(self) -> bool:
        """Whether it still runs (True while the host cannot be reached: the forward comes
        back with the link)."""
        try:
            return self.machine.run(["kill", "-0", self.pid]).returncode == 0
        except CommandError:
            return True

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 5 s, and its log removed."""
        self.machine.run(["sh", "-c", _STOP, self.pid, self.log])

    def tail(self) -> str:
        """The last lines of its output (indented, for an error message)."""
        out = self.machine.run(["tail", "-n", "8", self.log]).stdout.strip()
        return "\n  " + "\n  ".join(out.splitlines()) if out else ""


def start_remote_notebook(
    machine: MachineSync, slurm: SlurmOptions, root: str, port: int, *, token: str, gpu: str | None
) -> RemoteProcess:
    """Start JupyterLab on the login node's 127.0.0.1:``port`` over ``root`` with the
    cluster's ``python`` after its ``env_setup`` lines, guarded by ``token`` and seeing only
    GPU ``gpu`` (none when None)."""
    return _start(
        machine,
        slurm,
        [
            "env",
            f"CUDA_VISIBLE_DEVICES={gpu or ''}",
            *notebook_process_command(root, port, slurm.python),
        ],
        name="JupyterLab",
        module="jupyterlab",
        extra="notebook",
        cwd=root,
        secret=f"JUPYTER_TOKEN={token}",
    )


def start_remote_tensorboard(
    machine: MachineSync, slurm: SlurmOptions, runs: Sequence[RunRecord], port: int
) -> RemoteProcess:
    """Start TensorBoard on the login node's 127.0.0.1:``port`` over each run's ``tb/``
    folder with the cluster's ``python`` after its ``env_setup`` lines."""
    return _start(
        machine,
        slurm,
        tensorboard_process_command(runs, port, python=slurm.python),
        name="tensorboard",
        module="tensorboard",
        extra="train",
        cwd=runs[0].run_dir,
    )


def _start(
    machine: MachineSync,
    slurm: SlurmOptions,
    argv: Sequence[str],
    *,
    name: str,
    module: str,
    extra: str,
    cwd: str,
    secret: str = "",
) -> RemoteProcess:
    """Run ``argv`` detached in ``cwd`` after the host's setup lines, with ``secret``
    (``NAME=VALUE``) in its environment; RunError naming seglab's ``extra`` when
    ``python`` there cannot import ``module``."""
    python, setup = slurm.python, "\n".join(slurm.env_setup)
    check = machine.run(_shell(setup, '"$1" -c "import $2"', [python, module]))
    if check.returncode != 0:
        raise RunError(
            f"{name} is not installed for {python} on {machine.name}: {check.output}",
            hint=f"install the {extra} extra for the interpreter hosts.yaml names (python:) "
            f"there: pip install 'seglab[{extra}]'",
        )
    started = machine.run(_shell(setup, _START, [cwd, module, *argv]), stdin=secret + "\n")
    fields = started.stdout.split()
    if started.returncode != 0 or len(fields) != 2 or not fields[0].isdigit():
        raise RunError(f"cannot start {name} on {machine.name}: {started.output}")
    return RemoteProcess(machine, fields[0], fields[1])


def wait_answering(
    url: str, process: RemoteProcess, what: str, timeout: float = READY_TIMEOUT
) -> None:
    """Until ``url`` answers HTTP; RunError (with its output) when the process ends first
    or time runs out."""

    def check() -> None:
        if not process.alive():
            raise RunError(f"{what} exited before answering{process.tail()}")

    if not answers_within(url, timeout, check):
        raise RunError(f"{what} did not answer on {url} within {timeout:.0f} s{process.tail()}")
