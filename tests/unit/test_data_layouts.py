"""`seglab data ls` on miniature datasets in each official layout, on this machine.

The builders here (``mini_*``, ``*_archives``) write real PNG/JPEG files in the layouts and
archive names the datasets publish; the prepare, training and sync tests use them too.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from seglab.data.checks import (
    OFFICIAL,
    Check,
    CheckCache,
    DataError,
    check_for_launch,
    compact_row,
    require_data,
    scan,
)
from seglab.hosts import Host
from seglab.machines import LocalMachine
from seglab.recipeschema import DataConfig
from seglab.workstation import Workstation

REPO = Path(__file__).resolve().parents[2]
SIZE = (32, 48)  # height, width


def _rgb(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (*SIZE, 3), dtype=np.uint8))


def _label(seed: int, classes: int) -> Image.Image:
    rng = np.random.default_rng(seed + 1000)
    values = rng.integers(0, classes, SIZE, dtype=np.uint8)
    values[: SIZE[0] // 2] = 0  # large regions, so a tiny model has something to learn
    return Image.fromarray(values, mode="L")


def _save(image: Image.Image, path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)


def mini_cityscapes(root: Path, counts: dict[str, int] | None = None) -> Path:
    """leftImg8bit/SPLIT/CITY/*_leftImg8bit.png and gtFine/.../*_gtFine_labelIds.png."""
    counts = counts or {"train": 4, "val": 2, "test": 2}
    cities = {"train": "aachen", "val": "frankfurt", "test": "berlin"}
    for split, count in counts.items():
        city = cities[split]
        for i in range(count):
            stem = f"{city}_000000_{i:06d}"
            _save(_rgb(i), root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", "PNG")
            label = _label(i, 34)
            _save(label, root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", "PNG")
    return root


def mini_ade20k(root: Path, train: int = 4, val: int = 2) -> Path:
    """ADEChallengeData2016/images/{training,validation}/*.jpg and annotations/*.png."""
    base = root / "ADEChallengeData2016"
    for folder, prefix, count in (("training", "train", train), ("validation", "val", val)):
        for i in range(count):
            stem = f"ADE_{prefix}_{i + 1:08d}"
            _save(_rgb(i), base / "images" / folder / f"{stem}.jpg", "JPEG")
            _save(_label(i, 151), base / "annotations" / folder / f"{stem}.png", "PNG")
    (base / "objectInfo150.txt").write_text("Idx\tRatio\tTrain\tVal\tName\n")
    return root


def mini_voc(root: Path, train: int = 4, val: int = 2) -> Path:
    """VOCdevkit/VOC2012: JPEGImages, SegmentationClass (palette PNGs), ImageSets lists."""
    base = root / "VOCdevkit" / "VOC2012"
    ids = {"train": [f"2007_{i:06d}" for i in range(train)]}
    ids["val"] = [f"2008_{i:06d}" for i in range(val)]
    for names in ids.values():
        for i, name in enumerate(names):
            _save(_rgb(i), base / "JPEGImages" / f"{name}.jpg", "JPEG")
            label = _label(i, 21).convert("P")
            label.putpalette([v for c in range(256) for v in (c, c, c)])
            _save(label, base / "SegmentationClass" / f"{name}.png", "PNG")
    lists = base / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for split, names in ids.items():
        (lists / f"{split}.txt").write_text("\n".join(names) + "\n")
    (lists / "trainval.txt").write_text("\n".join(ids["train"] + ids["val"]) + "\n")
    return root


def _zip(path: Path, base: Path, folders: list[str]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README", "miniature stand-in of the official archive\n")
        for folder in folders:
            for file in sorted((base / folder).rglob("*")):
                if file.is_file():
                    archive.write(file, file.relative_to(base).as_posix())


def cityscapes_archives(folder: Path, counts: dict[str, int] | None = None) -> Path:
    """leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip in `folder`."""
    tree = mini_cityscapes(folder / "tree", counts)
    _zip(folder / "leftImg8bit_trainvaltest.zip", tree, ["leftImg8bit"])
    _zip(folder / "gtFine_trainvaltest.zip", tree, ["gtFine"])
    shutil.rmtree(tree)
    return folder


def ade20k_archive(folder: Path) -> Path:
    """ADEChallengeData2016.zip in `folder`."""
    tree = mini_ade20k(folder / "tree")
    _zip(folder / "ADEChallengeData2016.zip", tree, ["ADEChallengeData2016"])
    shutil.rmtree(tree)
    return folder


def voc_archive(folder: Path) -> Path:
    """VOCtrainval_11-May-2012.tar in `folder`."""
    tree = mini_voc(folder / "tree")
    with tarfile.open(folder / "VOCtrainval_11-May-2012.tar", "w") as archive:
        archive.add(tree / "VOCdevkit", "VOCdevkit")
    shutil.rmtree(tree)
    return folder


def _scan(name: str, root: Path, kind: str = "auto", deep: bool = False) -> Check:
    return asyncio.run(scan(LocalMachine(), name, str(root), kind, deep))


@pytest.mark.parametrize(
    ("build", "kind", "counts"),
    [
        (mini_cityscapes, "cityscapes", {"train": 4, "val": 2, "test": 2}),
        (mini_ade20k, "ade20k", {"train": 4, "val": 2}),
        (mini_voc, "voc", {"train": 4, "val": 2}),
    ],
)
def test_each_layout_is_recognised_and_counted(
    build: object, kind: str, counts: dict[str, int], tmp_path: Path
) -> None:
    assert callable(build)
    check = _scan("mine", build(tmp_path / kind))
    assert check.kind == kind
    assert {s: v["images"] for s, v in check.splits.items()} == counts
    assert {s: v["labels"] for s, v in check.splits.items()} == counts
    assert check.problems(counts=False) == []
    assert check.scan["checked"] == 2 * sum(counts.values())
    assert check.scan["bad_files"] == []
    # Against the official sizes the miniature is short, and says by how much.
    official = OFFICIAL[kind]["train"]
    assert f"mine train: 4 of the {official} official images" in check.problems()
    assert not check.ok


def test_a_missing_label_a_missing_split_and_a_broken_file_are_named(tmp_path: Path) -> None:
    root = mini_cityscapes(tmp_path / "cs")
    (root / "gtFine/train/aachen/aachen_000000_000002_gtFine_labelIds.png").unlink()
    shutil.rmtree(root / "leftImg8bit" / "val")
    (root / "leftImg8bit/train/aachen/aachen_000000_000001_leftImg8bit.png").write_bytes(b"no")
    check = _scan("cityscapes", root, "cityscapes")
    assert check.splits["train"]["missing_labels"] == 1
    problems = check.problems(counts=False)
    assert problems[0] == (
        "cityscapes train: 1 image(s) without a label (e.g. aachen/aachen_000000_000002)"
    )
    assert problems[1].startswith("cityscapes: split 'val' is missing under local:")
    assert "aachen_000000_000001_leftImg8bit.png" in problems[2]


def test_a_missing_root_and_an_unknown_layout(tmp_path: Path) -> None:
    assert _scan("x", tmp_path / "nope").problems() == [
        f"dataset root {tmp_path / 'nope'} (x) does not exist on local"
    ]
    (tmp_path / "other").mkdir()
    assert "not in a known layout" in _scan("x", tmp_path / "other").problems()[0]


def test_deep_hashes_the_tree(tmp_path: Path) -> None:
    root = mini_voc(tmp_path / "voc")
    first = _scan("voc", root, deep=True).scan["tree_sha256"]
    assert first == _scan("voc", root, deep=True).scan["tree_sha256"]
    label = root / "VOCdevkit/VOC2012/SegmentationClass/2007_000000.png"
    label.write_bytes(label.read_bytes() + b"\0")
    assert _scan("voc", root, deep=True).scan["tree_sha256"] != first


def test_launch_check_uses_a_fresh_result_and_rescans_otherwise(tmp_path: Path) -> None:
    state = tmp_path / "state"
    data = DataConfig(dataset="cityscapes", crop=[32, 32])
    host = Host("local", None, datasets={"cityscapes": "/data/cityscapes"})
    full = {
        "root": "/data/cityscapes",
        "present": True,
        "kind": "cityscapes",
        "splits": {
            s: {"images": n, "labels": n, "missing_labels": 0, "examples": []}
            for s, n in OFFICIAL["cityscapes"].items()
        },
        "bad_files": [],
    }
    CheckCache(state).put([Check("local", "cityscapes", full, time.time())])
    # The path does not exist here: nothing refused shows the fresh result was used.
    assert require_data(host, data, state) == []
    # Too old: scanned again, and what is missing is said.
    CheckCache(state).put([Check("local", "cityscapes", full, time.time() - 2 * 86400)])
    with pytest.raises(DataError) as caught:
        require_data(host, data, state)
    assert caught.value.message == (
        "dataset 'cityscapes' on host local is not ready: "
        "dataset root /data/cityscapes (cityscapes) does not exist on local"
    )
    assert "seglab data sync cityscapes --to local" in str(caught.value.hint)
    # A missing split is refused; a short one is returned to warn about (or, strict, refused).
    root = mini_cityscapes(tmp_path / "cs", {"train": 3})
    host = Host("local", None, datasets={"cityscapes": str(root)})
    with pytest.raises(DataError, match=r"cityscapes: split 'val' is missing under local:"):
        require_data(host, data, state)
    mini_cityscapes(root, {"val": 1})
    assert require_data(host, data, state) == [
        "cityscapes train: 3 of the 2975 official images",
        "cityscapes val: 1 of the 500 official images",
    ]
    with pytest.raises(DataError, match="cityscapes train: 3 of the 2975 official images"):
        require_data(host, data, state, strict=True)
    check = check_for_launch(host, data, state)
    assert check is not None and check.splits["val"]["images"] == 1
    synthetic = DataConfig(dataset="synthetic", crop=[32, 32])
    assert check_for_launch(Host("local", None), synthetic, state) is None
    assert require_data(Host("local", None), synthetic, state) == []


def test_ls_command_json_cache_and_compact_row(tmp_path: Path, isolated_xdg: Path) -> None:
    cs = mini_cityscapes(tmp_path / "cs")
    ade = mini_ade20k(tmp_path / "ade")
    (ade / "ADEChallengeData2016/annotations/validation/ADE_val_00000001.png").unlink()
    hosts = isolated_xdg / "config" / "seglab" / "hosts.yaml"
    hosts.parent.mkdir(parents=True)
    hosts.write_text(f"hosts:\n  local:\n    datasets: {{cityscapes: {cs}, ade20k: {ade}}}\n")
    out = subprocess.run(
        [sys.executable, "-m", "seglab", "data", "ls", "--json"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert out.returncode == 1, out.stderr  # miniatures are short of the official counts
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert rows["cityscapes"]["splits"]["val"] == {
        "images": 2,
        "labels": 2,
        "missing_labels": 0,
        "examples": [],
    }
    assert rows["ade20k"]["splits"]["val"]["missing_labels"] == 1
    assert (
        "ade20k val: 1 image(s) without a label (e.g. ADE_val_00000001)"
        in (rows["ade20k"]["problems"])
    )
    cache = CheckCache(isolated_xdg / "state" / "seglab")
    checks = cache.by_host()
    assert list(checks) == ["local"]
    assert [c.name for c in checks["local"]] == ["ade20k", "cityscapes"]
    assert compact_row(checks["local"]) == "ade20k ✗ cityscapes ✗"
    ws = Workstation(isolated_xdg / "config" / "seglab", isolated_xdg / "state" / "seglab")
    assert ws.data_rows() == {"local": "ade20k ✗ cityscapes ✗"}
    text = subprocess.run(
        [sys.executable, "-m", "seglab", "data", "ls"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    ).stdout
    assert "train 4/2975 val 2/500 test 2/1525" in text
    assert "! ade20k val: 1 image(s) without a label" in text


def complete_voc(root: str) -> dict[str, Any]:
    """A probe's scan answer for a VOC tree with every official image and label."""
    return {
        "present": True,
        "kind": "voc",
        "root": root,
        "splits": {
            s: {"images": n, "labels": n, "missing_labels": 0, "examples": []}
            for s, n in OFFICIAL["voc"].items()
        },
    }


def test_compact_row_marks_complete_datasets() -> None:
    ok = complete_voc("/v")
    checks = [Check("h", "voc", ok, 0.0), Check("h", "ade20k", {"present": False}, 0.0)]
    assert compact_row(checks) == "voc ✓ ade20k ✗"
    assert compact_row([]) == ""


def test_workstation_data_rows_follow_the_stored_checks(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ws = Workstation(tmp_path / "config", state)
    assert ws.data_rows() == {}  # no `data ls` yet: no file, no rows
    cache = CheckCache(state)
    missing = asyncio.run(scan(LocalMachine("lab1"), "cityscapes", str(tmp_path / "none")))
    cache.put([missing, Check("lab1", "voc", complete_voc("/data/voc"), time.time())])
    assert ws.data_rows() == {"lab1": "cityscapes ✗ voc ✓"}
    assert ws.data_rows() == {"lab1": "cityscapes ✗ voc ✓"}  # unchanged file: kept rows
    cache.put([Check("local", "ade20k", {"present": False}, time.time())])
    assert ws.data_rows() == {"lab1": "cityscapes ✗ voc ✓", "local": "ade20k ✗"}
    (state / "data-checks.json").write_text("{not json")
    with pytest.raises(DataError, match=r"data-checks\.json"):
        ws.data_rows()
