"""ConfusionMatrix and SegMetrics: hand-checked values, a brute-force reference, DDP sums."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")
np = pytest.importorskip("numpy")

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

from seglab.recipes import DataConfig, SyntheticConfig  # noqa: E402
from seglab.train import labels  # noqa: E402
from seglab.train.metrics import ConfusionMatrix  # noqa: E402

pytestmark = pytest.mark.train


def test_hand_computed_example() -> None:
    # 3 classes; class 2 absent from target and prediction; two ignored pixels.
    target = torch.tensor([[0, 0, 0, 1], [1, 1, 255, 255]])
    pred = torch.tensor([[0, 0, 1, 1], [1, 0, 2, 0]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    assert cm.matrix.dtype == torch.int64
    assert cm.matrix.tolist() == [[2, 1, 0], [1, 2, 0], [0, 0, 0]]
    m = cm.compute()
    # class 0: TP 2, FP 1, FN 1 -> 2/4; class 1: TP 2, FP 1, FN 1 -> 2/4; class 2: no union.
    assert m.per_class_iou == [0.5, 0.5, None]
    assert m.miou == 0.5
    assert m.pixel_acc == pytest.approx(4 / 6)
    assert m.per_class_acc == [pytest.approx(2 / 3), pytest.approx(2 / 3), None]
    assert m.mean_acc == pytest.approx(2 / 3)


def test_predicted_only_class_has_zero_iou_and_counts_in_mean() -> None:
    target = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 2, 1, 1])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    m = cm.compute()
    assert m.per_class_iou == [0.5, 1.0, 0.0]
    assert m.miou == pytest.approx(0.5)
    assert m.per_class_acc[2] is None  # no target pixels: no accuracy


def test_prediction_outside_the_classes_is_a_false_negative_only() -> None:
    target = torch.tensor([0, 0, 1, 1, 255])
    pred = torch.tensor([0, 255, 1, 7, 0])
    cm = ConfusionMatrix(2)
    cm.update(pred, target)
    assert cm.matrix.tolist() == [[1, 0], [0, 1]]
    assert cm.missed.tolist() == [1, 1]
    m = cm.compute()
    assert m.per_class_iou == [0.5, 0.5]
    assert m.pixel_acc == 0.5


def test_matches_brute_force_over_many_batches() -> None:
    rng = np.random.default_rng(3)
    n = 6
    cm = ConfusionMatrix(n)
    targets, preds = [], []
    for _ in range(5):
        t = rng.integers(0, n - 1, size=(2, 17, 23))  # class n-1 never in target
        t[rng.random(t.shape) < 0.1] = 255
        p = rng.integers(0, n, size=t.shape)
        cm.update(torch.from_numpy(p), torch.from_numpy(t).to(torch.uint8))
        targets.append(t.ravel())
        preds.append(p.ravel())
    t = np.concatenate(targets)
    p = np.concatenate(preds)
    keep = t != 255
    t, p = t[keep], p[keep]
    m = cm.compute()
    ious = []
    for c in range(n):
        inter = np.sum((t == c) & (p == c))
        union = np.sum((t == c) | (p == c))
        ious.append(inter / union if union else None)
        if ious[-1] is None:
            assert m.per_class_iou[c] is None
        else:
            assert m.per_class_iou[c] == pytest.approx(ious[-1], abs=1e-12)
    assert m.per_class_acc[n - 1] is None
    assert m.pixel_acc == pytest.approx(np.mean(t == p), abs=1e-12)
    assert m.miou == pytest.approx(np.mean([v for v in ious if v is not None]), abs=1e-12)


def _random_batch(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, n, (3, 31, 29), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.15] = 255
    pred = torch.randint(-2, n + 3, target.shape, generator=g)  # some ids out of range
    return pred, target


def test_torch_path_counts_like_numpy_path() -> None:
    """update() counts CPU tensors with numpy and device tensors with torch; same result."""
    n = 5
    pred, target = _random_batch(11, n)
    cm = ConfusionMatrix(n)
    cm.update(pred, target)
    by_torch = cm._bincount_torch(pred, target)
    assert torch.equal(by_torch, cm._counts)
    assert int(cm.missed.sum()) > 0
    assert int(cm._counts.sum()) == int((target != 255).sum())


@pytest.mark.gpu
def test_update_on_gpu_matches_cpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    n = 7
    pred, target = _random_batch(5, n)
    cpu = ConfusionMatrix(n)
    cpu.update(pred, target)
    gpu = ConfusionMatrix(n, device="cuda")
    gpu.update(pred.cuda(), target.cuda())
    assert torch.equal(gpu.matrix.cpu(), cpu.matrix)
    assert gpu.compute() == cpu.compute()


def test_bad_target_and_shape_are_refused() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="target holds id 3"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="target holds id 3"):  # same check on the GPU path
        cm._bincount_torch(torch.tensor([0, 1]), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="target holds id -1"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.tensor([0, 1]), torch.tensor([[0, 1]]))
    assert int(cm.matrix.sum()) == 0


def test_empty_evaluation_reports_none() -> None:
    m = ConfusionMatrix(2).compute()
    assert m.miou is None and m.pixel_acc is None and m.mean_acc is None
    assert m.to_dict()["per_class_iou"] == [None, None]


def _rank(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        cm = ConfusionMatrix(3)
        cm.update(torch.tensor([rank, 2, 255]), torch.tensor([0, 2, 1]))
        cm.all_reduce()
        torch.save(cm.matrix.clone(), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_over_gloo_ranks(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    # rank 0: (t0,p0),(t2,p2),(t1,p255 -> missed); rank 1: (t0,p1),(t2,p2),(t1,missed)
    expected = [[1, 1, 0], [0, 0, 0], [0, 0, 2]]
    for rank in range(2):
        assert torch.load(tmp_path / f"rank{rank}.pt").tolist() == expected


def test_all_reduce_without_process_group_keeps_counts() -> None:
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([1]), torch.tensor([1]))
    cm.all_reduce()
    assert cm.matrix.tolist() == [[0, 0], [0, 1]]


def test_label_tables_match_cityscapesscripts() -> None:
    cs = pytest.importorskip("cityscapesscripts.helpers.labels")
    lut = labels.cityscapes_lut()
    for label in cs.labels:
        if label.id < 0:
            continue
        expected = 255 if label.ignoreInEval else label.trainId
        assert lut[label.id] == expected, label.name
        if not label.ignoreInEval:
            assert labels.CITYSCAPES_CLASSES[label.trainId] == label.name


def test_class_counts_per_dataset() -> None:
    def data(dataset: str, **extra: object) -> DataConfig:
        return DataConfig(dataset=dataset, crop=[64, 64], **extra)  # type: ignore[arg-type]

    assert labels.num_classes(data("cityscapes")) == 19
    assert labels.num_classes(data("ade20k")) == 150
    assert labels.num_classes(data("voc")) == 21
    assert labels.num_classes(data("synthetic")) == labels.DEFAULT_SYNTHETIC_CLASSES
    seven = data("synthetic", synthetic=SyntheticConfig(num_classes=7))
    assert labels.class_names(seven) == ("background", *(f"shape_{i}" for i in range(1, 7)))
    assert len(set(labels.ADE20K_CLASSES)) == 150
    ade = labels.ade20k_lut()
    assert (ade[0], ade[1], ade[150], ade[151]) == (255, 0, 149, 255)
    assert labels.label_lut("voc") is None
    assert labels.VOC_CLASSES[0] == "background"
