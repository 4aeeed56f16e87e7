"""Prediction samples: a fixed set of validation images drawn at every evaluation.

The trainer keeps ``train.samples`` (K) validation images, spread evenly over the split by
index alone (:func:`sample_indices`), so every variant of a grid shows the same images.
Their predictions are captured from the evaluation itself (no extra forward pass); at the
end of each evaluation the main rank writes, per image, under
``samples/iter_<N>/``:

- ``<id>_pred.png``: the prediction in the dataset's palette (:mod:`seglab.train.palettes`);
- ``<id>_overlay.png``: that colour blended half and half over the image;
- ``<id>_error.png``: :data:`ERROR_COLOURS` (correct, wrong, ignored) against the ground
  truth;

then ``index.json`` (the ``samples`` event's payload). ``samples/reference/`` holds each
image and its ground truth in colour once per run. Every file is written to a temporary name
and renamed into place, so a reader never sees a partial PNG; ``index.json`` comes last.
Images wider or taller than :data:`MAX_SIDE` are stored downscaled (the counts are taken at
full resolution).
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist
from PIL import Image

from seglab.train.datasets.base import SegDataset
from seglab.train.datasets.folders import FileDataset
from seglab.train.distributed import DistContext
from seglab.train.labels import IGNORE_INDEX
from seglab.train.palettes import colourise, palette

SAMPLES_DIR = "samples"
REFERENCE_DIR = "reference"
INDEX_FILE = "index.json"
VIEWS = ("pred", "overlay", "error")
MAX_SIDE = 512
"""Longest side of a stored sample image, in pixels."""

ERROR_COLOURS = {"correct": (40, 160, 70), "wrong": (220, 40, 40), "ignored": (0, 0, 0)}
"""The error map's colours (RGB)."""

U8 = npt.NDArray[np.uint8]


def sample_indices(size: int, count: int) -> list[int]:
    """`count` indices spread evenly over a split of `size` samples (all when it is smaller);
    they depend on nothing else, so every variant picks the same ones."""
    if count >= size:
        return list(range(size))
    return [(i * size) // count for i in range(count)]


def sample_id(dataset: SegDataset, index: int) -> str:
    """A file-name-safe name of validation sample `index` (the image file's stem)."""
    if isinstance(dataset, FileDataset):
        return dataset.pairs[index][0].stem.removesuffix("_leftImg8bit")
    return f"val_{index:05d}"


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary name beside `path`, then rename it into place."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)


def encode_png(rgb: U8) -> bytes:
    """An HxWx3 uint8 array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def shrink_grid(height: int, width: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Nearest-neighbour row and column indices that bring the longest side to MAX_SIDE."""
    scale = min(1.0, MAX_SIDE / max(height, width))
    rows = (np.arange(max(1, round(height * scale))) / scale).astype(np.intp)
    cols = (np.arange(max(1, round(width * scale))) / scale).astype(np.intp)
    return np.minimum(rows, height - 1), np.minimum(cols, width - 1)


def error_counts(pred: U8, label: U8) -> dict[str, int]:
    """Pixels predicted correctly, wrongly, and ignored (label 255) in `label`."""
    ignored = label == IGNORE_INDEX
    correct = int(np.count_nonzero((pred == label) & ~ignored))
    skipped = int(np.count_nonzero(ignored))
    return {"correct": correct, "wrong": label.size - correct - skipped, "ignored": skipped}


_ERROR_TABLE = np.array(
    [ERROR_COLOURS["correct"], ERROR_COLOURS["wrong"], ERROR_COLOURS["ignored"]], dtype=np.uint8
)


def error_map(pred: U8, label: U8) -> U8:
    """The error map's colours of `pred` against `label` (:data:`ERROR_COLOURS`)."""
    code = np.where(label == IGNORE_INDEX, 2, (pred != label).astype(np.uint8))
    return _ERROR_TABLE[code]


@dataclass
class Reference:
    """One sample's ground truth (full resolution), its display grid, and the image and
    ground truth on that grid."""

    index: int
    name: str
    label: U8
    grid: tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]
    small_image: U8
    small_label: U8


class SampleWriter:
    """Captures the samples' predictions during an evaluation and writes them after it."""

    def __init__(
        self,
        dataset: SegDataset,
        dataset_name: str,
        num_classes: int,
        count: int,
        run_dir: Path,
    ) -> None:
        self.dataset = dataset
        self.palette_name = dataset_name
        self.table = palette(dataset_name, num_classes)
        self.indices = sample_indices(len(dataset), count)
        self.root = run_dir / SAMPLES_DIR
        self._wanted = set(self.indices)
        self._refs: dict[int, Reference] = {}
        self._preds: dict[int, U8] = {}

    def _reference(self, index: int) -> Reference:
        ref = self._refs.get(index)
        if ref is None:
            image, label = self.dataset.read(index)
            rows, cols = grid = shrink_grid(*label.shape)
            name = sample_id(self.dataset, index)
            small = (image[np.ix_(rows, cols)], label[np.ix_(rows, cols)])
            ref = Reference(index, name, label, grid, *small)
            self._refs[index] = ref
        return ref

    def capture(self, indices: list[int], pred: torch.Tensor) -> None:
        """Keep the predictions (a padded N x H x W batch) of the samples among `indices`."""
        for row, index in enumerate(indices):
            if index in self._wanted:
                height, width = self.dataset.image_size(index)
                self._preds[index] = pred[row, :height, :width].to(torch.uint8).cpu().numpy()

    def collect(self, ctx: DistContext) -> dict[int, U8]:
        """Every rank's captured predictions, on the main rank (a collective); clears them."""
        mine, self._preds = self._preds, {}
        if not ctx.distributed:
            return mine
        parts: list[dict[int, U8]] | None = (
            [{} for _ in range(ctx.world_size)] if ctx.is_main else None
        )
        dist.gather_object(mine, parts, dst=ctx.main_rank)
        merged: dict[int, U8] = {}
        for part in parts or []:
            merged.update(part)
        return merged

    def write(self, iteration: int, preds: dict[int, U8], tb: Any) -> dict[str, Any]:
        """Write the samples of `iteration` (and TensorBoard images); the event payload."""
        start = time.perf_counter()
        folder = self.root / f"iter_{iteration}"
        folder.mkdir(parents=True, exist_ok=True)
        images = []
        for index in self.indices:
            ref = self._reference(index)
            self._write_reference(ref)
            rows, cols = ref.grid
            pred = preds[index]
            counts = error_counts(pred, ref.label)
            small = pred[np.ix_(rows, cols)]
            small_pred = colourise(small, self.table)
            overlay = ((ref.small_image.astype(np.uint16) + small_pred) // 2).astype(np.uint8)
            error = error_map(small, ref.small_label)
            views = {"pred": small_pred, "overlay": overlay, "error": error}
            for view, rgb in views.items():
                write_atomic(folder / f"{ref.name}_{view}.png", encode_png(rgb))
            if tb is not None:
                stack = np.stack([views[v] for v in VIEWS])
                tb.add_images(f"samples/{ref.name}", stack, iteration, dataformats="NHWC")
            images.append(
                {
                    "id": ref.name,
                    "index": index,
                    "size": [int(ref.label.shape[0]), int(ref.label.shape[1])],
                    **counts,
                }
            )
        payload: dict[str, Any] = {
            "iter": iteration,
            "dir": f"{SAMPLES_DIR}/{folder.name}",
            "palette": self.palette_name,
            "views": list(VIEWS),
            "images": images,
        }
        payload["seconds"] = round(time.perf_counter() - start, 6)
        write_atomic(folder / INDEX_FILE, json.dumps(payload, indent=1).encode())
        return payload

    def _write_reference(self, ref: Reference) -> None:
        folder = self.root / REFERENCE_DIR
        image_path = folder / f"{ref.name}_image.png"
        if image_path.is_file():
            return
        folder.mkdir(parents=True, exist_ok=True)
        gt = colourise(ref.small_label, self.table)
        write_atomic(folder / f"{ref.name}_gt.png", encode_png(gt))
        write_atomic(image_path, encode_png(ref.small_image))
