"""`seglab model summary`: parameter counts and compute of a model at an input size.

Compute is counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass of a
``1 x 3 x H x W`` input in eval mode (every head that runs in ``forward`` is included, so the
aux head counts when enabled). FlopCounterMode counts 2 FLOPs per multiply-add of the
convolutions and matrix products (normalisation, activations and resizing are not
counted). We report both:

- ``gmacs``: multiply-adds / 1e9 — the convention of torchvision's published "GFLOPS"
  (``deeplabv3_resnet50``: 178.722 at 520 x 520, which this counts as 178.72 GMACs);
- ``gflops``: 2 x ``gmacs``, the FlopCounterMode figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from seglab.recipes import ModelConfig
from seglab.train.models import build_model


@dataclass(frozen=True)
class ModelSummary:
    """Size and compute of one model configuration."""

    arch: str
    backbone: str
    output_stride: int
    aux_loss: bool
    num_classes: int
    input_size: tuple[int, int]
    parameters: int
    trainable_parameters: int
    parameters_by_part: dict[str, int]
    gmacs: float

    @property
    def gflops(self) -> float:
        """FLOPs / 1e9, counting a multiply-add as two."""
        return 2 * self.gmacs

    def to_json(self) -> dict[str, Any]:
        """The `--json` form of one model (snake_case, numbers as numbers)."""
        return {
            "arch": self.arch,
            "backbone": self.backbone,
            "output_stride": self.output_stride,
            "aux_loss": self.aux_loss,
            "num_classes": self.num_classes,
            "input_size": list(self.input_size),
            "parameters": self.parameters,
            "trainable_parameters": self.trainable_parameters,
            "parameters_by_part": self.parameters_by_part,
            "gmacs": round(self.gmacs, 3),
            "gflops": round(self.gflops, 3),
        }


def _parts(model: nn.Module) -> dict[str, int]:
    """Parameters per top-level child (backbone, heads, decoder)."""
    return {
        name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()
    }


def count_macs(model: nn.Module, height: int, width: int) -> float:
    """Multiply-adds (in units of 1e9) of one forward pass at `height` x `width`."""
    counter = FlopCounterMode(display=False)
    x = torch.zeros(1, 3, height, width)
    with torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops() / 2 / 1e9


def summarize(cfg: ModelConfig, num_classes: int, size: tuple[int, int]) -> ModelSummary:
    """Build the model of `cfg` (random init, no weights file) and measure it at `size`."""
    height, width = size
    if height <= 0 or width <= 0:
        raise ValueError(f"input size must be positive, got {height}x{width}")
    model = build_model(cfg.model_copy(update={"pretrained_backbone": None}), num_classes)
    model.eval()
    return ModelSummary(
        arch=cfg.arch,
        backbone=cfg.backbone,
        output_stride=cfg.output_stride,
        aux_loss=cfg.aux_loss,
        num_classes=num_classes,
        input_size=(height, width),
        parameters=sum(p.numel() for p in model.parameters()),
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        parameters_by_part=_parts(model),
        gmacs=count_macs(model, height, width),
    )


def format_summary(summary: ModelSummary, title: str | None = None) -> str:
    """A human-readable block for one model."""
    s = summary
    head = title or f"{s.arch} {s.backbone}"
    parts = ", ".join(f"{name} {count:,}" for name, count in s.parameters_by_part.items())
    return "\n".join(
        [
            f"{head}: output stride {s.output_stride}, {s.num_classes} classes, aux head "
            f"{'on' if s.aux_loss else 'off'}",
            f"  parameters  {s.parameters:,} ({parts})",
            f"  compute     {s.gmacs:,.2f} GMACs at {s.input_size[0]}x{s.input_size[1]} "
            f"= {s.gflops:,.2f} GFLOPs (2 per multiply-add; torchvision's 'GFLOPS' are GMACs)",
        ]
    )
