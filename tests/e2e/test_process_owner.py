"""Who owns a process-runtime run's files: the user who launched it, run dir included.

A container runs as the invoking (non-root) uid and its run dir is handed to that uid; a
process runs as whoever started seglab, so its run dir is left to them. Under root (CI)
this checks that the dir is not given to 1000:1000 while the trainer writes root's files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.runlib import RECIPES, final, seglab, wait_for

pytestmark = pytest.mark.slow


def test_every_file_of_a_process_run_belongs_to_the_launching_user() -> None:
    (run_id,) = seglab(
        "run", str(RECIPES / "tiny.yaml"), "--on", "local:cpu", "--runtime", "process"
    ).stdout.split()
    row = wait_for(lambda: final(run_id), 300, "the run to end")
    assert row["status"] == "finished", row
    run_dir = Path(row["run_dir"])
    paths = [run_dir, *run_dir.rglob("*")]
    assert {"recipe.yaml", "train.log", "events.jsonl", "process.json", "last.pt"} <= {
        path.name for path in paths
    }
    owners = {(path.lstat().st_uid, path.lstat().st_gid) for path in paths}
    assert owners == {(os.getuid(), os.getgid())}, {
        str(path.relative_to(run_dir)): (path.lstat().st_uid, path.lstat().st_gid) for path in paths
    }
    seglab("rm", run_id, "--purge")
