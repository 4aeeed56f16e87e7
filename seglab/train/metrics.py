"""The trainer's confusion matrix: counts of torch tensors on any device, summed over ranks.

The metric definitions and the numpy counting live in :mod:`seglab.train.scores` (no torch,
so `seglab eval` can use them alone); this wraps them for tensors: CPU tensors are counted
with numpy's ``bincount`` (several times faster than torch's on CPU), device tensors with
``torch.bincount`` on the device.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from seglab.train.labels import IGNORE_INDEX
from seglab.train.scores import SegMetrics, count_confusion, metrics_from_counts, refuse_target

__all__ = ["ConfusionMatrix", "SegMetrics"]


class ConfusionMatrix:
    """An accumulating confusion matrix of ``num_classes`` classes (int64, on any device)."""

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        device: torch.device | str | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        # Column N counts the pixels predicted as no class (outside 0..N-1).
        self._counts = torch.zeros((num_classes, num_classes + 1), dtype=torch.int64, device=device)

    @property
    def matrix(self) -> torch.Tensor:
        """The N x N counts: rows are target classes, columns predicted classes."""
        return self._counts[:, : self.num_classes]

    @property
    def missed(self) -> torch.Tensor:
        """Per target class, the pixels predicted as an id outside ``0..N-1``."""
        return self._counts[:, self.num_classes]

    def reset(self) -> None:
        """Zero all counts."""
        self._counts.zero_()

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Count one batch of predicted and target class ids (same shape, any layout).

        Raises ValueError when the shapes differ or a target id is neither a class nor the
        ignore index (a label-mapping bug that would silently skew every metric).
        """
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}"
            )
        if pred.device.type == "cpu" and target.device.type == "cpu":
            counts = torch.from_numpy(
                count_confusion(pred.numpy(), target.numpy(), self.num_classes, self.ignore_index)
            )
        else:
            counts = self._bincount_torch(pred, target)
        self._counts += counts.to(self._counts.device)

    def _bincount_torch(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """N x (N+1) counts in torch on the tensors' device (GPU evaluation); row N of the
        bincount collects the ignored targets and is dropped."""
        n = self.num_classes
        t = target.reshape(-1)
        q = pred.reshape(-1).to(t.device)
        counted = t != self.ignore_index
        bad = counted & ((t < 0) | (t >= n))
        if bool(bad.any()):
            refuse_target(int(t[bad][0]), n, self.ignore_index)
        row = torch.where(counted, t, n).to(torch.int64)
        col = torch.where((q >= 0) & (q < n), q, n).to(torch.int64)
        counts = torch.bincount(row * (n + 1) + col, minlength=(n + 1) * (n + 1))
        return counts.reshape(n + 1, n + 1)[:n]

    def all_reduce(self) -> None:
        """Sum the counts over all ranks when torch.distributed is initialised (else no-op).

        Every rank must call it (a collective); with NCCL the matrix must be on the rank's
        GPU.
        """
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self._counts, op=dist.ReduceOp.SUM)

    def compute(self) -> SegMetrics:
        """The metrics of everything counted so far."""
        return metrics_from_counts(self._counts.cpu().numpy())
