"""What every dataset shares: the sample type, errors, the base class and the transforms.

Every dataset yields ``(image, label)``: a normalised float32 ``3xHxW`` tensor and a uint8
``HxW`` tensor of train ids with 255 ignored (uint8 keeps /dev/shm traffic small; the loop
widens labels on the device). Training samples are randomly scaled, padded (image with 0,
i.e. the mean after normalisation; labels with 255), cropped and flipped; evaluation samples
are only normalised, at full resolution.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from seglab.train.labels import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Sample = tuple[torch.Tensor, torch.Tensor]


class DatasetError(ValueError):
    """Data that cannot be loaded as configured (missing files, wrong layout, batch split)."""


def normalize(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float32, ImageNet mean/std normalised."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return tensor.sub_(mean).div_(std)


@dataclass(frozen=True)
class TrainTransform:
    """Random scale in `scale_range`, pad to `crop`, random crop, optional horizontal flip."""

    crop: tuple[int, int]
    scale_range: tuple[float, float]
    hflip: bool = True

    def __call__(self, image: np.ndarray, label: np.ndarray) -> Sample:
        img = normalize(image)
        lab = torch.from_numpy(np.ascontiguousarray(label))
        low, high = self.scale_range
        scale = low + (high - low) * float(torch.rand(()))
        height, width = lab.shape
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        if size != (height, width):
            img = F.interpolate(img[None], size=size, mode="bilinear", align_corners=False)[0]
            lab = F.interpolate(lab[None, None].float(), size=size, mode="nearest")[0, 0]
            lab = lab.to(torch.uint8)
        crop_h, crop_w = self.crop
        pad_h, pad_w = max(crop_h - size[0], 0), max(crop_w - size[1], 0)
        if pad_h or pad_w:
            img = F.pad(img, (0, pad_w, 0, pad_h), value=0.0)
            lab = F.pad(lab, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        top = int(torch.randint(0, img.shape[1] - crop_h + 1, ()))
        left = int(torch.randint(0, img.shape[2] - crop_w + 1, ()))
        img = img[:, top : top + crop_h, left : left + crop_w]
        lab = lab[top : top + crop_h, left : left + crop_w]
        if self.hflip and float(torch.rand(())) < 0.5:
            img, lab = img.flip(-1), lab.flip(-1)
        return img.contiguous(), lab.contiguous()


def eval_transform(image: np.ndarray, label: np.ndarray) -> Sample:
    """Full resolution: normalisation only."""
    return normalize(image), torch.from_numpy(np.ascontiguousarray(label))


class SegDataset(Dataset[Sample], abc.ABC):
    """Base of the datasets: `read(index)` gives raw uint8 arrays, the transform the rest."""

    transform: TrainTransform | None = None

    @abc.abstractmethod
    def __len__(self) -> int:
        """How many samples the split has."""

    @abc.abstractmethod
    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
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
