"""Run-directory files over SFTP on the host's connection: events.jsonl and `pull` fetches."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from seglab.events import Event
from seglab.hosts import load_inventory
from seglab.remote.connection import LinkState
from seglab.remote.files import RemoteFileError, RemoteFiles, sftp_path
from seglab.remote.manager import RemoteHosts
from tests.e2e.sshd import Lab

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(60)]


def _event(seq: int, kind: str = "train") -> str:
    data = {"iter": seq, "epoch": 0, "loss": 1.0 / (seq + 1), "lr": 0.01}
    return json.dumps(Event(kind=kind, seq=seq, time=1000.0 + seq, data=data).to_dict())


def _run_dir(root: Path) -> Path:
    run = root / "seed.default.abc123"
    (run / "checkpoints").mkdir(parents=True)
    (run / "export" / "onnx").mkdir(parents=True)
    (run / "checkpoints" / "best.pt").write_bytes(b"best-weights" * 1000)
    (run / "checkpoints" / "last.pt").write_bytes(b"last-weights")
    (run / "export" / "model.onnx").write_bytes(b"onnx-bytes")
    (run / "export" / "onnx" / "meta.json").write_text("{}")
    (run / "recipe.yaml").write_text("model: {}\n")
    return run


async def _with_files(body: Callable[[RemoteFiles], Awaitable[None]]) -> None:
    remotes = RemoteHosts(load_inventory())
    await remotes.start()
    try:
        await remotes.connection("lab1").wait_for(LinkState.ONLINE, timeout=15)
        await body(remotes.files("lab1"))
    finally:
        await remotes.stop()


def test_events_are_read_incrementally_complete_lines_only(lab1: Lab, tmp_path: Path) -> None:
    run = _run_dir(tmp_path / "runs")
    events = run / "events.jsonl"
    events.write_text(_event(0, "train") + "\n" + _event(1) + "\n" + _event(2)[:20])

    async def body(files: RemoteFiles) -> None:
        first = await files.read_events(str(run))
        assert [e.seq for e in first.events] == [0, 1]
        assert first.offset == len((_event(0) + "\n" + _event(1) + "\n").encode())
        # The writer finishes the torn line and appends another.
        with events.open("a") as out:
            out.write(_event(2)[20:] + "\n" + _event(3) + "\n")
        second = await files.read_events(str(run), first.offset)
        assert [e.seq for e in second.events] == [2, 3]
        assert second.events[0].data["loss"] == pytest.approx(1 / 3)
        assert (await files.read_events(str(run), second.offset)).events == []
        with pytest.raises(RemoteFileError, match=r"lab1:.*nope/events.jsonl does not exist"):
            await files.read_events(str(tmp_path / "nope"))

    asyncio.run(_with_files(body))


def test_fetch_export_best_and_all(lab1: Lab, tmp_path: Path) -> None:
    run = _run_dir(tmp_path / "runs")
    (run / "events.jsonl").write_text(_event(0) + "\n")

    async def body(files: RemoteFiles) -> None:
        best = await files.fetch(str(run), "best", tmp_path / "pull-best")
        assert best == [tmp_path / "pull-best" / "best.pt"]
        assert best[0].read_bytes() == (run / "checkpoints" / "best.pt").read_bytes()

        export = await files.fetch(str(run), "export", tmp_path / "pull-export")
        names = [p.relative_to(tmp_path / "pull-export").as_posix() for p in export]
        assert names == ["export/model.onnx", "export/onnx/meta.json"]

        everything = await files.fetch(str(run), "all", tmp_path / "pull-all")
        got = {p.relative_to(tmp_path / "pull-all").as_posix() for p in everything}
        want = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
        assert got == want

        (run / "export" / "model.onnx").unlink()
        (run / "export" / "onnx" / "meta.json").unlink()
        (run / "export" / "onnx").rmdir()
        (run / "export").rmdir()
        with pytest.raises(RemoteFileError, match="has not written it yet"):
            await files.fetch(str(run), "export", tmp_path / "pull-missing")

    asyncio.run(_with_files(body))


def test_home_relative_paths_map_to_sftp_paths() -> None:
    assert sftp_path("~/seglab/runs/x") == "seglab/runs/x"
    assert sftp_path("~") == "."
    assert sftp_path("/data/runs/x") == "/data/runs/x"
