"""Loading for training: the dataset root, datasets by recipe, rank samplers, DataLoaders.

The datasets themselves live in :mod:`seglab.train.datasets`. Training batches are
stacked crops; evaluation batches are full-resolution images padded to the largest in the
batch (image 0, label 255). Worker processes are capped to this rank's share of the cores
the process may use; training workers persist across epochs, validation workers live for
one evaluation. Before they start, the shared memory their prefetched batches need is
checked against the free space on /dev/shm.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler

from seglab.recipes import DataConfig, Recipe, SyntheticConfig
from seglab.train.datasets.base import DatasetError, Sample, SegDataset, TrainTransform
from seglab.train.datasets.folders import FileDataset, ade20k_pairs, cityscapes_pairs, voc_pairs
from seglab.train.datasets.synthetic import SyntheticShapes
from seglab.train.labels import IGNORE_INDEX, label_lut

DATA_ROOT_ENV = "SEGLAB_DATA_ROOT"
PREFETCH_FACTOR = 2


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


def resolve_root(data: DataConfig, data_root: str | None) -> Path | None:
    """The dataset directory: `--data-root`, else $SEGLAB_DATA_ROOT; None for synthetic."""
    if data.dataset == "synthetic":
        return None
    value = data_root or os.environ.get(DATA_ROOT_ENV)
    if not value:
        raise DatasetError(
            f"{data.dataset} needs its dataset directory: pass --data-root PATH "
            f"or set {DATA_ROOT_ENV} (the runtime mounts the host's "
            f"'{data.root_name}' dataset there)"
        )
    root = Path(value)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is not a directory")
    return root


def build_dataset(
    recipe: Recipe, split: str, root: Path | None, *, train_transform: bool | None = None
) -> SegDataset:
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
        return SyntheticShapes(
            data.synthetic or SyntheticConfig(), split, recipe.train.seed, transform
        )
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

    def __init__(
        self,
        size: int,
        rank: int,
        world_size: int,
        *,
        seed: int = 0,
        batch_per_rank: int | None = None,
    ) -> None:
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


def worker_init(worker_id: int) -> None:
    """Set up a DataLoader worker: one math thread, stop signals left to the trainer."""
    # Each worker decodes and augments one sample at a time: one thread avoids
    # oversubscribing the cores the workers already share.
    torch.set_num_threads(1)
    # A stop signal sent to the whole process group is the trainer's to handle (finish the
    # step, checkpoint); the main process ends its workers itself.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def loader_workers(requested: int) -> int:
    """Worker processes for this rank: `requested`, capped to this rank's share of the cores
    the process may run on (its affinity mask over the ranks on this node)."""
    if requested == 0:
        return 0
    local_ranks = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    share = max(len(os.sched_getaffinity(0)) // local_ranks, 1)
    return min(requested, share)


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
            "recipe (e.g. 8g), or lower data.workers or the batch size"
        )


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


def build_loaders(
    recipe: Recipe,
    root: Path | None,
    rank: int,
    world_size: int,
    *,
    pin_memory: bool,
    shm_path: str = "/dev/shm",
) -> Loaders:
    """Datasets, samplers and DataLoaders for one rank; checks /dev/shm before workers start."""
    train_set = build_dataset(recipe, "train", root)
    val_set = build_dataset(recipe, "val", root)
    if recipe.train.batch_size % world_size:
        raise DatasetError(
            f"train.batch_size {recipe.train.batch_size} (the global batch) does "
            f"not split evenly over {world_size} processes"
        )
    batch = recipe.train.batch_size // world_size
    sampler = RankSampler(
        len(train_set), rank, world_size, seed=recipe.train.seed, batch_per_rank=batch
    )
    if sampler.iters_per_epoch == 0:
        raise DatasetError(
            f"the train split has {len(train_set)} samples, fewer than one "
            f"global batch of {recipe.train.batch_size}"
        )
    workers = loader_workers(recipe.data.workers)
    val_h, val_w = val_set.image_size(0)
    crop_h, crop_w = recipe.data.crop
    check_shm(
        loader_bytes(workers, batch, crop_h, crop_w)
        + loader_bytes(workers, recipe.train.val_batch_size, val_h, val_w),
        shm_path,
    )
    common: dict[str, object] = {"num_workers": workers, "pin_memory": pin_memory}
    if workers > 0:
        common.update(prefetch_factor=PREFETCH_FACTOR, worker_init_fn=worker_init)
    train = DataLoader(
        train_set,
        batch_size=batch,
        sampler=sampler,
        drop_last=True,
        persistent_workers=workers > 0,
        **common,  # type: ignore[arg-type]
    )
    # Validation workers start for each evaluation and end with it: between evaluations
    # (thousands of iterations) they would only hold memory and shared-memory batches.
    val_sampler = RankSampler(len(val_set), rank, world_size)
    val = DataLoader(
        val_set,
        batch_size=recipe.train.val_batch_size,
        sampler=val_sampler,
        collate_fn=pad_collate,
        **common,  # type: ignore[arg-type]
    )
    return Loaders(train=train, val=val, sampler=sampler)
