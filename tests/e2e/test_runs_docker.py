"""Run lifecycle on a real Docker engine, through the real CLI, in the CI image.

The image has Python and the system libraries; the trainer's packages and the checkout
come in read-only through SEGLAB_DEV_MOUNTS (docs/runtimes.md), as in CI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from docker.errors import NotFound

from seglab.events import PREFIX, parse_line
from tests.e2e.runlib import (
    DEV_MOUNTS,
    RECIPES,
    REPO,
    events_file,
    final,
    ps,
    run_row,
    seglab,
    start_seglab,
    wait_for,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(autouse=True)
def dev_mounts(ci_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give every container the venv's packages and the checkout (read-only)."""
    monkeypatch.setenv("SEGLAB_DEV_MOUNTS", DEV_MOUNTS)


def _container(docker_client: Any, run_id: str) -> Any:
    return docker_client.containers.get(f"seglab-{run_id}")


def _shell(run_id: str, typed: str) -> str:
    """What `seglab shell RUN` prints when ``typed`` is typed at its terminal."""
    import pty
    import time

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "seglab", "shell", run_id],
        cwd=REPO,
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    time.sleep(3)
    os.write(master, typed.encode())
    output = b""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break  # the terminal closed: the shell has exited
        output += chunk
    proc.wait(30)
    os.close(master)
    assert proc.returncode == 0, output
    return output.decode(errors="replace")


def _cityscapes(root: Path) -> None:
    """A two-city Cityscapes folder (2 train, 1 val image) with raw label ids."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, cities in (("train", ("aachen", "bochum")), ("val", ("frankfurt",))):
        for city in cities:
            image_dir = root / "leftImg8bit" / split / city
            label_dir = root / "gtFine" / split / city
            image_dir.mkdir(parents=True)
            label_dir.mkdir(parents=True)
            stem = f"{city}_000000_000019"
            labels = np.full((64, 128), 7, np.uint8)  # road
            labels[:20] = 23  # sky
            labels[40:, 60:] = 26  # car
            labels[0, 0] = 0  # unlabeled -> ignored
            pixels = rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(image_dir / f"{stem}_leftImg8bit.png")
            Image.fromarray(labels).save(label_dir / f"{stem}_gtFine_labelIds.png")


def test_grid_in_containers_isolated_and_reattached(docker_client: Any, tmp_path: Path) -> None:
    dataset = tmp_path / "cityscapes"
    _cityscapes(dataset)
    hosts = Path(os.environ["XDG_CONFIG_HOME"]) / "seglab" / "hosts.yaml"
    hosts.parent.mkdir(parents=True, exist_ok=True)
    hosts.write_text(f"hosts:\n  local:\n    datasets: {{cityscapes: {dataset}}}\n")
    recipe = tmp_path / "cs-grid.yaml"
    recipe.write_text(f"""\
extends: {RECIPES / "tiny.yaml"}
name: cs-grid
data:
  dataset: cityscapes
  root: cityscapes
  synthetic: null
  crop: [32, 64]
train:
  epochs: 4
  batch_size: 2
  eval_interval: 2
resources: {{shm_size: 256m}}
ablate:
  lr:
    low: {{train.optimizer.lr: 0.001}}
    high: {{train.optimizer.lr: 0.003}}
""")
    waiter = start_seglab("run", str(recipe), "--on", "local:cpu", "--runtime", "docker", "--wait")
    assert waiter.stdout is not None
    ids = [waiter.stdout.readline().strip() for _ in range(2)]
    assert all(i.startswith("cs-grid.lr-") for i in ids), ids

    # One container per variant, both running at once, with seglab's isolation defaults.
    wait_for(
        lambda: all(_container(docker_client, i).status == "running" for i in ids),
        120,
        "both containers running",
    )
    for run_id in ids:
        attrs = _container(docker_client, run_id).attrs
        labels = attrs["Config"]["Labels"]
        assert labels["seglab.run_id"] == run_id
        assert labels["seglab.recipe"] == "cs-grid"
        assert labels["seglab.variant"] in ("lr=low", "lr=high")
        assert labels["seglab.recipe_sha"] and labels["seglab.version"]
        assert "seglab.gpus" in labels
        host_config = attrs["HostConfig"]
        assert host_config["CapDrop"] == ["ALL"]
        assert "no-new-privileges" in host_config["SecurityOpt"]
        assert host_config["Privileged"] is False
        assert host_config["NetworkMode"] == "none"
        assert host_config["ShmSize"] == 256 * 2**20
        user = attrs["Config"]["User"]
        assert user and not user.startswith("0:") and user != "root"
        mounts = {m["Destination"]: m for m in attrs["Mounts"]}
        assert mounts["/seglab/data"]["Source"] == str(dataset)
        assert mounts["/seglab/data"]["RW"] is False
        assert mounts["/seglab/run"]["RW"] is True
        assert not any("docker.sock" in m["Source"] for m in attrs["Mounts"])

    running = {r["run_id"]: r for r in json.loads(seglab("ps", "--json").stdout)}
    assert set(ids) <= set(running)
    assert all(running[i]["runtime"] == "docker" for i in ids)

    # The seglab that started them dies; the registry goes too. A new one finds them.
    waiter.send_signal(signal.SIGKILL)
    waiter.wait()
    for path in (Path(os.environ["XDG_STATE_HOME"]) / "seglab").glob("registry.sqlite3*"):
        path.unlink()

    followed = seglab("logs", "--events", "-f", ids[0], timeout=600).stdout.splitlines()
    events = [parse_line(line) for line in followed if PREFIX in line]
    assert events[0] is not None and events[0].kind == "start"
    assert events[-1] is not None and events[-1].kind == "end"
    assert [e.seq for e in events if e] == sorted({e.seq for e in events if e})

    rows = {
        r["run_id"]: r
        for r in wait_for(lambda: all(final(i) for i in ids) and ps(), 600, "both variants to end")
    }
    for run_id in ids:
        assert rows[run_id]["status"] == "finished", rows[run_id]
        assert rows[run_id]["best_miou"] is not None
        on_disk = events_file(rows[run_id]["run_dir"])
        metrics = json.loads(seglab("metrics", run_id, "--json").stdout)
        assert len(metrics["evals"]) == sum(r["kind"] == "eval" for r in on_disk) == 2
        assert len(metrics["loss"]) == sum(r["kind"] == "train" for r in on_disk)
        assert metrics["class_names"][0] == "road"
        # Files the container wrote belong to the run's user, not root.
        assert (Path(rows[run_id]["run_dir"]) / "events.jsonl").stat().st_uid != 0
    pulled = seglab("pull", ids[0], "--what", "best", "--dest", str(tmp_path / "pulled"))
    assert (tmp_path / "pulled" / ids[0] / "best.pt").is_file(), pulled.stdout
    for run_id in ids:
        seglab("rm", run_id)
        with pytest.raises(NotFound):
            _container(docker_client, run_id)


def test_stop_and_resume_in_a_container(docker_client: Any) -> None:
    (run_id,) = seglab(
        "run", str(RECIPES / "tiny-long.yaml"), "--on", "local:cpu", "--runtime", "docker"
    ).stdout.split()
    row = wait_for(
        lambda: (r := run_row(run_id))["iteration"] and r["iteration"] >= 6 and r,
        300,
        "a few iterations",
    )
    assert "uid=1000" in _shell(run_id, "id; exit\n")

    stopped = seglab("stop", run_id, "--timeout", "60")
    assert f"{run_id}: stopped" in stopped.stdout
    attrs = _container(docker_client, run_id).attrs
    assert attrs["State"]["ExitCode"] == 143  # 128 + SIGTERM after a clean stop
    assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"  # never started again
    records = events_file(row["run_dir"])
    assert records[-1]["kind"] == "end" and records[-1]["status"] == "stopped"
    saved = max(r["iter"] for r in records if r["kind"] == "checkpoint")
    assert (Path(row["run_dir"]) / "checkpoints" / "last.pt").is_file()

    seglab("resume", run_id)
    assert _container(docker_client, run_id).status in ("created", "running", "exited")
    wait_for(
        lambda: sum(r["kind"] == "start" for r in events_file(row["run_dir"])) == 2,
        120,
        "the resumed trainer's start event",
    )
    start = [r for r in events_file(row["run_dir"]) if r["kind"] == "start"][1]
    assert start["resumed_from"] == saved > 0
    seglab("kill", run_id)
    seglab("rm", run_id, "--purge")
    assert not Path(row["run_dir"]).exists()
