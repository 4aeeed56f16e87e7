"""`seglab eval` agrees with the official cityscapesscripts evaluation on generated data."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy")

Image = pytest.importorskip("PIL.Image")
official = pytest.importorskip(
    "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling",
    reason="cityscapesscripts (dev extra) is not installed",
)
cs_labels = pytest.importorskip("cityscapesscripts.helpers.labels")

from seglab.cli import main  # noqa: E402
from seglab.train.evaluate import EvalInputError, evaluate_cityscapes  # noqa: E402

pytestmark = pytest.mark.train

EVAL_IDS = [lb.id for lb in cs_labels.labels if lb.id >= 0 and not lb.ignoreInEval]
IGNORED_IDS = [lb.id for lb in cs_labels.labels if lb.id >= 0 and lb.ignoreInEval]
ABSENT = {31, 32}  # train, motorcycle: in neither ground truth nor prediction
PRED_ONLY = {28}  # bus: predicted, never in ground truth -> IoU 0
GT_ONLY = {27}  # truck: in ground truth, never predicted -> IoU 0
FRAMES = [("aachen", 0, 19), ("aachen", 1, 42), ("bochum", 0, 7), ("bochum", 3, 11)]


def _write(path: Path, ids: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids.astype(np.uint8), mode="L").save(path)


def _generate(root: Path) -> tuple[Path, Path]:
    """Cityscapes-layout GT and raw-id predictions with noise, ignored ids and absent classes."""
    rng = np.random.default_rng(7)
    gt_dir = root / "gtFine" / "val"
    pred_dir = root / "results"
    gt_pool = [i for i in EVAL_IDS if i not in ABSENT | PRED_ONLY] + IGNORED_IDS[:6]
    pred_pool = [i for i in EVAL_IDS if i not in ABSENT | GT_ONLY] + [0, 4, 9, 29]
    for city, seq, frame in FRAMES:
        stem = f"{city}_{seq:06d}_{frame:06d}"
        # Blocky GT, like real label maps, and a prediction that is mostly right.
        gt = rng.choice(gt_pool, size=(6, 8)).repeat(8, axis=0).repeat(16, axis=1)
        pred = gt.copy()
        noise = rng.random(gt.shape) < 0.3
        pred[noise] = rng.choice(pred_pool, size=int(noise.sum()))
        pred[np.isin(pred, list(GT_ONLY))] = 7
        _write(gt_dir / city / f"{stem}_gtFine_labelIds.png", gt)
        _write(pred_dir / "pred" / f"{stem}_leftImg8bit.png", pred)
    return gt_dir, pred_dir


def _official_scores(
    root: Path, gt_dir: Path, pred_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    monkeypatch.setenv("CITYSCAPES_DATASET", str(root))
    monkeypatch.setenv("CITYSCAPES_RESULTS", str(pred_dir))
    monkeypatch.setenv("CITYSCAPES_EXPORT_DIR", str(root))
    module = importlib.reload(official)  # its args are read from the environment at import
    args = module.args
    args.evalInstLevelScore = False  # nIoU needs instance images; not what we compare
    args.JSONOutput = False
    args.quiet = True
    gts = sorted(str(p) for p in gt_dir.rglob("*_gtFine_labelIds.png"))
    preds = [module.getPrediction(args, gt) for gt in gts]
    result: dict[str, Any] = module.evaluateImgLists(preds, gts, args)
    return result


def test_agrees_with_cityscapesscripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gt_dir, pred_dir = _generate(tmp_path)
    ref = _official_scores(tmp_path, gt_dir, pred_dir, monkeypatch)
    ours = evaluate_cityscapes(gt_dir, pred_dir)
    assert ours.images == len(FRAMES)
    by_name = dict(zip(ours.class_names, ours.metrics.per_class_iou, strict=True))
    assert set(by_name) == {cs_labels.id2label[i].name for i in EVAL_IDS}
    for label_id in EVAL_IDS:
        name = cs_labels.id2label[label_id].name
        expected = ref["classScores"][name]
        if label_id in ABSENT:
            assert math.isnan(expected)
            assert by_name[name] is None
        else:
            assert by_name[name] is not None
            assert by_name[name] == expected, name  # exactly: same counts, same division
    for label_id in PRED_ONLY | GT_ONLY:
        assert by_name[cs_labels.id2label[label_id].name] == 0.0
    assert ours.metrics.miou is not None
    assert ours.metrics.miou == ref["averageScoreClasses"]
    # The generated predictions really contain ignored ids, and the GT ignored pixels.
    assert 0.3 < ours.metrics.miou < 0.95


def test_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt_dir, pred_dir = _generate(tmp_path)
    code = main(
        ["eval", "--dataset", "cityscapes", "--gt", str(gt_dir), "--pred", str(pred_dir), "--json"]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["images"] == len(FRAMES)
    assert len(doc["classes"]) == 19
    train = next(c for c in doc["classes"] if c["name"] == "train")
    assert train == {"train_id": 16, "label_id": 31, "name": "train", "iou": None, "acc": None}
    assert isinstance(doc["miou"], float)


def test_cli_text_and_missing_prediction(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt_dir, pred_dir = _generate(tmp_path)
    assert (
        main(["eval", "--dataset", "cityscapes", "--gt", str(gt_dir), "--pred", str(pred_dir)]) == 0
    )
    out = capsys.readouterr().out
    assert "mIoU" in out and "motorcycle" in out and "n/a" in out
    next(pred_dir.rglob("bochum_000003_000011*.png")).unlink()
    assert (
        main(["eval", "--dataset", "cityscapes", "--gt", str(gt_dir), "--pred", str(pred_dir)]) == 1
    )
    err = capsys.readouterr().err
    assert "1 of 4 ground-truth frames have no prediction" in err
    assert "bochum_000003_000011_gtFine_labelIds.png" in err


def test_train_ids_in_predictions_are_refused(tmp_path: Path) -> None:
    gt_dir, pred_dir = _generate(tmp_path)
    bad = next(pred_dir.rglob("aachen_000000_000019*.png"))
    _write(bad, np.full((48, 128), 255))
    with pytest.raises(EvalInputError, match="label id 255, not a Cityscapes label id"):
        evaluate_cityscapes(gt_dir, pred_dir)
