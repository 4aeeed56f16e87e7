"""`seglab eval`: score prediction PNGs against Cityscapes ground truth.

Ground truth is the Cityscapes layout, ``GT_DIR/<city>/*_gtFine_labelIds.png`` (searched
recursively, so ``gtFine/val`` or its parent also work). Predictions are single-channel PNGs
holding *raw* label ids, as the official benchmark expects, found anywhere under
``PRED_DIR`` and matched by the ``<city>_<sequence>_<frame>`` prefix of their file name (the
official ``getPrediction`` rule). Both are mapped to the 19 train ids; pixels whose ground
truth is an ignored class count nowhere, and a prediction of an ignored class is a miss of
the ground-truth class. The numbers agree with
``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling`` (see docs/metrics.md).

Speed and memory (docs/benchmarks.md): no torch is imported; frames are decoded (libspng)
and counted in worker processes, one ``bincount`` of ``gt * 34 + pred`` over the raw ids per
frame, folded to the 19 classes once at the end; each worker sends back only its 34 x 34
counts and at most two frames per worker are in flight, so memory does not grow with the
number of frames.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from seglab.errors import SeglabError
from seglab.train.labels import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_ID_TO_TRAIN_ID,
    CITYSCAPES_NUM_LABEL_IDS,
    cityscapes_lut,
)
from seglab.train.pngio import ImageReadError, read_label
from seglab.train.scores import (
    Counts,
    SegMetrics,
    count_raw_ids,
    fold_raw_counts,
    metrics_from_counts,
)

GT_SUFFIX = "_gtFine_labelIds.png"
# Frames submitted per decode process before the oldest is collected: enough to keep every
# process busy, few enough that memory does not grow with the number of frames.
_IN_FLIGHT_PER_WORKER = 2


class EvalInputError(SeglabError):
    """The ground truth or the predictions cannot be evaluated (message names the file)."""


@dataclass(frozen=True)
class EvalResult:
    """The outcome of evaluating a prediction set."""

    dataset: str
    images: int
    class_names: tuple[str, ...]
    label_ids: tuple[int, ...]
    metrics: SegMetrics

    def to_json(self) -> dict[str, Any]:
        """The `seglab eval --json` document."""
        m = self.metrics
        return {
            "dataset": self.dataset,
            "images": self.images,
            "miou": m.miou,
            "pixel_acc": m.pixel_acc,
            "mean_acc": m.mean_acc,
            "classes": [
                {"train_id": i, "label_id": lid, "name": name, "iou": iou, "acc": acc}
                for i, (name, lid, iou, acc) in enumerate(
                    zip(
                        self.class_names,
                        self.label_ids,
                        m.per_class_iou,
                        m.per_class_acc,
                        strict=True,
                    )
                )
            ],
        }


def frame_key(name: str) -> str | None:
    """``<city>_<sequence>_<frame>`` of a Cityscapes file name, or None if it has none."""
    parts = Path(name).name.split("_")
    return "_".join(parts[:3]) if len(parts) >= 3 else None


def find_pairs(gt_dir: Path, pred_dir: Path) -> list[tuple[Path, Path]]:
    """(ground truth, prediction) file pairs; every ground-truth frame needs one prediction."""
    if not gt_dir.is_dir():
        raise EvalInputError(f"ground-truth folder not found: {gt_dir}")
    if not pred_dir.is_dir():
        raise EvalInputError(f"prediction folder not found: {pred_dir}")
    gts = sorted(gt_dir.rglob(f"*{GT_SUFFIX}"))
    if not gts:
        raise EvalInputError(
            f"no *{GT_SUFFIX} files under {gt_dir} (expected the Cityscapes "
            f"layout GT_DIR/<city>/<city>_<seq>_<frame>{GT_SUFFIX})"
        )
    predictions: dict[str, list[Path]] = {}
    for path in sorted(pred_dir.rglob("*.png")):
        key = frame_key(path.name)
        if key is not None:
            predictions.setdefault(key, []).append(path)
    pairs = []
    missing = []
    for gt in gts:
        key = frame_key(gt.name)
        found = predictions.get(key or "", [])
        if len(found) > 1:
            raise EvalInputError(
                f"several predictions for {gt.name}: {', '.join(str(p) for p in found)}"
            )
        if not found:
            missing.append(gt.name)
        else:
            pairs.append((gt, found[0]))
    if missing:
        raise EvalInputError(
            f"{len(missing)} of {len(gts)} ground-truth frames have no prediction under "
            f"{pred_dir} (a prediction is a PNG named <city>_<seq>_<frame>*.png), "
            f"e.g. {', '.join(missing[:3])}"
        )
    return pairs


def _read_ids(path: Path) -> npt.NDArray[np.uint8]:
    try:
        array, _ = read_label(path)
    except ImageReadError as exc:
        raise EvalInputError(str(exc)) from exc
    if array.ndim != 2:
        raise EvalInputError(
            f"{path}: expected a single-channel label-id PNG, got shape {array.shape}"
        )
    top = int(array.max()) if array.size else 0
    if top >= CITYSCAPES_NUM_LABEL_IDS or (array.size and int(array.min()) < 0):
        raise EvalInputError(
            f"{path}: holds label id {top}, not a Cityscapes label id "
            f"(0..{CITYSCAPES_NUM_LABEL_IDS - 1}; predictions use raw ids, "
            f"not train ids)"
        )
    return array.astype(np.uint8, copy=False)


def count_frame(pair: tuple[Path, Path]) -> Counts:
    """Raw-id confusion counts (34 x 34) of one (ground truth, prediction) pair."""
    gt_path, pred_path = pair
    gt = _read_ids(gt_path)
    pred = _read_ids(pred_path)
    if gt.shape != pred.shape:
        raise EvalInputError(
            f"{pred_path}: size {pred.shape[::-1]} differs from its ground "
            f"truth {gt_path} {gt.shape[::-1]}"
        )
    return count_raw_ids(pred, gt, CITYSCAPES_NUM_LABEL_IDS)


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0))


def _frame_counts(pairs: list[tuple[Path, Path]], workers: int) -> Iterator[Counts]:
    """Per-frame counts in order, decoded in `workers` processes with a bounded number of
    frames in flight (so memory does not depend on how many frames there are)."""
    if workers <= 1 or len(pairs) < 2:
        yield from map(count_frame, pairs)
        return
    # fork: the workers start in milliseconds with numpy and the decoders already loaded.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: deque[Future[Counts]] = deque()
        for pair in pairs:
            if len(pending) >= workers * _IN_FLIGHT_PER_WORKER:
                yield pending.popleft().result()
            pending.append(pool.submit(count_frame, pair))
        while pending:
            yield pending.popleft().result()


def evaluate_cityscapes(gt_dir: Path, pred_dir: Path, *, workers: int | None = None) -> EvalResult:
    """Score raw-label-id predictions under `pred_dir` against the ground truth in `gt_dir`.

    Frames are decoded and counted in `workers` processes (default: the usable cores).
    """
    pairs = find_pairs(gt_dir, pred_dir)
    raw = np.zeros((CITYSCAPES_NUM_LABEL_IDS, CITYSCAPES_NUM_LABEL_IDS), dtype=np.int64)
    for counts in _frame_counts(pairs, usable_cores() if workers is None else workers):
        raw += counts
    lut = np.asarray(cityscapes_lut(), dtype=np.uint8)
    matrix = fold_raw_counts(raw, lut, len(CITYSCAPES_CLASSES))
    train_to_raw = {train: raw_id for raw_id, train in CITYSCAPES_ID_TO_TRAIN_ID.items()}
    return EvalResult(
        dataset="cityscapes",
        images=len(pairs),
        class_names=CITYSCAPES_CLASSES,
        label_ids=tuple(train_to_raw[i] for i in range(len(CITYSCAPES_CLASSES))),
        metrics=metrics_from_counts(matrix),
    )


def format_result(result: EvalResult) -> str:
    """A human-readable table of per-class IoU and accuracy, and the summary metrics."""

    def pct(value: float | None) -> str:
        return "   n/a" if value is None else f"{100 * value:6.2f}"

    m = result.metrics
    lines = [
        f"{result.dataset}: {result.images} image(s)",
        f"{'class':<16} {'IoU %':>6} {'acc %':>6}",
    ]
    for name, iou, acc in zip(result.class_names, m.per_class_iou, m.per_class_acc, strict=True):
        lines.append(f"{name:<16} {pct(iou)} {pct(acc)}")
    present = sum(v is not None for v in m.per_class_iou)
    lines += [
        f"mIoU           {pct(m.miou)}  (mean over {present} classes present in ground truth "
        "or prediction)",
        f"pixel accuracy {pct(m.pixel_acc)}",
        f"mean accuracy  {pct(m.mean_acc)}",
    ]
    return "\n".join(lines)
