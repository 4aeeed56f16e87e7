"""Launch-time resource checks: a run that cannot fit is refused before anything starts.

Disk: the run's host needs room for the checkpoints it keeps (``last.pt`` and ``best.pt``,
each the weights plus the optimizer state) and its logs. Memory: the recipe's activation
estimate (:func:`seglab.recipes.estimate_activation_bytes`, a floor of a training step's
peak) must fit in the smallest chosen GPU's memory, as telemetry reports it, or in the
host's RAM for a CPU run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from seglab.errors import RunError
from seglab.scheduler import Placement
from seglab.telemetry.sample import HostState

if TYPE_CHECKING:
    from seglab import recipes

# Parameters of seglab's networks by backbone (DeepLabV3/V3+ heads included), rounded up.
_PARAMETERS = {"resnet18": 16_000_000, "resnet34": 26_000_000, "resnet50": 42_000_000}
_DEFAULT_PARAMETERS = 64_000_000  # resnet101 and anything larger
_STATE_COPIES = 3  # fp32 weights plus up to two optimizer moments per weight
CHECKPOINTS_KEPT = 2  # last.pt and best.pt
LOG_BYTES = 256 * 2**20  # train.log, events.jsonl, samples and TensorBoard files
GIB = 2**30


def checkpoint_bytes(recipe: recipes.Recipe) -> int:
    """The size of one checkpoint of ``recipe``'s model (weights and optimizer state)."""
    return _PARAMETERS.get(recipe.model.backbone, _DEFAULT_PARAMETERS) * 4 * _STATE_COPIES


def disk_need(recipe: recipes.Recipe) -> int:
    """Bytes a run of ``recipe`` writes into its run dir: the checkpoints kept, and logs."""
    return checkpoint_bytes(recipe) * CHECKPOINTS_KEPT + LOG_BYTES


def check_disk(recipe: recipes.Recipe, host: str, run_dir: Path) -> None:
    """RunError unless the file system of a local ``run_dir`` has room for the run."""
    folder = run_dir
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    need = disk_need(recipe)
    if free < need:
        raise RunError(
            f"not enough space for the run on {host}: {folder} has {free / GIB:.2f} GiB free, "
            f"the run needs about {need / GIB:.2f} GiB ({CHECKPOINTS_KEPT} checkpoints of "
            f"{checkpoint_bytes(recipe) / GIB:.2f} GiB, and logs)",
            "free some space (seglab rm --purge old runs) or move the host's runs_root",
        )


def _smallest_gpu(placement: Placement, state: HostState | None) -> tuple[str, float] | None:
    """(name, MiB) of the chosen GPU with the least memory, when telemetry says."""
    if state is None:
        return None
    sizes = [
        (f"{placement.host}:{gpu.index}", float(gpu.memory_total_mib))
        for gpu in state.gpus
        if gpu.uuid in placement.gpus and gpu.memory_total_mib
    ]
    return min(sizes, key=lambda item: item[1]) if sizes else None


def _host_ram(placement: Placement, state: HostState | None, local: bool) -> float | None:
    """The host's RAM in MiB (telemetry, or this machine's for a local host)."""
    if state is not None and state.host_sample is not None and state.host_sample.memory_total_mib:
        return state.host_sample.memory_total_mib
    if local:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    return None


def check_memory(
    recipe: recipes.Recipe,
    placements: Sequence[Placement],
    states: Mapping[str, HostState],
    local: Mapping[str, bool],
) -> None:
    """RunError when the activations of one training rank cannot fit where it is placed."""
    from seglab import recipes

    need = recipes.estimate_activation_bytes(recipe)
    for placement in placements:
        state = states.get(placement.host)
        if placement.gpus:
            found = _smallest_gpu(placement, state)
            where = f"GPU {found[0]}" if found else ""
            have = found[1] if found else None
        else:
            have = _host_ram(placement, state, local.get(placement.host, False))
            where = f"the RAM of {placement.host}"
        if have is None or need <= have * 2**20:
            continue
        height, width = recipe.data.crop
        raise RunError(
            f"the recipe cannot fit: one training rank keeps about {need / GIB:,.1f} GiB of "
            f"activations (batch {recipe.train.batch_size} over {recipe.resources.world_size} "
            f"rank(s), crop {height}x{width}), but {where} has {have / 1024:,.1f} GiB",
            "lower train.batch_size or data.crop, or set train.amp: bf16",
        )
