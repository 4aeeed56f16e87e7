"""The host queue's files, its locks, and the workstation's view of them (real files,
real SQLite; no runner process)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from seglab.errors import RunError
from seglab.hostqueue import ops
from seglab.hostqueue.store import HostQueue, host_of, host_settings
from seglab.hosts import Inventory, local_host
from seglab.registry import Registry, RunRecord, RunStatus
from seglab.runs.hostio import HostIO
from seglab.runs.hostqueues import HostQueues, request
from seglab.scheduler import Pool, Scheduler, parse_on
from tests.e2e.runlib import wait_for
from tests.standin import use_standin

HOLD = """
import fcntl, sys
with open(sys.argv[1], "a+") as handle:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(3)
"""


def _other_process_can_lock(path: Path) -> bool:
    return subprocess.run([sys.executable, "-c", HOLD, str(path)], check=False).returncode == 0


@pytest.fixture
def queues(tmp_path: Path) -> HostQueues:
    host = local_host(runs_root=tmp_path / "runs", nvidia_smi="/opt/nv/nvidia-smi")
    inventory = Inventory({"local": host}, tmp_path / "hosts.yaml")
    registry = Registry(tmp_path / "registry.sqlite3")
    return HostQueues(inventory, registry, HostIO(), lambda record: record)


def tmp_runs(queues: HostQueues) -> Path:
    """The local host's runs root."""
    return Path(queues.inventory.get("local").runs_root)


def _queued(registry: Registry, name: str) -> RunRecord:
    record = RunRecord(
        run_id=f"tiny.{name}.000000",
        recipe="tiny",
        variant=name,
        resolved_recipe="name: tiny\n",
        host="local",
        runtime="process",
        message=f"queued on local: {name} waits",
    )
    registry.upsert_run(record)
    return record


def test_the_booking_lock_shuts_out_other_processes(tmp_path: Path) -> None:
    queue = HostQueue(tmp_path)
    with queue.booking():
        assert not _other_process_can_lock(queue.dir / "book.lock")
    assert _other_process_can_lock(queue.dir / "book.lock")


def test_one_runner_per_host(tmp_path: Path) -> None:
    queue = HostQueue(tmp_path)
    first = queue.try_runner_lock()
    assert first is not None and queue.pid_file.read_text().strip().isdigit()
    assert not _other_process_can_lock(queue.dir / "runner.lock")
    first.close()
    assert _other_process_can_lock(queue.dir / "runner.lock")


def test_a_torn_journal_line_is_left_out(tmp_path: Path) -> None:
    queue = HostQueue(tmp_path)
    queue.note("started", "a", handle="h")
    with queue.journal_file.open("a") as handle:
        handle.write('{"kind": "ended", "run_id": "a"')  # still being written
    assert [(e["kind"], e["run_id"]) for e in queue.journal()] == [("started", "a")]


def test_host_settings_travel_to_the_runner(tmp_path: Path) -> None:
    host = local_host(runs_root=tmp_path, nvidia_smi="/x/smi", datasets={"city": "/d/city"})
    again = host_of(host_settings(host), tmp_path / "elsewhere")
    assert again.nvidia_smi == "/x/smi" and again.dataset_root("city") == "/d/city"
    assert again.is_local and again.runs_root == tmp_path / "elsewhere"


def test_list_move_and_discard(queues: HostQueues) -> None:
    records = [_queued(queues.registry, name) for name in ("a", "b", "c")]
    host = queues.inventory.get("local")
    queue = HostQueue(tmp_runs(queues))
    with queue.booking():  # as a submission under the lock writes them
        queue.set_host(host_settings(host))
        queue.write([request(r, parse_on("local")) for r in records])
    assert [(q.position, q.variant) for q in queues.listing()] == [(1, "a"), (2, "b"), (3, "c")]
    assert queues.listing()[0].why == "queued on local: a waits"
    assert queues.move(records[2].run_id, 5).position == 1
    assert queues.move(records[2].run_id, -1).position == 2
    assert [q.variant for q in queues.listing()] == ["a", "c", "b"]
    assert queues.discard(records[0].run_id)
    assert not queues.discard(records[0].run_id)
    assert [q.variant for q in queues.listing()] == ["c", "b"]
    with pytest.raises(RunError, match="in no host's queue"):
        queues.move(records[0].run_id, 1)
    assert queue.items()[0]["pools"] == [Pool("local").to_dict()]


def test_sync_takes_the_runners_starts_and_failures(queues: HostQueues) -> None:
    started, failed, foreign = (_queued(queues.registry, n) for n in ("a", "b", "c"))
    queue = HostQueue(tmp_runs(queues))
    queue.note(
        "started",
        started.run_id,
        handle="/runs/a",
        gpus=["GPU-1"],
        run_dir="/runs/a",
        runtime="process",
        started_at=1.0,
    )
    queue.note("failed", failed.run_id, message="cannot be placed: no GPU 7")
    queue.note("started", "someone-else.x.1", handle="h", gpus=["GPU-2"], run_dir="/r")
    assert queues.sync() == [started.run_id, failed.run_id]
    now = queues.registry.get_run(started.run_id)
    assert now.status == RunStatus.STARTING and now.handle == "/runs/a"
    assert now.gpus == ("GPU-1",) and now.run_dir == "/runs/a"
    assert queues.registry.holders("local") == {("local", "GPU-1"): started.run_id}
    assert queues.registry.get_run(failed.run_id).status == RunStatus.FAILED
    assert queues.registry.get_run(foreign.run_id).status == RunStatus.QUEUED
    assert queues.sync() == []  # applied once


def test_only_one_local_gpu_host_gets_a_host_queue(queues: HostQueues) -> None:
    assert queues.host_for(parse_on("local"), 1) is not None
    assert queues.host_for(parse_on("local:0,1"), 1) is not None
    assert queues.host_for(parse_on("local:cpu"), 1) is None, "CPU runs never wait there"
    assert queues.host_for(parse_on("auto"), 1) is None
    assert queues.host_for(parse_on("local"), 2) is None


def test_a_host_with_cpu_slots_queues_cpu_runs(tmp_path: Path) -> None:
    host = local_host(runs_root=tmp_path / "runs", cpu_slots=2)
    inventory = Inventory({"local": host}, tmp_path / "hosts.yaml")
    queues = HostQueues(inventory, Registry(tmp_path / "r.sqlite3"), HostIO(), lambda r: r)
    assert queues.host_for(parse_on("local:cpu"), 1) is host


def test_has_runner_sees_the_runner_lock(tmp_path: Path) -> None:
    queue = HostQueue(tmp_path)
    assert not queue.has_runner()
    held = queue.try_runner_lock()
    assert held is not None
    assert queue.has_runner()
    held.close()
    assert not queue.has_runner()


def test_the_run_end_hook_fires_once_per_journalled_end(queues: HostQueues, tmp_path: Path) -> None:
    mine = _queued(queues.registry, "a")
    queue = HostQueue(tmp_runs(queues))
    queue.note("ended", mine.run_id, status="finished", best_miou=0.5)
    queue.note("ended", "someone-else.x.1", status="failed", best_miou=None)
    told = tmp_path / "told.txt"
    hook = tmp_path / "hooks" / "run-end"
    queues.hook, queues.seen = hook, tmp_path / "notified"
    queues.sync()  # no hook file yet
    assert not told.exists()
    hook.parent.mkdir()
    hook.write_text(
        "#!/bin/sh\n"
        'echo "$SEGLAB_RUN_ID $SEGLAB_RUN_STATUS $SEGLAB_RUN_HOST $SEGLAB_RUN_BEST_MIOU"'
        f" >> {told}\n"
    )
    hook.chmod(0o755)
    queues.sync()
    queues.sync()
    assert told.read_text() == f"{mine.run_id} finished local 0.5\n"


def test_cpu_slots_bound_the_cpu_runs_of_a_host(tmp_path: Path) -> None:
    host = local_host(runs_root=tmp_path / "runs", cpu_slots=2)
    inventory = Inventory({"local": host}, tmp_path / "hosts.yaml")
    registry = Registry(tmp_path / "registry.sqlite3")
    pools = parse_on("local:cpu")
    scheduler = Scheduler(inventory, registry)
    assert scheduler.place(pools, 1, "a") is not None
    assert scheduler.place(pools, 1, "b") is not None
    assert scheduler.place(pools, 1, "c") is None, "two slots, both placed in this round"
    assert "2 CPU slots (cpu_slots) held by a, b" in scheduler.explain_busy(pools)
    for name in ("a", "b"):  # started: the next round counts them from the registry
        registry.upsert_run(replace(_queued(registry, name), status=RunStatus.RUNNING))
    assert Scheduler(inventory, registry).place(pools, 1, "c") is None
    registry.update_run("tiny.a.000000", status=RunStatus.FINISHED)
    assert Scheduler(inventory, registry).place(pools, 1, "c") is not None
    unbounded = Inventory({"local": local_host(runs_root=tmp_path)}, tmp_path / "h.yaml")
    free = Scheduler(unbounded, registry)
    assert all(free.place(pools, 1, f"r{n}") is not None for n in range(10))


def test_sync_keeps_each_queued_runs_place(queues: HostQueues) -> None:
    records = [_queued(queues.registry, name) for name in ("a", "b")]
    queue = HostQueue(tmp_runs(queues))
    queue.write([request(r, parse_on("local")) for r in reversed(records)])
    queues.sync()
    assert queues.positions() == {records[1].run_id: 1, records[0].run_id: 2}
    queue.write([])
    queues.sync()
    assert queues.positions() == {}


def test_a_runner_starts_again_for_runs_it_started_that_have_not_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    standin = use_standin(monkeypatch, gpus=1, phase="idle")
    host = local_host(runs_root=runs, nvidia_smi=str(standin), telemetry="nvidia-smi")
    queue = HostQueue(runs)
    assert ops.ensure_runner(queue, {}) == {"started": False}, "no work"
    # A run the last runner started, then the runner was killed (or the host restarted).
    queue.note(
        "started",
        "tiny.a.000001",
        handle=str(runs / "tiny.a.000001"),
        gpus=[],
        run_dir=str(runs / "tiny.a.000001"),
        runtime="process",
        started_at=1.0,
    )
    assert ops.ensure_runner(queue, {}) == {"started": False}, "no host settings yet"
    queue.set_host(host_settings(host))
    assert ops.ensure_runner(queue, {}) == {"started": True}
    # The new runner journals the run's end (its run dir is gone: lost) and exits.
    ended = wait_for(
        lambda: [e for e in queue.journal() if e["kind"] == "ended"], 60, "the run's end"
    )
    assert [(e["run_id"], e["status"]) for e in ended] == [("tiny.a.000001", "lost")]
    wait_for(lambda: not queue.has_runner(), 60, "the runner to exit")
    assert ops.ensure_runner(queue, {}) == {"started": False}, "nothing left to serve"
