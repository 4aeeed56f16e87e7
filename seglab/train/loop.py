"""The training loop: `seglab train --config RECIPE --run-dir DIR` (single process or torchrun).

One :class:`Trainer` per process. Rank 0 alone writes events (stdout + events.jsonl),
checkpoints and TensorBoard scalars; every rank trains on its share of each global batch
(``train.batch_size / world_size`` samples, learning rate unchanged) and takes part in the
all-reduced evaluation. A run directory that already holds ``checkpoints/last.pt`` resumes
from it. SIGTERM (or SIGINT) finishes the current step, writes ``last.pt``, emits
``end(stopped)`` and exits 128 + the signal (143 for SIGTERM): non-zero, so that a Docker
engine's ``on-failure`` restart policy starts the run again (resuming) after the engine's
own shutdown stopped it (docs/runtimes.md); 0 in a Slurm job, whose requeue is its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from seglab.events import STOP_SIGNALS
from seglab.recipes import Recipe, load_resolved
from seglab.train import checkpoint as ckpt
from seglab.train import distributed
from seglab.train.data import Loaders, build_loaders, resolve_root
from seglab.train.datasets.base import DatasetError
from seglab.train.distributed import DistContext
from seglab.train.event_writer import EventWriter
from seglab.train.labels import IGNORE_INDEX, class_names
from seglab.train.metrics import ConfusionMatrix, SegMetrics
from seglab.train.models import PretrainedWeightsError, build_model
from seglab.train.provenance import versions
from seglab.train.samples import SampleWriter
from seglab.train.schedule import build_scheduler
from seglab.train.storage import StorageError, failure_of
from seglab.yamlpos import ConfigError

RECIPE_FILE = "recipe.yaml"
USER_ERRORS = (
    ConfigError,
    DatasetError,
    PretrainedWeightsError,
    ckpt.CheckpointError,
    StorageError,
)
"""Failures caused by the recipe or the environment: reported without a traceback."""


class StopFlag:
    """Set by SIGTERM (what `docker stop` sends) or SIGINT; the loop checks it every step.

    ``signum`` is the first such signal received (None: none yet). Used as a context
    manager: the previous handlers come back on exit.
    """

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.requested:
            self.signum = signum
        self.requested = True

    def exit_status(self) -> int:
        """The exit status of a run this flag stopped (:func:`distributed.stop_status`:
        128 + the signal, SIGTERM's on a rank that stopped because another rank received
        one; 0 in a Slurm job)."""
        return distributed.stop_status(self.signum if self.signum is not None else signal.SIGTERM)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def optimizer_for(recipe: Recipe, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay, optional Nesterov) or AdamW, as the recipe says."""
    opt = recipe.train.optimizer
    if opt.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=opt.lr,
            momentum=opt.momentum,
            weight_decay=opt.weight_decay,
            nesterov=opt.nesterov,
        )
    return torch.optim.AdamW(
        params, lr=opt.lr, betas=(opt.betas[0], opt.betas[1]), weight_decay=opt.weight_decay
    )


def segmentation_loss(
    outputs: dict[str, torch.Tensor], target: torch.Tensor, aux_weight: float
) -> torch.Tensor:
    """Cross-entropy (ignore 255) on ``out`` plus ``aux_weight`` x that of ``aux``.

    The aux term is kept even at weight 0 so that DDP sees every parameter used.
    """
    loss = F.cross_entropy(outputs["out"], target, ignore_index=IGNORE_INDEX)
    if "aux" in outputs:
        loss = loss + aux_weight * F.cross_entropy(
            outputs["aux"], target, ignore_index=IGNORE_INDEX
        )
    return loss


def amp_dtype(recipe: Recipe) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` (None: fp32)."""
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[recipe.train.amp]


def grad_norm(params: list[nn.Parameter], clip: float | None) -> torch.Tensor:
    """The total L2 norm of the gradients (a 0-d tensor), clipping them to `clip` if given."""
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(params, clip).detach()
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads).detach()


class Trainer:
    """Trains one recipe in one run directory (one instance per rank)."""

    def __init__(
        self, recipe: Recipe, run_dir: Path, ctx: DistContext, data_root: str | None
    ) -> None:
        self.recipe = recipe
        self.run_dir = run_dir
        self.ctx = ctx
        self.data_root = data_root
        self.stop = StopFlag()
        self.resume = self._load_resume()
        self.events = EventWriter(
            run_dir, enabled=ctx.is_main, min_seq=(self.resume or {}).get("event_seq", -1) + 1
        )
        self.best_miou: float | None = None
        self.last_eval_iter = -1
        self.iter = 0
        self.tb: Any = None
        self.samples: SampleWriter | None = None

    # -- setup ----------------------------------------------------------------------

    def _load_resume(self) -> dict[str, Any] | None:
        """last.pt of the run dir, read by the main rank and shared with the others (in a
        multi-node run only the main rank's host holds the run dir)."""
        path = self.run_dir / ckpt.CHECKPOINT_DIR / ckpt.LAST
        state = ckpt.load(path) if self.ctx.is_main and path.is_file() else None
        shared = distributed.share_from_main(self.ctx, state)
        assert shared is None or isinstance(shared, dict)
        return shared

    def _build(self) -> None:
        recipe, ctx = self.recipe, self.ctx
        seed_everything(recipe.train.seed + ctx.rank)
        if ctx.device.type == "cuda":
            torch.backends.cudnn.benchmark = recipe.train.cudnn_benchmark
        self.class_names = list(class_names(recipe.data))
        root = resolve_root(recipe.data, self.data_root)
        self.loaders: Loaders = build_loaders(
            recipe, root, ctx.rank, ctx.world_size, pin_memory=ctx.device.type == "cuda"
        )
        self.iters_per_epoch = self.loaders.iters_per_epoch
        if recipe.train.samples:
            self.samples = SampleWriter(
                self.loaders.val.dataset,  # type: ignore[arg-type]
                recipe.data.dataset,
                len(self.class_names),
                recipe.train.samples,
                self.run_dir,
            )
        if recipe.train.iterations is not None:
            self.total_iters = recipe.train.iterations
        else:
            self.total_iters = (recipe.train.epochs or 1) * self.iters_per_epoch
        model_cfg = recipe.model
        if self.resume is not None:
            # last.pt holds every weight: the pretrained file is not needed to resume.
            model_cfg = model_cfg.model_copy(update={"pretrained_backbone": None})
        net = build_model(model_cfg, len(self.class_names))
        if ctx.distributed and ctx.device.type == "cuda":
            # torch's SyncBatchNorm runs on GPUs only; gloo-on-CPU runs keep per-rank BN.
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)  # type: ignore[no-untyped-call]
        self.memory_format = (
            torch.channels_last if recipe.train.channels_last else torch.contiguous_format
        )
        self.net = net.to(ctx.device).to(memory_format=self.memory_format)
        model: nn.Module = self.net
        if recipe.train.compile:
            model = torch.compile(model)  # type: ignore[assignment]
        if ctx.distributed:
            model = DistributedDataParallel(
                model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
            )
        self.model = model
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = optimizer_for(recipe, iter(self.params))
        self.scheduler = build_scheduler(self.optimizer, recipe.train.schedule, self.total_iters)
        self.amp = amp_dtype(recipe)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=self.amp == torch.float16)
        if self.resume is not None:
            self._restore(self.resume)
        if ctx.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.iter or None)

    def _restore(self, state: dict[str, Any]) -> None:
        try:
            self.net.load_state_dict(state["model"])
        except RuntimeError as exc:
            last = self.run_dir / ckpt.CHECKPOINT_DIR / ckpt.LAST
            raise ckpt.CheckpointError(
                f"{last} does not fit the model of this recipe (was the recipe changed?): {exc}"
            ) from exc
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.iter = int(state["iter"])
        self.best_miou = state.get("best_miou")
        self.last_eval_iter = int(state.get("last_eval_iter", -1))
        if self.ctx.is_main:
            ckpt.restore_rng(state["rng"])

    # -- events and checkpoints --------------------------------------------------------

    def epoch_of(self, it: int) -> int:
        """The 1-based epoch iteration `it` (1-based count of steps done) falls in."""
        return math.ceil(it / self.iters_per_epoch)

    def _state(self) -> dict[str, Any]:
        return {
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "iter": self.iter,
            "epoch": self.epoch_of(self.iter),
            "best_miou": self.best_miou,
            "last_eval_iter": self.last_eval_iter,
            "rng": ckpt.rng_state(),
            "rank": self.ctx.rank,
            "event_seq": self.events.seq,
            "recipe": self.recipe.model_dump(mode="json"),
        }

    def save_checkpoint(self, *, best: bool = False) -> None:
        """Write last.pt (and best.pt when `best`), each followed by a checkpoint event."""
        if not self.ctx.is_main:
            return
        folder = self.run_dir / ckpt.CHECKPOINT_DIR
        names = [ckpt.LAST, ckpt.BEST] if best else [ckpt.LAST]
        for name in names:
            # best.pt is last.pt's file (a hard link) where the file system allows it.
            linked = name == ckpt.BEST and ckpt.link_atomic(folder / ckpt.LAST, folder / name)
            if not linked:
                ckpt.save_atomic(self._state(), folder / name)
            self.events.emit(
                "checkpoint",
                iter=self.iter,
                epoch=self.epoch_of(self.iter),
                path=f"{ckpt.CHECKPOINT_DIR}/{name}",
                best=name == ckpt.BEST,
            )
        self.events.sync()

    # -- steps ---------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=self.amp)

    def train_step(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step; returns (loss, grad norm) as 0-d tensors on the device.

        Nothing here waits for the device: values are read only when they are logged.
        """
        device = self.ctx.device
        images = images.to(device, non_blocking=True).contiguous(memory_format=self.memory_format)
        target = labels.to(device, non_blocking=True).long()
        with self._autocast():
            outputs = self.model(images)
            loss = segmentation_loss(outputs, target, self.recipe.train.aux_weight)
        self.optimizer.zero_grad(set_to_none=True)
        scaled: torch.Tensor = self.scaler.scale(loss)
        scaled.backward()  # type: ignore[no-untyped-call]
        self.scaler.unscale_(self.optimizer)
        norm = grad_norm(self.params, self.recipe.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach(), norm

    @torch.inference_mode()
    def evaluate(self) -> SegMetrics:
        """Metrics over the whole validation split (all ranks, one all-reduced matrix)."""
        self.net.eval()
        matrix = ConfusionMatrix(len(self.class_names), device=self.ctx.device)
        order, size = list(self.loaders.val.sampler), self.recipe.train.val_batch_size
        for number, (batch, labels) in enumerate(self.loaders.val):
            images = batch.to(self.ctx.device, non_blocking=True).contiguous(
                memory_format=self.memory_format
            )
            with self._autocast():
                logits = self.net(images)["out"]
            pred = logits.argmax(1)
            matrix.update(pred, labels.to(self.ctx.device, non_blocking=True))
            if self.samples is not None:
                self.samples.capture(order[number * size : (number + 1) * size], pred)
        matrix.all_reduce()
        self.net.train()
        return matrix.compute()

    def _eval_and_checkpoint(self) -> None:
        start = time.perf_counter()
        metrics = self.evaluate()
        seconds = time.perf_counter() - start
        self.last_eval_iter = self.iter
        best = metrics.miou is not None and (
            self.best_miou is None or metrics.miou > self.best_miou
        )
        if best:
            self.best_miou = metrics.miou
        if self.ctx.is_main:
            values = metrics.to_dict()
            self.events.emit(
                "eval",
                iter=self.iter,
                epoch=self.epoch_of(self.iter),
                miou=values["miou"],
                pixel_acc=values["pixel_acc"],
                mean_acc=values["mean_acc"],
                per_class_iou=values["per_class_iou"],
                per_class_acc=values["per_class_acc"],
                seconds=round(seconds, 6),
            )
            self.events.log(
                f"eval iter {self.iter}: mIoU {_pct(metrics.miou)} pixel acc "
                f"{_pct(metrics.pixel_acc)} mean acc {_pct(metrics.mean_acc)}"
            )
            for key in ("miou", "pixel_acc", "mean_acc"):
                if values[key] is not None:
                    self.tb.add_scalar(f"val/{key}", values[key], self.iter)
            for name, iou in zip(self.class_names, values["per_class_iou"], strict=True):
                if iou is not None:
                    self.tb.add_scalar(f"val_iou/{name}", iou, self.iter)
        if self.samples is not None:
            preds = self.samples.collect(self.ctx)
            if self.ctx.is_main:
                self.events.emit("samples", **self.samples.write(self.iter, preds, self.tb))
        self.save_checkpoint(best=best)

    def _eval_due(self) -> bool:
        train = self.recipe.train
        if train.eval_unit == "iter":
            return self.iter % train.eval_interval == 0
        at_epoch_end = self.iter % self.iters_per_epoch == 0
        return at_epoch_end and (self.iter // self.iters_per_epoch) % train.eval_interval == 0

    def _log_train(
        self, losses: list[torch.Tensor], last_norm: torch.Tensor, images: int, seconds: float
    ) -> None:
        loss = distributed.mean_over_ranks(self.ctx, float(torch.stack(losses).float().mean()))
        norm = float(last_norm)
        if not self.ctx.is_main:
            return
        lr = float(self.optimizer.param_groups[0]["lr"])
        speed = images / seconds if seconds > 0 else None
        memory = (
            torch.cuda.max_memory_allocated(self.ctx.device) / 2**20
            if self.ctx.device.type == "cuda"
            else None
        )
        self.events.emit(
            "train",
            iter=self.iter,
            epoch=self.epoch_of(self.iter),
            loss=loss,
            lr=lr,
            grad_norm=norm,
            img_per_s=speed,
            gpu_mem_mib=memory,
        )
        speed_text = f"{speed:.1f} img/s" if speed is not None else "- img/s"
        self.events.log(
            f"iter {self.iter}/{self.total_iters} epoch {self.epoch_of(self.iter)}"
            f" loss {loss:.4f} lr {lr:.3g} grad {norm:.3f} {speed_text}"
        )
        for key, value in (
            ("loss", loss),
            ("lr", lr),
            ("grad_norm", norm),
            ("img_per_s", speed),
            ("gpu_mem_mib", memory),
        ):
            if value is not None:
                self.tb.add_scalar(f"train/{key}", value, self.iter)

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> str:
        """Train to the end or until SIGTERM; returns the end status (finished|stopped)."""
        with self.stop:
            return self._run()

    def _run(self) -> str:
        self._build()
        recipe = self.recipe
        resumed_from = self.iter if self.resume is not None else None
        self.events.emit(
            "start",
            recipe=recipe.name,
            variant=recipe.variant,
            world_size=self.ctx.world_size,
            class_names=self.class_names,
            total_iters=self.total_iters,
            iters_per_epoch=self.iters_per_epoch,
            resumed_from=resumed_from,
            device=self.ctx.device.type,
            batch_per_rank=recipe.train.batch_size // self.ctx.world_size,
            **versions(self.ctx.device),
        )
        self.events.log(
            f"{'resuming at iter ' + str(self.iter) if resumed_from else 'start'}:"
            f" {self.total_iters} iterations, {self.iters_per_epoch} per epoch, "
            f"world size {self.ctx.world_size} on {self.ctx.device}"
        )
        sampler, log_every = self.loaders.sampler, recipe.train.log_interval
        losses: list[torch.Tensor] = []
        window_start, window_images = time.perf_counter(), 0
        global_batch = recipe.train.batch_size
        stopped = False
        self.net.train()
        while self.iter < self.total_iters and not stopped:
            epoch_start = (self.iter // self.iters_per_epoch) * self.iters_per_epoch
            sampler.set_epoch(self.iter // self.iters_per_epoch, self.iter - epoch_start)
            for images, labels in self.loaders.train:
                loss, norm = self.train_step(images, labels)
                self.iter += 1
                losses.append(loss)
                window_images += global_batch
                if self.iter % log_every == 0 or self.iter == self.total_iters:
                    self._log_train(losses, norm, window_images, time.perf_counter() - window_start)
                    losses, window_images = [], 0
                    window_start = time.perf_counter()
                if self._eval_due():
                    self._eval_and_checkpoint()
                elif self.iter % recipe.train.checkpoint_interval == 0:
                    self.save_checkpoint()
                stopped = distributed.any_rank(self.ctx, self.stop.requested)
                if stopped or self.iter >= self.total_iters:
                    break
        if stopped:
            if self.last_eval_iter != self.iter:
                self.save_checkpoint()
            self.events.log(f"stopped by a signal at iter {self.iter}; the same command resumes")
            return "stopped"
        if self.last_eval_iter != self.iter:
            self._eval_and_checkpoint()
        return "finished"

    def export(self) -> list[dict[str, Any]]:
        """Export the best (else last) checkpoint in the recipe's formats (rank 0).

        Returns one entry per format: the export's record, or ``{format, error}`` for one
        that failed (also reported as an ``error`` event; the run still counts as finished).
        """
        if not self.recipe.export or not self.ctx.is_main:
            return []
        from seglab.train.export import ExportError, export_run

        which = "best" if (self.run_dir / ckpt.CHECKPOINT_DIR / ckpt.BEST).is_file() else "last"
        results: list[dict[str, Any]] = []
        for fmt in self.recipe.export:
            try:
                result = export_run(self.run_dir, fmt, which=which)
            except ExportError as exc:
                self.events.emit("error", message=f"export {fmt}: {exc}", traceback=None)
                results.append({"format": fmt, "error": str(exc)})
                continue
            record = dataclasses.asdict(result)
            record["path"] = str(Path(result.path).relative_to(self.run_dir))
            results.append(record)
            self.events.log(
                f"exported {fmt}: {record['path']} (max abs diff {result.max_abs_diff:.2g})"
            )
        return results

    def close(self) -> None:
        """Flush TensorBoard and the event file (a full disk is said on stderr, once more)."""
        try:
            if self.tb is not None:
                self.tb.close()
        except OSError as exc:
            failure = failure_of(exc, self.run_dir / "tb")
            if failure is None:
                raise
            print(f"seglab train: TensorBoard files incomplete: {failure}", file=sys.stderr)
        finally:
            self.events.close()


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def copy_recipe(config: Path, run_dir: Path) -> None:
    """Put the resolved recipe at DIR/recipe.yaml unless it is already there."""
    target = run_dir / RECIPE_FILE
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (target.exists() and target.resolve() == config.resolve()):
        shutil.copyfile(config, target)


def run(config: Path, run_dir: Path, data_root: str | None = None) -> int:
    """Train `config` (a resolved recipe) in `run_dir`; returns the process exit status.

    Exit 0 when finished, 128 + the signal (143 for SIGTERM; 0 in a Slurm job) when
    stopped cleanly by SIGTERM or SIGINT (``last.pt`` and ``end(stopped)`` written), 1 on
    a failure (an ``error`` event and ``end(failed)`` are written first; user errors
    carry no traceback).
    """
    ctx = distributed.setup()
    trainer: Trainer | None = None
    if not ctx.is_main:  # the main rank's output is the run's log; the others say who they are
        print(
            f"rank {ctx.rank} of {ctx.world_size} on {ctx.device} (main rank: "
            f"{ctx.main_rank}) in {run_dir}",
            flush=True,
        )
    try:
        recipe = load_resolved(config)
        if ctx.is_main:
            copy_recipe(config, run_dir)
        trainer = Trainer(recipe, run_dir, ctx, data_root)
        status = trainer.run()
        exports = trainer.export() if status == "finished" else []
        trainer.events.emit(
            "end", status=status, best_miou=trainer.best_miou, iter=trainer.iter, exports=exports
        )
        return 0 if status == "finished" else trainer.stop.exit_status()
    except USER_ERRORS as exc:
        _fail(trainer, run_dir, ctx, str(exc), None)
        print(f"seglab train: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        failure = failure_of(exc, run_dir)  # a write of TensorBoard, samples, ...: disk full
        if failure is not None:
            _fail(trainer, run_dir, ctx, str(failure), None)
            print(f"seglab train: {failure}", file=sys.stderr)
            return 1
        # Anything else is a bug or a crash: record it with its traceback, then re-raise
        # so the process fails loudly.
        _fail(trainer, run_dir, ctx, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        raise
    finally:
        if trainer is not None:
            trainer.close()
        distributed.teardown(ctx)


def _fail(
    trainer: Trainer | None, run_dir: Path, ctx: DistContext, message: str, trace: str | None
) -> None:
    events = trainer.events if trainer is not None else EventWriter(run_dir, enabled=ctx.is_main)
    best = trainer.best_miou if trainer is not None else None
    done = trainer.iter if trainer is not None else None
    records: tuple[tuple[str, dict[str, Any]], ...] = (
        ("error", {"message": message, "traceback": trace}),
        ("end", {"status": "failed", "best_miou": best, "iter": done, "exports": []}),
    )
    for kind, data in records:
        # On a full disk a record may not fit in events.jsonl either: emit has then printed
        # it to stdout (the run's log) and given the file up; the next one goes there too.
        with contextlib.suppress(StorageError):
            events.emit(kind, **data)
    with contextlib.suppress(StorageError):  # the fsync of a file on a failing disk
        events.close()
