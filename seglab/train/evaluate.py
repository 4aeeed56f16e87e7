"""`seglab eval`: score prediction PNGs against Cityscapes ground truth.

Ground truth is the Cityscapes layout, ``GT_DIR/<city>/*_gtFine_labelIds.png`` (searched
recursively, so ``gtFine/val`` or its parent also work). Predictions are single-channel PNGs
holding *raw* label ids, as the official benchmark expects, found anywhere under
``PRED_DIR`` and matched by the ``<city>_<sequence>_<frame>`` prefix of their file name (the
official ``getPrediction`` rule). Both are mapped to the 19 train ids; pixels whose ground
truth is an ignored class count nowhere, and a prediction of an ignored class is a miss of
the ground-truth class. The numbers agree with
``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling`` (see docs/metrics.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from seglab.train.labels import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_ID_TO_TRAIN_ID,
    CITYSCAPES_NUM_LABEL_IDS,
    cityscapes_lut,
)
from seglab.train.metrics import ConfusionMatrix, SegMetrics

GT_SUFFIX = "_gtFine_labelIds.png"
_LOADERS = 4


class EvalInputError(ValueError):
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


def _read_ids(path: Path) -> np.ndarray[Any, np.dtype[np.uint8]]:
    try:
        with Image.open(path) as image:
            array = np.asarray(image)
    except OSError as exc:
        raise EvalInputError(f"cannot read {path}: {exc}") from exc
    if array.ndim != 2:
        raise EvalInputError(
            f"{path}: expected a single-channel label-id PNG, got shape {array.shape}"
        )
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            raise EvalInputError(f"{path}: label ids must lie in 0..255")
        array = array.astype(np.uint8)
    top = int(array.max()) if array.size else 0
    if top >= CITYSCAPES_NUM_LABEL_IDS:
        raise EvalInputError(
            f"{path}: holds label id {top}, not a Cityscapes label id "
            f"(0..{CITYSCAPES_NUM_LABEL_IDS - 1}; predictions use raw ids, "
            f"not train ids)"
        )
    return array


def _load_pair(
    pair: tuple[Path, Path], lut: np.ndarray[Any, np.dtype[np.uint8]]
) -> tuple[np.ndarray[Any, np.dtype[np.uint8]], np.ndarray[Any, np.dtype[np.uint8]]]:
    gt_path, pred_path = pair
    gt = _read_ids(gt_path)
    pred = _read_ids(pred_path)
    if gt.shape != pred.shape:
        raise EvalInputError(
            f"{pred_path}: size {pred.shape[::-1]} differs from its ground "
            f"truth {gt_path} {gt.shape[::-1]}"
        )
    return lut[gt], lut[pred]


def _mapped_pairs(
    pairs: list[tuple[Path, Path]],
) -> Iterator[tuple[np.ndarray[Any, np.dtype[np.uint8]], np.ndarray[Any, np.dtype[np.uint8]]]]:
    lut = np.asarray(cityscapes_lut(), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=_LOADERS) as pool:
        yield from pool.map(lambda pair: _load_pair(pair, lut), pairs)


def evaluate_cityscapes(gt_dir: Path, pred_dir: Path) -> EvalResult:
    """Score raw-label-id predictions under `pred_dir` against the ground truth in `gt_dir`."""
    pairs = find_pairs(gt_dir, pred_dir)
    cm = ConfusionMatrix(len(CITYSCAPES_CLASSES))
    for gt, pred in _mapped_pairs(pairs):
        cm.update(torch.from_numpy(pred), torch.from_numpy(gt))
    train_to_raw = {train: raw for raw, train in CITYSCAPES_ID_TO_TRAIN_ID.items()}
    return EvalResult(
        dataset="cityscapes",
        images=len(pairs),
        class_names=CITYSCAPES_CLASSES,
        label_ids=tuple(train_to_raw[i] for i in range(len(CITYSCAPES_CLASSES))),
        metrics=cm.compute(),
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
