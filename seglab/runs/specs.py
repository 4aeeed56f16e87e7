"""Launch specs: the part every runtime shares, then each runtime's own part (where the
run dir and the dataset are seen from, which Python runs the trainer, where the log goes)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seglab import multinode
from seglab.errors import RunError
from seglab.hosts import Host
from seglab.kinds import RuntimeKind
from seglab.registry import RunRecord
from seglab.runs.hostio import HostIO
from seglab.runs.records import labels_for, trainer_command
from seglab.runtime import LaunchSpec, Mount
from seglab.runtime.spec import ENGINE_RESTARTS

if TYPE_CHECKING:
    from seglab import recipes

RUN_MOUNT = "/seglab/run"  # the run directory inside a container
DATA_MOUNT = "/seglab/data"  # the dataset root inside a container (read-only)
DATA_ENV = "SEGLAB_DATA_ROOT"


@dataclass(frozen=True)
class SpecParts:
    """What a runtime's spec builder starts from."""

    host: Host
    run_dir: Path
    dataset: str | None  # the dataset root on the host (None: synthetic data)
    env: dict[str, str]
    common: Mapping[str, Any]  # LaunchSpec fields every runtime sets alike
    command: Callable[[str, str], tuple[str, ...]]  # (python, run dir as seen) -> argv
    member: bool = False  # one member of a multi-node run


def docker_spec(parts: SpecParts) -> LaunchSpec:
    """A container: the run dir and dataset mounted at fixed paths, the image's python3.

    Its engine starts it again after an engine restart (``ENGINE_RESTARTS``); not a
    member of a multi-node run, which cannot rejoin its peers alone (`seglab resume`
    starts every member again).
    """
    mounts = [Mount(parts.run_dir, RUN_MOUNT, read_only=False)]
    env = dict(parts.env)
    if parts.dataset is not None:
        mounts.append(Mount(Path(parts.dataset), DATA_MOUNT, read_only=True))
        env[DATA_ENV] = DATA_MOUNT
    return LaunchSpec(
        command=parts.command("python3", RUN_MOUNT),
        env=env,
        mounts=tuple(mounts),
        workdir=RUN_MOUNT,
        restarts=0 if parts.member else ENGINE_RESTARTS,
        **parts.common,
    )


def slurm_spec(parts: SpecParts) -> LaunchSpec:
    """A Slurm job: host paths as they are, the cluster's Python, the log in the run dir."""
    env = dict(parts.env)
    mounts = [Mount(parts.run_dir, str(parts.run_dir), read_only=False)]
    if parts.dataset is not None:
        env[DATA_ENV] = parts.dataset
        mounts.append(Mount(Path(parts.dataset), parts.dataset, read_only=True))
    slurm = parts.host.slurm
    return LaunchSpec(
        command=parts.command(slurm.python if slurm is not None else "python3", str(parts.run_dir)),
        env=env,
        mounts=tuple(mounts),
        log_path=parts.run_dir / "train.log",
        workdir=str(parts.run_dir),
        **parts.common,
    )


def process_spec(parts: SpecParts) -> LaunchSpec:
    """A detached process on this machine: this Python, the log in the run dir. Started
    again after a reboot took it down (``ENGINE_RESTARTS``, not for a member of a
    multi-node run), when seglab next looks at it."""
    env = dict(parts.env)
    if parts.dataset is not None:
        env[DATA_ENV] = parts.dataset
    return LaunchSpec(
        command=parts.command(sys.executable, str(parts.run_dir)),
        env=env,
        log_path=parts.run_dir / "train.log",
        workdir=str(parts.run_dir),
        restarts=0 if parts.member else ENGINE_RESTARTS,
        **parts.common,
    )


SPEC_BUILDERS: Mapping[RuntimeKind, Callable[[SpecParts], LaunchSpec]] = {
    RuntimeKind.DOCKER: docker_spec,
    RuntimeKind.SLURM: slurm_spec,
    RuntimeKind.PROCESS: process_spec,
}


def build_spec(
    io: HostIO,
    record: RunRecord,
    recipe: recipes.Recipe,
    host: Host,
    *,
    kind: RuntimeKind,
    run_dir: Path,
    member: tuple[multinode.Rendezvous, int] | None = None,
) -> LaunchSpec:
    """The launch spec of a run (or of member ``member[1]`` of a multi-node run); its run
    dir is prepared on the host (owner, recipe.yaml)."""
    dataset: str | None = None
    if recipe.data.dataset != "synthetic":
        dataset = host.dataset_root(recipe.data.root_name)
        if not io.is_dir(host, dataset):
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
        "user": io.run_user(host),
        "shm_size": recipe.resources.shm_size,
        "labels": labels,
        "memory": recipe.resources.memory,
        "cpus": recipe.resources.cpus,
        "pids_limit": recipe.resources.pids,
        "network": network is True,
        "network_mode": "host" if network == "host" else None,
    }
    nproc = len(record.gpus) or recipe.resources.gpus

    def command(python: str, folder: str) -> tuple[str, ...]:
        if member is None:
            return trainer_command(python, folder, nproc)
        return member[0].command(python, folder, nproc, member[1])

    parts = SpecParts(host, run_dir, dataset, env, common, command, member is not None)
    spec = SPEC_BUILDERS[kind](parts)
    # Only a container runs as another user (spec.user); a process or Slurm job runs as
    # the user who launched it, so its run dir stays theirs.
    owner = spec.user if kind is RuntimeKind.DOCKER else None
    io.prepare_run_dir(host, run_dir, owner, record.resolved_recipe)
    return spec
