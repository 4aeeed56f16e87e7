"""LaunchSpec: everything a runtime needs to start one run, independent of the runtime."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from seglab.runtime.errors import SpecError, UnsafeMount

CONTAINER_PREFIX = "seglab-"
DEFAULT_SHM = "8g"
DEFAULT_PIDS = 4096  # a container's pids limit unless the recipe says (resources.pids)
ENGINE_RESTARTS = 3
"""A training container's ``restarts``: its engine starts it again (the trainer resumes
from ``last.pt``) after the engine's own shutdown stopped it (the trainer then exits 143)
or after it failed on its own, at most this many times between two starts of the engine.
`seglab stop` and `kill` turn the policy off first (Docker would start a container that
``docker stop`` ended non-zero again at its next start); docs/runtimes.md, "Surviving an
engine restart"."""
DOCKER_SOCKET = "docker.sock"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_USER = re.compile(r"^[0-9]+:[0-9]+$")
_SIZE = re.compile(r"^[1-9][0-9]*[bkmgBKMG]?$")
_GPU_UUID = re.compile(r"^(GPU|MIG)-[A-Za-z0-9][A-Za-z0-9/-]*$")


@dataclass(frozen=True)
class Mount:
    """A host path bound into the run (read-only unless said otherwise)."""

    source: Path
    target: str
    read_only: bool = True

    def __post_init__(self) -> None:
        if not PurePosixPath(self.target).is_absolute():
            raise SpecError(f"mount target {self.target!r} must be an absolute path")
        if not Path(self.source).is_absolute():
            raise SpecError(f"mount source {str(self.source)!r} must be an absolute path")

    def check_safe(self) -> None:
        """Refuse anything that would put a Docker socket inside the run."""
        source = Path(self.source)
        if source.name == DOCKER_SOCKET or PurePosixPath(self.target).name == DOCKER_SOCKET:
            raise UnsafeMount(str(source), "the Docker socket is never mounted into a run")
        try:
            mode = source.stat().st_mode
        except OSError:
            # A path that does not exist here (a remote host's) is checked by name only.
            return
        if stat.S_ISSOCK(mode):
            raise UnsafeMount(str(source), "unix sockets are never mounted into a run")
        real = source.resolve()
        if real.name == DOCKER_SOCKET:
            raise UnsafeMount(str(source), "it resolves to the Docker socket")
        if stat.S_ISDIR(mode) and (real / DOCKER_SOCKET).exists():
            raise UnsafeMount(str(source), f"it contains the Docker socket ({DOCKER_SOCKET})")


def parse_mounts(text: str) -> tuple[Mount, ...]:
    """Mounts from ``SRC:DST[:ro|rw],...`` (the ``SEGLAB_DEV_MOUNTS`` format; default ro)."""
    mounts = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        parts = item.split(":")
        if len(parts) == 2:
            source, target, mode = parts[0], parts[1], "ro"
        elif len(parts) == 3 and parts[2] in ("ro", "rw"):
            source, target, mode = parts
        else:
            raise SpecError(f"mount {item!r}: expected SRC:DST or SRC:DST:ro|rw")
        mounts.append(Mount(Path(source), target, read_only=mode == "ro"))
    return tuple(mounts)


def default_user() -> str:
    """``uid:gid`` for runs: the invoking user's, so run-dir files are theirs.

    Runs never get root: under root (CI, sudo) this is ``$SEGLAB_CONTAINER_USER``, else
    ``$SUDO_UID:$SUDO_GID``, else ``1000:1000`` (the first regular user on Debian).
    """
    explicit = os.environ.get("SEGLAB_CONTAINER_USER")
    if explicit:
        return explicit
    if os.getuid() != 0:
        return f"{os.getuid()}:{os.getgid()}"
    sudo_uid, sudo_gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    if sudo_uid and sudo_gid and sudo_uid != "0":
        return f"{sudo_uid}:{sudo_gid}"
    return "1000:1000"


@dataclass(frozen=True)
class LaunchSpec:
    """One run to start.

    ``name`` is the run id (the docker runtime names the container ``seglab-<name>``);
    ``network_mode`` names a Docker network mode (``host``) and overrides ``network``;
    ``gpus`` are GPU UUIDs (empty: CPU-only); ``pids_limit`` caps the processes and
    threads of a container (a fork bomb in a run's code stops there); ``log_path`` is
    where the process runtime writes stdout+stderr (its folder, the run dir, also gets
    ``process.json`` and ``exit_code``); the docker runtime keeps logs in the engine and
    ignores it. ``restarts`` is how many times a Docker engine starts the run again after
    it ended with a non-zero status, its own shutdown included (an ``on-failure`` restart
    policy; 0: never), and how many times the process runtime starts it again after a
    reboot took it down; the Slurm runtime ignores it (Slurm requeues on its own terms).
    """

    name: str
    image: str
    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    gpus: tuple[str, ...] = ()
    mounts: tuple[Mount, ...] = ()
    shm_size: str = DEFAULT_SHM
    user: str = field(default_factory=default_user)
    labels: Mapping[str, str] = field(default_factory=dict)
    memory: str | None = None
    cpus: float | None = None
    pids_limit: int = DEFAULT_PIDS
    network: bool = False
    network_mode: str | None = None
    workdir: str | None = None
    log_path: Path | None = None
    init: bool = True
    restarts: int = 0

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise SpecError(
                f"run name {self.name!r} may hold only letters, digits, '_', '.', '-' "
                "and must start with a letter or digit"
            )
        if not self.command:
            raise SpecError("the command is empty")
        if self.network_mode is not None and not _NAME.match(self.network_mode):
            raise SpecError(f"network mode {self.network_mode!r}: expected a name such as host")
        if not _USER.match(self.user):
            raise SpecError(f"user {self.user!r}: expected numeric uid:gid such as 1000:1000")
        if self.user.split(":")[0] == "0":
            raise SpecError("runs never run as root (uid 0); give a regular uid:gid")
        for key, value in (("shm_size", self.shm_size), ("memory", self.memory)):
            if value is not None and not _SIZE.match(value):
                raise SpecError(f"{key} {value!r}: expected a size such as 8g or 512m")
        if self.cpus is not None and self.cpus <= 0:
            raise SpecError(f"cpus {self.cpus}: must be positive")
        if self.pids_limit < 1:
            raise SpecError(f"pids limit {self.pids_limit}: must be positive")
        if self.restarts < 0:
            raise SpecError(f"restarts {self.restarts}: must be 0 or more")
        for gpu in self.gpus:
            if not _GPU_UUID.match(gpu):
                raise SpecError(
                    f"GPU {gpu!r} is not a GPU UUID (GPU-... or MIG-...); runs are pinned "
                    "by UUID because indices differ between NVML, nvidia-smi and CUDA"
                )
        if len(set(self.gpus)) != len(self.gpus):
            raise SpecError(f"GPU list {list(self.gpus)} names a GPU twice")
        for mount in self.mounts:
            mount.check_safe()
        targets = [mount.target for mount in self.mounts]
        if len(set(targets)) != len(targets):
            raise SpecError(f"two mounts share a target in {targets}")

    @property
    def container_name(self) -> str:
        """The container name the docker runtime uses."""
        return CONTAINER_PREFIX + self.name


def own_run_dir(path: Path, user: str) -> None:
    """Create a local run directory writable by the run's ``uid:gid``.

    Runs never run as root, so when seglab itself is root (CI, sudo) the folder is
    handed to the run's user; otherwise it already belongs to the invoking user.
    """
    path.mkdir(parents=True, exist_ok=True)
    if os.getuid() == 0:
        uid, gid = (int(part) for part in user.split(":"))
        os.chown(path, uid, gid)
