"""Prediction samples of the synthetic smoke grid trained on CPU, and the report of it.

Samples: K images per evaluation, error-map counts equal to the evaluation's confusion
matrix (K is the whole validation split), the same image ids in every variant, and files
that appear whole (a reader polling during training decodes every PNG it sees). Report: the
real `seglab report` and `seglab show` over the runs entered in a real registry; the HTML
validates, has no external URL, and renders in headless Chromium (skipped without it).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.cli import main
from tests.unit.grid_runs import (
    VAL_SIZE,
    events_of,
    grid_recipes,
    register,
    start_grid,
    wait_all,
)
from tests.unit.test_train_run import train_env

pytest.importorskip("torch", reason="the trainer needs the train extra (torch)")

pytestmark = [pytest.mark.train, pytest.mark.slow]


class PngWatcher(threading.Thread):
    """Polls a folder while the trainers run and decodes every PNG it finds."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.stop = threading.Event()
        self.decoded: set[Path] = set()
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            self.scan()
            self.stop.wait(0.01)
        self.scan()

    def scan(self) -> None:
        for path in self.root.rglob("*.png"):
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # renamed over between listing and reading
                continue
            try:
                with Image.open(io.BytesIO(data)) as image:
                    image.load()
            except OSError as exc:
                self.failures.append(f"{path}: {exc}")
            self.decoded.add(path)


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Path], PngWatcher]]:
    """The two variants trained (2 epochs each), with the watcher that saw them write."""
    folder = tmp_path_factory.mktemp("grid")
    (folder / "runs").mkdir()
    watcher = PngWatcher(folder / "runs")
    watcher.start()
    procs = start_grid(folder)
    try:
        wait_all(procs, 900)
    finally:
        watcher.stop.set()
        watcher.join()
        for _, proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    yield {variant: run_dir for variant, (run_dir, _) in procs.items()}, watcher


def palette_ids(rgb: np.ndarray, table: np.ndarray, count: int) -> np.ndarray:
    """Train ids of a colour-coded map (inverse of the palette)."""
    ids = np.full(rgb.shape[:2], 255, dtype=np.uint8)
    for cls in range(count):
        ids[(rgb == table[cls]).all(axis=-1)] = cls
    return ids


def decode(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_samples_every_eval_match_the_confusion_matrix(
    grid: tuple[dict[str, Path], PngWatcher],
) -> None:
    from seglab.train.palettes import palette
    from seglab.train.samples import ERROR_COLOURS
    from seglab.train.scores import metrics_from_counts

    run_dirs, _ = grid
    ids_by_variant = {}
    for variant, run_dir in run_dirs.items():
        events = events_of(run_dir)
        evals = {e.data["iter"]: e.data for e in events if e.kind == "eval"}
        samples = [e.data for e in events if e.kind == "samples"]
        assert len(evals) == 2 and sorted(evals) == [s["iter"] for s in samples]
        classes = events[0].data["class_names"]
        table = palette("synthetic", len(classes))
        for index in samples:
            folder = run_dir / index["dir"]
            assert json.loads((folder / "index.json").read_text()) == index
            assert len(index["images"]) == VAL_SIZE
            counts = np.zeros((len(classes), len(classes) + 1), dtype=np.int64)
            for item in index["images"]:
                error = decode(folder / f"{item['id']}_error.png")
                for name, colour in ERROR_COLOURS.items():
                    assert int((error == colour).all(axis=-1).sum()) == item[name], name
                pred = palette_ids(decode(folder / f"{item['id']}_pred.png"), table, len(classes))
                gt_png = run_dir / "samples" / "reference" / f"{item['id']}_gt.png"
                gt = palette_ids(decode(gt_png), table, len(classes))
                assert (pred != 255).all()
                np.add.at(counts, (gt.ravel(), pred.ravel()), 1)
                assert int(((pred == gt) & (gt != 255)).sum()) == item["correct"]
            evaluation = evals[index["iter"]]
            correct = sum(i["correct"] for i in index["images"])
            wrong = sum(i["wrong"] for i in index["images"])
            assert correct / (correct + wrong) == pytest.approx(evaluation["pixel_acc"], abs=1e-12)
            rebuilt = metrics_from_counts(counts)
            assert rebuilt.miou == pytest.approx(evaluation["miou"], abs=1e-12)
            assert list(rebuilt.per_class_iou) == pytest.approx(evaluation["per_class_iou"])
        ids_by_variant[variant] = [[i["id"] for i in s["images"]] for s in samples]
    first, *others = ids_by_variant.values()
    assert all(other == first for other in others), ids_by_variant
    assert len(set(first[0])) == VAL_SIZE


def test_two_ranks_gather_every_sample(
    grid: tuple[dict[str, Path], PngWatcher], tmp_path: Path
) -> None:
    """Under torchrun (two gloo ranks) each rank evaluates half the split; the main rank
    writes all K samples, the same images as the single-process run."""
    recipe = grid_recipes(tmp_path)["lr=low"]
    run_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "seglab.train", "--config", str(recipe), "--run-dir", str(run_dir)]
    env = train_env()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = events_of(run_dir)
    single = [e for e in events_of(grid[0]["lr=low"]) if e.kind == "samples"]
    evals = {e.data["iter"]: e.data for e in events if e.kind == "eval"}
    for index in (e.data for e in events if e.kind == "samples"):
        assert [i["id"] for i in index["images"]] == [i["id"] for i in single[0].data["images"]]
        correct = sum(i["correct"] for i in index["images"])
        counted = sum(i["correct"] + i["wrong"] for i in index["images"])
        assert correct / counted == pytest.approx(evals[index["iter"]]["pixel_acc"], abs=1e-12)
        for item in index["images"]:
            assert (run_dir / index["dir"] / f"{item['id']}_overlay.png").is_file()


def test_a_reader_during_training_only_sees_whole_pngs(
    grid: tuple[dict[str, Path], PngWatcher],
) -> None:
    run_dirs, watcher = grid
    written = {p for run_dir in run_dirs.values() for p in run_dir.rglob("*.png")}
    assert watcher.failures == []
    # The watcher saw files while they were being written (not only after the fact).
    assert len(watcher.decoded & written) >= len(written) // 2
    assert not [p for p in watcher.decoded if p.name.startswith(".")], "temporary names"


def test_tensorboard_has_sample_images_and_per_class_iou(
    grid: tuple[dict[str, Path], PngWatcher],
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = next(iter(grid[0].values()))
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert any(t.startswith("samples/val_") for t in tags["images"]), tags["images"]
    assert "val_iou/background" in tags["scalars"]


def report_state(factory: pytest.TempPathFactory) -> Path:
    """The XDG state home of the report tests (one registry for the module)."""
    return factory.getbasetemp() / "report-state"


@pytest.fixture(scope="module")
def registered(
    grid: tuple[dict[str, Path], PngWatcher], tmp_path_factory: pytest.TempPathFactory
) -> list[str]:
    """The grid's runs entered in the registry of :func:`report_state`."""
    state = report_state(tmp_path_factory) / "seglab"
    state.mkdir(parents=True, exist_ok=True)
    return register(state, grid[0])


@pytest.fixture(autouse=True)
def _report_state(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(report_state(tmp_path_factory)))


EXTERNAL = re.compile(
    r"""(?:src|href)\s*=\s*["']?(?!data:|#)[a-z]+:|url\(\s*["']?(?!data:)""", re.I
)


def test_report_html_is_self_contained_valid_and_complete(
    registered: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import html5lib

    out = tmp_path / "ablation.html"
    assert main(["report", "synthetic-smoke-ablation", "-o", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    parser = html5lib.HTMLParser(strict=True)
    document = parser.parse(text)
    assert parser.errors == []
    assert document is not None
    assert not EXTERNAL.search(text), EXTERNAL.search(text)
    assert "http://" not in text and "https://" not in text
    assert '<table id="grid">' in text and '<table id="per-class">' in text
    for variant in ("lr=low", "lr=high"):
        assert f'data-view="overlay" data-variant="{variant}"' in text, variant
    assert text.count('data-view="overlay"') == 2 * VAL_SIZE
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "## Per-class IoU" in md and md.count("](data:image/png;base64,") >= 2 * VAL_SIZE
    assert "train.optimizer.lr" in md


def test_report_numbers_as_json_and_csv(
    registered: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", *registered, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in doc["runs"]] == registered
    assert all(len(r["miou_per_eval"]) == 2 for r in doc["runs"])
    assert len(doc["per_class_iou"]["classes"]) == 4
    worst = [min(v or 0 for v in row) for row in doc["per_class_iou"]["values"]]
    assert worst == sorted(worst)
    assert main(["report", *registered, "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("variant,run_id,status,best_miou") and len(lines) == 3


def test_show_gives_provenance(registered: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", registered[0], "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["versions"]["torch"] and doc["versions"]["seglab"]
    assert doc["best_iter"] in (4, 8) and doc["exit_code"] == 0
    assert doc["checkpoints"] and all(Path(p).is_file() for p in doc["checkpoints"])
    assert doc["overrides"]["train.optimizer.lr"] == 0.001  # lr=low, the first variant
    assert main(["show", registered[0]]) == 0
    text = capsys.readouterr().out
    assert "override train.optimizer.lr" in text and "versions   seglab" in text


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(registered: list[str], tmp_path: Path) -> None:
    browser = chromium()
    if browser is None:
        pytest.skip("Debian's chromium is not installed (.ci/packages.sh installs it)")
    out = tmp_path / "report.html"
    assert main(["report", *registered, "-o", str(out)]) == 0
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1280,2400",
            out.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = decode(shot)
    assert pixels.shape[:2] == (2400, 1280)
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 50, "a rendered page, not a blank one"
    # The heat table's green-to-red cells are drawn (saturated colours, not only text).
    saturated = (pixels.max(axis=-1).astype(int) - pixels.min(axis=-1)) > 80
    assert saturated.mean() > 0.01
