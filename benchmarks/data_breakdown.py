"""Where one training sample's CPU goes: decode, transform, normalisation (one thread).

Writes Cityscapes-sized (1024 x 2048) image/label PNGs, then per sample times with
``time.process_time``: reading (PNG decode and the raw-id -> train-id lookup), the training
transform (scale 0.5-2, crop 512x1024, flip, normalise), and normalising one 512x1024 crop
alone (what moving normalisation to the GPU would save). For comparison, the former
transform's first step: the whole frame normalised to float32 and resized at scale 2.

    .venv/bin/python benchmarks/data_breakdown.py --samples 24
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seglab.train.bench import write_cityscapes_pngs
from seglab.train.datasets.base import TrainTransform, normalize, normalize_chw
from seglab.train.datasets.folders import FileDataset, cityscapes_pairs
from seglab.train.labels import label_lut


def main() -> None:
    """Time the parts and print the median per sample."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, default=24, help="samples to time")
    args = parser.parse_args()
    torch.set_num_threads(1)
    parts: dict[str, list[float]] = {
        "read (decode + id lookup)": [],
        "transform (incl. normalise)": [],
        "normalise one crop": [],
        "former: frame float + resize x2": [],
    }
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_cityscapes_pngs(root, 4)
        dataset = FileDataset(
            cityscapes_pairs(root, "train"),
            label_lut("cityscapes"),
            TrainTransform(crop=(512, 1024), scale_range=(0.5, 2.0)),
        )
        assert dataset.transform is not None
        for i in range(args.samples):
            start = time.process_time()
            image, label = dataset.read(i % len(dataset))
            parts["read (decode + id lookup)"].append(time.process_time() - start)
            start = time.process_time()
            dataset.transform(image, label)
            parts["transform (incl. normalise)"].append(time.process_time() - start)
            crop = torch.from_numpy(np.ascontiguousarray(image[:512, :1024]))
            crop = crop.permute(2, 0, 1).contiguous()
            start = time.process_time()
            normalize_chw(crop)
            parts["normalise one crop"].append(time.process_time() - start)
            if i < 3:  # slow: a few are enough
                start = time.process_time()
                F.interpolate(normalize(image)[None], scale_factor=2.0, mode="bilinear")
                parts["former: frame float + resize x2"].append(time.process_time() - start)
    print(f"1024x2048 PNGs, crop 512x1024, one thread, load average {load:.1f}")
    for name, series in parts.items():
        print(f"  {name:<32} {1000 * statistics.median(series):7.2f} ms per sample")


if __name__ == "__main__":
    main()
