"""Datasets (seglab.train.datasets), transforms, samplers and loaders (real files, PNGs)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.recipes import Recipe, load_resolved

torch = pytest.importorskip("torch", reason="the trainer needs the train extra (torch)")

from seglab.train import data  # noqa: E402  (needs torch, skipped above without it)
from seglab.train.datasets import base  # noqa: E402
from seglab.train.labels import IGNORE_INDEX  # noqa: E402

pytestmark = pytest.mark.train

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "recipes" / "synthetic-smoke.yaml"


def smoke(**data_overrides: object) -> Recipe:
    recipe = load_resolved(SMOKE)
    values = recipe.model_dump(mode="json")
    values["data"].update(data_overrides)
    return Recipe.model_validate(values)


def save_pair(image_path: Path, label_path: Path, label: np.ndarray, palette: bool = False) -> None:
    image_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.stack([label, label // 2, 255 - label], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(image_path)
    lab = Image.fromarray(label.astype(np.uint8), mode="L")
    if palette:
        lab = lab.convert("P")
        lab.putpalette([v for i in range(256) for v in (i, i, i)])
    lab.save(label_path)


# -- synthetic --------------------------------------------------------------------------


def test_synthetic_is_deterministic_per_index_and_seed() -> None:
    recipe = smoke()
    first = data.build_dataset(recipe, "val", None)
    again = data.build_dataset(recipe, "val", None)
    image_a, label_a = first.read(3)
    image_b, label_b = again.read(3)
    assert np.array_equal(image_a, image_b) and np.array_equal(label_a, label_b)
    assert not np.array_equal(first.read(4)[1], label_a)  # another index, another sample
    other_seed = recipe.model_copy(update={"train": recipe.train.model_copy(update={"seed": 1})})
    assert not np.array_equal(data.build_dataset(other_seed, "val", None).read(3)[0], image_a)
    assert image_a.shape == (32, 32, 3) and image_a.dtype == np.uint8
    assert label_a.shape == (32, 32) and label_a.dtype == np.uint8


def test_synthetic_draws_every_class_and_colours_them_apart() -> None:
    dataset = data.build_dataset(smoke(), "train", None, train_transform=False)
    counts = np.zeros(4, dtype=np.int64)
    means = {c: [] for c in range(4)}
    for index in range(32):
        image, label = dataset.read(index)
        counts += np.bincount(label.ravel(), minlength=4)
        for c in range(1, 4):
            if (label == c).any():
                means[c].append(image[label == c].mean(axis=0))
    assert (counts > 0).all()
    assert 0.4 < counts[0] / counts.sum() < 0.95  # background dominates, shapes are there
    centres = [np.mean(means[c], axis=0) for c in range(1, 4)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(centres[i] - centres[j]).max() > 60  # each class has its colour


def test_synthetic_split_sizes_and_index_range() -> None:
    recipe = smoke()
    assert len(data.build_dataset(recipe, "train", None)) == 128
    val = data.build_dataset(recipe, "val", None)
    assert len(val) == 32
    with pytest.raises(IndexError):
        val.read(32)


# -- transforms ---------------------------------------------------------------------------


def test_train_transform_pads_with_ignore_and_crops_to_size() -> None:
    torch.manual_seed(0)
    transform = base.TrainTransform(crop=(48, 40), scale_range=(0.5, 0.5), hflip=False)
    image = np.full((40, 40, 3), 255, dtype=np.uint8)
    label = np.full((40, 40), 2, dtype=np.uint8)
    img, lab = transform(image, label)
    assert img.shape == (3, 48, 40) and img.dtype == torch.float32
    assert lab.shape == (48, 40) and lab.dtype == torch.uint8
    # Scaled to 20x20, then padded: the padding is label 255 and image 0 (the mean).
    assert int((lab == 2).sum()) == 20 * 20
    assert int((lab == IGNORE_INDEX).sum()) == 48 * 40 - 400
    pad = lab == IGNORE_INDEX
    assert torch.all(img[:, pad] == 0)
    white = (1 - torch.tensor(base.IMAGENET_MEAN)) / torch.tensor(base.IMAGENET_STD)
    assert torch.allclose(img[:, ~pad].mean(dim=1), white, atol=1e-5)


def test_train_transform_flips_image_and_label_together() -> None:
    transform = base.TrainTransform(crop=(8, 8), scale_range=(1.0, 1.0), hflip=True)
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[:, :2] = 255
    label = np.zeros((8, 8), dtype=np.uint8)
    label[:, :2] = 1
    flipped = 0
    for seed in range(16):
        torch.manual_seed(seed)
        img, lab = transform(image, label)
        bright = img[0] > 0
        assert torch.equal(bright, lab == 1)  # image and label stay aligned
        flipped += int(bool(lab[0, -1] == 1))
    assert 0 < flipped < 16  # some samples flipped, some not


def test_train_transform_at_scale_one_is_an_exact_crop() -> None:
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(30, 50, 3), dtype=np.uint8)
    label = rng.integers(0, 19, size=(30, 50), dtype=np.uint8)
    transform = base.TrainTransform(crop=(16, 24), scale_range=(1.0, 1.0), hflip=False)
    for seed in range(8):
        torch.manual_seed(seed)
        img, lab = transform(image, label)
        # Find the window through the label, then check the image is the same window.
        hits = [
            (y, x)
            for y in range(30 - 16 + 1)
            for x in range(50 - 24 + 1)
            if np.array_equal(label[y : y + 16, x : x + 24], lab.numpy())
        ]
        assert len(hits) == 1
        y, x = hits[0]
        assert torch.allclose(img, base.normalize(image[y : y + 16, x : x + 24]), atol=1e-6)


def test_train_transform_keeps_image_and_label_aligned_at_any_scale() -> None:
    """Blocks of one colour per class: after scaling and cropping, every labelled pixel
    away from a block edge still has its class's colour (one sampling grid for both)."""
    rng = np.random.default_rng(4)
    blocks = rng.integers(0, 19, size=(12, 20))
    label = blocks.repeat(16, axis=0).repeat(16, axis=1).astype(np.uint8)
    colours = rng.integers(0, 256, size=(19, 3)).astype(np.uint8)
    image = colours[label]
    transform = base.TrainTransform(crop=(96, 128), scale_range=(0.5, 2.0))
    mean = torch.tensor(base.IMAGENET_MEAN).view(3, 1, 1) * 255
    std = torch.tensor(base.IMAGENET_STD).view(3, 1, 1) * 255
    for seed in range(12):
        torch.manual_seed(seed)
        img, lab = transform(image, label)
        rgb = img * std + mean
        lab_np = lab.numpy().astype(np.int64)
        inner = np.ones_like(lab_np, dtype=bool)  # pixels whose 5x5 neighbourhood is one class
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                inner &= np.roll(lab_np, (dy, dx), axis=(0, 1)) == lab_np
        inner[:2], inner[-2:], inner[:, :2], inner[:, -2:] = False, False, False, False
        inner &= lab_np != IGNORE_INDEX
        assert inner.sum() > 500
        expected = torch.from_numpy(colours[lab_np[inner]].T.astype(np.float32))
        assert torch.allclose(rgb[:, torch.from_numpy(inner)], expected, atol=1.0)


def test_eval_transform_keeps_full_resolution() -> None:
    image = np.zeros((30, 50, 3), dtype=np.uint8)
    label = np.ones((30, 50), dtype=np.uint8)
    img, lab = base.eval_transform(image, label)
    assert img.shape == (3, 30, 50) and lab.shape == (30, 50)


def test_pad_collate_pads_images_with_zero_and_labels_with_ignore() -> None:
    small = (torch.ones(3, 2, 3), torch.zeros(2, 3, dtype=torch.uint8))
    large = (torch.ones(3, 4, 5), torch.zeros(4, 5, dtype=torch.uint8))
    images, labels = data.pad_collate([small, large])
    assert images.shape == (2, 3, 4, 5) and labels.shape == (2, 4, 5)
    assert float(images[0, :, 2:, :].abs().sum()) == 0
    assert bool((labels[0, :, 3:] == IGNORE_INDEX).all())
    assert bool((labels[1] == 0).all())


# -- samplers ------------------------------------------------------------------------------


def test_rank_sampler_splits_whole_global_batches_across_ranks() -> None:
    ranks = [data.RankSampler(37, rank, 2, seed=3, batch_per_rank=4) for rank in range(2)]
    for sampler in ranks:
        sampler.set_epoch(1)
    assert [s.iters_per_epoch for s in ranks] == [4, 4]  # floor(37 / 8)
    shares = [list(s) for s in ranks]
    assert [len(s) for s in shares] == [16, 16]
    assert not set(shares[0]) & set(shares[1])
    ranks[0].set_epoch(2)
    assert list(ranks[0]) != shares[0]  # a new permutation each epoch
    ranks[0].set_epoch(1, skip_batches=3)
    assert list(ranks[0]) == shares[0][12:]  # resume skips the batches already trained


def test_rank_sampler_for_evaluation_covers_every_sample_once() -> None:
    shares = [list(data.RankSampler(7, rank, 3)) for rank in range(3)]
    assert sorted(i for share in shares for i in share) == list(range(7))


# -- real dataset layouts -------------------------------------------------------------------


def test_cityscapes_maps_raw_label_ids_to_train_ids(tmp_path: Path) -> None:
    raw = np.array([[7, 8, 0, 33], [26, 1, 255, 24]], dtype=np.uint8)
    for split in ("train", "val"):
        save_pair(
            tmp_path / "leftImg8bit" / split / "aachen" / "aachen_000000_000019_leftImg8bit.png",
            tmp_path / "gtFine" / split / "aachen" / "aachen_000000_000019_gtFine_labelIds.png",
            raw,
        )
    recipe = smoke(dataset="cityscapes", synthetic=None)
    dataset = data.build_dataset(recipe, "val", tmp_path)
    image, label = dataset.read(0)
    assert label.tolist() == [[0, 1, 255, 18], [13, 255, 255, 11]]
    assert image.shape == (2, 4, 3)


def test_ade20k_reduces_zero_label(tmp_path: Path) -> None:
    root = tmp_path / "ADEChallengeData2016"
    stored = np.array([[0, 1, 150], [2, 151, 0]], dtype=np.uint8)
    image = root / "images" / "validation" / "ADE_val_00000001.jpg"
    image.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((2, 3, 3), dtype=np.uint8)).save(image)
    label = root / "annotations" / "validation" / "ADE_val_00000001.png"
    label.parent.mkdir(parents=True)
    Image.fromarray(stored, mode="L").save(label)
    dataset = data.build_dataset(smoke(dataset="ade20k", synthetic=None), "val", tmp_path)
    assert dataset.read(0)[1].tolist() == [[255, 0, 149], [1, 255, 255]]


def test_voc_reads_palette_pngs_with_void_border(tmp_path: Path) -> None:
    root = tmp_path / "VOCdevkit" / "VOC2012"
    listing = root / "ImageSets" / "Segmentation" / "val.txt"
    listing.parent.mkdir(parents=True)
    listing.write_text("2007_000033\n")
    stored = np.array([[0, 15, 255], [20, 0, 1]], dtype=np.uint8)
    save_pair(
        root / "JPEGImages" / "2007_000033.jpg",
        root / "SegmentationClass" / "2007_000033.png",
        stored,
        palette=True,
    )
    dataset = data.build_dataset(smoke(dataset="voc", synthetic=None), "val", tmp_path)
    assert dataset.read(0)[1].tolist() == stored.tolist()


def test_missing_dataset_files_are_named(tmp_path: Path) -> None:
    recipe = smoke(dataset="cityscapes", synthetic=None)
    with pytest.raises(
        base.DatasetError,
        match=r"cityscapes images: no directory .*"
        r"leftImg8bit/train",
    ):
        data.build_dataset(recipe, "train", tmp_path)
    save_pair(
        tmp_path / "leftImg8bit" / "train" / "x" / "x_0_0_leftImg8bit.png",
        tmp_path / "elsewhere.png",
        np.zeros((2, 2), dtype=np.uint8),
    )
    (tmp_path / "gtFine" / "train").mkdir(parents=True)
    with pytest.raises(base.DatasetError, match="has no label file"):
        data.build_dataset(recipe, "train", tmp_path)


def test_data_root_comes_from_flag_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = smoke(dataset="ade20k", synthetic=None).data
    monkeypatch.delenv(data.DATA_ROOT_ENV, raising=False)
    with pytest.raises(base.DatasetError, match="--data-root PATH or set SEGLAB_DATA_ROOT"):
        data.resolve_root(cfg, None)
    monkeypatch.setenv(data.DATA_ROOT_ENV, str(tmp_path))
    assert data.resolve_root(cfg, None) == tmp_path
    assert data.resolve_root(cfg, str(tmp_path / ".")) == tmp_path / "."
    assert data.resolve_root(smoke().data, None) is None  # synthetic needs none
    with pytest.raises(base.DatasetError, match="is not a directory"):
        data.resolve_root(cfg, str(tmp_path / "missing"))


# -- loaders --------------------------------------------------------------------------------


def test_shm_check_tells_to_raise_shm_size(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    data.check_shm(free // 2, str(tmp_path))
    with pytest.raises(base.DatasetError, match=r"raise resources\.shm_size"):
        data.check_shm(free + 2**30, str(tmp_path))


def test_build_loaders_refuses_workers_when_shm_is_too_small(tmp_path: Path) -> None:
    recipe = smoke(workers=2, crop=[32, 32])
    # 2 workers x 2 prefetched batches x (8 train + 1 val) samples x 32x32 x 13 bytes.
    assert data.loader_bytes(2, 8, 32, 32) + data.loader_bytes(2, 1, 32, 32) == 479_232
    # Even one worker (they are capped to the cores) prefetching batches of 64 crops of
    # 8192x8192 needs 111 GB: more than tmp_path has free.
    values = smoke(workers=64, crop=[8192, 8192]).model_dump(mode="json")
    values["train"]["batch_size"] = 64
    big = Recipe.model_validate(values)
    with pytest.raises(base.DatasetError, match="shared memory"):
        data.build_loaders(big, None, 0, 1, pin_memory=False, shm_path=str(tmp_path))
    loaders = data.build_loaders(recipe, None, 0, 1, pin_memory=False, shm_path=str(tmp_path))
    assert loaders.iters_per_epoch == 16
    assert loaders.train.persistent_workers
    assert loaders.train.num_workers == min(2, len(os.sched_getaffinity(0)))


def test_global_batch_must_split_over_the_processes() -> None:
    with pytest.raises(base.DatasetError, match=r"batch_size 8 .* not split evenly over 3"):
        data.build_loaders(smoke(), None, 0, 3, pin_memory=False)
    assert data.build_loaders(smoke(), None, 1, 2, pin_memory=False).train.batch_size == 4


def test_loader_batches_have_the_crop_and_uint8_labels() -> None:
    loaders = data.build_loaders(smoke(), None, 0, 1, pin_memory=False)
    images, labels = next(iter(loaders.train))
    assert images.shape == (8, 3, 32, 32) and labels.shape == (8, 32, 32)
    assert labels.dtype == torch.uint8
    assert len(loaders.train) == 16 and len(loaders.val) == 32


def test_worker_processes_yield_the_same_validation_batches() -> None:
    in_process = data.build_loaders(smoke(workers=0), None, 0, 1, pin_memory=False).val
    loaders = data.build_loaders(smoke(workers=2), None, 0, 1, pin_memory=False)
    workers = loaders.val
    assert workers.num_workers == min(2, len(os.sched_getaffinity(0)))
    # Training workers persist across epochs; validation workers only live for one pass.
    assert loaders.train.persistent_workers and not workers.persistent_workers
    for (img_a, lab_a), (img_b, lab_b) in zip(in_process, workers, strict=True):
        assert torch.equal(img_a, img_b) and torch.equal(lab_a, lab_b)


def test_loader_workers_are_capped_to_this_ranks_share_of_the_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert data.loader_workers(0) == 0
    assert data.loader_workers(cores + 7) == cores
    assert data.loader_workers(1) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores * 4))  # more ranks than cores here
    assert data.loader_workers(4) == 1
    recipe = smoke(workers=cores + 3)
    loaders = data.build_loaders(recipe, None, 0, 1, pin_memory=False)
    assert loaders.train.num_workers == loaders.val.num_workers == 1
