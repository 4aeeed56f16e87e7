"""What a run is made of, independent of where it runs: its id, labels, trainer command,
resolved recipe, and the registry status a runtime state maps to."""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

import yaml

from seglab import __version__
from seglab.registry import RunRecord, RunStatus
from seglab.runtime import RuntimeState

if TYPE_CHECKING:
    from seglab import recipes

FAILED_TAIL = 20  # log lines kept in the registry for a failed run


@dataclass(frozen=True)
class Submitted:
    """The outcome of submitting one variant: started, or queued with the reason."""

    record: RunRecord
    queued_because: str | None = None


def new_run_id(recipe: str, variant: recipes.Variant) -> str:
    """``<recipe>.<variant slug>.<6 hex>``: unique, readable, fit for container names."""
    return f"{recipe}.{variant.slug}.{secrets.token_hex(3)}"


def labels_for(record: RunRecord) -> dict[str, str]:
    """The labels every run carries, by which a later seglab finds it again."""
    return {
        "seglab.run_id": record.run_id,
        "seglab.recipe": record.recipe,
        "seglab.variant": record.variant,
        "seglab.recipe_sha": record.recipe_sha,
        "seglab.gpus": ",".join(record.gpus),
        "seglab.version": __version__,
        "seglab.host": record.host,
        "seglab.run_dir": record.run_dir,
        "seglab.created_at": f"{record.created_at:.3f}",  # recovered by a registry rebuild
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
    """The resolved recipe a run was started with (frozen; parsed once per run and sha)."""
    return _parse_recipe(record.run_id, record.recipe_sha, record.resolved_recipe)


@functools.lru_cache(maxsize=256)
def _parse_recipe(run_id: str, sha: str, text: str) -> recipes.Recipe:
    """The recipe of ``text`` (``run_id`` and ``sha`` key the cache with it)."""
    from seglab import recipes  # its pydantic models cost start-up; `ps` may need none

    return recipes.Recipe.model_validate(yaml.safe_load(text))


def status_from(state: RuntimeState, ended_as: str | None) -> RunStatus:
    """The registry status for what the runtime says (``ended_as``: the status of the end
    event of the run's latest attempt, None while it has none). A container its engine is
    about to start again (Docker's ``restarting``) is ``running`` here, so still RUNNING."""
    if state.status == "created":
        return RunStatus.STARTING
    if state.status in ("running", "paused"):
        return RunStatus.RUNNING
    if state.status == "dead":
        return RunStatus.LOST
    if state.oom_killed:
        return RunStatus.OOM_KILLED
    if ended_as == "stopped":
        # The trainer checkpointed and said so. Its exit status is non-zero on purpose
        # (128 + the signal, so that an engine's restart policy brings back a run the
        # engine's shutdown stopped; torchrun's own is 1): the end event tells a clean stop.
        return RunStatus.STOPPED
    if state.exit_code == 0:
        return RunStatus.FINISHED
    return RunStatus.FAILED
