"""`seglab export`: a run's checkpoint as TorchScript, ONNX or a Triton model repository.

The model is rebuilt from the run directory's ``recipe.yaml`` and loaded from
``checkpoints/<best|last>.pt``; the exported graph returns only the ``out`` logits
(``N x C x H x W``) of an input ``N x 3 x H x W`` (normalised like training). Files go to
``RUN_DIR/export/``:

- ``torchscript``: ``model.torchscript.pt`` (``torch.jit.trace``);
- ``onnx``: ``model.onnx`` (torch's ``torch.export``-based exporter, opset 18, dynamic batch
  axis, fixed H x W);
- ``triton``: ``triton/<name>/config.pbtxt`` + ``triton/<name>/1/model.onnx`` (the
  ``onnxruntime_onnx`` platform, ``max_batch_size`` > 0 since the batch axis is dynamic).

Every export is run on a random sample input and compared with the PyTorch model; the
maximum absolute difference is reported and an export beyond the tolerance is an error.
ONNX is checked with onnxruntime at a batch size other than the traced one, which proves the
batch axis dynamic. ``manifest.json`` in the export folder lists what was written.
"""

from __future__ import annotations

import json
import pickle
import re
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from seglab.recipes import Recipe, load_resolved
from seglab.train import checkpoint
from seglab.train.labels import num_classes
from seglab.train.models import LogitsOnly, build_model

Format = Literal["torchscript", "onnx", "triton"]
FORMATS: tuple[Format, ...] = ("torchscript", "onnx", "triton")
EXPORT_DIR = "export"
MANIFEST = "manifest.json"
ONNX_OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_TOLERANCE = 1e-3
TRITON_MAX_BATCH = 8
_SAMPLE_BATCH = 2
_CHECK_BATCH = 3


class ExportError(RuntimeError):
    """The run cannot be exported, or an export disagrees with the PyTorch model."""


@dataclass(frozen=True)
class ExportResult:
    """One export: where it went and how far it is from the PyTorch model."""

    format: str
    path: str
    checkpoint: str
    iteration: int | None
    input_shape: list[int]
    max_abs_diff: float
    seconds: float


@dataclass(frozen=True)
class LoadedRun:
    """A run's recipe and its model in eval mode, loaded from a checkpoint."""

    recipe: Recipe
    model: nn.Module
    checkpoint: Path
    iteration: int | None


def load_run(run_dir: Path, which: str = "last") -> LoadedRun:
    """The model of `run_dir` with the weights of ``checkpoints/<which>.pt`` (CPU, eval)."""
    recipe_path = run_dir / "recipe.yaml"
    if not recipe_path.is_file():
        raise ExportError(f"{run_dir} is not a run directory: {recipe_path} is missing")
    recipe = load_resolved(recipe_path)
    ckpt_path = run_dir / checkpoint.CHECKPOINT_DIR / f"{which}.pt"
    if not ckpt_path.is_file():
        present = sorted(p.name for p in ckpt_path.parent.glob("*.pt"))
        raise ExportError(f"no checkpoint {ckpt_path}; present: {', '.join(present) or 'none'}")
    try:
        payload = checkpoint.load(ckpt_path)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise ExportError(f"cannot read checkpoint {ckpt_path}: {exc}") from exc
    state = payload.get("model") if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise ExportError(f"{ckpt_path} has no 'model' state dict")
    # The checkpoint holds every weight: the pretrained file need not exist here.
    cfg = recipe.model.model_copy(update={"pretrained_backbone": None})
    model = build_model(cfg, num_classes(recipe.data))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ExportError(f"{ckpt_path} does not fit the model of {recipe_path}: {exc}") from exc
    model.eval()
    iteration = payload.get("iter")
    return LoadedRun(recipe, model, ckpt_path, iteration if isinstance(iteration, int) else None)


def _max_diff(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    if a.shape != b.shape:
        raise ExportError(f"exported model output shape {a.shape} != PyTorch {b.shape}")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def _reference(model: nn.Module, x: torch.Tensor) -> np.ndarray[Any, Any]:
    with torch.no_grad():
        out: np.ndarray[Any, Any] = model(x).numpy()
    return out


def export_torchscript(model: nn.Module, sample: torch.Tensor, path: Path) -> float:
    """Trace `model` to `path`; the max abs difference of the reloaded module on `sample`."""
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream but is the format asked for; say so once in
        # docs, not on every export.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.(trace|load).*deprecated.*")
        try:
            with torch.no_grad():
                traced = torch.jit.trace(model, sample)  # type: ignore[no-untyped-call]
        except Exception as exc:  # tracing raises many types; all mean "no TorchScript"
            raise ExportError(f"TorchScript tracing failed: {type(exc).__name__}: {exc}") from exc
        traced.save(str(path))
        loaded = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        with torch.no_grad():
            out = loaded(sample).numpy()
    return _max_diff(out, _reference(model, sample))


def export_onnx(model: nn.Module, sample: torch.Tensor, path: Path) -> float:
    """Export `model` to `path` with a dynamic batch axis; the onnxruntime difference."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    try:
        program = torch.onnx.export(
            model,
            (sample,),
            dynamo=True,
            opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"x": {0: batch}},
            verbose=False,
        )
    except Exception as exc:  # the exporter raises many types; all mean "no ONNX model"
        raise ExportError(f"the ONNX exporter failed: {type(exc).__name__}: {exc}") from exc
    if program is None:
        raise ExportError("the ONNX exporter returned no program")
    program.save(str(path))
    return check_onnx(model, path, sample)


def check_onnx(model: nn.Module, path: Path, sample: torch.Tensor) -> float:
    """Max abs difference of onnxruntime and PyTorch on a batch other than the traced one."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(1)
    x = torch.randn((_CHECK_BATCH, *sample.shape[1:]), generator=generator)
    out = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    return _max_diff(np.asarray(out), _reference(model, x))


def triton_name(run_dir: Path) -> str:
    """A Triton model name from the run directory's name (letters, digits, _ - .)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_dir.resolve().name) or "model"


def triton_config(name: str, channels: int, classes: int, height: int, width: int) -> str:
    """config.pbtxt of the onnxruntime backend for the exported model."""
    return (
        f'name: "{name}"\n'
        'platform: "onnxruntime_onnx"\n'
        f"max_batch_size: {TRITON_MAX_BATCH}\n"
        "input [\n"
        "  {\n"
        f'    name: "{INPUT_NAME}"\n'
        "    data_type: TYPE_FP32\n"
        f"    dims: [ {channels}, {height}, {width} ]\n"
        "  }\n"
        "]\n"
        "output [\n"
        "  {\n"
        f'    name: "{OUTPUT_NAME}"\n'
        "    data_type: TYPE_FP32\n"
        f"    dims: [ {classes}, {height}, {width} ]\n"
        "  }\n"
        "]\n"
        "instance_group [ { kind: KIND_AUTO } ]\n"
    )


def export_triton(
    model: nn.Module, sample: torch.Tensor, repo: Path, name: str, classes: int
) -> tuple[Path, float]:
    """A Triton model repository entry ``repo/name``; returns its folder and the difference."""
    version = repo / name / "1"
    version.mkdir(parents=True, exist_ok=True)
    diff = export_onnx(model, sample, version / "model.onnx")
    _, channels, height, width = sample.shape
    (repo / name / "config.pbtxt").write_text(triton_config(name, channels, classes, height, width))
    return repo / name, diff


def _update_manifest(folder: Path, result: ExportResult) -> None:
    path = folder / MANIFEST
    entries: dict[str, Any] = {}
    if path.is_file():
        try:
            entries = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ExportError(f"{path} is not valid JSON ({exc}); move it aside") from exc
    entries[result.format] = asdict(result)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, indent=2) + "\n")
    tmp.replace(path)


def export_run(
    run_dir: Path,
    fmt: Format,
    which: str = "last",
    size: tuple[int, int] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ExportResult:
    """Export `run_dir`'s model in `fmt` at input size `size` (default: the recipe's crop)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    run = load_run(run_dir, which)
    height, width = size or (run.recipe.data.crop[0], run.recipe.data.crop[1])
    if height <= 0 or width <= 0:
        raise ExportError(f"input size must be positive, got {height}x{width}")
    model = LogitsOnly(run.model).eval()
    sample = torch.randn(
        (_SAMPLE_BATCH, 3, height, width), generator=torch.Generator().manual_seed(0)
    )
    folder = run_dir / EXPORT_DIR
    folder.mkdir(exist_ok=True)
    start = time.perf_counter()
    if fmt == "torchscript":
        path = folder / "model.torchscript.pt"
        diff = export_torchscript(model, sample, path)
    elif fmt == "onnx":
        path = folder / "model.onnx"
        diff = export_onnx(model, sample, path)
    else:
        classes = num_classes(run.recipe.data)
        path, diff = export_triton(model, sample, folder / "triton", triton_name(run_dir), classes)
    result = ExportResult(
        format=fmt,
        path=str(path),
        checkpoint=run.checkpoint.name,
        iteration=run.iteration,
        input_shape=[_SAMPLE_BATCH, 3, height, width],
        max_abs_diff=diff,
        seconds=round(time.perf_counter() - start, 3),
    )
    _update_manifest(folder, result)
    if not diff <= tolerance:
        raise ExportError(
            f"{fmt} export {path} differs from the PyTorch model by {diff:.3g} "
            f"(max abs) > tolerance {tolerance:g}"
        )
    return result
