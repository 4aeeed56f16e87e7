"""Per-frame confusion counting on a 1024 x 2048 frame: seglab eval's way vs the others.

Times, on one Cityscapes-sized pair of raw-id arrays (blocky ground truth, 20 % of the
prediction changed), in interleaved rounds: the official pure-Python path (map to train
ids, encode ``gt * 256 + pred``, ``np.unique`` with counts), the former seglab count
(mapped ids, masked ``np.where`` over every pixel, ``bincount``), and seglab eval's
(``bincount`` of ``gt * 34 + pred`` over the raw ids, folded once per evaluation). Checks
that all three give the same 19-class counts.

    .venv/bin/python benchmarks/eval_counting.py --rounds 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from seglab.train.labels import cityscapes_lut
from seglab.train.scores import count_raw_ids, fold_raw_counts

N = 19


def main() -> None:
    """Time the three counts and print median and spread per frame."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 34, (32, 64)).repeat(32, 0).repeat(32, 1).astype(np.uint8)
    pred = gt.copy()
    noise = rng.random(gt.shape) < 0.2
    pred[noise] = rng.integers(0, 34, int(noise.sum()))
    lut = np.asarray(cityscapes_lut(), dtype=np.uint8)

    def official() -> Any:
        g, p = lut[gt], lut[pred]
        values, counts = np.unique(g.astype(np.int32) * 256 + p, return_counts=True)
        out = np.zeros((N, N + 1), dtype=np.int64)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            row, col = divmod(value, 256)
            if row < N:
                out[row, min(col, N)] += count
        return out

    def former() -> Any:
        g, p = lut[gt].reshape(-1), lut[pred].reshape(-1)
        row = np.where(g != 255, g, N).astype(np.int64)
        counts = np.bincount(row * (N + 1) + np.minimum(p, N), minlength=(N + 1) ** 2)
        return counts.reshape(N + 1, N + 1)[:N]

    def seglab() -> Any:
        return fold_raw_counts(count_raw_ids(pred, gt, 34), lut, N)

    ways: dict[str, Callable[[], Any]] = {
        "official np.unique": official,
        "former seglab": former,
        "seglab eval": seglab,
    }
    reference = seglab()
    for name, way in ways.items():
        if not np.array_equal(way(), reference):
            raise SystemExit(f"{name} counts differently")
    times: dict[str, list[float]] = {name: [] for name in ways}
    load = os.getloadavg()[0]
    for _ in range(args.rounds):
        for name, way in ways.items():
            start = time.perf_counter()
            way()
            times[name].append(time.perf_counter() - start)
    print(f"1024x2048 frame, {args.rounds} interleaved rounds, load average {load:.1f}")
    for name, series in times.items():
        print(
            f"  {name:<20} {1000 * statistics.median(series):6.2f} ms  "
            f"(min {1000 * min(series):.2f}, max {1000 * max(series):.2f})"
        )


if __name__ == "__main__":
    main()
