"""Throughput of `seglab eval` vs the official cityscapesscripts evaluation, same data, same run.

Generates N Cityscapes-sized (1024 x 2048) ground-truth / prediction PNG pairs in a temporary
folder, evaluates them with ``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling``
(in-process, nIoU off) and with ``seglab.train.evaluate.evaluate_cityscapes``, prints frames
per second of each, their ratio, and the largest per-class IoU difference (must be ~0).

    .venv/bin/python benchmarks/eval_cityscapes.py --frames 20
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def _generate(root: Path, frames: int, seed: int = 0) -> tuple[Path, Path]:
    from cityscapesscripts.helpers.labels import labels

    rng = np.random.default_rng(seed)
    ids = np.array([lb.id for lb in labels if lb.id >= 0])
    gt_dir, pred_dir = root / "gtFine" / "val", root / "results"
    for i in range(frames):
        city = ("frankfurt", "lindau", "munster")[i % 3]
        stem = f"{city}_{i:06d}_000019"
        gt = rng.choice(ids, size=(32, 64)).repeat(32, axis=0).repeat(32, axis=1)
        pred = gt.copy()
        noise = rng.random(gt.shape) < 0.2
        pred[noise] = rng.choice(ids, size=int(noise.sum()))
        (gt_dir / city).mkdir(parents=True, exist_ok=True)
        pred_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gt.astype(np.uint8)).save(gt_dir / city / f"{stem}_gtFine_labelIds.png")
        Image.fromarray(pred.astype(np.uint8)).save(pred_dir / f"{stem}_pred.png")
    return gt_dir, pred_dir


def _official(root: Path, gt_dir: Path, pred_dir: Path) -> tuple[dict[str, Any], float, bool]:
    os.environ["CITYSCAPES_DATASET"] = str(root)
    os.environ["CITYSCAPES_RESULTS"] = str(pred_dir)
    module = importlib.import_module("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    args = module.args
    args.evalInstLevelScore = False
    args.JSONOutput = False
    args.quiet = True
    gts = sorted(str(p) for p in gt_dir.rglob("*_gtFine_labelIds.png"))
    start = time.perf_counter()
    preds = [module.getPrediction(args, gt) for gt in gts]
    result = module.evaluateImgLists(preds, gts, args)
    return result, time.perf_counter() - start, bool(module.CSUPPORT)


def main() -> None:
    """Run both evaluations on the same generated frames and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20, help="frame pairs to generate")
    args = parser.parse_args()
    from seglab.train.evaluate import evaluate_cityscapes

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        gt_dir, pred_dir = _generate(root, args.frames)
        ref, official_s, cython = _official(root, gt_dir, pred_dir)
        start = time.perf_counter()
        ours = evaluate_cityscapes(gt_dir, pred_dir)
        ours_s = time.perf_counter() - start
    diffs = [
        abs(iou - ref["classScores"][name])
        for name, iou in zip(ours.class_names, ours.metrics.per_class_iou, strict=True)
        if iou is not None
    ]
    absent_agree = all(
        math.isnan(ref["classScores"][n]) == (v is None)
        for n, v in zip(ours.class_names, ours.metrics.per_class_iou, strict=True)
    )
    n = args.frames
    print(f"{n} frames of 1024x2048, {os.cpu_count()} CPUs")
    print(
        f"cityscapesscripts ({'cython' if cython else 'pure Python'} path): "
        f"{official_s:7.2f} s  {n / official_s:6.2f} frames/s"
    )
    print(f"seglab eval:                       {ours_s:7.2f} s  {n / ours_s:6.2f} frames/s")
    print(f"speed-up seglab / official: {official_s / ours_s:.1f}x")
    print(
        f"max per-class IoU difference: {max(diffs):.2e}; absent classes agree: {absent_agree}; "
        f"mIoU {ours.metrics.miou:.6f} vs {ref['averageScoreClasses']:.6f}"
    )


if __name__ == "__main__":
    main()
