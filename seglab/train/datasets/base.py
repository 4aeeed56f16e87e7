"""What every dataset shares: the sample type, errors, the base class and the transforms.

Every dataset yields ``(image, label)``: a normalised float32 ``3xHxW`` tensor and a uint8
``HxW`` tensor of train ids with 255 ignored (uint8 keeps /dev/shm traffic small; the loop
widens labels on the device). Training samples are randomly scaled, padded (image with 0,
i.e. the mean after normalisation; labels with 255), cropped and flipped; evaluation samples
are only normalised, at full resolution.

The training transform works on uint8 until the last step and resizes only the part of the
image the crop keeps: it draws the scale and the crop window in the scaled frame, cuts the
source region that window needs, resizes that region (bilinear for the image, nearest for
labels, one sampling grid for both), pads, flips, and normalises the crop alone. For a
512x1024 crop of a 1024x2048 image at scale 2 that resizes 0.5 Mpixel instead of 8 and
normalises 0.5 Mpixel instead of 2 (docs/benchmarks.md).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from seglab.errors import ConfigurationError
from seglab.train.labels import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Sample = tuple[torch.Tensor, torch.Tensor]
_MEAN_255 = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255
_STD_255 = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255


class DatasetError(ConfigurationError):
    """Data that cannot be loaded as configured (missing files, wrong layout, batch split)."""


def normalize_chw(image: torch.Tensor) -> torch.Tensor:
    """3xHxW uint8 -> 3xHxW float32, ImageNet mean/std normalised."""
    return image.float().sub_(_MEAN_255).div_(_STD_255)


def normalize(image: npt.NDArray[Any]) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float32, ImageNet mean/std normalised."""
    return normalize_chw(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))


def _axis_window(
    size: int, scaled: int, start: int, length: int
) -> tuple[int, int, float, npt.NDArray[np.intp]]:
    """One axis of a crop: output `length` pixels from `start` in a frame scaled from `size`
    to `scaled` pixels. Returns the source region (first index, count), the scale factor,
    and the nearest-neighbour source index (region-relative) of every output pixel."""
    factor = scaled / size
    first = min(math.floor(start / factor), size - 1)
    count = min(size - first, math.ceil(length / factor) + 2)
    centres = (np.arange(length) + 0.5) / factor
    nearest = np.minimum(centres.astype(np.intp), count - 1)
    return first, count, factor, nearest


@dataclass(frozen=True)
class TrainTransform:
    """Random scale in `scale_range`, pad to `crop`, random crop, optional horizontal flip."""

    crop: tuple[int, int]
    scale_range: tuple[float, float]
    hflip: bool = True

    def __call__(self, image: npt.NDArray[Any], label: npt.NDArray[Any]) -> Sample:
        low, high = self.scale_range
        scale = low + (high - low) * float(torch.rand(()))
        height, width = label.shape
        scaled = (max(1, round(height * scale)), max(1, round(width * scale)))
        crop_h, crop_w = self.crop
        top = int(torch.randint(0, max(scaled[0], crop_h) - crop_h + 1, ()))
        left = int(torch.randint(0, max(scaled[1], crop_w) - crop_w + 1, ()))
        # The part of the crop inside the scaled image; the rest is padding.
        out_h, out_w = min(crop_h, scaled[0] - top), min(crop_w, scaled[1] - left)
        y0, rows, fy, near_y = _axis_window(height, scaled[0], top, out_h)
        x0, cols, fx, near_x = _axis_window(width, scaled[1], left, out_w)
        region = torch.from_numpy(np.ascontiguousarray(image[y0 : y0 + rows, x0 : x0 + cols]))
        region = region.permute(2, 0, 1)[None]  # channels-last uint8: torch's fast path
        if (fy, fx) != (1.0, 1.0):
            region = F.interpolate(
                region,
                scale_factor=(fy, fx),
                mode="bilinear",
                align_corners=False,
                recompute_scale_factor=False,
            )
        # Rounding can leave the resized region a pixel short of the window: pad there.
        out_h, out_w = min(out_h, region.shape[2]), min(out_w, region.shape[3])
        img = torch.zeros((3, crop_h, crop_w), dtype=torch.uint8)
        img[:, :out_h, :out_w] = region[0, :, :out_h, :out_w]
        lab = torch.full((crop_h, crop_w), IGNORE_INDEX, dtype=torch.uint8)
        source = label[y0 : y0 + rows, x0 : x0 + cols]
        lab[:out_h, :out_w] = torch.from_numpy(source[np.ix_(near_y[:out_h], near_x[:out_w])])
        out = normalize_chw(img)
        out[:, out_h:] = 0.0  # padding is the mean: 0 after normalisation
        out[:, :, out_w:] = 0.0
        if self.hflip and float(torch.rand(())) < 0.5:
            out, lab = out.flip(-1), lab.flip(-1)
        return out, lab


def eval_transform(image: npt.NDArray[Any], label: npt.NDArray[Any]) -> Sample:
    """Full resolution: normalisation only."""
    return normalize(image), torch.from_numpy(np.ascontiguousarray(label))


class SegDataset(Dataset[Sample], abc.ABC):
    """Base of the datasets: `read(index)` gives raw uint8 arrays, the transform the rest."""

    transform: TrainTransform | None = None

    @abc.abstractmethod
    def __len__(self) -> int:
        """How many samples the split has."""

    @abc.abstractmethod
    def read(self, index: int) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """The image (HxWx3 uint8) and its train-id label (HxW uint8) of sample `index`."""

    def image_size(self, index: int) -> tuple[int, int]:
        """(height, width) of sample `index` before any transform."""
        label = self.read(index)[1]
        return int(label.shape[0]), int(label.shape[1])

    def __getitem__(self, index: int) -> Sample:
        image, label = self.read(index)
        if self.transform is None:
            return eval_transform(image, label)
        return self.transform(image, label)
