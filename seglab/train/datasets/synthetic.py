"""The synthetic dataset: random shapes on textured, noisy backgrounds (no files)."""

from __future__ import annotations

import math

import numpy as np

from seglab.recipes import SyntheticConfig
from seglab.train.datasets.base import SegDataset, TrainTransform

_SHAPES = ("circle", "rectangle", "triangle")


def _palette(num_classes: int) -> np.ndarray:
    """One saturated colour per shape class (row 0, the background, is unused)."""
    colours = np.zeros((num_classes, 3), dtype=np.float32)
    for c in range(1, num_classes):
        hue = (c - 1) / (num_classes - 1) * 6.0
        x = 1.0 - abs(hue % 2.0 - 1.0)
        sector = int(hue) % 6
        rgb = [(1, x, 0), (x, 1, 0), (0, 1, x), (0, x, 1), (x, 0, 1), (1, 0, x)][sector]
        colours[c] = 40 + 180 * np.asarray(rgb, dtype=np.float32)
    return colours


class SyntheticShapes(SegDataset):
    """Random circles, rectangles and triangles on textured, noisy backgrounds.

    Class 0 is the background; shape class ``c >= 1`` has the shape ``_SHAPES[(c-1) % 3]``
    and a colour of its own (jittered), so a small network learns it in about a minute on
    CPU. Sample ``index`` of a split is the same for every run with the same ``seed``.
    """

    def __init__(
        self, cfg: SyntheticConfig, split: str, seed: int, transform: TrainTransform | None
    ) -> None:
        self.size = cfg.train_size if split == "train" else cfg.val_size
        self.height, self.width = cfg.image_size
        self.num_classes = cfg.num_classes
        self.split_code = 0 if split == "train" else 1
        self.seed = seed
        self.transform = transform
        self.palette = _palette(self.num_classes)

    def __len__(self) -> int:
        return self.size

    def image_size(self, index: int) -> tuple[int, int]:
        return self.height, self.width

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < self.size:
            raise IndexError(f"synthetic sample {index} out of range 0..{self.size - 1}")
        rng = np.random.default_rng((self.seed, self.split_code, index))
        h, w = self.height, self.width
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        texture = np.zeros((h, w), dtype=np.float32)
        for _ in range(3):
            freq = rng.uniform(0.05, 0.4)
            angle = rng.uniform(0, math.pi)
            phase = rng.uniform(0, 2 * math.pi)
            texture += np.sin(freq * (xx * math.cos(angle) + yy * math.sin(angle)) + phase)
        tint = rng.uniform(70, 170, size=3).astype(np.float32)
        image: np.ndarray = tint[None, None, :] + 18.0 * texture[..., None]
        label = np.zeros((h, w), dtype=np.uint8)
        side = min(h, w)
        for _ in range(int(rng.integers(2, 5))):
            cls = int(rng.integers(1, self.num_classes))
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            radius = rng.uniform(0.12, 0.3) * side
            mask = self._shape_mask(_SHAPES[(cls - 1) % 3], (yy, xx), (cy, cx), radius, rng)
            colour = self.palette[cls] + rng.uniform(-20, 20, size=3).astype(np.float32)
            image[mask] = colour
            label[mask] = cls
        image += rng.normal(0.0, 12.0, size=image.shape).astype(np.float32)
        return np.clip(image, 0, 255).astype(np.uint8), label

    @staticmethod
    def _shape_mask(
        shape: str,
        grid: tuple[np.ndarray, np.ndarray],
        centre: tuple[float, float],
        radius: float,
        rng: np.random.Generator,
    ) -> np.ndarray:
        yy, xx = grid
        cy, cx = centre
        if shape == "circle":
            return np.asarray((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2)
        if shape == "rectangle":
            half_h, half_w = radius * rng.uniform(0.5, 1.0), radius * rng.uniform(0.5, 1.0)
            return np.asarray((np.abs(yy - cy) <= half_h) & (np.abs(xx - cx) <= half_w))
        start = rng.uniform(0, 2 * math.pi)
        angles = start + np.array([0.0, 2.1, 4.2]) + rng.uniform(-0.3, 0.3, size=3)
        vy, vx = cy + radius * np.sin(angles), cx + radius * np.cos(angles)
        signs = []
        for i in range(3):
            j = (i + 1) % 3
            signs.append((vx[j] - vx[i]) * (yy - vy[i]) - (vy[j] - vy[i]) * (xx - vx[i]))
        stacked = np.stack(signs)
        return np.asarray((stacked >= 0).all(axis=0) | (stacked <= 0).all(axis=0))
