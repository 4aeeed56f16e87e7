"""`seglab train` and `seglab bench train|data` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from seglab.cli import main

torch = pytest.importorskip("torch", reason="the trainer needs the train extra (torch)")

pytestmark = pytest.mark.train

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "recipes" / "synthetic-smoke.yaml"


def test_help_explains_train_and_bench(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["train", "--help"], ["bench", "train", "--help"], ["bench", "data", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--run-dir DIR" in out and "resumes from checkpoints/last.pt" in out
    assert "torchrun --nproc_per_node N -m seglab.train" in out
    assert "fp32, NCHW, eager baseline" in out and "--crop H W" in out
    assert "Cityscapes-sized (1024x2048)" in out and "--workers" in out


def test_train_with_a_missing_config_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["train", "--config", str(tmp_path / "nope.yaml"), "--run-dir", str(tmp_path / "run")])
        == 1
    )
    assert "--config: no such file:" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_rejects_an_unresolved_recipe_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ablation = REPO / "recipes" / "synthetic-smoke-ablation.yaml"
    assert main(["train", "--config", str(ablation), "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert f"{ablation}:3: extends: not allowed in a resolved recipe" in err
    assert "Traceback" not in err


def test_bench_train_reports_config_and_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = yaml.safe_load(SMOKE.read_text())
    data["train"].update(amp="bf16", channels_last=True)
    recipe = tmp_path / "fast.yaml"
    recipe.write_text(yaml.safe_dump(data))
    assert (
        main(
            [
                "bench",
                "train",
                str(recipe),
                "--steps",
                "2",
                "--warmup",
                "0",
                "--batch",
                "2",
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    config, baseline = result["config"], result["baseline"]
    assert (config["amp"], config["channels_last"]) == ("bf16", True)
    assert (baseline["amp"], baseline["channels_last"], baseline["compile"]) == (
        "none",
        False,
        False,
    )
    for row in (config, baseline):
        assert row["device"] == "cpu" and row["batch"] == 2 and row["crop"] == [32, 32]
        assert row["img_per_s"] > 0 and row["steps"] == 2
        assert row["memory_kind"] == "cpu_peak_rss" and row["peak_mem_mib"] > 100
    assert result["speedup"] == pytest.approx(config["img_per_s"] / baseline["img_per_s"])
    assert result["model"] == "deeplabv3plus/resnet18/os16"


def test_bench_train_crop_must_fit_the_output_stride(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "train", str(SMOKE), "--crop", "30", "32", "--steps", "1"]) == 1
    err = capsys.readouterr().err
    assert "--crop 30 32: data.crop: [30, 32] is not divisible by model.output_stride 16" in err


def test_bench_train_unknown_variant_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    ablation = REPO / "recipes" / "synthetic-smoke-ablation.yaml"
    assert main(["bench", "train", str(ablation), "--variant", "lr=medium"]) == 1
    err = capsys.readouterr().err
    assert "no variant 'lr=medium'" in err and "lr=low, lr=high" in err


def test_bench_data_measures_decoded_augmented_samples(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["bench", "data", "--workers", "0", "--images", "1", "--samples", "2", "--json"]) == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["image_size"] == [1024, 2048] and result["crop"] == [512, 1024]
    assert result["samples"] == 2 and result["workers"] == 0
    assert result["img_per_s"] > 0
    assert result["img_per_s_per_worker"] == result["img_per_s"]
