"""The sync logic between two folders on this machine (the SFTP side: tests/e2e)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from seglab.data.sync import CHUNK, SyncError, SyncReport, part_name, sync
from seglab.data.trees import Entry, LocalTree
from seglab.machines import LocalMachine


def _run(source: Path, target: Path, delete: bool = False, checksum: bool = False) -> SyncReport:
    machine = LocalMachine()
    trees = LocalTree(machine, str(source)), LocalTree(machine, str(target))
    return asyncio.run(sync(*trees, delete=delete, checksum=checksum))


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "one.png").write_bytes(os.urandom(1000))
    (root / "a" / "two.png").write_bytes(os.urandom(3000))
    (root / "empty").write_bytes(b"")
    return root


def test_copy_then_nothing_then_a_retouch(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "dst"
    first = _run(source, target)
    assert (first.sent, first.bytes_sent, first.verified) == (3, 4000, True)
    assert _files(target) == _files(source)
    assert int((target / "a/two.png").stat().st_mtime) == int(
        (source / "a/two.png").stat().st_mtime
    )
    again = _run(source, target)
    assert (again.sent, again.same) == (0, 3)
    os.utime(source / "a/two.png", (1_000_000, 1_000_000))
    third = _run(source, target, checksum=True)
    assert (third.sent, third.retouched) == (0, 1)
    assert (target / "a/two.png").stat().st_mtime == 1_000_000


def test_same_size_other_bytes_are_resent(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "dst"
    _run(source, target)
    (source / "a/two.png").write_bytes(os.urandom(3000))
    os.utime(source / "a/two.png", (2_000_000, 2_000_000))
    report = _run(source, target)
    assert (report.sent, report.retouched, report.bytes_sent) == (1, 0, 3000)
    assert _files(target) == _files(source)


def test_a_partial_file_is_resumed_from_its_last_whole_chunk(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    data = os.urandom(2 * CHUNK + 100)
    (source / "big.bin").write_bytes(data)
    info = (source / "big.bin").stat()
    part = tmp_path / "dst" / part_name(Entry("big.bin", info.st_size, int(info.st_mtime)))
    part.parent.mkdir()
    # An interrupted copy: chunk 0 complete, chunk 1 partly written (garbage past it).
    part.write_bytes(data[:CHUNK] + b"\0" * (CHUNK // 2))
    stale = tmp_path / "dst" / part_name(Entry("big.bin", 5, 5))
    stale.write_bytes(b"old")
    report = _run(source, tmp_path / "dst")
    assert (report.resumed, report.bytes_sent) == (1, CHUNK + 100)
    assert (tmp_path / "dst" / "big.bin").read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["big.bin"]


def test_delete_only_when_asked(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "dst"
    _run(source, target)
    (target / "extra").write_text("x")
    assert _run(source, target).deleted == 0
    assert (target / "extra").exists()
    assert _run(source, target, delete=True).deleted == 1
    assert _files(target) == _files(source)


def test_a_missing_source_and_the_same_folder_are_refused(source: Path, tmp_path: Path) -> None:
    with pytest.raises(SyncError, match="does not exist"):
        _run(tmp_path / "nope", tmp_path / "dst")
    with pytest.raises(SyncError, match="both the source and the target"):
        _run(source, source)
