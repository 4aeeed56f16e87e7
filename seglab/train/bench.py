"""Benchmarks: training throughput vs an fp32/NCHW/eager baseline, and data-loader speed.

:func:`bench_train` trains the recipe's model on random batches twice in one process:
once as configured (AMP, channels_last, torch.compile as the recipe says) and once as the
baseline (fp32, NCHW, eager), and reports img/s, peak memory and the ratio. Peak memory is
CUDA's max allocated on a GPU, else the process's peak RSS (reset between the two phases
through /proc/self/clear_refs).

:func:`bench_data` writes Cityscapes-sized (1024x2048) image/label PNGs to a temporary
directory and measures, on the same files, the training pipeline's decoded and augmented
samples per CPU-second against torchvision's reference segmentation transforms, then the
samples per second a DataLoader with worker processes yields.
"""

from __future__ import annotations

import ctypes
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, RandomSampler

from seglab.recipes import Recipe
from seglab.train.data import worker_init
from seglab.train.datasets.base import IMAGENET_MEAN, IMAGENET_STD, TrainTransform
from seglab.train.datasets.folders import FileDataset, cityscapes_pairs
from seglab.train.labels import IGNORE_INDEX, label_lut, num_classes
from seglab.train.loop import amp_dtype, optimizer_for, segmentation_loss
from seglab.train.models import build_model

CITYSCAPES_SIZE = (1024, 2048)


@dataclass(frozen=True)
class TrainBench:
    """Throughput and peak memory of one training configuration."""

    label: str
    device: str
    batch: int
    crop: list[int]
    amp: str
    channels_last: bool
    compile: bool
    steps: int
    img_per_s: float
    peak_mem_mib: float | None
    memory_kind: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def _reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return
    if sys.platform.startswith("linux"):
        # Hand freed heap back to the OS so the next phase starts from a fair RSS, then
        # reset the kernel's peak-RSS mark (VmHWM): "5" in clear_refs does exactly that.
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")


def _peak_mib(device: torch.device) -> tuple[float | None, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024, "cpu_peak_rss"
    return None, "unavailable"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_train_bench(
    recipe: Recipe, *, steps: int, warmup: int, batch: int, device: torch.device, baseline: bool
) -> TrainBench:
    """Train `steps` timed iterations (after `warmup` untimed ones) on random batches."""
    train = recipe.train
    amp = None if baseline else amp_dtype(recipe)
    channels_last = train.channels_last and not baseline
    compiled = train.compile and not baseline
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(train.seed)
    classes = num_classes(recipe.data)
    # Throughput does not depend on the starting weights: skip the pretrained file.
    model_cfg = recipe.model.model_copy(update={"pretrained_backbone": None})
    net = build_model(model_cfg, classes).to(device).to(memory_format=fmt).train()
    model = torch.compile(net) if compiled else net
    optimizer = optimizer_for(recipe, iter(net.parameters()))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    height, width = recipe.data.crop
    images = torch.randn(batch, 3, height, width, device=device).contiguous(memory_format=fmt)
    target = torch.randint(0, classes, (batch, height, width), device=device)
    target[:, :4] = IGNORE_INDEX
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = train.cudnn_benchmark and not baseline
    _reset_peak(device)
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = segmentation_loss(model(images), target, train.aux_weight)
        optimizer.zero_grad(set_to_none=True)
        scaled: torch.Tensor = scaler.scale(loss)
        scaled.backward()  # type: ignore[no-untyped-call]
        scaler.step(optimizer)
        scaler.update()
    _sync(device)
    seconds = time.perf_counter() - start
    peak, kind = _peak_mib(device)
    del model, net, optimizer, images, target
    return TrainBench(
        label="baseline" if baseline else "config",
        device=str(device),
        batch=batch,
        crop=[height, width],
        amp="none" if amp is None else train.amp,
        channels_last=channels_last,
        compile=compiled,
        steps=steps,
        img_per_s=batch * steps / seconds,
        peak_mem_mib=peak,
        memory_kind=kind,
    )


def bench_train(
    recipe: Recipe, *, steps: int = 20, warmup: int = 3, batch: int | None = None
) -> dict[str, Any]:
    """The configured run and the fp32/NCHW/eager baseline, with their ratios.

    `batch` defaults to the per-GPU batch (``train.batch_size / resources.gpus``).
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    per_device = batch or max(recipe.train.batch_size // recipe.resources.gpus, 1)
    config = run_train_bench(
        recipe, steps=steps, warmup=warmup, batch=per_device, device=device, baseline=False
    )
    base = run_train_bench(
        recipe, steps=steps, warmup=warmup, batch=per_device, device=device, baseline=True
    )
    memory_ratio = None
    if config.peak_mem_mib and base.peak_mem_mib:
        memory_ratio = config.peak_mem_mib / base.peak_mem_mib
    return {
        "recipe": recipe.name,
        "variant": recipe.variant,
        "model": f"{recipe.model.arch}/{recipe.model.backbone}/os{recipe.model.output_stride}",
        "torch": torch.__version__,
        "config": config.to_dict(),
        "baseline": base.to_dict(),
        "speedup": config.img_per_s / base.img_per_s,
        "memory_ratio": memory_ratio,
    }


def write_cityscapes_pngs(
    root: Path, count: int, size: tuple[int, int] = CITYSCAPES_SIZE, seed: int = 0
) -> None:
    """`count` image/label pairs in the Cityscapes layout under `root` (split 'train')."""
    images = root / "leftImg8bit" / "train" / "bench"
    labels = root / "gtFine" / "train" / "bench"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(count):
        base = (np.sin(xx / rng.uniform(20, 80)) + np.cos(yy / rng.uniform(20, 80))) * 50 + 120
        rgb = base[..., None] + rng.normal(0, 8, size=(height, width, 3))
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(
            images / f"bench_{i:06d}_000019_leftImg8bit.png"
        )
        raw = ((yy // 64 + xx // 128 + i) % 34).astype(np.uint8)
        Image.fromarray(raw).save(labels / f"bench_{i:06d}_000019_gtFine_labelIds.png")


def _reference_sample(
    pair: tuple[Path, Path], lut: np.ndarray[Any, Any], crop: tuple[int, int], rng: random.Random
) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's reference segmentation training transforms (``references/segmentation``:
    PIL decode, RandomResize of the short side 0.5-2x, flip, RandomCrop padded with 0/255,
    PILToTensor, ToDtype(float, scale=True), Normalize), and the raw-id lookup."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    image = Image.open(pair[0]).convert("RGB")
    target = Image.open(pair[1])
    size = int(min(image.size) * rng.uniform(0.5, 2.0))
    image = TF.resize(image, size, antialias=True)
    target = TF.resize(target, size, interpolation=InterpolationMode.NEAREST)
    if rng.random() < 0.5:
        image, target = TF.hflip(image), TF.hflip(target)
    crop_h, crop_w = crop
    pad_w, pad_h = max(crop_w - image.size[0], 0), max(crop_h - image.size[1], 0)
    if pad_w or pad_h:
        image = TF.pad(image, [0, 0, pad_w, pad_h], fill=0)
        target = TF.pad(target, [0, 0, pad_w, pad_h], fill=IGNORE_INDEX)
    top = rng.randint(0, image.size[1] - crop_h)
    left = rng.randint(0, image.size[0] - crop_w)
    image = TF.crop(image, top, left, crop_h, crop_w)
    target = TF.crop(target, top, left, crop_h, crop_w)
    tensor = TF.convert_image_dtype(TF.pil_to_tensor(image), torch.float32)
    tensor = TF.normalize(tensor, list(IMAGENET_MEAN), list(IMAGENET_STD))
    label = torch.from_numpy(lut[np.asarray(target)])
    return tensor, label


def _per_core_rates(
    root: Path, samples: int, rounds: int, crop: tuple[int, int]
) -> dict[str, list[float]]:
    """Samples per CPU-second of each pipeline, in this process on one thread, interleaved
    rounds on the same files and the same number of samples."""
    pairs = cityscapes_pairs(root, "train")
    lut = np.asarray(label_lut("cityscapes"), dtype=np.uint8)
    dataset = FileDataset(pairs, list(lut), TrainTransform(crop=crop, scale_range=(0.5, 2.0)))
    rng = random.Random(0)
    pipelines: dict[str, Callable[[int], object]] = {
        "seglab": lambda i: dataset[i],
        "torchvision_reference": lambda i: _reference_sample(pairs[i], lut, crop, rng),
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rates: dict[str, list[float]] = {name: [] for name in pipelines}
        for _ in range(rounds):
            for name, pipeline in pipelines.items():
                start = time.process_time()
                for i in range(samples):
                    pipeline(i % len(pairs))
                rates[name].append(samples / (time.process_time() - start))
    finally:
        torch.set_num_threads(threads)
    return rates


def _loader_rate(root: Path, workers: int, samples: int, crop: tuple[int, int]) -> float:
    """Samples per wall second out of a DataLoader with `workers` worker processes."""
    dataset = FileDataset(
        cityscapes_pairs(root, "train"),
        label_lut("cityscapes"),
        TrainTransform(crop=crop, scale_range=(0.5, 2.0)),
    )
    sampler = RandomSampler(
        dataset,
        replacement=True,
        num_samples=samples + max(workers, 1),
        generator=torch.Generator().manual_seed(0),
    )
    loader = DataLoader(
        dataset, batch_size=1, sampler=sampler, num_workers=workers, worker_init_fn=worker_init
    )
    batches = iter(loader)
    for _ in range(max(workers, 1)):
        next(batches)  # worker start-up and each worker's first decode are not throughput
    start = time.perf_counter()
    count = sum(1 for _ in batches)
    return count / (time.perf_counter() - start)


def bench_data(
    workers: int,
    *,
    images: int = 4,
    samples: int = 24,
    rounds: int = 3,
    crop: tuple[int, int] = (512, 1024),
) -> dict[str, Any]:
    """The training pipeline's samples per CPU-second against torchvision's reference
    transforms on the same Cityscapes-sized PNGs (interleaved rounds, one thread), and the
    DataLoader's samples per second with `workers` processes."""
    with tempfile.TemporaryDirectory(prefix="seglab-bench-data-") as tmp:
        root = Path(tmp)
        write_cityscapes_pngs(root, images)
        per_core = _per_core_rates(root, samples, rounds, crop)
        load = os.getloadavg()[0]
        rate = _loader_rate(root, workers, samples, crop)
    ours = statistics.median(per_core["seglab"])
    reference = statistics.median(per_core["torchvision_reference"])
    return {
        "workers": workers,
        "usable_cores": len(os.sched_getaffinity(0)),
        "image_size": list(CITYSCAPES_SIZE),
        "crop": list(crop),
        "samples": samples,
        "rounds": rounds,
        "per_core_img_per_s": per_core,
        "seglab_img_per_s_per_core": ours,
        "reference_img_per_s_per_core": reference,
        "ratio_vs_reference": ours / reference,
        "img_per_s": rate,
        "img_per_s_per_worker": rate / max(workers, 1),
        "load_average": load,
    }


def format_data_bench(result: dict[str, Any]) -> str:
    """The human-readable report of :func:`bench_data`."""
    per_core = result["per_core_img_per_s"]
    spread = {name: f"{min(v):.2f}-{max(v):.2f}" for name, v in per_core.items()}
    height, width = result["image_size"]
    return "\n".join(
        [
            f"{height}x{width} PNGs -> crop {result['crop'][0]}x{result['crop'][1]}, "
            f"{result['samples']} samples x {result['rounds']} interleaved rounds, one thread, "
            f"img/s per CPU-second (median, spread); load average {result['load_average']:.1f}",
            f"  seglab pipeline         {result['seglab_img_per_s_per_core']:6.2f} img/s "
            f"per core  ({spread['seglab']})",
            f"  torchvision reference   {result['reference_img_per_s_per_core']:6.2f} img/s "
            f"per core  ({spread['torchvision_reference']})",
            f"  ratio seglab / reference {result['ratio_vs_reference']:.2f}x",
            f"data loader, {result['workers']} worker(s) of {result['usable_cores']} usable "
            f"core(s): {result['img_per_s']:.2f} img/s, {result['img_per_s_per_worker']:.2f} "
            "img/s per worker",
        ]
    )
