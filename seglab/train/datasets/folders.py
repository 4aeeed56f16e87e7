"""Datasets stored as image/label files: Cityscapes, ADE20K and Pascal VOC layouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from seglab.train.datasets.base import DatasetError, SegDataset, TrainTransform
from seglab.train.pngio import ImageReadError, read_label, read_rgb
from seglab.train.pngio import image_size as file_image_size


class FileDataset(SegDataset):
    """Image/label file pairs, with a stored-id -> train-id lookup table."""

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        lut: list[int] | None,
        transform: TrainTransform | None,
    ) -> None:
        self.pairs = pairs
        self.lut = None if lut is None else np.asarray(lut, dtype=np.uint8)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, index: int) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        image_path, label_path = self.pairs[index]
        try:
            image = read_rgb(image_path)
            label, mode = read_label(label_path)
        except ImageReadError as exc:
            raise DatasetError(str(exc)) from exc
        if mode not in ("L", "P"):
            raise DatasetError(
                f"{label_path}: expected an 8-bit label PNG (mode L or P), got mode {mode}"
            )
        if label.shape != image.shape[:2]:
            raise DatasetError(
                f"{label_path}: label size {label.shape[::-1]} differs from "
                f"image size {image.shape[1::-1]} of {image_path}"
            )
        if self.lut is not None:
            label = self.lut[label]
        return image, label

    def image_size(self, index: int) -> tuple[int, int]:
        try:
            return file_image_size(self.pairs[index][0])
        except ImageReadError as exc:
            raise DatasetError(str(exc)) from exc


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what}: no directory {path}")
    return path


def cityscapes_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """`leftImg8bit/SPLIT/CITY/*_leftImg8bit.png` with `gtFine/.../*_gtFine_labelIds.png`."""
    images = _require_dir(root / "leftImg8bit" / split, "cityscapes images")
    labels = _require_dir(root / "gtFine" / split, "cityscapes labels")
    pairs = []
    for image in sorted(images.glob("*/*_leftImg8bit.png")):
        stem = image.name.removesuffix("_leftImg8bit.png")
        label = labels / image.parent.name / f"{stem}_gtFine_labelIds.png"
        if not label.is_file():
            raise DatasetError(f"cityscapes: {image} has no label file {label}")
        pairs.append((image, label))
    return pairs


def ade20k_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """`[ADEChallengeData2016/]images/{training,validation}/*.jpg` with `annotations/*.png`."""
    if not (root / "images").is_dir() and (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    folder = {"train": "training", "val": "validation"}[split]
    images = _require_dir(root / "images" / folder, "ade20k images")
    labels = _require_dir(root / "annotations" / folder, "ade20k annotations")
    pairs = []
    for image in sorted(images.glob("*.jpg")):
        label = labels / f"{image.stem}.png"
        if not label.is_file():
            raise DatasetError(f"ade20k: {image} has no annotation {label}")
        pairs.append((image, label))
    return pairs


def voc_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """VOC2012 ids of `ImageSets/Segmentation/SPLIT.txt`: JPEGImages + SegmentationClass."""
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "ImageSets" / "Segmentation").is_dir():
            root = candidate
            break
    else:
        raise DatasetError(f"voc: no VOC2012/ImageSets/Segmentation under {root}")
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise DatasetError(f"voc: no split file {listing}")
    pairs = []
    for name in listing.read_text().split():
        image = root / "JPEGImages" / f"{name}.jpg"
        label = root / "SegmentationClass" / f"{name}.png"
        for path in (image, label):
            if not path.is_file():
                raise DatasetError(f"voc: {listing} lists {name} but {path} is missing")
        pairs.append((image, label))
    return pairs
