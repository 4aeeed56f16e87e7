"""Files and small commands on the host a run lives on, through that host's machine.

Every host, this one or a remote one, is reached the same way: a
:class:`~seglab.machines.MachineSync` from the façade's getter (``Workstation.machine``).
A run manager made without one (the host queue runner, unit tests) reaches this machine
only.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path

from seglab import events, multinode
from seglab.errors import RunError
from seglab.hosts import Host
from seglab.machines import LocalMachine, LoopThread, MachineSync
from seglab.runtime import default_user

MIN_FREE = 256 * 2**20  # bytes a runs root must have free for a new run
Cursor = tuple[int, int]  # (unused, byte offset) up to which an events.jsonl was read
MachineGetter = Callable[[str], MachineSync]


class HostIO:
    """Run dirs, users, ports and event files on the inventory's hosts.

    ``machine`` gives a host's machine by name (the façade's ``Workstation.machine``);
    without it only local hosts can be reached.
    """

    def __init__(self, machine: MachineGetter | None = None) -> None:
        self._given = machine
        self._loop: LoopThread | None = None
        self._roots: dict[str, str] = {}  # runs roots, resolved to absolute paths

    @property
    def reaches_remote(self) -> bool:
        """Whether remote hosts can be reached (a machine getter was given)."""
        return self._given is not None

    def machine(self, host: Host) -> MachineSync:
        """``host``'s machine for synchronous code."""
        if self._given is not None:
            return self._given(host.name)
        if not host.is_local:
            raise RunError("remote hosts need the SSH layer; this run manager has none")
        if self._loop is None:
            self._loop = LoopThread("seglab-hostio")
        return MachineSync(LocalMachine(host.name, host.docker_socket), self._loop)

    def _run(self, host: Host, argv: Sequence[str]) -> str:
        """The stdout of a short command on ``host`` (RunError when it exits non-zero)."""
        result = self.machine(host).run(argv)
        if result.returncode != 0:
            raise RunError(
                f"{host.name}: `{shlex.join(argv)}` exited {result.returncode}: {result.output}"
            )
        return result.stdout

    def docker_url(self, host: Host) -> str:
        """The URL of ``host``'s engine as seen from here (a remote one forwarded over
        SSH; ``DOCKER_HOST`` overrides a local default socket)."""
        return self.machine(host).docker_url()

    def runs_root(self, host: Host) -> Path:
        """The host's runs root as an absolute path (on that host), created if missing."""
        if host.name not in self._roots:
            root = str(host.runs_root)
            # `~` is expanded by the host's shell; the rest of the path is quoted.
            shell_root = (
                ("~/" + shlex.quote(root[2:])) if root.startswith("~/") else shlex.quote(root)
            )
            out = self._run(host, ["sh", "-c", f"mkdir -p {shell_root} && cd {shell_root} && pwd"])
            self._roots[host.name] = out.strip()
        return Path(self._roots[host.name])

    def run_dir(self, host: Host, run_id: str) -> Path:
        """Where run ``run_id`` lives on ``host``; RunError when the runs root lacks space."""
        root = self.runs_root(host)
        out = self._run(host, ["sh", "-c", 'mkdir -p -- "$0" && df -Pk -- "$0"', str(root)])
        free = int(out.strip().splitlines()[-1].split()[3]) * 1024
        if free < MIN_FREE:
            raise RunError(
                f"runs root {root} on {host.name} has only {free // 2**20} MiB free; "
                "free some space (seglab rm --purge old runs) or move runs_root"
            )
        return root / run_id

    def run_user(self, host: Host) -> str:
        """``uid:gid`` runs use on ``host``: the login user's there, never root."""
        uid, gid = self._run(host, ["sh", "-c", "id -u; id -g"]).split()
        return default_user() if uid == "0" else f"{uid}:{gid}"

    def free_port(self, host: Host) -> int:
        """A TCP port free now on ``host`` (member 0's: the rendezvous endpoint)."""
        return int(self._run(host, ["python3", "-c", multinode.FREE_PORT_SCRIPT]).strip())

    def is_dir(self, host: Host, path: str) -> bool:
        """Whether ``path`` is a folder on ``host``."""
        return self.machine(host).run(["test", "-d", path]).returncode == 0

    def prepare_run_dir(
        self, host: Host, run_dir: Path, user: str | None, recipe_yaml: str
    ) -> None:
        """Write the run dir's recipe.yaml (once) and, when seglab runs as root there and
        the run runs as another ``user`` (a container), give the folder to that user;
        ``user`` None (a process or Slurm job: the launching user's) leaves the owner."""
        machine = self.machine(host)
        recipe = str(run_dir / "recipe.yaml")
        if not machine.exists(recipe):
            machine.write_text(recipe, recipe_yaml)
        if user is None:
            return
        self._run(
            host,
            ["sh", "-c", f'[ "$(id -u)" != 0 ] || chown -R {user} {shlex.quote(str(run_dir))}'],
        )

    def recipe_text(self, host: Host, run_dir: str) -> str:
        """The recipe.yaml of a run dir ("" when it has none)."""
        try:
            return self.machine(host).read_text(posixpath.join(run_dir, "recipe.yaml"))
        except FileNotFoundError:
            return ""

    def new_events(
        self, host: Host, run_dir: str, cursor: Cursor
    ) -> tuple[list[events.Event], Cursor]:
        """Events appended to a run dir's events.jsonl since ``cursor``, and the cursor after
        them (:func:`read_new_events` on the host's machine)."""
        return read_new_events(self.machine(host), posixpath.join(run_dir, "events.jsonl"), cursor)

    def purge(self, host: Host, run_dir: str) -> None:
        """Delete a run dir on its host (only ever one inside the host's runs root)."""
        root = self.runs_root(host)
        if not Path(run_dir).is_relative_to(root) or Path(run_dir) == root:
            raise RunError(
                f"{run_dir} is not inside the runs root {root} of {host.name}; not deleting it"
            )
        self._run(host, ["rm", "-rf", "--", run_dir])


def read_new_events(
    machine: MachineSync, path: str, cursor: Cursor
) -> tuple[list[events.Event], Cursor]:
    """The whole lines appended to an events.jsonl since ``cursor`` as events, and the
    cursor after them.

    The read starts one byte before the cursor, which must be the newline ending the last
    line read; a file that no longer has it there (replaced or shorter) is read from its
    start. A last line still being written is left for the next read.
    """
    _, offset = cursor
    try:
        data = machine.read_bytes(path, max(offset - 1, 0))
        if offset and data[:1] != b"\n":
            offset = 0
            data = machine.read_bytes(path, 0)
        elif offset:
            data = data[1:]
    except FileNotFoundError:
        return [], cursor
    end = data.rfind(b"\n") + 1
    if not end:
        return [], (0, offset)
    lines = data[:end].decode("utf-8", errors="replace").splitlines()
    return list(events.read_jsonl(lines)), (0, offset + end)
