"""`seglab data prepare` from miniature archives under the official names, its refusals,
and a short CPU training from each prepared tree (the trainer's own readers)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.test_data_layouts import (
    REPO,
    ade20k_archive,
    cityscapes_archives,
    voc_archive,
)

ARCHIVES: dict[str, Callable[[Path], Path]] = {
    "cityscapes": cityscapes_archives,
    "ade20k": ade20k_archive,
    "voc": voc_archive,
}
COUNTS = {
    "cityscapes": {"train": 4, "val": 2, "test": 2},
    "ade20k": {"train": 4, "val": 2},
    "voc": {"train": 4, "val": 2},
}


def seglab(*args: str) -> subprocess.CompletedProcess[str]:
    """`seglab ARGS` in a subprocess (the test's XDG environment)."""
    return subprocess.run(
        [sys.executable, "-m", "seglab", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=300,
    )


def prepared(kind: str, tmp_path: Path) -> Path:
    """`kind` prepared from its miniature archives into tmp_path/KIND."""
    downloads = ARCHIVES[kind](tmp_path / "downloads" / kind)
    target = tmp_path / "data" / kind
    out = seglab("data", "prepare", kind, "--from", str(downloads), "--to", str(target))
    assert out.returncode == 0, out.stderr
    assert f"datasets:\n      {kind}: {target}" in out.stdout
    return target


@pytest.mark.parametrize("kind", ["cityscapes", "ade20k", "voc"])
def test_prepare_unpacks_into_the_trainer_layout(kind: str, tmp_path: Path) -> None:
    target = prepared(kind, tmp_path)
    layout = {
        "cityscapes": ["README", "gtFine", "leftImg8bit"],  # README: as the zips hold
        "ade20k": ["annotations", "images", "objectInfo150.txt"],
        "voc": ["ImageSets", "JPEGImages", "SegmentationClass"],
    }[kind]
    assert sorted(p.name for p in target.iterdir()) == layout
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no temp left
    out = seglab("data", "ls", "--json")  # nothing in hosts.yaml: nothing listed
    assert json.loads(out.stdout) == []
    cache = json.loads((Path(os.environ["XDG_STATE_HOME"]) / "seglab/data-checks.json").read_text())
    splits = cache["local"][kind]["scan"]["splits"]
    assert {s: v["images"] for s, v in splits.items()} == COUNTS[kind]


def test_a_wrong_archive_is_refused(tmp_path: Path) -> None:
    downloads = ade20k_archive(tmp_path / "dl")
    (downloads / "ADEChallengeData2016.zip").rename(downloads / "leftImg8bit_trainvaltest.zip")
    shutil.copy(downloads / "leftImg8bit_trainvaltest.zip", downloads / "gtFine_trainvaltest.zip")
    target = tmp_path / "cs"
    out = seglab("data", "prepare", "cityscapes", "--from", str(downloads), "--to", str(target))
    assert out.returncode == 1
    assert "leftImg8bit_trainvaltest.zip holds no leftImg8bit/ folder" in out.stderr
    assert not target.exists()


def test_a_missing_archive_is_named(tmp_path: Path) -> None:
    downloads = cityscapes_archives(tmp_path / "dl")
    (downloads / "gtFine_trainvaltest.zip").unlink()
    target = tmp_path / "cs"
    out = seglab("data", "prepare", "cityscapes", "--from", str(downloads), "--to", str(target))
    assert out.returncode == 1
    assert "gtFine_trainvaltest.zip is missing" in out.stderr
    assert not target.exists()


@pytest.mark.parametrize("kind", ["ade20k", "voc"])
def test_a_truncated_download_is_refused_and_leaves_nothing(kind: str, tmp_path: Path) -> None:
    downloads = ARCHIVES[kind](tmp_path / "dl")
    (archive,) = downloads.iterdir()
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) * 2 // 3])
    target = tmp_path / "data" / kind
    out = seglab("data", "prepare", kind, "--from", str(downloads), "--to", str(target))
    assert out.returncode == 1
    assert "a truncated download?" in out.stderr or "is damaged" in out.stderr, out.stderr
    assert not target.exists()
    assert list(tmp_path.rglob("*.seglab-unpack-*")) == []


def test_a_damaged_member_fails_its_crc(tmp_path: Path) -> None:
    downloads = ade20k_archive(tmp_path / "dl")
    archive = downloads / "ADEChallengeData2016.zip"
    data = bytearray(archive.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside a member's compressed bytes
    archive.write_bytes(bytes(data))
    out = seglab("data", "prepare", "ade20k", "--from", str(downloads), "--to", str(tmp_path / "a"))
    assert out.returncode == 1
    assert "ADEChallengeData2016.zip is damaged" in out.stderr, out.stderr
    assert not (tmp_path / "a").exists()


def test_a_missing_split_is_refused(tmp_path: Path) -> None:
    downloads = cityscapes_archives(tmp_path / "dl", {"train": 2, "test": 1})
    target = tmp_path / "cs"
    out = seglab("data", "prepare", "cityscapes", "--from", str(downloads), "--to", str(target))
    assert out.returncode == 1
    assert "the archives hold no val split of cityscapes" in out.stderr
    assert not target.exists()
    assert list(tmp_path.glob(".cs*")) == []


@pytest.mark.system
def test_too_little_space_is_refused_before_unpacking(tmp_path: Path) -> None:
    downloads = cityscapes_archives(tmp_path / "dl")
    small = tmp_path / "small"
    small.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(small)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mount.stderr.strip()}")
    try:
        out = seglab(
            "data", "prepare", "cityscapes", "--from", str(downloads), "--to", f"{small}/cs"
        )
        assert out.returncode == 1
        assert "GB are free" in out.stderr and "the archives unpack to" in out.stderr
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


@pytest.mark.slow
@pytest.mark.train
@pytest.mark.parametrize("kind", ["cityscapes", "ade20k", "voc"])
def test_a_short_cpu_training_reads_the_prepared_tree(kind: str, tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the trainer needs the train extra (torch)")
    from tests.unit.test_train_run import run_events, train_cmd, train_env, write_recipe

    target = prepared(kind, tmp_path)
    config = write_recipe(
        tmp_path / f"{kind}.yaml",
        data={"dataset": kind, "root": kind, "crop": [32, 32], "synthetic": None, "workers": 0},
        train={"epochs": 1, "batch_size": 2, "eval_interval": 1, "checkpoint_interval": 2},
        export=[],
    )
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [*train_cmd(config, run_dir), "--data-root", str(target)],
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    kinds = [event.kind for event in run_events(run_dir)]
    assert kinds[0] == "start" and "eval" in kinds and kinds[-1] == "end"
    start = next(e for e in run_events(run_dir) if e.kind == "start")
    assert start.data["iters_per_epoch"] == 2  # 4 training images, batch 2
