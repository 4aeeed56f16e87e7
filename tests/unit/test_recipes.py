"""Recipe loading: schema, `FILE:LINE` errors, `extends:`, ablation grids, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from seglab import recipes
from seglab.cli import main
from seglab.yamlpos import ConfigError

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "recipes").glob("*.yaml"))

BASE = """\
name: base
model:
  arch: deeplabv3plus
  backbone: resnet18
  output_stride: 16
data:
  dataset: synthetic
  crop: [64, 64]
train:
  iterations: 100
  batch_size: 8
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        recipes.load(path)
    return [str(p) for p in info.value.problems]


def test_every_shipped_recipe_is_valid() -> None:
    assert len(SHIPPED) >= 5
    for path in SHIPPED:
        loaded = recipes.load(path)
        assert loaded.variants, path


def test_seed_recipe_matches_the_reference_experiment() -> None:
    seed = recipes.load(REPO / "recipes" / "cityscapes-deeplabv3plus-r50.yaml").base
    assert (seed.model.arch, seed.model.backbone) == ("deeplabv3plus", "resnet50")
    assert seed.data.dataset == "cityscapes"
    assert seed.data.crop == [512, 1024]
    assert seed.train.batch_size == 8
    assert seed.train.epochs == 80
    opt = seed.train.optimizer
    assert (opt.name, opt.lr, opt.momentum, opt.weight_decay) == ("sgd", 0.01, 0.9, 1e-4)
    assert seed.train.amp != "none"
    assert seed.train.cudnn_benchmark


def test_resolution_ablation_has_full_and_half() -> None:
    grid = recipes.load(REPO / "recipes" / "cityscapes-deeplabv3plus-r50-resolution.yaml")
    crops = {v.name: v.recipe.data.crop for v in grid.variants}
    assert crops == {"resolution=full": [512, 1024], "resolution=half": [256, 512]}
    assert {v.recipe.variant for v in grid.variants} == set(crops)


def test_two_axes_of_three_levels_make_six_stable_variants(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "grid.yaml",
        BASE
        + """\
ablate:
  lr:
    low: {train.optimizer.lr: 0.001}
    mid: {train.optimizer.lr: 0.01}
    high: {train.optimizer.lr: 0.1}
  crop:
    small: {data.crop: [32, 32]}
    large: {data.crop: [128, 128]}
""",
    )
    first = recipes.load(path)
    second = recipes.load(path)
    names = [v.name for v in first.variants]
    assert len(names) == 6 == len(set(names))
    assert names == [v.name for v in second.variants]
    assert names[0] == "lr=low,crop=small"
    assert names[-1] == "lr=high,crop=large"
    assert [v.recipe.sha() for v in first.variants] == [v.recipe.sha() for v in second.variants]
    high_large = first.variant("lr=high,crop=large").recipe
    assert high_large.train.optimizer.lr == 0.1
    assert high_large.data.crop == [128, 128]
    assert first.variant("lr-high_crop-large").name == "lr=high,crop=large"
    assert first.axes == {"lr": ["low", "mid", "high"], "crop": ["small", "large"]}


def test_recipe_without_grid_has_one_default_variant(tmp_path: Path) -> None:
    loaded = recipes.load(write(tmp_path, "one.yaml", BASE))
    assert [v.name for v in loaded.variants] == ["default"]
    assert loaded.base.train.optimizer.name == "sgd"  # defaults are filled in


def test_extends_merges_and_keeps_the_child_name(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    child = write(
        tmp_path,
        "child.yaml",
        """\
extends: base.yaml
name: child
train:
  batch_size: 4
ablate:
  seed:
    a: {train.seed: 1}
    b: {train.seed: 2}
""",
    )
    loaded = recipes.load(child)
    assert loaded.name == "child"
    assert loaded.base.train.batch_size == 4
    assert loaded.base.train.iterations == 100  # from the parent
    assert [v.recipe.train.seed for v in loaded.variants] == [1, 2]


def test_errors_in_a_parent_name_the_parent_file(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE.replace("backbone: resnet18", "backbone: resnet7"))
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nname: child\n")
    assert problems_of(child) == [
        f"{tmp_path / 'base.yaml'}:4: model.backbone: input should be 'resnet18', "
        "'resnet34', 'resnet50' or 'resnet101', got 'resnet7'"
    ]


def test_circular_and_missing_extends(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    (message,) = problems_of(tmp_path / "a.yaml")
    assert "circular extends" in message
    missing = write(tmp_path, "m.yaml", "name: m\nextends: nowhere.yaml\n")
    assert problems_of(missing) == [
        f"{missing}:2: extends: no such file: {tmp_path / 'nowhere.yaml'}"
    ]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("  output_stride: 16", "  output_stide: 16"),
            ":5: model.output_stide: unknown key (did you mean 'output_stride'?)",
        ),
        (
            ("  batch_size: 8", "  batch_size: eight"),
            ":11: train.batch_size: input should be a valid integer, got 'eight'",
        ),
        (
            ("  batch_size: 8", "  batch_size: 0"),
            ":11: train.batch_size: input should be greater than 0, got 0",
        ),
        (
            ("  crop: [64, 64]", "  crop: [64, 60]"),
            ":8: data.crop: [64, 60] is not divisible by model.output_stride 16",
        ),
        (
            ("  iterations: 100", "  iterations: 100\n  epochs: 3"),
            ":9: train: give exactly one of epochs or iterations",
        ),
        (
            ("  dataset: synthetic", "  dataset: kitti"),
            ":7: data.dataset: input should be 'cityscapes', 'ade20k', 'voc' or 'synthetic', "
            "got 'kitti'",
        ),
    ],
)
def test_each_error_class_is_located(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    old, new = edit
    path = write(tmp_path, "r.yaml", BASE.replace(old, new))
    assert problems_of(path) == [f"{path}{expected}"]


def test_a_level_overriding_a_missing_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "r.yaml",
        BASE
        + """\
ablate:
  lr:
    low: {train.optimiser.lr: 0.001}
""",
    )
    assert problems_of(path) == [
        f"{path}:14: ablate.lr.low.train.optimiser.lr: overrides a key that does not exist: "
        "train has no key 'optimiser' (did you mean 'optimizer'?)"
    ]


def test_two_axes_overriding_the_same_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "r.yaml",
        BASE
        + """\
ablate:
  a:
    one: {train.seed: 1}
  b:
    two: {train.seed: 2}
""",
    )
    assert problems_of(path) == [
        f"{path}:16: ablate.b.two.train.seed: axes 'a' and 'b' both override train.seed"
    ]


def test_a_variant_made_invalid_by_its_level_points_at_the_level(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "r.yaml",
        BASE
        + """\
ablate:
  crop:
    ok: {data.crop: [32, 32]}
    odd: {data.crop: [30, 30]}
""",
    )
    assert problems_of(path) == [
        f"{path}:15: [crop=odd] data.crop: [30, 30] is not divisible by model.output_stride 16"
    ]


def test_syntax_errors_are_located(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", "name: x\nmodel: [\n")
    (message,) = problems_of(path)
    assert message.startswith(f"{path}:3: (syntax): ")


def test_three_mistakes_three_lines_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        BASE.replace("  output_stride: 16", "  output_stride: 12")
        .replace("  batch_size: 8", "  batch_size: 0")
        .replace("  dataset: synthetic", "  dataset: synthetic\n  wokers: 2")
    )
    path = write(tmp_path, "three.yaml", text)
    assert main(["recipe", "check", str(path)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"{path}:") for line in lines)
    assert any("data.wokers: unknown key (did you mean 'workers'?)" in ln for ln in lines)
    assert any("model.output_stride:" in ln for ln in lines)
    assert any("train.batch_size:" in ln for ln in lines)


def test_check_exits_0_on_every_shipped_recipe() -> None:
    assert main(["recipe", "check", *map(str, SHIPPED)]) == 0


def test_expand_json_from_outside_the_checkout(tmp_path: Path) -> None:
    recipe = REPO / "recipes" / "cityscapes-deeplabv3plus-r50-resolution.yaml"
    out = subprocess.run(
        [sys.executable, "-m", "seglab", "recipe", "expand", str(recipe), "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(out.stdout)
    assert data["recipe"] == "cityscapes-deeplabv3plus-r50-resolution"
    assert [v["name"] for v in data["variants"]] == ["resolution=full", "resolution=half"]
    assert data["variants"][1]["overrides"] == {"data.crop": [256, 512]}


def test_resolved_recipe_round_trips(tmp_path: Path) -> None:
    grid = recipes.load(REPO / "recipes" / "cityscapes-deeplabv3plus-r50-resolution.yaml")
    variant = grid.variant("resolution=half")
    path = write(tmp_path, "recipe.yaml", variant.recipe.to_yaml())
    again = recipes.load_resolved(path)
    assert again == variant.recipe
    assert again.sha() == variant.recipe.sha()


def test_resolved_recipe_refuses_a_grid(tmp_path: Path) -> None:
    path = write(tmp_path, "recipe.yaml", BASE + "ablate: {}\n")
    with pytest.raises(ConfigError, match=r"recipe.yaml:12: ablate: not allowed"):
        recipes.load_resolved(path)


def test_scientific_floats_without_a_dot(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", BASE + "  optimizer: {weight_decay: 5e-4}\n")
    assert recipes.load(path).base.train.optimizer.weight_decay == 5e-4


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        (
            "resources:\n  nodes: 2\n",
            ":13: resources.nodes: a run over several hosts needs `network: host` (the ranks "
            "reach each other over the hosts' own interfaces; see docs/scaling.md)",
        ),
        (
            "resources:\n  network: host\n",
            ":13: resources.network: host networking is only for multi-node runs (nodes > 1); "
            "use true for a bridge network",
        ),
        (
            "resources:\n  nodes: 3\n  network: host\n",
            ":11: train.batch_size: the global batch 8 does not split evenly over 3 ranks "
            "(resources.gpus 1 x nodes 3)",
        ),
    ],
)
def test_multi_node_resources_are_checked(tmp_path: Path, resources: str, expected: str) -> None:
    path = write(tmp_path, "r.yaml", BASE + resources)
    assert problems_of(path) == [f"{path}{expected}"]


def test_a_multi_node_recipe_has_a_world_of_gpus_times_nodes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "r.yaml",
        BASE + "resources:\n  gpus: 2\n  nodes: 2\n  network: host\n  node_timeout_s: 90\n",
    )
    resources = recipes.load(path).base.resources
    assert (resources.world_size, resources.network, resources.node_timeout_s) == (4, "host", 90.0)


# -- bounds ------------------------------------------------------------------------------


def test_an_absurd_crop_fails_recipe_check_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "huge.yaml", BASE.replace("[64, 64]", "[1048576, 1048576]"))
    assert main(["recipe", "check", str(path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:8: data.crop[0]: input should be less than or equal to 8192, got 1048576",
        f"{path}:8: data.crop[1]: input should be less than or equal to 8192, got 1048576",
    ]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("  crop: [64, 64]", "  crop: [64, 0]"), ":8: data.crop[1]: input should be greater"),
        (
            ("  batch_size: 8", "  batch_size: 100000"),
            ":11: train.batch_size: input should be less",
        ),
        (("  iterations: 100", "  iterations: 1000000000"), ":10: train.iterations: input"),
        (("  iterations: 100", "  epochs: 1000000"), ":10: train.epochs: input should be less"),
        (("  crop: [64, 64]", "  crop: [64, 64]\n  workers: 4096"), ":9: data.workers: input"),
        (
            ("  crop: [64, 64]", "  crop: [64, 64]\n  synthetic: {image_size: [64, 99999]}"),
            ":9: data.synthetic.image_size[1]: input should be less than or equal to 8192",
        ),
    ],
)
def test_bounds_are_located(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    old, new = edit
    path = write(tmp_path, "r.yaml", BASE.replace(old, new))
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}{expected}")


def test_a_level_past_a_bound_names_its_variant_and_line(tmp_path: Path) -> None:
    text = (
        BASE
        + "ablate:\n  crop:\n    ok: {data.crop: [512, 512]}\n    huge: {data.crop: [64, 16384]}\n"
    )
    path = write(tmp_path, "grid.yaml", text)
    assert problems_of(path) == [
        f"{path}:15: [crop=huge] data.crop[1]: input should be less than or equal to 8192, "
        "got 16384"
    ]


def test_the_bounds_admit_the_largest_values(tmp_path: Path) -> None:
    text = (
        BASE.replace("[64, 64]", f"[{recipes.MAX_SIDE}, {recipes.MAX_SIDE}]")
        .replace("batch_size: 8", f"batch_size: {recipes.MAX_BATCH}")
        .replace("iterations: 100", f"iterations: {recipes.MAX_ITERATIONS}")
    )
    recipe = recipes.load(write(tmp_path, "max.yaml", text)).base
    assert recipe.data.crop == [8192, 8192] and recipe.train.batch_size == 4096


def test_a_resolved_recipe_parses_from_text_within_the_yaml_bounds(tmp_path: Path) -> None:
    recipe = recipes.load(write(tmp_path, "r.yaml", BASE)).base
    assert recipes.parse_resolved(recipe.to_yaml(), "registry:run-1") == recipe
    bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 8)}]\n"
        for p, c in zip("abcdefg", "bcdefgh", strict=True)
    )
    with pytest.raises(ConfigError) as info:
        recipes.parse_resolved(bomb, "registry:run-1")
    (problem,) = info.value.problems
    assert (problem.file, problem.key) == ("registry:run-1", "(yaml)")
