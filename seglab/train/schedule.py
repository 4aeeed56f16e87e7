"""Learning-rate schedules stepped every iteration: poly (with optional linear warm-up)."""

from __future__ import annotations

import torch

from seglab.recipes import ScheduleConfig


def lr_factor(cfg: ScheduleConfig, base_lr: float, it: int, total_iters: int) -> float:
    """The multiplier of `base_lr` for iteration `it` (0-based) of `total_iters`.

    poly: ``(1 - it/total)^power``, rescaled so the rate ends at ``min_lr``; constant: 1.
    Warm-up ramps linearly from ``warmup_ratio`` to 1 over the first ``warmup_iters``.
    """
    if cfg.name == "poly":
        progress = min(it, total_iters) / max(total_iters, 1)
        floor = cfg.min_lr / base_lr
        factor = float((1.0 - progress) ** cfg.power) * (1.0 - floor) + floor
    else:
        factor = 1.0
    if it < cfg.warmup_iters:
        ramp = it / cfg.warmup_iters
        factor *= cfg.warmup_ratio + (1.0 - cfg.warmup_ratio) * ramp
    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_iters: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying :func:`lr_factor`; call ``step()`` once per iteration."""
    base_lr = float(optimizer.param_groups[0]["lr"])
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(cfg, base_lr, it, total_iters)
    )
