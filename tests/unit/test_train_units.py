"""Trainer parts on their own: schedule, checkpoints, event writer, loss, failure events."""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

import numpy as np
import pytest

from seglab.events import PREFIX
from seglab.recipes import ScheduleConfig

torch = pytest.importorskip("torch", reason="the trainer needs the train extra (torch)")

from seglab.train import checkpoint, loop  # noqa: E402  (needs torch, skipped above)
from seglab.train.event_writer import EventWriter, last_seq  # noqa: E402
from seglab.train.schedule import build_scheduler, lr_factor  # noqa: E402

pytestmark = pytest.mark.train

REPO = Path(__file__).resolve().parents[2]


# -- schedule -------------------------------------------------------------------------------


def test_poly_schedule_decays_to_min_lr() -> None:
    cfg = ScheduleConfig(name="poly", power=0.9, min_lr=0.001)
    assert lr_factor(cfg, 0.01, 0, 100) == pytest.approx(1.0)
    assert lr_factor(cfg, 0.01, 50, 100) == pytest.approx(0.5**0.9 * 0.9 + 0.1)
    assert lr_factor(cfg, 0.01, 100, 100) == pytest.approx(0.1)  # min_lr / lr


def test_warmup_ramps_linearly_into_poly() -> None:
    cfg = ScheduleConfig(name="poly", power=1.0, warmup_iters=10, warmup_ratio=0.1)
    assert lr_factor(cfg, 0.01, 0, 100) == pytest.approx(0.1)
    assert lr_factor(cfg, 0.01, 5, 100) == pytest.approx(0.55 * 0.95)
    assert lr_factor(cfg, 0.01, 10, 100) == pytest.approx(0.9)
    constant = ScheduleConfig(name="constant")
    assert lr_factor(constant, 0.01, 77, 100) == 1.0


def test_scheduler_steps_per_iteration_and_restores() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scheduler = build_scheduler(optimizer, ScheduleConfig(power=1.0), total_iters=10)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.06)
    state = scheduler.state_dict()
    optimizer2 = torch.optim.SGD([param], lr=0.1)
    scheduler2 = build_scheduler(optimizer2, ScheduleConfig(power=1.0), total_iters=10)
    scheduler2.load_state_dict(state)
    optimizer2.step()
    scheduler2.step()
    assert optimizer2.param_groups[0]["lr"] == pytest.approx(0.05)


# -- checkpoints ----------------------------------------------------------------------------


def test_checkpoint_write_is_atomic_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    checkpoint.save_atomic({"iter": 1, "w": torch.arange(3)}, path)
    checkpoint.save_atomic({"iter": 2, "w": torch.arange(4)}, path)
    payload = checkpoint.load(path)
    assert payload["iter"] == 2 and torch.equal(payload["w"], torch.arange(4))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp file left


def test_failed_checkpoint_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.pt"
    checkpoint.save_atomic({"iter": 1}, path)

    class Unpicklable:
        def __reduce__(self) -> tuple[object, ...]:
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        checkpoint.save_atomic({"iter": 2, "bad": Unpicklable()}, path)
    assert checkpoint.load(path)["iter"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_best_is_one_file_with_last_until_last_moves_on_and_no_temp_stays(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    last, best = folder / checkpoint.LAST, folder / checkpoint.BEST
    folder.mkdir()
    for name in (".last.pt.tmp", ".best.pt.tmp"):  # left by a trainer killed mid-write
        (folder / name).write_bytes(b"partial")
    checkpoint.save_atomic({"iter": 1}, last)
    checkpoint.save_atomic({"iter": 0}, best)  # an older best.pt is replaced in one rename
    assert checkpoint.link_atomic(last, best)
    assert best.stat().st_ino == last.stat().st_ino and last.stat().st_nlink == 2
    checkpoint.save_atomic({"iter": 2}, last)  # the next last.pt is a new file
    assert best.stat().st_ino != last.stat().st_ino
    assert checkpoint.load(best)["iter"] == 1 and checkpoint.load(last)["iter"] == 2
    assert sorted(p.name for p in folder.iterdir()) == [checkpoint.BEST, checkpoint.LAST]


def test_rng_states_restore_every_generator() -> None:
    state = checkpoint.rng_state()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.random()
    checkpoint.restore_rng(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


# -- events ---------------------------------------------------------------------------------


def test_event_writer_continues_seq_and_repairs_a_torn_line(tmp_path: Path) -> None:
    stream = open(os.devnull, "w")  # noqa: SIM115
    writer = EventWriter(tmp_path, stream=stream)
    writer.emit(
        "start", recipe="r", variant="default", world_size=1, class_names=["a"], total_iters=3
    )
    writer.emit("train", iter=1, epoch=1, loss=1.0, lr=0.1)
    writer.close()
    with (tmp_path / "events.jsonl").open("a") as handle:
        handle.write('{"v":1,"kind":"train","seq":2,"ti')  # SIGKILL mid-write
    assert last_seq(tmp_path / "events.jsonl") == 1
    resumed = EventWriter(tmp_path, stream=stream, min_seq=1)
    event = resumed.emit(
        "eval", iter=1, epoch=1, miou=0.5, pixel_acc=0.9, mean_acc=0.6, per_class_iou=[0.5]
    )
    resumed.close()
    stream.close()
    assert event is not None and event.seq == 2
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["kind"] == "eval"  # on a line of its own
    # A checkpoint's seq wins when it is ahead of the file (the file lost records).
    ahead = EventWriter(tmp_path, stream=stream, min_seq=10)
    assert ahead.seq == 9
    ahead.close()


def test_event_lines_go_to_stdout_and_file_on_rank_zero_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main = EventWriter(tmp_path / "main")
    main.emit("error", message="boom", traceback=None)
    main.log("a progress line")
    main.close()
    other = EventWriter(tmp_path / "other", enabled=False)
    assert other.emit("error", message="boom") is None
    other.log("not shown")
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(PREFIX) and out[1] == "a progress line"
    record = json.loads(out[0][len(PREFIX) :])
    assert record == json.loads((tmp_path / "main" / "events.jsonl").read_text())
    assert not (tmp_path / "other").exists()


# -- loss and failures ----------------------------------------------------------------------


def test_loss_ignores_255_and_weights_the_aux_head() -> None:
    logits = torch.tensor([[[[2.0]], [[0.0]]]])  # 1x2x1x1
    target = torch.tensor([[[0]]])
    main = float(loop.segmentation_loss({"out": logits}, target, 0.4))
    both = float(loop.segmentation_loss({"out": logits, "aux": logits.flip(1)}, target, 0.4))
    assert main == pytest.approx(float(torch.log1p(torch.exp(torch.tensor(-2.0)))))
    assert both == pytest.approx(main + 0.4 * float(torch.log1p(torch.exp(torch.tensor(2.0)))))
    # The 255 pixel counts nowhere: the mean is over the one labelled pixel.
    wide = torch.zeros(1, 2, 1, 2)
    assert float(
        loop.segmentation_loss({"out": wide}, torch.tensor([[[255, 1]]]), 0.4)
    ) == pytest.approx(float(torch.log(torch.tensor(2.0))))


def test_a_missing_dataset_fails_with_an_error_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SEGLAB_DATA_ROOT", raising=False)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    config = tmp_path / "recipe.yaml"
    text = (REPO / "recipes" / "synthetic-smoke.yaml").read_text()
    text = text.replace("dataset: synthetic", "dataset: cityscapes").replace(
        "  synthetic: {", "  # synthetic: {"
    )
    config.write_text(text)
    handler = signal.getsignal(signal.SIGTERM)
    assert loop.run(config, tmp_path / "run") == 1
    assert signal.getsignal(signal.SIGTERM) is handler  # the trainer restored it
    err = capsys.readouterr().err
    assert "cityscapes needs its dataset directory: pass --data-root PATH" in err
    assert "Traceback" not in err
    records = [
        json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()
    ]
    assert [r["kind"] for r in records] == ["error", "end"]
    assert records[0]["traceback"] is None  # a user error: no traceback
    assert records[1]["status"] == "failed" and records[1]["best_miou"] is None


def test_an_unreadable_last_checkpoint_is_reported_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"\x80\x04not a checkpoint")  # e.g. a disk that lost the tail
    assert loop.run(REPO / "recipes" / "synthetic-smoke.yaml", run_dir) == 1
    err = capsys.readouterr().err
    assert f"{last} cannot be read" in err and "move it away to start the run over" in err
    assert last.read_bytes() == b"\x80\x04not a checkpoint"  # nothing lost
    records = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["error", "end"]


def test_a_checkpoint_of_another_model_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.pt"
    checkpoint.save_atomic({"model": {"fc.weight": torch.zeros(2, 2)}, "iter": 3}, last)
    assert loop.run(REPO / "recipes" / "synthetic-smoke.yaml", run_dir) == 1
    err = capsys.readouterr().err
    assert f"{last} does not fit the model of this recipe (was the recipe changed?)" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("amp", "channels_last"), [("fp16", True), ("bf16", False)])
def test_mixed_precision_steps_and_checkpoints_the_scaler(
    tmp_path: Path, amp: str, channels_last: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    from seglab.recipes import load_resolved
    from seglab.train.distributed import DistContext

    base = load_resolved(REPO / "recipes" / "synthetic-smoke.yaml")
    recipe = base.model_copy(
        update={"train": base.train.model_copy(update={"amp": amp, "channels_last": channels_last})}
    )
    ctx = DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    trainer = loop.Trainer(recipe, tmp_path / "run", ctx, None)
    trainer._build()
    images, labels = next(iter(trainer.loaders.train))
    before = [p.detach().clone() for p in trainer.params[:3]]
    loss, norm = trainer.train_step(images, labels)
    assert torch.isfinite(loss) and float(norm) > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.params[:3], strict=True))
    assert trainer.scaler.is_enabled() == (amp == "fp16")
    trainer.iter = 1
    trainer.events.emit("train", iter=1, epoch=1, loss=float(loss), lr=0.1)
    trainer.save_checkpoint()
    trainer.close()
    saved = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert (saved["scaler"] is not None) == (amp == "fp16")
    assert saved["iter"] == 1
    assert saved["event_seq"] == 0  # the last event before it (its own event follows)
    assert '"kind":"checkpoint"' in capsys.readouterr().out
