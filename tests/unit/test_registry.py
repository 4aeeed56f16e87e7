"""The SQLite run registry: migrations, runs, idempotent events, queue, reservations, and
two real processes writing at once."""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seglab import registry as registry_module
from seglab.events import Event
from seglab.registry import (
    MIGRATIONS,
    Member,
    Registry,
    RunRecord,
    RunStatus,
    UnknownRunError,
)


def _run(run_id: str = "smoke.default.a1b2", **overrides: Any) -> RunRecord:
    values: dict[str, Any] = {
        "run_id": run_id,
        "recipe": "smoke",
        "variant": "default",
        "host": "local",
        "runtime": "docker",
        "created_at": 1000.0,
    }
    values.update(overrides)
    return RunRecord(**values)


def _train(seq: int, it: int, loss: float, img_per_s: float | None = None) -> Event:
    data: dict[str, Any] = {"iter": it, "epoch": 0, "loss": loss, "lr": 0.01}
    if img_per_s is not None:
        data["img_per_s"] = img_per_s
    return Event("train", seq, 2000.0 + seq, data)


def _eval(seq: int, it: int, miou: float) -> Event:
    data = {
        "iter": it,
        "epoch": 0,
        "miou": miou,
        "pixel_acc": 0.9,
        "mean_acc": 0.8,
        "per_class_iou": [miou, miou],
    }
    return Event("eval", seq, 2000.0 + seq, data)


def _start(seq: int, total: int) -> Event:
    data = {
        "recipe": "smoke",
        "variant": "default",
        "world_size": 1,
        "class_names": ["a", "b"],
        "total_iters": total,
    }
    return Event("start", seq, 2000.0 + seq, data)


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    with Registry(tmp_path / "state" / "registry.sqlite3") as registry:
        yield registry


# -- schema ----------------------------------------------------------------------------------


def test_an_empty_file_is_migrated_to_the_latest_schema_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    path.touch()
    with Registry(path) as reg:
        assert reg.schema_version() == len(MIGRATIONS)
    conn = sqlite3.connect(path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "events", "queue", "reservations"} <= tables
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_reopening_keeps_the_data_and_migrates_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    with Registry(path) as reg:
        reg.upsert_run(_run())
    with Registry(path) as reg:
        assert reg.schema_version() == len(MIGRATIONS)
        assert [r.run_id for r in reg.list_runs()] == ["smoke.default.a1b2"]


def test_an_older_schema_is_upgraded_in_order_keeping_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "registry.sqlite3"
    with Registry(path) as reg:
        reg.upsert_run(_run())
    extra = ("ALTER TABLE runs ADD COLUMN note TEXT", "UPDATE runs SET note = 'migrated'")
    monkeypatch.setattr(registry_module, "MIGRATIONS", (*MIGRATIONS, extra))
    with Registry(path) as reg:
        assert reg.schema_version() == len(MIGRATIONS) + 1
        assert reg.get_run("smoke.default.a1b2").recipe == "smoke"
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT note FROM runs").fetchall() == [("migrated",)]
    conn.close()


def test_a_file_from_a_newer_seglab_is_set_aside_and_a_fresh_one_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "registry.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    conn.close()
    with Registry(path) as reg:
        assert reg.list_runs() == []
        assert reg.schema_version() == len(MIGRATIONS)
    (aside,) = tmp_path.glob("registry.sqlite3.corrupt-*")
    conn = sqlite3.connect(aside)
    assert conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS) + 5,)
    conn.close()
    (warning,) = caplog.messages
    assert f"schema version {len(MIGRATIONS) + 5} is newer" in warning
    assert str(path) in warning and str(aside) in warning


def test_a_file_with_another_programs_tables_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE runs (id INTEGER)")
    conn.commit()
    conn.close()
    with Registry(path) as reg:
        reg.upsert_run(_run())
        assert [r.run_id for r in reg.list_runs()] == ["smoke.default.a1b2"]
    assert len(list(tmp_path.glob("registry.sqlite3.corrupt-*"))) == 1


def test_a_zero_length_file_is_simply_a_new_registry(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    path.touch()
    with Registry(path) as reg:
        assert reg.list_runs() == []
        assert reg.schema_version() == len(MIGRATIONS)
    assert list(tmp_path.glob("registry.sqlite3.corrupt-*")) == []


def test_the_default_location_is_the_state_dir(isolated_xdg: Path) -> None:
    with Registry() as reg:
        reg.upsert_run(_run())
        assert reg.path == isolated_xdg / "state" / "seglab" / "registry.sqlite3"
    assert reg.path.is_file()


# -- runs ------------------------------------------------------------------------------------


def test_killed_is_a_final_status_of_its_own(reg: Registry) -> None:
    reg.upsert_run(_run(status=RunStatus.RUNNING))
    killed = reg.update_run("smoke.default.a1b2", status=RunStatus.KILLED, exit_code=137)
    assert killed.status is RunStatus.KILLED and str(killed.status) == "killed"
    assert killed.is_final
    assert reg.list_runs(include_finished=False) == []


def test_runs_round_trip_and_upsert_replaces(reg: Registry) -> None:
    record = _run(
        gpus=("GPU-aaaa", "GPU-bbbb"),
        status=RunStatus.RUNNING,
        handle="abc123",
        resolved_recipe="model: {arch: deeplabv3plus}\n",
        exit_code=None,
    )
    reg.upsert_run(record)
    assert reg.get_run(record.run_id) == record
    reg.upsert_run(_run(status=RunStatus.FAILED, exit_code=137, message="Killed"))
    again = reg.get_run(record.run_id)
    assert (again.status, again.exit_code, again.message, again.gpus) == (
        RunStatus.FAILED,
        137,
        "Killed",
        (),
    )
    assert len(reg.list_runs()) == 1


def test_a_multi_node_run_keeps_its_members(reg: Registry) -> None:
    members = (
        Member("lab1", ("GPU-aaaa",), "c0ffee", "/runs/r"),
        Member("lab2", ("GPU-bbbb",), None, "/runs/r.m1"),
    )
    record = _run(gpus=("GPU-aaaa",), members=members)
    reg.upsert_run(record)
    assert reg.get_run(record.run_id) == record
    started = (members[0], Member("lab2", ("GPU-bbbb",), "beef", "/runs/r.m1"))
    assert reg.update_run(record.run_id, members=started).members == started


def test_a_schema_1_registry_gains_the_members_column(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO runs (run_id, recipe, variant, recipe_sha, resolved_recipe, host, "
        "gpus, runtime, run_dir, status, created_at) VALUES ('old.default.a1b2', "
        "'old', 'default', '', '', 'local', '[]', 'process', '', 'finished', 1.0)"
    )
    conn.commit()
    conn.close()
    with Registry(path) as reg:
        assert reg.schema_version() == len(MIGRATIONS)
        old = reg.get_run("old.default.a1b2")
        assert old.members == () and old.host == "local"


def test_update_run_validates_field_names_and_values(reg: Registry) -> None:
    reg.upsert_run(_run())
    updated = reg.update_run(
        "smoke.default.a1b2", status="running", started_at=1500.0, gpus=["GPU-1"]
    )
    assert (updated.status, updated.started_at, updated.gpus) == (
        RunStatus.RUNNING,
        1500.0,
        ("GPU-1",),
    )
    with pytest.raises(ValueError, match=r"unknown run field 'stauts' \(did you mean 'status'"):
        reg.update_run("smoke.default.a1b2", stauts="running")
    with pytest.raises(ValueError, match="run_id cannot change"):
        reg.update_run("smoke.default.a1b2", run_id="other")
    with pytest.raises(ValueError, match="'exploded' is not a valid RunStatus"):
        reg.update_run("smoke.default.a1b2", status="exploded")
    with pytest.raises(UnknownRunError, match="no run 'nope'"):
        reg.update_run("nope", status="running")
    assert reg.get_run("smoke.default.a1b2").status is RunStatus.RUNNING


def test_unknown_run_suggests_a_close_id(reg: Registry) -> None:
    reg.upsert_run(_run())
    with pytest.raises(UnknownRunError) as info:
        reg.get_run("smoke.default.a1b3")
    assert str(info.value) == (
        "no run 'smoke.default.a1b3' in the registry (did you mean 'smoke.default.a1b2'?)"
    )


def test_list_runs_can_leave_out_ended_runs_and_filter_by_host(reg: Registry) -> None:
    reg.upsert_run(_run("a", created_at=1.0, status=RunStatus.RUNNING))
    reg.upsert_run(_run("b", created_at=2.0, status=RunStatus.FINISHED))
    reg.upsert_run(_run("c", created_at=3.0, status=RunStatus.OOM_KILLED, host="lab1"))
    reg.upsert_run(_run("d", created_at=4.0, status=RunStatus.LOST, host="lab1"))
    assert [r.run_id for r in reg.list_runs()] == ["a", "b", "c", "d"]
    assert [r.run_id for r in reg.list_runs(include_finished=False)] == ["a", "d"]
    assert [r.run_id for r in reg.list_runs(host="lab1")] == ["c", "d"]
    assert reg.get_run("b").is_final and not reg.get_run("d").is_final


def test_delete_run_forgets_its_events_queue_entries_and_reservations(reg: Registry) -> None:
    reg.upsert_run(_run("a"))
    reg.upsert_run(_run("b"))
    reg.add_events("a", [_train(1, 10, 1.0)])
    reg.add_events("b", [_train(1, 10, 1.0)])
    reg.enqueue("a", {"gpus": 1})
    assert reg.reserve("local", ["GPU-1"], "a")
    assert reg.delete_run("a") is True
    assert reg.delete_run("a") is False
    assert reg.events("a") == [] and reg.pending() == [] and reg.holders() == {}
    assert len(reg.events("b")) == 1


# -- events ----------------------------------------------------------------------------------


def test_the_same_events_twice_are_stored_once(reg: Registry) -> None:
    reg.upsert_run(_run())
    batch = [_start(0, 500), _train(1, 10, 2.5, 3.8), _eval(2, 10, 0.41), _train(3, 20, 2.0)]
    assert reg.add_events("smoke.default.a1b2", batch) == 4
    assert reg.add_events("smoke.default.a1b2", batch) == 0
    assert reg.add_events("smoke.default.a1b2", [*batch, _eval(4, 20, 0.35)]) == 1
    stored = reg.events("smoke.default.a1b2")
    assert [e.seq for e in stored] == [0, 1, 2, 3, 4]
    assert stored[1] == batch[1]


def test_derived_fields_follow_the_latest_train_event_and_the_best_eval(reg: Registry) -> None:
    reg.upsert_run(_run())
    # Delivered out of order (a re-ingest after a reconnect): later seqs still win.
    reg.add_events("smoke.default.a1b2", [_train(5, 50, 0.9, 4.2), _eval(6, 50, 0.52)])
    reg.add_events(
        "smoke.default.a1b2", [_start(0, 500), _train(1, 10, 2.5, 3.0), _eval(2, 10, 0.61)]
    )
    run = reg.get_run("smoke.default.a1b2")
    assert (run.last_iter, run.last_loss, run.img_per_s) == (50, 0.9, 4.2)
    assert (run.best_miou, run.total_iters) == (0.61, 500)
    end = Event("end", 7, 3000.0, {"status": "finished", "best_miou": 0.63})
    reg.add_events("smoke.default.a1b2", [end])
    assert reg.get_run("smoke.default.a1b2").best_miou == 0.63


def test_events_filter_by_kind_and_seq_and_last_seq(reg: Registry) -> None:
    reg.upsert_run(_run())
    assert reg.last_seq("smoke.default.a1b2") is None
    reg.add_events(
        "smoke.default.a1b2", [_start(0, 9), _train(1, 1, 1.0), _eval(2, 1, 0.1), _train(3, 2, 0.5)]
    )
    assert [e.seq for e in reg.events("smoke.default.a1b2", kind="train")] == [1, 3]
    assert [e.seq for e in reg.events("smoke.default.a1b2", after_seq=1)] == [2, 3]
    assert reg.last_seq("smoke.default.a1b2") == 3


def test_events_for_an_unknown_run_are_refused_and_nothing_is_stored(reg: Registry) -> None:
    with pytest.raises(UnknownRunError):
        reg.add_events("ghost", [_train(1, 1, 1.0)])
    reg.upsert_run(_run("ghost"))
    assert reg.events("ghost") == []


# -- queue -----------------------------------------------------------------------------------


def test_the_queue_is_fifo_and_a_claim_succeeds_once(reg: Registry) -> None:
    first = reg.enqueue("a", {"host": "local", "gpus": 1})
    second = reg.enqueue("b", {"host": None, "gpus": 2})
    assert [(q.id, q.run_id) for q in reg.pending()] == [(first, "a"), (second, "b")]
    item = reg.claim(first)
    assert item is not None and item.request == {"host": "local", "gpus": 1}
    assert item.state == "claimed"
    assert reg.claim(first) is None
    assert [q.run_id for q in reg.pending()] == ["b"]
    assert reg.unclaim(first) and not reg.unclaim(first), "only a claimed item goes back"
    assert [q.run_id for q in reg.pending()] == ["a", "b"], "back in its old place"
    assert reg.drop(first) and reg.drop(second) and not reg.drop(second)
    assert reg.pending() == []


# -- reservations ----------------------------------------------------------------------------


def test_reserve_is_all_or_nothing(reg: Registry) -> None:
    assert reg.reserve("local", ["GPU-0", "GPU-1"], "a")
    assert not reg.reserve("local", ["GPU-1", "GPU-2"], "b")
    assert reg.holders() == {("local", "GPU-0"): "a", ("local", "GPU-1"): "a"}
    assert reg.reserve("lab1", ["GPU-1"], "b"), "same GPU id on another host is free"
    assert reg.reserve("local", ["GPU-0"], "a"), "a run re-reserving its own GPU"
    assert reg.holders("lab1") == {("lab1", "GPU-1"): "b"}
    assert reg.release("a") == 2
    assert reg.reserve("local", ["GPU-1", "GPU-2"], "b")


# -- two processes at once -------------------------------------------------------------------


def _writer(path: str, worker: int, barrier: Any, out: Any) -> None:
    reg = Registry(Path(path), timeout=60)
    barrier.wait()
    added = 0
    for seq in range(worker, 400, 2):  # interleaved: worker 0 even seqs, worker 1 odd
        added += reg.add_events("shared", [_train(seq, seq, 1.0 / (seq + 1))])
        added += reg.add_events(f"own{worker}", [_train(seq, seq, 1.0)])
    # Both re-send the whole range at the end: none of it may be stored twice.
    added += reg.add_events("shared", [_train(s, s, 1.0 / (s + 1)) for s in range(400)])
    won = reg.reserve("local", ["GPU-shared"], f"own{worker}")
    reg.close()
    out.put((worker, added, won))


def _racer(path: str, worker: int, barrier: Any, out: Any) -> None:
    reg = Registry(Path(path), timeout=60)
    reg.schema_version()
    barrier.wait()
    won = reg.reserve("lab1", ["GPU-a", f"GPU-{worker}"], f"run{worker}")
    claimed = reg.claim(1)
    reg.close()
    out.put((worker, won, claimed is not None))


def _start_all(target: Any, path: Path, workers: int) -> list[tuple[Any, ...]]:
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=target, args=(str(path), i, barrier, out)) for i in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0, f"worker exited with {proc.exitcode} (traceback above)"
    return sorted(out.get(timeout=10) for _ in procs)


def test_two_processes_write_interleaved_events_without_loss_or_duplicates(
    tmp_path: Path,
) -> None:
    path = tmp_path / "registry.sqlite3"
    with Registry(path) as reg:
        for run_id in ("shared", "own0", "own1"):
            reg.upsert_run(_run(run_id))
    results = _start_all(_writer, path, 2)
    with Registry(path) as reg:
        assert [e.seq for e in reg.events("shared")] == list(range(400))
        assert len(reg.events("own0")) == 200 and len(reg.events("own1")) == 200
        assert sum(added for _, added, _ in results) == 800
        shared = reg.get_run("shared")
        assert (shared.last_iter, shared.last_loss) == (399, 1.0 / 400)
        winners = [worker for worker, _, won in results if won]
        assert len(winners) == 1
        assert reg.holders() == {("local", "GPU-shared"): f"own{winners[0]}"}


def test_racing_processes_reserve_the_same_gpu_and_exactly_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    with Registry(path) as reg:
        reg.enqueue("queued-run", {"gpus": 1})
    results = _start_all(_racer, path, 3)
    assert sum(won for _, won, _ in results) == 1
    assert sum(claimed for _, _, claimed in results) == 1
    winner = next(worker for worker, won, _ in results if won)
    with Registry(path) as reg:
        assert reg.holders() == {
            ("lab1", "GPU-a"): f"run{winner}",
            ("lab1", f"GPU-{winner}"): f"run{winner}",
        }


def _opener(path: str, worker: int, barrier: Any, out: Any) -> None:
    barrier.wait()
    with Registry(Path(path), timeout=60) as reg:
        reg.upsert_run(_run(f"run{worker}"))
        out.put((worker, reg.schema_version()))


def test_processes_creating_the_registry_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "registry.sqlite3"
    results = _start_all(_opener, path, 3)
    assert [version for _, version in results] == [len(MIGRATIONS)] * 3
    with Registry(path) as reg:
        assert [r.run_id for r in reg.list_runs()] == ["run0", "run1", "run2"]
