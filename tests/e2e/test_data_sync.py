"""`seglab data sync` end to end through a real sshd: first copy, a no-change re-sync that
sends nothing, one changed file resent alone, a copy killed mid-file and resumed, a copy
back from the remote host; every target tree identical to its source by SHA-256."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from seglab.data.probe import PART_SUFFIX
from seglab.data.sync import CHUNK
from tests.e2e.sshd import Lab, write_hosts_yaml
from tests.unit.test_data_layouts import REPO, mini_cityscapes, voc_archive

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(300)]

BIG = 6 * CHUNK + 12345  # a file of several chunks, so a kill can land mid-file


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _size(path: Path) -> int:
    """The size of a file that may just have been renamed away (then 0)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _sync(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "seglab", "data", "sync", *args, "--json"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    report: dict[str, Any] = json.loads(out.stdout[: out.stdout.rindex("}") + 1])
    return report


@pytest.fixture
def source(lab1: Lab, tmp_path: Path, isolated_xdg: Path) -> Path:
    """A miniature Cityscapes plus one large file, as dataset `cityscapes` of `local`."""
    root = mini_cityscapes(tmp_path / "src")
    (root / "big.bin").write_bytes(os.urandom(BIG))
    (root / "empty.txt").write_bytes(b"")
    write_hosts_yaml(
        isolated_xdg / "config",
        {
            "local": {"datasets": f"{{cityscapes: {root}}}"},
            "lab1": {"ssh": "lab1", "nvidia_smi": str(lab1.nvidia_smi)},
        },
    )
    return root


def test_copy_resync_change_and_copy_back(source: Path, tmp_path: Path, lab1: Lab) -> None:
    target = tmp_path / "remote" / "cityscapes"
    files = len(_tree_hashes(source))
    first = _sync("cityscapes", "--to", "lab1", "--path", str(target))
    assert first["files"] == files and first["sent"] == files and first["verified"]
    assert first["bytes_sent"] == sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    assert _tree_hashes(target) == _tree_hashes(source)

    again = _sync("cityscapes", "--to", "lab1", "--path", str(target))
    assert (again["sent"], again["bytes_sent"], again["same"]) == (0, 0, files)

    changed = source / "leftImg8bit/train/aachen/aachen_000000_000001_leftImg8bit.png"
    changed.write_bytes(changed.read_bytes() + b"more")
    touched = source / "gtFine/val/frankfurt/frankfurt_000000_000000_gtFine_labelIds.png"
    os.utime(touched, (time.time() + 100, time.time() + 100))  # same bytes, new mtime
    third = _sync("cityscapes", "--to", "lab1", "--path", str(target))
    assert (third["sent"], third["bytes_sent"]) == (1, changed.stat().st_size)
    assert third["retouched"] == 1
    assert _tree_hashes(target) == _tree_hashes(source)
    assert int(touched.stat().st_mtime) == int(
        (target / touched.relative_to(source)).stat().st_mtime
    )

    # An extra file on the target stays unless --delete.
    (target / "extra.txt").write_text("mine")
    assert _sync("cityscapes", "--to", "lab1", "--path", str(target))["deleted"] == 0
    assert (target / "extra.txt").exists()
    assert _sync("cityscapes", "--to", "lab1", "--path", str(target), "--delete")["deleted"] == 1
    assert _tree_hashes(target) == _tree_hashes(source)

    # Back from the remote host to a new folder here, and from one host to another
    # (lab2: the same sshd under a second name; the bytes pass through this process).
    back = tmp_path / "back"
    lab1.home.add_host("lab2", lab1.server)
    write_hosts_yaml(
        Path(os.environ["XDG_CONFIG_HOME"]),
        {"lab1": {"ssh": "lab1", "datasets": f"{{cityscapes: {target}}}"}, "lab2": {"ssh": "lab2"}},
    )
    report = _sync("cityscapes", "--from", "lab1", "--to", "local", "--path", str(back))
    assert report["sent"] == files
    assert _tree_hashes(back) == _tree_hashes(source)
    other = tmp_path / "lab2" / "cityscapes"
    report = _sync("cityscapes", "--from", "lab1", "--to", "lab2", "--path", str(other))
    assert (report["sent"], report["source"], report["target"]) == (
        files,
        f"lab1:{target}",
        f"lab2:{other}",
    )
    assert _tree_hashes(other) == _tree_hashes(source)


def test_a_killed_copy_resumes_from_its_partial_file(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "remote" / "cityscapes"
    (source / "big2.bin").write_bytes(os.urandom(BIG))
    total = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "seglab", "data", "sync", "cityscapes", "--to", "lab1"]
    proc = subprocess.Popen(
        [*argv, "--path", str(target), "--json"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    part: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        part = [p for p in target.rglob(f"*{PART_SUFFIX}") if _size(p) > CHUNK]
        if part:
            break
        time.sleep(0.01)
    assert part, "the copy finished before a partial file grew past one chunk"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert not (target / "big.bin").exists() or not (target / "big2.bin").exists()

    report = _sync("cityscapes", "--to", "lab1", "--path", str(target))
    assert report["resumed"] >= 1
    assert report["bytes_sent"] < total  # the bytes already in a partial file were kept
    assert _tree_hashes(target) == _tree_hashes(source)
    assert not list(target.rglob(f"*{PART_SUFFIX}"))


def test_ls_on_a_remote_host_through_its_connection(lab1: Lab, tmp_path: Path) -> None:
    root = mini_cityscapes(tmp_path / "remote-cs")
    (root / "gtFine/val/frankfurt/frankfurt_000000_000001_gtFine_labelIds.png").unlink()
    write_hosts_yaml(
        Path(os.environ["XDG_CONFIG_HOME"]),
        {"lab1": {"ssh": "lab1", "datasets": f"{{cityscapes: {root}, gone: {tmp_path}/gone}}"}},
    )
    out = subprocess.run(
        [sys.executable, "-m", "seglab", "data", "ls", "--host", "lab1", "--json", "--deep"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 1, out.stderr
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert rows["gone"]["present"] is False
    assert rows["cityscapes"]["host"] == "lab1"
    assert {s: v["images"] for s, v in rows["cityscapes"]["splits"].items()} == {
        "train": 4,
        "val": 2,
        "test": 2,
    }
    assert rows["cityscapes"]["splits"]["val"]["missing_labels"] == 1
    assert len(rows["cityscapes"]["tree_sha256"]) == 64


def test_prepare_runs_on_the_remote_host(lab1: Lab, tmp_path: Path) -> None:
    downloads = voc_archive(tmp_path / "downloads")
    target = tmp_path / "lab1-data" / "voc"
    argv = [sys.executable, "-m", "seglab", "data", "prepare", "voc", "--host", "lab1"]
    argv += ["--from", str(downloads), "--to", str(target)]
    out = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert f"hosts:\n  lab1:\n    datasets:\n      voc: {target}" in out.stdout
    assert (target / "ImageSets" / "Segmentation" / "val.txt").is_file()
    again = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO)
    assert again.returncode == 1
    assert again.stderr.startswith(f"seglab: lab1: {target} already exists and is not empty")
