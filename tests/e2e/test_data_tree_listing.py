"""A remote dataset tree lists itself over SFTP exactly as the probe lists it here (files,
partial files, sizes, mtimes, symlinks not followed, free space), without starting a
command on the host."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from seglab.data.probe import PART_SUFFIX
from seglab.data.trees import LocalTree, Manifest, RemoteTree
from seglab.hosts import load_inventory
from seglab.machines import LocalMachine
from seglab.remote.connection import ConnectOptions
from seglab.remote.manager import RemoteHosts
from tests.e2e.sshd import Lab

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(90)]


def _tree(root: Path) -> Path:
    (root / "leftImg8bit" / "train" / "aachen").mkdir(parents=True)
    (root / "deep" / "er" / "still").mkdir(parents=True)
    (root / "empty-folder").mkdir()
    for i in range(300):  # more than one SFTP readdir reply
        (root / "leftImg8bit" / "train" / "aachen" / f"a_{i:04d}.png").write_bytes(b"x" * i)
    (root / "deep" / "er" / "still" / "file.bin").write_bytes(os.urandom(5000))
    (root / "empty.txt").write_bytes(b"")
    (root / "deep" / f".file.bin.5000-1{PART_SUFFIX}").write_bytes(b"partial")
    (root / "link-to-file").symlink_to(root / "empty.txt")
    (root / "link-to-folder").symlink_to(root / "deep")
    os.utime(root / "empty.txt", (1_600_000_000.7, 1_600_000_000.7))
    return root


async def _both(root: str) -> tuple[Manifest, Manifest, int]:
    remotes = RemoteHosts(load_inventory(), ConnectOptions(backoff_initial=0.25))
    await remotes.start()
    try:
        machine = remotes.machine("lab1")
        remote = RemoteTree(machine, root)
        try:
            listed = await remote.manifest()
        finally:
            await remote.close()
        local = await LocalTree(LocalMachine(), root).manifest()
        return listed, local, machine.channels_opened
    finally:
        await remotes.stop()


def test_sftp_listing_matches_the_probe(lab1: Lab, tmp_path: Path) -> None:
    root = _tree(tmp_path / "data")
    listed, local, commands = asyncio.run(_both(str(root)))
    assert listed.present and local.present
    assert listed.files == local.files and listed.parts == local.parts
    assert "link-to-file" not in listed.files and "empty.txt" in listed.files
    assert listed.files["empty.txt"].mtime == 1_600_000_000
    assert len(listed.files) == 302 and len(listed.parts) == 1
    assert abs(listed.free - local.free) < 1 << 30  # the same disk, moments apart
    assert commands == 0


def test_a_missing_root_is_absent_with_its_parents_free_space(lab1: Lab, tmp_path: Path) -> None:
    listed, local, commands = asyncio.run(_both(str(tmp_path / "not" / "yet")))
    assert (listed.present, listed.files, listed.parts) == (False, {}, {})
    assert not local.present
    assert abs(listed.free - local.free) < 1 << 30
    assert commands == 0
