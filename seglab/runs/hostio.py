"""Files and small commands on the host a run lives on: this machine directly, a remote
host through the SSH bridge. Every ``is_local`` branch of the run lifecycle lives here."""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from seglab import events, multinode
from seglab.errors import RunError
from seglab.hosts import DEFAULT_DOCKER_SOCKET, Host
from seglab.runtime import default_user, own_run_dir

if TYPE_CHECKING:
    from seglab.remote.bridge import RemoteBridge

MIN_FREE = 256 * 2**20  # bytes a runs root must have free for a new run
Cursor = tuple[int, int]  # (inode, byte offset) up to which an events.jsonl was read


class HostIO:
    """Run dirs, users, ports and event files on the inventory's hosts."""

    def __init__(self, remote: Callable[[], RemoteBridge] | None = None) -> None:
        self._remote = remote
        self._roots: dict[str, str] = {}  # remote runs roots, resolved to absolute paths

    @property
    def reaches_remote(self) -> bool:
        """Whether remote hosts can be reached (an SSH layer was given)."""
        return self._remote is not None

    def remote(self) -> RemoteBridge:
        """The SSH bridge (remote hosts are reached only through it)."""
        if self._remote is None:
            raise RunError("remote hosts need the SSH layer; this run manager has none")
        return self._remote()

    def _run(self, host: Host, argv: Sequence[str]) -> str:
        return self.remote().run(host.name, list(argv)).stdout

    def docker_url(self, host: Host) -> str:
        """The engine socket of ``host``: a local one (``DOCKER_HOST`` overrides the
        default), or a remote engine's socket forwarded over SSH."""
        if not host.is_local:
            return self.remote().docker_url(host.name)
        env = os.environ.get("DOCKER_HOST")
        if env and host.docker_socket == DEFAULT_DOCKER_SOCKET:
            return env
        return f"unix://{host.docker_socket}"

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
            out = self._run(host, ["sh", "-c", f"mkdir -p {shell_root} && cd {shell_root} && pwd"])
            self._roots[host.name] = out.strip()
        return Path(self._roots[host.name])

    def run_dir(self, host: Host, run_id: str) -> Path:
        """Where run ``run_id`` lives on ``host``; RunError when the runs root lacks space."""
        root = self.runs_root(host)
        if host.is_local:
            try:
                root.mkdir(parents=True, exist_ok=True)
                free = shutil.disk_usage(root).free
            except OSError as exc:
                raise RunError(f"runs root {root} on {host.name} is not usable: {exc}") from exc
        else:
            out = self._run(host, ["df", "-Pk", str(root)])
            free = int(out.strip().splitlines()[-1].split()[3]) * 1024
        if free < MIN_FREE:
            raise RunError(
                f"runs root {root} on {host.name} has only {free // 2**20} MiB free; "
                "free some space (seglab rm --purge old runs) or move runs_root"
            )
        return root / run_id

    def run_user(self, host: Host) -> str:
        """``uid:gid`` runs use on ``host``: the login user's there, never root."""
        if host.is_local:
            return default_user()
        uid, gid = self._run(host, ["sh", "-c", "id -u; id -g"]).split()
        return default_user() if uid == "0" else f"{uid}:{gid}"

    def free_port(self, host: Host) -> int:
        """A TCP port free now on ``host`` (member 0's: the rendezvous endpoint)."""
        if host.is_local:
            return multinode.free_local_port()
        return int(self._run(host, ["python3", "-c", multinode.FREE_PORT_SCRIPT]).strip())

    def is_dir(self, host: Host, path: str) -> bool:
        """Whether ``path`` is a folder on ``host``."""
        if host.is_local:
            return Path(path).is_dir()
        return self.remote().succeeds(host.name, ["test", "-d", path])

    def prepare_run_dir(self, host: Host, run_dir: Path, user: str, recipe_yaml: str) -> None:
        """Give the run dir to the run's user and write its recipe.yaml (once)."""
        if host.is_local:
            own_run_dir(run_dir, user)
            recipe_path = run_dir / "recipe.yaml"
            if not recipe_path.exists():
                recipe_path.write_text(recipe_yaml)
            return
        bridge = self.remote()
        recipe = str(run_dir / "recipe.yaml")
        if not bridge.succeeds(host.name, ["test", "-e", recipe]):
            bridge.write_file(host.name, recipe, recipe_yaml)
        # A root login hands the folder to the run's user (runs never run as root).
        self._run(
            host,
            ["sh", "-c", f'[ "$(id -u)" != 0 ] || chown -R {user} {shlex.quote(str(run_dir))}'],
        )

    def recipe_text(self, host: Host, run_dir: str) -> str:
        """The recipe.yaml of a run dir ("" when a local one has none)."""
        if host.is_local:
            path = Path(run_dir) / "recipe.yaml"
            return path.read_text() if path.is_file() else ""
        return self._run(host, ["cat", f"{run_dir}/recipe.yaml"])

    def new_events(
        self, host: Host, run_dir: str, cursor: Cursor
    ) -> tuple[list[events.Event], Cursor]:
        """Events appended to a run dir's events.jsonl since ``cursor``, and the cursor after
        them (a remote file is read over SFTP; its cursor's inode is 0)."""
        if host.is_local:
            return read_new_events(Path(run_dir) / "events.jsonl", cursor)
        from seglab.remote.files import RemoteFileError

        try:
            chunk = self.remote().read_events(host.name, run_dir, cursor[1])
        except RemoteFileError:
            return [], cursor  # no events.jsonl yet
        return list(chunk.events), (0, chunk.offset)

    def purge(self, host: Host, run_dir: str) -> None:
        """Delete a run dir on its host (only ever one inside the host's runs root)."""
        root = self.runs_root(host)
        if not Path(run_dir).is_relative_to(root) or Path(run_dir) == root:
            raise RunError(
                f"{run_dir} is not inside the runs root {root} of {host.name}; not deleting it"
            )
        if host.is_local:
            shutil.rmtree(run_dir)
        else:
            self._run(host, ["rm", "-rf", "--", run_dir])


def read_new_events(path: Path, cursor: Cursor) -> tuple[list[events.Event], Cursor]:
    """The whole lines appended to a local events.jsonl since ``cursor`` as events, and the
    cursor after them: a replaced (other inode) or shorter file is read from its start, and
    a last line still being written is left for the next read."""
    try:
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            inode, offset = cursor
            if stat.st_ino != inode or stat.st_size < offset:
                offset = 0
            handle.seek(offset)
            data = handle.read(stat.st_size - offset)
    except FileNotFoundError:
        return [], cursor
    end = data.rfind(b"\n") + 1
    if not end:
        return [], (stat.st_ino, offset)
    lines = data[:end].decode("utf-8", errors="replace").splitlines()
    return list(events.read_jsonl(lines)), (stat.st_ino, offset + end)
