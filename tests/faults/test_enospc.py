"""A disk that fills up during a checkpoint: the real trainer on CPU, its run dir on a small
tmpfs. The run ends `failed` with an event that names the device and the path, the previous
`last.pt` stays and loads, and the run resumes once there is room again."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from seglab.train import checkpoint as ckpt
from seglab.train.event_writer import EventWriter
from seglab.train.storage import StorageError
from tests.e2e.runlib import RECIPES, events_file, final, ps, run_row, seglab, wait_for

pytestmark = [pytest.mark.system, pytest.mark.faults]

# The tiny recipe's checkpoint is about 190 MiB (ResNet-18 DeepLabV3+ with AdamW state).
# 700 MiB passes the launch check (room for last.pt, best.pt and logs). Right after the
# launch, while the trainer is still importing torch, another writer fills the disk up to
# 1.5 checkpoints of free space: the first save (iteration 2) fits, the next one (iteration
# 4, written beside the first) does not.
CHECKPOINT = 190 * 2**20
SMALL = "700m"
ROOMY = "1200m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 700 MiB tmpfs, always unmounted afterwards."""
    if os.getuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def _hosts(runs_root: Path) -> None:
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "seglab" / "hosts.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"hosts:\n  local:\n    runs_root: {runs_root}\n")


def test_disk_full_during_a_checkpoint(small_disk: Path) -> None:
    _hosts(small_disk)
    seglab("run", str(RECIPES / "tiny.yaml"), "--on", "local:cpu", "--runtime", "process")
    filler = small_disk / "filler"
    with filler.open("wb") as handle:
        os.posix_fallocate(
            handle.fileno(), 0, shutil.disk_usage(small_disk).free - 3 * CHECKPOINT // 2
        )
    (row,) = ps()
    run_id, run_dir = row["run_id"], Path(row["run_dir"])
    wait_for(lambda: final(run_id), 600, f"{run_id} to end", interval=2.0)
    assert run_row(run_id)["status"] == "failed", run_row(run_id)

    last = run_dir / ckpt.CHECKPOINT_DIR / ckpt.LAST
    expected = f"no space left on tmpfs (mounted at {small_disk}) at {last}"
    records = events_file(str(run_dir))
    errors = [r for r in records if r["kind"] == "error"]
    assert [e["message"].split(";")[0] for e in errors] == [expected], errors
    assert "previous checkpoint there is kept" in errors[0]["message"]
    assert errors[0]["traceback"] is None
    assert records[-1]["kind"] == "end" and records[-1]["status"] == "failed"
    saved = [r["iter"] for r in records if r["kind"] == "checkpoint"]
    assert saved == [2], saved  # the save at iteration 4 is the one that failed
    assert not [p.name for p in last.parent.iterdir() if p.name.endswith(".tmp")]

    # What the user sees: ps and logs say it in those words, without a traceback.
    assert expected in run_row(run_id)["message"]
    logs = seglab("logs", run_id).stdout
    assert f"seglab train: {expected}" in logs
    assert "inline_container" not in logs and "Traceback" not in logs

    # last.pt is the good one from iteration 2, and it loads.
    state = ckpt.load(last)
    assert state["iter"] == 2

    # With room again (the filler gone, and room for the launch check), the run resumes
    # from it and finishes.
    filler.unlink()
    subprocess.run(["mount", "-o", f"remount,size={ROOMY}", str(small_disk)], check=True)
    seglab("resume", run_id)
    wait_for(lambda: final(run_id), 600, f"{run_id} to end", interval=2.0)
    assert run_row(run_id)["status"] == "finished", run_row(run_id)
    starts = [r for r in events_file(str(run_dir)) if r["kind"] == "start"]
    assert [s["resumed_from"] for s in starts] == [None, 2]
    assert ckpt.load(last)["iter"] == 8


def test_the_event_file_on_a_full_disk(small_disk: Path) -> None:
    """A full disk under events.jsonl: one StorageError naming it, the record still on
    stdout, and later records on stdout only."""
    filler = small_disk / "filler"
    stream = io.StringIO()
    writer = EventWriter(small_disk / "run", stream=stream)
    writer.emit("error", message="before", traceback=None)
    with filler.open("wb", buffering=0) as handle, pytest.raises(OSError) as full:
        while True:
            handle.write(b"\0" * 2**20)
    assert full.value.errno == errno.ENOSPC
    with pytest.raises(StorageError, match=f"no space left on tmpfs .* at {writer.path}"):
        writer.emit("error", message="x" * 2**16, traceback=None)
    writer.emit("end", status="failed", best_miou=None, iter=None, exports=[])
    writer.close()
    lines = [json.loads(line.split(" ", 1)[1]) for line in stream.getvalue().splitlines()]
    assert [(r["kind"], r["seq"]) for r in lines] == [("error", 0), ("error", 1), ("end", 2)]
    assert json.loads(writer.path.read_text().splitlines()[0])["message"] == "before"
