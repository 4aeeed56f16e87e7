"""Time the prediction samples add to an evaluation of the seed recipe, on this machine.

The evaluation: the trainer's per-frame work on Cityscapes-sized frames (1024 x 2048) with
the seed recipe's model (DeepLabV3+ R50, its amp setting, random init): forward, argmax,
confusion counting; measured on ``--frames`` frames and scaled to the 500 frames of
Cityscapes val. The samples: what the trainer adds per evaluation with ``train.samples``
K = 8: capturing the K predictions, then :meth:`SampleWriter.write` (error counts at full
resolution, downscaled pred/overlay/error PNGs written atomically, index.json, TensorBoard
images), on K Cityscapes-sized frames whose predictions differ from the ground truth in
20 % of the pixels. Prints both and their ratio.

    .venv/bin/python benchmarks/samples_overhead.py --frames 2 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from seglab.recipes import load
from seglab.train.datasets.base import SegDataset, eval_transform
from seglab.train.distributed import DistContext
from seglab.train.metrics import ConfusionMatrix
from seglab.train.models import build_model
from seglab.train.samples import SampleWriter

SEED_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "cityscapes-deeplabv3plus-r50.yaml"
VAL_FRAMES = 500
HEIGHT, WIDTH = 1024, 2048
CLASSES = 19


class Frames(SegDataset):
    """Cityscapes-sized frames: blocky labels (some ignored), a shaded, noisy image."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(index)
        blocks = rng.integers(0, CLASSES + 1, (32, 64))
        label = blocks.repeat(32, 0).repeat(32, 1).astype(np.uint8)
        label[label == CLASSES] = 255
        # A street-scene stand-in: each class region its own colour, a vertical gradient,
        # sensor noise (incompressible noise alone would make PNG encoding the worst case).
        tint = rng.integers(40, 220, (CLASSES + 1, 3))[np.minimum(label, CLASSES)]
        shade = np.linspace(0.7, 1.1, HEIGHT)[:, None, None]
        noise = rng.normal(0.0, 6.0, (HEIGHT, WIDTH, 3))
        image = np.clip(tint * shade + noise, 0, 255).astype(np.uint8)
        return image, label

    def image_size(self, index: int) -> tuple[int, int]:
        return HEIGHT, WIDTH


def prediction(label: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """The label with 20 % of its pixels changed (ignored pixels predicted as class 0)."""
    pred = np.where(label == 255, 0, label).astype(np.int64)
    noise = rng.random(label.shape) < 0.2
    pred[noise] = rng.integers(0, CLASSES, int(noise.sum()))
    return torch.from_numpy(pred)[None]


def eval_seconds_per_frame(frames: int) -> float:
    """Median seconds of the trainer's evaluation work on one frame."""
    recipe = load(SEED_RECIPE).variants[0].recipe
    cfg = recipe.model.model_copy(update={"pretrained_backbone": None})
    net = build_model(cfg, CLASSES).eval()
    fmt = torch.channels_last if recipe.train.channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    amp = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[recipe.train.amp]
    matrix = ConfusionMatrix(CLASSES)
    data = Frames(frames)
    times = []
    with torch.inference_mode():
        for index in range(frames):
            image, label = eval_transform(*data.read(index))
            start = time.perf_counter()
            batch = image[None].contiguous(memory_format=fmt)
            if amp is None:
                logits = net(batch)["out"]
            else:
                with torch.autocast("cpu", dtype=amp):
                    logits = net(batch)["out"]
            matrix.update(logits.argmax(1), label[None])
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def samples_seconds(count: int, rounds: int) -> list[float]:
    """Seconds of capture + write of `count` samples per evaluation, one per round."""
    data = Frames(count)
    ctx = DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    rng = np.random.default_rng(1)
    preds = [prediction(data.read(i)[1], rng) for i in range(count)]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        writer = SampleWriter(data, "cityscapes", CLASSES, count, Path(tmp))
        tb = SummaryWriter(str(Path(tmp) / "tb"))
        writer.write(0, {i: preds[i][0].numpy().astype(np.uint8) for i in range(count)}, tb)
        for iteration in range(1, rounds + 1):
            start = time.perf_counter()
            for index in range(count):
                writer.capture([index], preds[index])
            writer.write(iteration, writer.collect(ctx), tb)
            tb.flush()
            out.append(time.perf_counter() - start)
        tb.close()
    return out


def main() -> None:
    """Measure and print the evaluation, the samples and their ratio."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--frames", type=int, default=2, help="evaluation frames to time")
    parser.add_argument("--rounds", type=int, default=3, help="sample-writing rounds")
    parser.add_argument("--samples", type=int, default=8, help="K (train.samples)")
    args = parser.parse_args()
    info: dict[str, Any] = {"threads": torch.get_num_threads(), "load": os.getloadavg()[0]}
    per_frame = eval_seconds_per_frame(args.frames)
    evaluation = per_frame * VAL_FRAMES
    rounds = samples_seconds(args.samples, args.rounds)
    added = statistics.median(rounds)
    print(f"torch threads {info['threads']}, load average {info['load']:.1f}")
    print(
        f"evaluation: {per_frame:.2f} s/frame (median of {args.frames}) x {VAL_FRAMES} frames"
        f" = {evaluation:.0f} s"
    )
    print(
        f"samples (K={args.samples}, 1024x2048): median {added:.3f} s per evaluation"
        f" (rounds: {', '.join(f'{r:.3f}' for r in rounds)})"
    )
    print(f"overhead: {100 * added / evaluation:.3f} % of the evaluation")


if __name__ == "__main__":
    main()
