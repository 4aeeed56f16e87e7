"""The trainer end to end on CPU, in subprocesses: it learns, resumes after SIGKILL, stops
cleanly on SIGTERM and runs as two gloo DDP processes under torchrun.

Sizes are tight (32x32 synthetic images) so the module runs in a few minutes on two
shared cores; each trainer runs with one math thread.
"""

from __future__ import annotations

import copy
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

from seglab.events import Event, parse_line, read_jsonl
from seglab.recipes import load

torch = pytest.importorskip("torch", reason="the trainer needs the train extra (torch)")

pytestmark = [pytest.mark.train, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "recipes" / "synthetic-smoke.yaml"
RUN_TIMEOUT = 600


def write_recipe(path: Path, **sections: dict[str, Any] | list[str]) -> Path:
    """The resolved smoke recipe with each section's keys updated (one level deep)."""
    data: dict[str, Any] = copy.deepcopy(load(SMOKE).variants[0].recipe.model_dump(mode="json"))
    for section, values in sections.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if isinstance(value, dict) and isinstance(data[section].get(key), dict):
                    data[section][key].update(value)
                else:
                    data[section][key] = value
        else:
            data[section] = values
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def small_recipe(path: Path, train_size: int, epochs: int, **train: Any) -> Path:
    """A short smoke variant without exports (`train_size` samples, `epochs` epochs)."""
    return write_recipe(
        path,
        data={"synthetic": {"train_size": train_size, "val_size": 8}},
        train={"epochs": epochs, **train},
        export=[],
    )


def train_env() -> dict[str, str]:
    """Environment of trainer subprocesses: one math thread each (CI has two shared cores)."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def train_cmd(config: Path, run_dir: Path) -> list[str]:
    """`seglab train` as a subprocess command line."""
    return [
        sys.executable,
        "-m",
        "seglab",
        "train",
        "--config",
        str(config),
        "--run-dir",
        str(run_dir),
    ]


def run_events(run_dir: Path) -> list[Event]:
    """Every record of the run's events.jsonl."""
    with (run_dir / "events.jsonl").open(encoding="utf-8") as handle:
        return list(read_jsonl(handle))


def of_kind(records: list[Event], kind: str) -> list[Event]:
    """The records of one kind, in order."""
    return [e for e in records if e.kind == kind]


def assert_seqs_increase(records: list[Event]) -> None:
    """Seqs start at 0 and strictly increase (so no duplicates)."""
    seqs = [e.seq for e in records]
    assert seqs[0] == 0
    assert all(b > a for a, b in itertools.pairwise(seqs)), seqs


def wait_for_event(stdout: IO[str], kind: str, min_iter: int = 0) -> Event:
    """Read trainer stdout until an event of `kind` at iteration >= `min_iter`."""
    for line in stdout:
        event = parse_line(line)
        if event is not None and event.kind == kind and event.data.get("iter", 0) >= min_iter:
            return event
    raise AssertionError(f"the trainer exited before a {kind} event at iter >= {min_iter}")


def last_checkpoint_iter(run_dir: Path) -> int:
    """The iteration stored in checkpoints/last.pt."""
    payload = torch.load(
        run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False
    )
    return int(payload["iter"])


def test_smoke_recipe_learns_well_above_chance(tmp_path: Path) -> None:
    from seglab.recipes import load_resolved
    from seglab.train.data import build_dataset
    from seglab.train.metrics import ConfusionMatrix

    # The recipe as it is, but one export format (export.py's own tests cover the formats;
    # here it shows the finished run exports and lists what it wrote in the end event).
    config = write_recipe(tmp_path / "smoke.yaml", export=["torchscript"])
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        train_cmd(config, run_dir),
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = run_events(run_dir)
    assert_seqs_increase(records)
    (start,) = of_kind(records, "start")
    assert start.data["class_names"] == ["background", "shape_1", "shape_2", "shape_3"]
    assert start.data["total_iters"] == 64 and start.data["iters_per_epoch"] == 16
    assert start.data["resumed_from"] is None
    evals = of_kind(records, "eval")
    assert [e.data["iter"] for e in evals] == [16, 32, 48, 64]  # every epoch
    final = evals[-1].data["miou"]
    # Chance: predicting the most frequent class (background) everywhere on the same
    # validation split; it scores 0.19 mIoU, uniform random guesses 0.10.
    recipe = load_resolved(SMOKE)
    matrix = ConfusionMatrix(4)
    for index in range(recipe.data.synthetic.val_size):  # type: ignore[union-attr]
        _, label = build_dataset(recipe, "val", None)[index]
        matrix.update(torch.zeros_like(label), label)
    chance = matrix.compute().miou
    assert chance is not None and chance < 0.25
    assert final >= 0.5, f"final mIoU {final:.3f} (chance {chance:.3f})"
    assert all(iou is not None and iou > 0.2 for iou in evals[-1].data["per_class_iou"])
    train = of_kind(records, "train")
    assert train[-1].data["loss"] < train[0].data["loss"] / 2
    assert all(e.data["gpu_mem_mib"] is None for e in train)  # CPU: no GPU memory
    (end,) = of_kind(records, "end")
    assert end.data["status"] == "finished"
    assert end.data["best_miou"] == max(e.data["miou"] for e in evals)
    formats = {x["format"]: x for x in end.data["exports"]}
    assert set(formats) == {"torchscript"}
    for export in formats.values():
        assert export["max_abs_diff"] <= 1e-3
        assert (run_dir / export["path"]).is_file()
        assert export["checkpoint"] == "best.pt"
    assert (run_dir / "recipe.yaml").read_text() == config.read_text()
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(run_dir / "tb"))
    board.Reload()
    assert {
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "train/img_per_s",
        "val/miou",
        "val/pixel_acc",
        "val/mean_acc",
    } <= set(board.Tags()["scalars"])
    assert [s.step for s in board.Scalars("val/miou")] == [16, 32, 48, 64]
    assert board.Scalars("val/miou")[-1].value == pytest.approx(final)
    # Stdout carries the same records, prefixed, between human-readable progress lines.
    wire = [e for e in map(parse_line, proc.stdout.splitlines()) if e is not None]
    assert [e.to_dict() for e in wire] == [e.to_dict() for e in records]
    assert "eval iter 64: mIoU" in proc.stdout


def test_sigkill_after_checkpoint_resumes_at_saved_iteration(tmp_path: Path) -> None:
    # Counted in iterations (16 = two epochs of 8), evaluated every 6 and at the end.
    config = write_recipe(
        tmp_path / "recipe.yaml",
        data={"synthetic": {"train_size": 64, "val_size": 8}},
        train={
            "epochs": None,
            "iterations": 16,
            "eval_unit": "iter",
            "eval_interval": 6,
            "checkpoint_interval": 4,
            "log_interval": 2,
        },
        export=[],
    )
    run_dir = tmp_path / "run"
    with subprocess.Popen(
        train_cmd(config, run_dir),
        env=train_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as proc:
        assert proc.stdout is not None
        wait_for_event(proc.stdout, "checkpoint", min_iter=4)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    saved = last_checkpoint_iter(run_dir)
    assert 4 <= saved < 16
    before = run_events(run_dir)

    proc2 = subprocess.run(
        train_cmd(config, run_dir),
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    records = run_events(run_dir)
    assert records[: len(before)] == before  # nothing rewritten
    assert_seqs_increase(records)
    first, second = of_kind(records, "start")
    assert first.data["resumed_from"] is None
    assert second.data["resumed_from"] == saved
    after = [e for e in records if e.seq > second.seq]
    assert min(e.data["iter"] for e in of_kind(after, "train")) > saved
    assert [e.data["iter"] for e in of_kind(after, "eval")] == [i for i in (6, 12) if i > saved] + [
        16
    ]
    assert [e.data["epoch"] for e in of_kind(after, "train")][-1] == 2
    (end,) = of_kind(records, "end")
    assert end.data["status"] == "finished" and end.data["iter"] == 16
    assert last_checkpoint_iter(run_dir) == 16


def test_sigterm_writes_last_checkpoint_and_exits_143(tmp_path: Path) -> None:
    # With loader workers, and the signal sent to the whole process group (as a runtime
    # stopping a session does): the workers leave the stop to the trainer.
    config = write_recipe(
        tmp_path / "recipe.yaml",
        data={"workers": 2, "synthetic": {"train_size": 64, "val_size": 8}},
        train={"epochs": 3, "checkpoint_interval": 100, "log_interval": 1},
        export=[],
    )
    run_dir = tmp_path / "run"
    with subprocess.Popen(
        train_cmd(config, run_dir),
        env=train_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        wait_for_event(proc.stdout, "train", min_iter=2)
        signalled = time.time()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.stdout.read()
        # 128 + SIGTERM: non-zero, so an engine's on-failure restart policy resumes it
        assert proc.wait(timeout=120) == 143, proc.stderr.read()[-3000:]
    records = run_events(run_dir)
    (end,) = of_kind(records, "end")
    assert end.data["status"] == "stopped"
    stopped_at = end.data["iter"]
    assert 2 <= stopped_at < 24
    last = run_dir / "checkpoints" / "last.pt"
    assert last.stat().st_mtime >= signalled - 1  # written after the signal
    assert last_checkpoint_iter(run_dir) == stopped_at
    checkpoint = of_kind(records, "checkpoint")[-1]
    assert checkpoint.data == {
        "iter": stopped_at,
        "epoch": checkpoint.data["epoch"],
        "path": "checkpoints/last.pt",
        "best": False,
    }
    assert not list(last.parent.glob("*.tmp"))  # the atomic write left no temp file


def test_two_process_gloo_ddp_writes_one_event_stream(tmp_path: Path) -> None:
    # 36 samples, global batch 8 (4 per rank): the sampler drops the incomplete global
    # batch, so an epoch is floor(36 / 8) = 4 iterations on each rank.
    config = small_recipe(tmp_path / "recipe.yaml", train_size=36, epochs=2, log_interval=1)
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "seglab.train",
        "--config",
        str(config),
        "--run-dir",
        str(run_dir),
    ]
    proc = subprocess.run(
        cmd, env=train_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    wire = [e for e in map(parse_line, proc.stdout.splitlines()) if e is not None]
    records = run_events(run_dir)
    assert [e.to_dict() for e in wire] == [e.to_dict() for e in records]  # rank 0 only
    assert_seqs_increase(records)
    (start,) = of_kind(records, "start")
    assert start.data["world_size"] == 2
    assert start.data["batch_per_rank"] == 4
    assert start.data["iters_per_epoch"] == 4
    assert start.data["total_iters"] == 8
    assert [e.data["iter"] for e in of_kind(records, "train")] == list(range(1, 9))
    assert [e.data["epoch"] for e in of_kind(records, "train")] == [1] * 4 + [2] * 4
    assert [e.data["iter"] for e in of_kind(records, "eval")] == [4, 8]
    (end,) = of_kind(records, "end")
    assert end.data["status"] == "finished"


def test_sigterm_to_the_ddp_launcher_stops_every_rank_and_exits_143(tmp_path: Path) -> None:
    # `--nproc-per-node 2` is torchrun in-process: it forwards the signal to both ranks,
    # which agree to stop at the same step; rank 0 records it.
    config = small_recipe(tmp_path / "recipe.yaml", train_size=64, epochs=4, log_interval=1)
    run_dir = tmp_path / "run"
    with subprocess.Popen(
        [*train_cmd(config, run_dir), "--nproc-per-node", "2"],
        env=train_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        start = wait_for_event(proc.stdout, "start")
        assert start.data["world_size"] == 2
        wait_for_event(proc.stdout, "train", min_iter=2)
        proc.send_signal(signal.SIGTERM)
        proc.stdout.read()
        # 128 + SIGTERM: non-zero, so an engine's on-failure restart policy resumes it
        assert proc.wait(timeout=120) == 143, proc.stderr.read()[-3000:]
    records = run_events(run_dir)
    (end,) = of_kind(records, "end")
    assert end.data["status"] == "stopped" and end.data["iter"] < 16
    assert last_checkpoint_iter(run_dir) == end.data["iter"]


def test_trains_on_a_cityscapes_folder_from_data_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real-dataset path in-process: raw label ids on disk, 19 train ids, 255 ignored."""
    import numpy as np
    from PIL import Image

    from seglab.train.loop import run

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SEGLAB_DATA_ROOT"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "cityscapes"
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 2)):
        for i in range(count):
            stem = f"{split}city_{i:06d}_000019"
            raw = np.full((32, 64), 7, dtype=np.uint8)  # road
            raw[8:24, 16:48] = 26  # a car
            raw[:2] = 0  # unlabeled: ignored
            image = np.where(raw[..., None] == 26, 200, 60) + rng.integers(0, 20, (32, 64, 3))
            for folder, suffix, array in (
                ("leftImg8bit", "leftImg8bit", image.astype(np.uint8)),
                ("gtFine", "gtFine_labelIds", raw),
            ):
                path = root / folder / split / f"{split}city" / f"{stem}_{suffix}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(path)
    config = write_recipe(
        tmp_path / "recipe.yaml",
        data={
            "dataset": "cityscapes",
            "synthetic": None,
            "crop": [32, 32],
            "scale_range": [1.0, 1.0],
        },
        train={"epochs": 2, "batch_size": 2, "log_interval": 1},
        export=[],
    )
    assert run(config, tmp_path / "run", str(root)) == 0
    records = run_events(tmp_path / "run")
    (start,) = of_kind(records, "start")
    assert len(start.data["class_names"]) == 19 and start.data["iters_per_epoch"] == 2
    final = of_kind(records, "eval")[-1].data
    present = [i for i, iou in enumerate(final["per_class_iou"]) if iou is not None]
    assert {0, 13} <= set(present)  # road and car are scored; absent classes are null
    assert of_kind(records, "end")[0].data["status"] == "finished"
