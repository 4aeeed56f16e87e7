"""DeepLabV3/V3+ builders: torchvision parity, output strides, dilated BasicBlocks, weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")

from torchvision.models import resnet18  # noqa: E402
from torchvision.models.segmentation import deeplabv3_resnet50  # noqa: E402

from seglab.recipes import ModelConfig  # noqa: E402
from seglab.train.models import (  # noqa: E402
    PretrainedWeightsError,
    build_model,
    dilate_basic_layers,
    weights_files,
)

pytestmark = pytest.mark.train


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_deeplabv3_resnet50_is_torchvisions() -> None:
    cfg = ModelConfig(arch="deeplabv3", backbone="resnet50", output_stride=8, aux_loss=True)
    ours = build_model(cfg, 21)
    assert _count(ours) == 42_004_074
    reference = deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=True
    )
    # Same modules, same names, same shapes: torchvision's checkpoint loads strictly.
    ours.load_state_dict(reference.state_dict(), strict=True)


@pytest.mark.parametrize("arch", ["deeplabv3", "deeplabv3plus"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_small_backbone_outputs_and_stride(arch: str, output_stride: int) -> None:
    cfg = ModelConfig(arch=arch, backbone="resnet18", output_stride=output_stride, aux_loss=True)
    model = build_model(cfg, 5).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        features = model.backbone(x)
        out = model(x)
    assert features["out"].shape[-2:] == (64 // output_stride, 96 // output_stride)
    assert set(out) == {"out", "aux"}
    assert out["out"].shape == (2, 5, 64, 96)
    assert out["aux"].shape == (2, 5, 64, 96)


def test_bottleneck_backbone_at_output_stride_16() -> None:
    cfg = ModelConfig(arch="deeplabv3plus", backbone="resnet50", output_stride=16)
    model = build_model(cfg, 2).eval()
    layers = [model.backbone.layer2, model.backbone.layer3, model.backbone.layer4]
    assert [layer[-1].conv2.dilation[0] for layer in layers] == [1, 1, 2]
    assert [m[0].dilation[0] for m in model.aspp.convs[1:4]] == [6, 12, 18]
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 64, 64))
    assert features["out"].shape == (1, 2048, 4, 4)
    assert features["low"].shape == (1, 256, 16, 16)


def test_deeplabv3plus_decoder_shape_and_no_aux() -> None:
    cfg = ModelConfig(arch="deeplabv3plus", backbone="resnet34", output_stride=16)
    model = build_model(cfg, 3).eval()
    assert model.project[0].out_channels == 48
    assert model.project[0].in_channels == 64  # layer1 of a BasicBlock ResNet
    assert [m.out_channels for m in model.decoder if isinstance(m, torch.nn.Conv2d)] == [256, 256]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert list(out) == ["out"]
    assert out["out"].shape == (1, 3, 32, 32)


def test_dilated_basic_blocks_see_what_the_strided_net_sees() -> None:
    """Dilating layer3/4 keeps every receptive field: sampled at the strided grid, the
    dilated net's features equal the strided net's exactly (same weights, eval mode)."""
    torch.manual_seed(0)
    strided = resnet18(weights=None).eval()
    dilated = resnet18(weights=None).eval()
    dilated.load_state_dict(strided.state_dict())
    dilate_basic_layers(dilated, [False, True, True])
    x = torch.randn(1, 3, 96, 96)

    def layer4(net: torch.nn.Module) -> torch.Tensor:
        y = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        return net.layer4(net.layer3(net.layer2(net.layer1(y))))

    with torch.no_grad():
        coarse = layer4(strided)
        fine = layer4(dilated)
    assert coarse.shape[-2:] == (3, 3)
    assert fine.shape[-2:] == (12, 12)
    torch.testing.assert_close(fine[..., ::4, ::4], coarse, rtol=1e-4, atol=1e-4)


def test_pretrained_backbone_loads_from_torch_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    source = resnet18(weights=None)
    target = (
        tmp_path
        / "hub"
        / "checkpoints"
        / weights_files("resnet18")["ResNet18_Weights.IMAGENET1K_V1"]
    )
    target.parent.mkdir(parents=True)
    torch.save(source.state_dict(), target)
    cfg = ModelConfig(
        arch="deeplabv3plus",
        backbone="resnet18",
        pretrained_backbone=f"hub/checkpoints/{target.name}",
    )
    model = build_model(cfg, 4)
    torch.testing.assert_close(
        model.backbone.layer3[1].conv2.weight, source.layer3[1].conv2.weight, rtol=0, atol=0
    )


def test_missing_pretrained_file_names_path_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = ModelConfig(backbone="resnet50", pretrained_backbone="weights/r50.pth")
    with pytest.raises(PretrainedWeightsError) as info:
        build_model(cfg, 19)
    message = str(info.value)
    assert str(tmp_path / "weights" / "r50.pth") in message
    assert "resnet50-0676ba61.pth" in message
    assert "ResNet50_Weights.IMAGENET1K_V1 (resnet50-0676ba61.pth)" in message
    assert "ResNet50_Weights.IMAGENET1K_V2 (resnet50-11ad3fa6.pth)" in message


def test_pretrained_file_for_another_network_is_refused(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    cfg = ModelConfig(backbone="resnet18", pretrained_backbone=str(wrong))
    with pytest.raises(PretrainedWeightsError, match="does not fit a torchvision resnet18"):
        build_model(cfg, 4)


def test_summary_cli_reports_torchvision_parameter_count(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from seglab.cli import main

    assert (
        main(
            [
                "model",
                "summary",
                "--arch",
                "deeplabv3",
                "--backbone",
                "resnet50",
                "--num-classes",
                "21",
                "--aux-loss",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "parameters  42,004,074 " in out
    assert "GMACs at 520x520" in out


def test_summary_matches_torchvision_published_compute(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """torchvision publishes 178.722 'GFLOPS' for deeplabv3_resnet50 at 520x520: those are
    multiply-adds, which is what we report as gmacs (FlopCounterMode's FLOPs / 2)."""
    from seglab.cli import main

    assert (
        main(
            [
                "model",
                "summary",
                "--arch",
                "deeplabv3",
                "--backbone",
                "resnet50",
                "--num-classes",
                "21",
                "--aux-loss",
                "--output-stride",
                "8",
                "--crop",
                "520",
                "520",
                "--json",
            ]
        )
        == 0
    )
    (model,) = json.loads(capsys.readouterr().out)["models"]
    assert model["parameters"] == 42_004_074
    assert model["parameters_by_part"]["aux_classifier"] == 2_365_205
    assert model["gmacs"] == pytest.approx(178.722, abs=0.005)
    assert model["gflops"] == pytest.approx(2 * model["gmacs"], abs=0.002)
    assert model["input_size"] == [520, 520]


def test_summary_of_recipe_variants(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from seglab.cli import main

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        "model: {arch: deeplabv3plus, backbone: resnet18}\n"
        "data: {dataset: synthetic, crop: [32, 48], synthetic: {num_classes: 3}}\n"
        "train: {iterations: 5, batch_size: 2}\n"
        "ablate:\n"
        "  depth:\n"
        "    r18: {model.backbone: resnet18}\n"
        "    r34: {model.backbone: resnet34}\n"
    )
    assert main(["model", "summary", str(recipe), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["models"]
    assert [r["name"] for r in rows] == ["tiny [depth=r18]", "tiny [depth=r34]"]
    assert [r["backbone"] for r in rows] == ["resnet18", "resnet34"]
    assert rows[0]["num_classes"] == 3 and rows[0]["input_size"] == [32, 48]
    assert rows[1]["parameters"] > rows[0]["parameters"] > 0
    assert main(["model", "summary", str(recipe), "--variant", "depth=r34"]) == 0
    assert "tiny [depth=r34]" in capsys.readouterr().out


def test_summary_argument_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from seglab.cli import main

    assert main(["model", "summary", "--arch", "deeplabv3"]) == 1
    assert "missing --backbone, --num-classes" in capsys.readouterr().err
    assert main(["model", "summary", str(tmp_path / "r.yaml"), "--arch", "deeplabv3"]) == 1
    assert "either a RECIPE or the model flags" in capsys.readouterr().err
