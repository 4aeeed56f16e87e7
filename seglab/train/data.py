"""Datasets, transforms and loaders: Cityscapes, ADE20K, Pascal VOC and synthetic shapes.

Every dataset yields ``(image, label)``: a normalised float32 ``3xHxW`` tensor and a uint8
``HxW`` tensor of train ids with 255 ignored (uint8 keeps /dev/shm traffic small; the loop
widens labels on the device). Training samples are randomly scaled, padded (image with 0,
i.e. the mean after normalisation; labels with 255), cropped and flipped; evaluation samples
are only normalised, at full resolution.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from seglab.recipes import DataConfig, Recipe, SyntheticConfig
from seglab.train.labels import IGNORE_INDEX, label_lut

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DATA_ROOT_ENV = "SEGLAB_DATA_ROOT"
PREFETCH_FACTOR = 2

Sample = tuple[torch.Tensor, torch.Tensor]


class DatasetError(ValueError):
    """Data that cannot be loaded as configured (missing files, wrong layout, batch split)."""


# -- transforms ---------------------------------------------------------------------------


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


def pad_collate(batch: Sequence[Sample]) -> Sample:
    """Stack samples, padding smaller ones (image 0, label 255) to the largest in the batch."""
    height = max(img.shape[1] for img, _ in batch)
    width = max(img.shape[2] for img, _ in batch)
    images, labels = [], []
    for img, lab in batch:
        pad = (0, width - img.shape[2], 0, height - img.shape[1])
        images.append(F.pad(img, pad, value=0.0) if any(pad) else img)
        labels.append(F.pad(lab, pad, value=IGNORE_INDEX) if any(pad) else lab)
    return torch.stack(images), torch.stack(labels)


# -- datasets -----------------------------------------------------------------------------


class SegDataset(Dataset[Sample]):
    """Base of the datasets: `read(index)` gives raw uint8 arrays, the transform the rest."""

    transform: TrainTransform | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The image (HxWx3 uint8) and its train-id label (HxW uint8) of sample `index`."""
        raise NotImplementedError

    def image_size(self, index: int) -> tuple[int, int]:
        """(height, width) of sample `index` before any transform."""
        label = self.read(index)[1]
        return int(label.shape[0]), int(label.shape[1])

    def __getitem__(self, index: int) -> Sample:
        image, label = self.read(index)
        if self.transform is None:
            return eval_transform(image, label)
        return self.transform(image, label)


class FileDataset(SegDataset):
    """Image/label file pairs, with a stored-id -> train-id lookup table."""

    def __init__(self, pairs: list[tuple[Path, Path]], lut: list[int] | None,
                 transform: TrainTransform | None) -> None:
        self.pairs = pairs
        self.lut = None if lut is None else np.asarray(lut, dtype=np.uint8)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.pairs[index]
        with Image.open(image_path) as img:
            image = np.array(img.convert("RGB"))  # writable: torch refuses read-only
        with Image.open(label_path) as lab:
            if lab.mode not in ("L", "P"):
                raise DatasetError(f"{label_path}: expected an 8-bit label PNG (mode L or P), "
                                   f"got mode {lab.mode}")
            label = np.array(lab)
        if label.shape != image.shape[:2]:
            raise DatasetError(f"{label_path}: label size {label.shape[::-1]} differs from "
                               f"image size {image.shape[1::-1]} of {image_path}")
        if self.lut is not None:
            label = self.lut[label]
        return image, label

    def image_size(self, index: int) -> tuple[int, int]:
        with Image.open(self.pairs[index][0]) as img:
            return img.height, img.width


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

    def __init__(self, cfg: SyntheticConfig, split: str, seed: int,
                 transform: TrainTransform | None) -> None:
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
    def _shape_mask(shape: str, grid: tuple[np.ndarray, np.ndarray],
                    centre: tuple[float, float], radius: float,
                    rng: np.random.Generator) -> np.ndarray:
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


# -- building -----------------------------------------------------------------------------


def resolve_root(data: DataConfig, data_root: str | None) -> Path | None:
    """The dataset directory: `--data-root`, else $SEGLAB_DATA_ROOT; None for synthetic."""
    if data.dataset == "synthetic":
        return None
    value = data_root or os.environ.get(DATA_ROOT_ENV)
    if not value:
        raise DatasetError(f"{data.dataset} needs its dataset directory: pass --data-root PATH "
                           f"or set {DATA_ROOT_ENV} (the runtime mounts the host's "
                           f"'{data.root_name}' dataset there)")
    root = Path(value)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is not a directory")
    return root


def build_dataset(recipe: Recipe, split: str, root: Path | None,
                  *, train_transform: bool | None = None) -> SegDataset:
    """The `split` ('train' or 'val') of the recipe's dataset.

    `train_transform` defaults to True for the train split.
    """
    data = recipe.data
    augment = split == "train" if train_transform is None else train_transform
    transform = None
    if augment:
        transform = TrainTransform(
            crop=(data.crop[0], data.crop[1]),
            scale_range=(data.scale_range[0], data.scale_range[1]),
            hflip=data.hflip,
        )
    if data.dataset == "synthetic":
        return SyntheticShapes(data.synthetic or SyntheticConfig(), split, recipe.train.seed,
                               transform)
    if root is None:
        raise DatasetError(f"{data.dataset} needs a dataset root")
    finder = {"cityscapes": cityscapes_pairs, "ade20k": ade20k_pairs, "voc": voc_pairs}
    pairs = finder[data.dataset](root, split)
    if not pairs:
        raise DatasetError(f"{data.dataset}: no {split} samples found under {root}")
    return FileDataset(pairs, label_lut(data.dataset), transform)


class RankSampler(Sampler[int]):
    """This rank's share of an epoch, reproducible from (seed, epoch), resumable mid-epoch.

    Training (`batch_per_rank` given): a seeded permutation cut to a whole number of global
    batches, so every rank runs ``len(dataset) // global_batch`` iterations per epoch;
    rank ``r`` takes positions ``r, r + world, ...``. :meth:`set_epoch` picks the epoch and
    how many of this rank's batches to skip (resume). Evaluation (`batch_per_rank` None):
    dataset order, no sample dropped or repeated (ranks may differ by one sample).
    """

    def __init__(self, size: int, rank: int, world_size: int, *, seed: int = 0,
                 batch_per_rank: int | None = None) -> None:
        self.size = size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.batch_per_rank = batch_per_rank
        self.epoch = 0
        self.skip_batches = 0

    @property
    def iters_per_epoch(self) -> int:
        """Training batches per epoch (equal on every rank)."""
        if self.batch_per_rank is None:
            raise ValueError("an evaluation sampler has no fixed iteration count")
        return self.size // (self.batch_per_rank * self.world_size)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Select the epoch's permutation; skip this rank's first `skip_batches` batches."""
        self.epoch = epoch
        self.skip_batches = skip_batches

    def _indices(self) -> list[int]:
        if self.batch_per_rank is None:
            return list(range(self.rank, self.size, self.world_size))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        used = self.iters_per_epoch * self.batch_per_rank * self.world_size
        mine: list[int] = order[:used][self.rank :: self.world_size]
        return mine[self.skip_batches * self.batch_per_rank :]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())


def _worker_init(worker_id: int) -> None:
    # Each worker decodes and augments one sample at a time: one thread avoids
    # oversubscribing the cores the workers already share.
    torch.set_num_threads(1)
    # A stop signal sent to the whole process group is the trainer's to handle (finish the
    # step, checkpoint); the main process ends its workers itself.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def loader_bytes(workers: int, batch: int, height: int, width: int) -> int:
    """Shared memory a loader's prefetched batches occupy (float32 image + uint8 label)."""
    return workers * PREFETCH_FACTOR * batch * height * width * (3 * 4 + 1)


def check_shm(need_bytes: int, path: str = "/dev/shm") -> None:
    """Raise DatasetError when `path` has less free space than the loaders need."""
    if need_bytes <= 0 or not os.path.isdir(path):
        return
    free = shutil.disk_usage(path).free
    if free < need_bytes:
        raise DatasetError(
            f"the data loaders need about {need_bytes / 2**20:.0f} MiB of shared memory but "
            f"{path} has only {free / 2**20:.0f} MiB free: raise resources.shm_size in the "
            "recipe (e.g. 8g), or lower data.workers or the batch size")


@dataclass
class Loaders:
    """The train and validation loaders of one rank, with the train sampler."""

    train: DataLoader[Sample]
    val: DataLoader[Sample]
    sampler: RankSampler

    @property
    def iters_per_epoch(self) -> int:
        """Iterations per epoch (the same on every rank)."""
        return self.sampler.iters_per_epoch


def build_loaders(recipe: Recipe, root: Path | None, rank: int, world_size: int,
                  *, pin_memory: bool, shm_path: str = "/dev/shm") -> Loaders:
    """Datasets, samplers and DataLoaders for one rank; checks /dev/shm before workers start."""
    train_set = build_dataset(recipe, "train", root)
    val_set = build_dataset(recipe, "val", root)
    if recipe.train.batch_size % world_size:
        raise DatasetError(f"train.batch_size {recipe.train.batch_size} (the global batch) does "
                           f"not split evenly over {world_size} processes")
    batch = recipe.train.batch_size // world_size
    sampler = RankSampler(len(train_set), rank, world_size, seed=recipe.train.seed,
                          batch_per_rank=batch)
    if sampler.iters_per_epoch == 0:
        raise DatasetError(f"the train split has {len(train_set)} samples, fewer than one "
                           f"global batch of {recipe.train.batch_size}")
    workers = recipe.data.workers
    val_h, val_w = val_set.image_size(0)
    crop_h, crop_w = recipe.data.crop
    check_shm(loader_bytes(workers, batch, crop_h, crop_w)
              + loader_bytes(workers, recipe.train.val_batch_size, val_h, val_w), shm_path)
    common: dict[str, object] = {"num_workers": workers, "pin_memory": pin_memory}
    if workers > 0:
        common.update(persistent_workers=True, prefetch_factor=PREFETCH_FACTOR,
                      worker_init_fn=_worker_init)
    train = DataLoader(train_set, batch_size=batch, sampler=sampler, drop_last=True,
                       **common)  # type: ignore[arg-type]
    val_sampler = RankSampler(len(val_set), rank, world_size)
    val = DataLoader(val_set, batch_size=recipe.train.val_batch_size, sampler=val_sampler,
                     collate_fn=pad_collate, **common)  # type: ignore[arg-type]
    return Loaders(train=train, val=val, sampler=sampler)
