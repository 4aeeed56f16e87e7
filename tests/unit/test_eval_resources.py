"""`seglab eval` without torch, with memory that does not grow with the number of frames,
and the same counts whichever decoder or process count is used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")
pytest.importorskip("pyspng", reason="the train extra (pyspng) is not installed")

from seglab.train import evaluate  # noqa: E402

pytestmark = pytest.mark.train

MEMORY_LIMIT_MIB = 200


def _frames(root: Path, count: int, size: tuple[int, int], *, palette: bool = False) -> None:
    """`count` frames sharing two files through hard links (cheap to make, real to decode)."""
    rng = np.random.default_rng(1)
    height, width = size
    gt = rng.integers(0, 34, size=(height // 16, width // 16)).repeat(16, 0).repeat(16, 1)
    pred = gt.copy()
    noise = rng.random(gt.shape) < 0.2
    pred[noise] = rng.integers(0, 34, size=int(noise.sum()))
    gt_dir, pred_dir = root / "gt" / "city", root / "pred"
    gt_dir.mkdir(parents=True)
    pred_dir.mkdir()
    Image.fromarray(gt.astype(np.uint8)).save(root / "gt.png")
    pred_image = Image.fromarray(pred.astype(np.uint8))
    if palette:
        pred_image = pred_image.convert("P")
    pred_image.save(root / "pred.png")
    for i in range(count):
        os.link(root / "gt.png", gt_dir / f"city_{i:06d}_000019_gtFine_labelIds.png")
        os.link(root / "pred.png", pred_dir / f"city_{i:06d}_000019_pred.png")


_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from seglab.cli import main
    code = main(["eval", "--dataset", "cityscapes", "--gt", sys.argv[1], "--pred", sys.argv[2],
                 "--json"])
    # VmHWM, not RUSAGE_SELF: ru_maxrss also counts the pages of the process that started
    # this one (the test runner, torch included) as they were at fork/exec.
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    kib = {
        "self": int(status["VmHWM"].split()[0]),
        "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }
    torch = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print(json.dumps({"code": code, "kib": kib, "torch": torch}), file=sys.stderr)
    """
)


def _run_eval(root: Path) -> tuple[dict[str, object], dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(root / "gt"), str(root / "pred")],
        capture_output=True,
        text=True,
        check=True,
    )
    probe: dict[str, object] = json.loads(proc.stderr.strip().splitlines()[-1])
    return json.loads(proc.stdout), probe


def test_eval_imports_no_torch_and_memory_does_not_grow_with_frames(tmp_path: Path) -> None:
    peaks = {}
    for count in (20, 200):
        root = tmp_path / str(count)
        _frames(root, count, (512, 1024))
        doc, probe = _run_eval(root)
        assert probe["code"] == 0
        assert doc["images"] == count
        assert probe["torch"] == []
        kib = probe["kib"]
        assert isinstance(kib, dict)
        peaks[count] = max(kib["self"], kib["children"]) / 1024
    assert max(peaks.values()) < MEMORY_LIMIT_MIB, peaks
    # 180 more frames of 0.5 Mpixel would add ~180 MiB if decoded frames were held.
    assert peaks[200] - peaks[20] < 16, peaks


def test_processes_and_decoders_give_the_same_counts(tmp_path: Path) -> None:
    _frames(tmp_path / "grey", 6, (64, 128))
    _frames(tmp_path / "palette", 6, (64, 128), palette=True)  # Pillow path, same ids
    results = [
        evaluate.evaluate_cityscapes(tmp_path / name / "gt", tmp_path / name / "pred", workers=w)
        for name in ("grey", "palette")
        for w in (1, 2)
    ]
    assert results[0].metrics.miou is not None and 0 < results[0].metrics.miou < 1
    assert all(r == results[0] for r in results[1:])


def test_count_frame_folds_to_the_class_matrix_of_the_mapped_ids(tmp_path: Path) -> None:
    _frames(tmp_path, 1, (32, 64))
    gt_path = next((tmp_path / "gt").rglob("*.png"))
    pred_path = next((tmp_path / "pred").rglob("*.png"))
    raw = evaluate.count_frame((gt_path, pred_path))
    lut = np.asarray(evaluate.cityscapes_lut(), dtype=np.uint8)
    folded = evaluate.fold_raw_counts(raw, lut, 19)
    gt = lut[np.asarray(Image.open(gt_path))].ravel()
    pred = lut[np.asarray(Image.open(pred_path))].ravel()
    keep = gt != 255
    expected = np.zeros((19, 20), dtype=np.int64)
    np.add.at(expected, (gt[keep], np.minimum(pred[keep], 19)), 1)
    assert np.array_equal(folded, expected)
    assert folded[:, 19].sum() > 0  # some predictions are ignored ids: missed, not counted


def test_a_corrupt_prediction_is_named(tmp_path: Path) -> None:
    _frames(tmp_path, 3, (32, 64))
    victim = next((tmp_path / "pred").glob("city_000001_*.png"))
    victim.unlink()
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(evaluate.EvalInputError, match=r"city_000001_000019_pred\.png"):
        evaluate.evaluate_cityscapes(tmp_path / "gt", tmp_path / "pred", workers=2)
