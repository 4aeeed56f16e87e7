"""Confusion counts and segmentation metrics in numpy alone (no torch).

`seglab eval` uses this module directly, so scoring prediction files never pays for
importing torch; :mod:`seglab.train.metrics` wraps it for the trainer's tensors.

Definitions (docs/metrics.md), with ``M[t, p]`` the pixels of target class ``t`` predicted
as ``p`` and pixels whose target is the ignore index counted nowhere:

- ``IoU_c = TP / (TP + FP + FN)``; ``None`` where the union is empty (the class is absent
  from both target and prediction);
- ``mIoU`` = mean of the IoUs that exist (the nan-mean of cityscapesscripts and
  mmsegmentation);
- pixel accuracy = correct pixels / counted pixels;
- mean accuracy = mean over classes present in the target of ``TP / (TP + FN)``.

A prediction outside ``0..N-1`` on a counted pixel is a false negative of the target's
class and a false positive of none, as the official Cityscapes script counts it: the
counts carry one extra column, N, for those pixels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Counts = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SegMetrics:
    """The metrics of one evaluation (fractions 0..1; ``None`` where a class is absent)."""

    miou: float | None
    pixel_acc: float | None
    mean_acc: float | None
    per_class_iou: list[float | None]
    per_class_acc: list[float | None]

    def to_dict(self) -> dict[str, Any]:
        """The metrics as a JSON-ready dict (the fields of an ``eval`` event)."""
        return asdict(self)


def _nan_mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return math.fsum(present) / len(present) if present else None


def metrics_from_counts(counts: npt.NDArray[Any]) -> SegMetrics:
    """Metrics from N x (N+1) counts: rows target, columns prediction, column N the pixels
    predicted as no class."""
    n = counts.shape[0]
    m = counts.astype(np.float64)
    tp = np.diagonal(m[:, :n])
    target_total = m.sum(axis=1)
    fn = target_total - tp
    fp = m[:, :n].sum(axis=0) - tp
    union = tp + fp + fn
    ious: list[float | None] = [
        float(t / u) if u > 0 else None for t, u in zip(tp.tolist(), union.tolist(), strict=True)
    ]
    accs: list[float | None] = [
        float(t / c) if c > 0 else None
        for t, c in zip(tp.tolist(), target_total.tolist(), strict=True)
    ]
    total = float(target_total.sum())
    return SegMetrics(
        miou=_nan_mean(ious),
        pixel_acc=float(tp.sum()) / total if total > 0 else None,
        mean_acc=_nan_mean(accs),
        per_class_iou=ious,
        per_class_acc=accs,
    )


def refuse_target(value: int, num_classes: int, ignore_index: int) -> None:
    """Raise for a target id that is neither a class nor the ignore index."""
    raise ValueError(
        f"target holds id {value}, which is neither a class "
        f"(0..{num_classes - 1}) nor the ignore index {ignore_index}"
    )


def count_confusion(
    pred: npt.NDArray[Any], target: npt.NDArray[Any], num_classes: int, ignore_index: int
) -> Counts:
    """N x (N+1) counts of one batch: ``np.bincount(target * (N+1) + pred)`` over the pixels
    whose target is not ignored, a prediction outside ``0..N-1`` in column N.

    Raises ValueError for a target id that is neither a class nor `ignore_index`.
    """
    n = num_classes
    t = target.reshape(-1)
    q = pred.reshape(-1)
    valid = t != ignore_index
    t, q = t[valid], q[valid]
    if t.size and (t.min() < 0 or t.max() >= n):
        bad = t[(t < 0) | (t >= n)]
        refuse_target(int(bad[0]), n, ignore_index)
    if q.size and (q.min() < 0 or q.max() > n):
        q = np.where((q >= 0) & (q < n), q, n)
    index = t.astype(np.intp) * (n + 1) + q
    counts = np.bincount(index, minlength=n * (n + 1))
    return counts.reshape(n, n + 1).astype(np.int64)


def count_raw_ids(
    pred: npt.NDArray[np.uint8], target: npt.NDArray[np.uint8], num_ids: int
) -> Counts:
    """``num_ids`` x ``num_ids`` counts of raw label ids (ids already checked below
    `num_ids`): one bincount over every pixel, no mapping or masking; fold the result with
    :func:`fold_raw_counts`."""
    index = target.astype(np.uint16) * np.uint16(num_ids) + pred
    counts = np.bincount(index.reshape(-1), minlength=num_ids * num_ids)
    return counts.reshape(num_ids, num_ids).astype(np.int64)


def fold_raw_counts(raw: Counts, lut: npt.NDArray[np.uint8], num_classes: int) -> Counts:
    """N x (N+1) class counts from raw-id counts: rows whose target id maps to the ignore
    value (any id ``>= N`` in `lut`) are dropped, columns whose id maps to no class go to N."""
    ids = raw.shape[0]
    rows = lut[:ids].astype(np.intp)
    cols = np.minimum(rows, num_classes)
    out = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    np.add.at(out, (np.minimum(rows, num_classes)[:, None], cols[None, :]), raw)
    return out[:num_classes]
