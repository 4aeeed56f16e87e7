"""`seglab export`: TorchScript, ONNX and Triton exports of a run agree with PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from seglab.cli import main  # noqa: E402
from seglab.recipes import Recipe  # noqa: E402
from seglab.train import checkpoint  # noqa: E402
from seglab.train.export import export_run  # noqa: E402
from seglab.train.models import build_model  # noqa: E402

pytestmark = pytest.mark.train

RECIPE = {
    "name": "smoke",
    "model": {"arch": "deeplabv3plus", "backbone": "resnet18", "output_stride": 16},
    "data": {"dataset": "synthetic", "crop": [64, 64], "synthetic": {"num_classes": 4}},
    "train": {"iterations": 10, "batch_size": 2},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory as the trainer leaves it: recipe.yaml and checkpoints/{last,best}.pt."""
    root = tmp_path_factory.mktemp("run") / "smoke.default.abc123"
    root.mkdir()
    recipe = Recipe.model_validate(RECIPE)
    (root / "recipe.yaml").write_text(recipe.to_yaml())
    torch.manual_seed(0)
    model = build_model(recipe.model, 4)
    with torch.no_grad():  # move the BatchNorm statistics away from their init values
        for _ in range(3):
            model(torch.randn(2, 3, 64, 64) * 2 + 0.5)
    model.eval()
    folder = root / checkpoint.CHECKPOINT_DIR
    checkpoint.save_atomic(
        {"model": model.state_dict(), "iter": 10, "best_miou": 0.4}, folder / checkpoint.LAST
    )
    for p in model.parameters():
        p.data.mul_(0.5)
    checkpoint.save_atomic(
        {"model": model.state_dict(), "iter": 5, "best_miou": 0.5}, folder / checkpoint.BEST
    )
    return root


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*deprecated:FutureWarning")
def test_torchscript_matches_pytorch(run_dir: Path) -> None:
    result = export_run(run_dir, "torchscript")
    assert result.max_abs_diff <= 1e-4
    assert result.iteration == 10
    path = run_dir / "export" / "model.torchscript.pt"
    assert Path(result.path) == path
    scripted = torch.jit.load(str(path))
    with torch.no_grad():
        out = scripted(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 4, 64, 64)


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*deprecated:FutureWarning")
def test_export_at_another_size(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(run_dir), "--format", "torchscript", "--size", "32", "48"]) == 0
    out = capsys.readouterr().out
    assert "checked on a 2x3x32x48 input: max abs diff" in out
    scripted = torch.jit.load(str(run_dir / "export" / "model.torchscript.pt"))
    with torch.no_grad():
        assert scripted(torch.randn(1, 3, 32, 48)).shape == (1, 4, 32, 48)


def test_onnx_matches_pytorch_with_dynamic_batch(run_dir: Path) -> None:
    result = export_run(run_dir, "onnx", which="best")
    assert result.max_abs_diff <= 1e-4
    assert result.checkpoint == "best.pt" and result.iteration == 5
    model = onnx.load(result.path)
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value
    session = ort.InferenceSession(result.path, providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        out = session.run(None, {"input": torch.randn(batch, 3, 64, 64).numpy()})[0]
        assert out.shape == (batch, 4, 64, 64)
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    assert manifest["onnx"]["max_abs_diff"] == result.max_abs_diff


def test_triton_repository(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(run_dir), "--format", "triton", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["max_abs_diff"] <= 1e-4
    entry = run_dir / "export" / "triton" / "smoke.default.abc123"
    assert result["path"] == str(entry)
    config = (entry / "config.pbtxt").read_text()
    graph = onnx.load(str(entry / "1" / "model.onnx")).graph
    assert f'name: "{graph.input[0].name}"' in config
    assert f'name: "{graph.output[0].name}"' in config
    assert 'name: "smoke.default.abc123"' in config
    assert 'platform: "onnxruntime_onnx"' in config
    assert "dims: [ 3, 64, 64 ]" in config and "dims: [ 4, 64, 64 ]" in config


def test_export_errors_are_clear(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 1
    assert "is not a run directory" in capsys.readouterr().err
    other = tmp_path / "run"
    other.mkdir()
    (other / "recipe.yaml").write_text((run_dir / "recipe.yaml").read_text())
    assert main(["export", str(other), "--format", "torchscript"]) == 1
    assert f"no checkpoint {other / 'checkpoints' / 'last.pt'}" in capsys.readouterr().err
    (other / "recipe.yaml").write_text(
        (run_dir / "recipe.yaml").read_text().replace("resnet18", "resnet34")
    )
    (other / "checkpoints").mkdir()
    (other / "checkpoints" / "last.pt").write_bytes(
        (run_dir / "checkpoints" / "last.pt").read_bytes()
    )
    assert main(["export", str(other), "--format", "torchscript"]) == 1
    assert "does not fit the model of" in capsys.readouterr().err
    (other / "checkpoints" / "last.pt").write_bytes(b"torn")
    assert main(["export", str(other), "--format", "onnx"]) == 1
    assert f"cannot read checkpoint {other / 'checkpoints' / 'last.pt'}" in capsys.readouterr().err
    assert not (other / "export").exists()
