"""`estimate_activation_bytes`: the formula, and its factors re-measured on the real models.

The measured figure is what autograd saves for the backward pass of one training forward
(model and loss), counted per storage with the weights left out, as the difference between
two crop sizes so that anything not growing with the pixels (bf16 copies of the weights
under autocast) cancels out.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from seglab import recipes
from seglab.recipes import Recipe, estimate_activation_bytes, num_classes
from seglab.train.labels import num_classes as trainer_classes

REPO = Path(__file__).resolve().parents[2]


def _recipe(
    arch: str = "deeplabv3plus",
    backbone: str = "resnet50",
    stride: int = 16,
    crop: tuple[int, int] = (512, 1024),
    batch: int = 8,
    amp: str = "none",
    **more: Any,
) -> Recipe:
    data = {"dataset": "cityscapes", "crop": list(crop), **more.pop("data", {})}
    return Recipe.model_validate(
        {
            "name": "estimate",
            "model": {"arch": arch, "backbone": backbone, "output_stride": stride},
            "data": data,
            "train": {"iterations": 1, "batch_size": batch, "amp": amp},
            **more,
        }
    )


def test_the_formula_for_the_cityscapes_seed() -> None:
    seed = recipes.load(REPO / "recipes" / "cityscapes-deeplabv3plus-r50.yaml").base
    assert (seed.train.batch_size, seed.data.crop, seed.train.amp) == (8, [512, 1024], "bf16")
    per_pixel = 625 * 2 + 19 * 4  # elements x bf16 bytes + classes x fp32 log-probabilities
    assert estimate_activation_bytes(seed) == 8 * 512 * 1024 * per_pixel
    assert 5 * 2**30 < estimate_activation_bytes(seed) < 6 * 2**30


def test_amp_halves_the_activations_but_not_the_loss() -> None:
    fp32 = estimate_activation_bytes(_recipe())
    bf16 = estimate_activation_bytes(_recipe(amp="bf16"))
    loss = 8 * 512 * 1024 * 19 * 4
    assert bf16 - loss == (fp32 - loss) // 2


def test_the_batch_splits_over_every_rank_rounded_up() -> None:
    one = estimate_activation_bytes(_recipe(batch=1))
    assert estimate_activation_bytes(_recipe(batch=8)) == 8 * one
    spread = _recipe(batch=8, resources={"gpus": 2, "nodes": 2, "network": "host"})
    assert estimate_activation_bytes(spread) == 2 * one
    assert estimate_activation_bytes(_recipe(batch=9, resources={"gpus": 3})) == 3 * one


def test_the_estimate_grows_with_pixels_backbone_stride_aux_and_classes() -> None:
    base = estimate_activation_bytes(_recipe())
    assert estimate_activation_bytes(_recipe(crop=(1024, 2048))) == 4 * base
    assert estimate_activation_bytes(_recipe(backbone="resnet101")) > base
    assert estimate_activation_bytes(_recipe(stride=8)) > base
    aux = _recipe(model={"arch": "deeplabv3plus", "backbone": "resnet50", "aux_loss": True})
    assert estimate_activation_bytes(aux) == 8 * 512 * 1024 * ((625 + 16) * 4 + 2 * 19 * 4)
    ade = _recipe(data={"dataset": "ade20k"})
    assert estimate_activation_bytes(ade) - base == 8 * 512 * 1024 * (150 - 19) * 4


def test_the_largest_recipe_the_schema_admits_is_refused_by_its_estimate() -> None:
    huge = _recipe(crop=(8192, 8192), batch=4096, backbone="resnet101", stride=8)
    assert estimate_activation_bytes(huge) > 1000 * 2**40  # > 1000 TiB: no machine has it


@pytest.mark.parametrize(
    "data",
    [
        {"dataset": "cityscapes", "crop": [64, 64]},
        {"dataset": "ade20k", "crop": [64, 64]},
        {"dataset": "voc", "crop": [64, 64]},
        {"dataset": "synthetic", "crop": [64, 64]},
        {"dataset": "synthetic", "crop": [64, 64], "synthetic": {"num_classes": 7}},
    ],
)
def test_class_counts_agree_with_the_trainer(data: dict[str, Any]) -> None:
    config = recipes.DataConfig.model_validate(data)
    assert num_classes(config) == trainer_classes(config)


# -- calibration against the models --------------------------------------------------------


def _measured_bytes_per_pixel(recipe: Recipe, amp: bool) -> float:
    torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")
    import torch.nn.functional as F

    from seglab.train.models import build_model

    torch.manual_seed(0)
    classes = num_classes(recipe.data)
    model = build_model(recipe.model, classes).train()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def saved(side: int) -> int:
        storages: dict[int, int] = {}

        def pack(tensor: Any) -> Any:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in weights:
                storages[storage.data_ptr()] = storage.nbytes()
            return tensor

        image = torch.randn(2, 3, side, side)
        target = torch.randint(0, classes, (2, side, side))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                out = model(image)
            loss = F.cross_entropy(out["out"].float(), target)
            del loss
        return sum(storages.values())

    return (saved(128) - saved(64)) / (2 * (128 * 128 - 64 * 64))


@pytest.mark.train
@pytest.mark.parametrize(
    ("arch", "backbone", "stride", "amp"),
    [
        ("deeplabv3plus", "resnet18", 16, "none"),
        ("deeplabv3plus", "resnet18", 8, "bf16"),
        ("deeplabv3", "resnet34", 16, "none"),
        ("deeplabv3plus", "resnet50", 16, "none"),
    ],
)
def test_the_factors_match_the_models(arch: str, backbone: str, stride: int, amp: str) -> None:
    recipe = _recipe(arch, backbone, stride, crop=(64, 64), batch=1, amp=amp)
    measured = _measured_bytes_per_pixel(recipe, amp != "none")
    estimated = estimate_activation_bytes(recipe) / (64 * 64)
    # the estimate is a floor of the peak: at or a little above what autograd keeps
    assert math.isclose(estimated, measured, rel_tol=0.12) and estimated >= measured, (
        f"{arch}/{backbone}/os{stride}/{amp}: measured {measured:.0f} B/px, "
        f"estimated {estimated:.0f}; update recipes._ELEMENTS_PER_PIXEL"
    )
