"""The run lifecycle through RunManager's public methods, on the in-memory FakeRuntime.

The real SQLite registry, a real inventory (hosts.yaml), the real scheduler over GPUs
replayed from an nvidia-smi capture, the real recipes; only the runtime is the fake, so
each case runs in milliseconds: submit and the queue, status from exit codes and end
events, reconcile/adoption from labels, multi-node verdicts, rollback of failed launches,
and stop/kill/resume/rm/logs.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import pytest

from seglab import recipes
from seglab.errors import RunError, SeglabError
from seglab.events import Event
from seglab.hosts import Inventory, load_inventory
from seglab.registry import Registry, RunRecord, RunStatus
from seglab.runs import RunManager
from seglab.runs.intents import record_to_json, this_owner
from seglab.runtime import LaunchFailed, LaunchSpec, Runtime
from seglab.scheduler import Pool, Scheduler, parse_on
from seglab.telemetry.sample import GpuSample, HostState, HostStatus
from seglab.telemetry.smi import (
    APP_FIELDS,
    FieldPlan,
    parse_compute_apps,
    parse_csv_table,
    supported_fields,
)
from tests.conftest import SMI_CAPTURES
from tests.e2e.runlib import RECIPES
from tests.fakes.runtime import FakeRuntime
from tests.standin.nvidia_smi import Capture, StandIn

H100 = "linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.txt"
GPU1 = "GPU-00000001-5e61-4ab0-8000-0000736715ac"  # the stand-in's UUID of the second GPU


@cache
def replayed_gpus(phase: str, count: int = 2) -> tuple[GpuSample, ...]:
    """``count`` local GPUs of the H100 capture in ``phase`` (``load``: foreign processes
    fill them; ``idle``: free), parsed by seglab's own nvidia-smi parser."""
    capture = Capture(SMI_CAPTURES / H100)
    plan = FieldPlan.choose(supported_fields(capture.section("capabilities", "help-query-gpu")))
    standin = StandIn(capture, count, phase)

    def csv(rows: list[list[str]]) -> str:
        return "\n".join(", ".join(row) for row in rows)

    samples = parse_csv_table(plan, csv(standin.gpu_rows(list(plan.fields), True)), "local", 0.0)
    apps = parse_compute_apps(csv(standin.app_rows(list(APP_FIELDS), True)))
    return tuple(
        replace(s, processes=tuple(a for a in apps if a.gpu_uuid == s.uuid)) for s in samples
    )


@dataclass
class Lab:
    """One workstation: inventory, registry, fakes for the local runtimes, the manager."""

    tmp: Path
    inventory: Inventory
    registry: Registry
    fake: FakeRuntime
    docker: FakeRuntime
    manager: RunManager

    @property
    def runs_root(self) -> Path:
        return self.tmp / "runs"

    def scheduler(self, phase: str) -> Scheduler:
        """A scheduler over the local GPUs as the capture's ``phase`` shows them."""
        state = HostState("local", "replay", HostStatus.OK, gpus=replayed_gpus(phase))
        return Scheduler(self.inventory, self.registry, {"local": state})

    def new_manager(self) -> RunManager:
        """Another seglab on the same runtimes (and the registry as it is now)."""
        runtimes: dict[tuple[str, str], Runtime] = {
            ("local", "process"): self.fake,
            ("local", "docker"): self.docker,
        }
        return RunManager(self.inventory, self.registry, runtimes=runtimes)

    def submit(self, recipe: Path, on: str = "local", phase: str = "idle") -> list[RunRecord]:
        """Submit every variant of ``recipe`` on the process runtime."""
        loaded = recipes.load(recipe)
        submitted = self.manager.submit(
            loaded, loaded.variants, parse_on(on), self.scheduler(phase), runtime="process"
        )
        return [item.record for item in submitted]

    def ref(self, record: RunRecord) -> str:
        """The fake's ref of a run (as the registry has it now)."""
        handle = self.registry.get_run(record.run_id).handle
        assert handle is not None
        return handle

    def held(self) -> dict[str, str]:
        """GPU UUID -> run id of every reservation."""
        return {gpu: run for (_, gpu), run in self.registry.holders().items()}


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(f"hosts:\n  local:\n    runs_root: {tmp_path / 'runs'}\n")
    inventory = load_inventory(hosts)
    registry = Registry(tmp_path / "registry.sqlite3")
    fake, docker = FakeRuntime("process"), FakeRuntime("docker")
    runtimes: dict[tuple[str, str], Runtime] = {
        ("local", "process"): fake,
        ("local", "docker"): docker,
    }
    manager = RunManager(inventory, registry, runtimes=runtimes)
    return Lab(tmp_path, inventory, registry, fake, docker, manager)


def grid(tmp_path: Path, levels: int) -> Path:
    """A tiny recipe with ``levels`` variants of one GPU each."""
    path = tmp_path / "grid.yaml"
    lrs = "\n".join(f"    lr{i}: {{train.optimizer.lr: 0.00{i + 1}}}" for i in range(levels))
    path.write_text(f"extends: {RECIPES / 'tiny.yaml'}\nname: grid\nablate:\n  lr:\n{lrs}\n")
    return path


def write_events(record: RunRecord, *ends: str) -> None:
    """The trainer's start event in the run dir, then an end event per status given
    (numbered on from what the file holds, as a resumed trainer does)."""
    path = Path(record.run_dir) / "events.jsonl"
    seq = len(path.read_text().splitlines()) if path.exists() else 0
    start = Event(
        "start",
        seq,
        1.0,
        {
            "recipe": record.recipe,
            "variant": record.variant,
            "world_size": 1,
            "class_names": ["a", "b"],
            "total_iters": 8,
        },
    )
    records = [start] + [
        Event("end", number, 2.0, {"status": status, "best_miou": 0.5})
        for number, status in enumerate(ends, start=seq + 1)
    ]
    with open(path, "a", encoding="utf-8") as out:
        out.writelines(json.dumps(event.to_dict()) + "\n" for event in records)


def test_the_fake_is_a_runtime() -> None:
    assert isinstance(FakeRuntime(), Runtime)


# -- submit and the queue ----------------------------------------------------------------


def test_a_grid_on_busy_gpus_is_queued_then_started_as_they_free(lab: Lab) -> None:
    queued = lab.submit(grid(lab.tmp, 3), phase="load")
    assert [r.status for r in queued] == [RunStatus.QUEUED] * 3
    busy = "local:0 used by /root/tools/memhog (pid 11327, 2566 MiB); local:1 used by"
    assert all((r.message or "").startswith(f"queued: {busy}") for r in queued)
    assert lab.fake.launched == [] and lab.held() == {}
    assert [item.run_id for item in lab.registry.pending()] == [r.run_id for r in queued]

    # Still busy: nothing starts, nothing is reserved, the queue keeps its order.
    assert lab.manager.pump_queue(lab.scheduler("load")) == []
    assert lab.held() == {} and len(lab.registry.pending()) == 3

    started = lab.manager.pump_queue(lab.scheduler("idle"))
    assert [r.run_id for r in started] == [r.run_id for r in queued[:2]]  # oldest first
    assert [r.status for r in started] == [RunStatus.RUNNING] * 2
    gpus = [gpu.uuid for gpu in replayed_gpus("idle")]
    assert lab.held() == {gpus[0]: started[0].run_id, gpus[1]: started[1].run_id}
    assert lab.registry.get_run(queued[2].run_id).status == RunStatus.QUEUED
    spec = lab.fake.launched[0]
    assert spec.gpus == (gpus[0],) and spec.labels["seglab.run_id"] == started[0].run_id
    assert spec.log_path == Path(started[0].run_dir) / "train.log"
    assert (Path(started[0].run_dir) / "recipe.yaml").read_text() == started[0].resolved_recipe

    # The first run finishes: its GPU is released, and the third run takes it.
    lab.fake.exit(lab.ref(started[0]), 0)
    still = {r.run_id: r.status for r in lab.manager.refresh_all()}
    assert still == {started[1].run_id: RunStatus.RUNNING, queued[2].run_id: RunStatus.QUEUED}
    assert lab.registry.get_run(started[0].run_id).status == RunStatus.FINISHED
    (third,) = lab.manager.pump_queue(lab.scheduler("idle"))
    assert third.run_id == queued[2].run_id and third.gpus == (gpus[0],)
    assert lab.registry.pending() == []


def test_free_gpus_start_a_grid_at_once_and_the_rest_queues(lab: Lab) -> None:
    records = lab.submit(grid(lab.tmp, 3))
    assert [r.status for r in records] == [RunStatus.RUNNING, RunStatus.RUNNING, RunStatus.QUEUED]
    assert records[2].message is not None and "held by seglab run" in records[2].message
    assert sorted(lab.held().values()) == sorted(r.run_id for r in records[:2])


def test_without_queueing_busy_gpus_are_an_error_and_nothing_is_held(lab: Lab) -> None:
    loaded = recipes.load(grid(lab.tmp, 3))
    with pytest.raises(RunError, match="no free GPU"):
        lab.manager.submit(
            loaded, loaded.variants, parse_on("local"), lab.scheduler("idle"), queue=False
        )
    assert lab.held() == {} and lab.fake.launched == []


# -- status from the runtime and the run dir ---------------------------------------------


Drive = Callable[[FakeRuntime, str], None]


@pytest.mark.parametrize(
    ("drive", "ends", "status", "exit_code"),
    [
        (lambda fake, ref: fake.exit(ref, 0), (), RunStatus.FINISHED, 0),
        (lambda fake, ref: fake.exit(ref, 1, output=("Traceback", "boom")), (), "failed", 1),
        (lambda fake, ref: fake.oom(ref), (), RunStatus.OOM_KILLED, 137),
        (lambda fake, ref: fake.exit(ref, 143), ("stopped",), RunStatus.STOPPED, 143),
        (lambda fake, ref: fake.lose(ref), (), RunStatus.LOST, None),
        (lambda fake, ref: fake.vanish(ref), (), RunStatus.LOST, None),
    ],
    ids=["exit-0", "exit-1", "oom", "stopped-event", "dead", "vanished"],
)
def test_refresh_reads_the_end_from_exit_codes_and_end_events(
    lab: Lab, drive: Drive, ends: tuple[str, ...], status: str, exit_code: int | None
) -> None:
    (record,) = lab.submit(grid(lab.tmp, 1))
    assert lab.manager.refresh(record).status == RunStatus.RUNNING
    assert list(lab.held().values()) == [record.run_id]
    write_events(record, *ends)
    drive(lab.fake, lab.ref(record))
    ended = lab.manager.refresh(lab.registry.get_run(record.run_id))
    assert (ended.status, ended.exit_code) == (status, exit_code)
    assert ended.finished_at is not None
    assert lab.held() == {}  # an ended run holds no GPU
    assert lab.registry.events(record.run_id, kind="start")  # events were ingested
    if status == RunStatus.FAILED:
        assert ended.message == "Traceback\nboom"  # the log's tail says why
    if status == RunStatus.LOST:
        assert ended.message


def test_an_end_event_of_an_earlier_attempt_does_not_count(lab: Lab) -> None:
    (record,) = lab.submit(grid(lab.tmp, 1))
    write_events(record, "stopped")
    write_events(record)  # resumed: a new start after the old end
    lab.fake.exit(lab.ref(record), 1)
    assert lab.manager.refresh(lab.registry.get_run(record.run_id)).status == RunStatus.FAILED


def test_a_run_its_engine_restarts_is_running_and_says_so_until_the_engine_gives_up(
    lab: Lab,
) -> None:
    (record,) = lab.submit(grid(lab.tmp, 1))
    run = lab.fake.runs[lab.ref(record)]
    write_events(record, "failed")  # the first attempt failed; the engine starts it again
    run.state = replace(run.state, detail="restarting after exit 1 (engine restart 1)")
    again = lab.manager.refresh(lab.registry.get_run(record.run_id))
    assert (again.status, again.message) == (RunStatus.RUNNING, run.state.detail)
    assert list(lab.held().values()) == [record.run_id]  # it keeps its GPUs meanwhile
    run.state = replace(run.state, detail="restarted 3 times by the engine")
    lab.fake.exit(lab.ref(record), 1, output=("boom",))
    ended = lab.manager.refresh(lab.registry.get_run(record.run_id))
    assert (ended.status, ended.message) == (RunStatus.FAILED, f"{run.state.detail}\nboom")


# -- reconcile: the runtimes hold the truth ----------------------------------------------


def test_reconcile_rebuilds_a_lost_registry_from_labels(lab: Lab) -> None:
    running, ended = lab.submit(grid(lab.tmp, 2))
    lab.fake.exit(lab.ref(ended), 0)
    lab.registry.close()
    (lab.tmp / "registry.sqlite3").unlink()
    lab.registry = Registry(lab.tmp / "registry.sqlite3")
    manager = lab.new_manager()

    assert sorted(manager.reconcile()) == sorted([running.run_id, ended.run_id])
    for before in (running, ended):
        after = lab.registry.get_run(before.run_id)
        same = ("recipe", "variant", "recipe_sha", "resolved_recipe", "host", "gpus", "run_dir")
        assert {k: getattr(after, k) for k in same} == {k: getattr(before, k) for k in same}
        assert after.handle == before.handle and after.runtime == "process"
    assert lab.registry.get_run(running.run_id).status == RunStatus.RUNNING
    assert lab.registry.get_run(ended.run_id).status == RunStatus.FINISHED
    assert lab.held() == {running.gpus[0]: running.run_id}  # only the live run holds a GPU
    assert manager.reconcile() == []  # nothing new the second time


def test_reconcile_leaves_other_workstations_runs_alone(lab: Lab, tmp_path: Path) -> None:
    other_dir = tmp_path / "elsewhere" / "theirs.a.000001"
    lab.fake.launch(
        LaunchSpec(
            name="theirs.a.000001",
            image="unused",
            command=("true",),
            labels={"seglab.run_id": "theirs.a.000001", "seglab.run_dir": str(other_dir)},
        )
    )
    lab.docker.launch(
        LaunchSpec(name="not-seglab", image="unused", command=("true",), labels={"x": "y"})
    )
    assert lab.manager.reconcile() == []
    assert lab.registry.list_runs() == []


# -- multi-node runs ---------------------------------------------------------------------


def nodes_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "nodes.yaml"
    path.write_text(
        textwrap.dedent(f"""
        extends: {RECIPES / "tiny.yaml"}
        name: nodes
        resources: {{nodes: 2, network: host, node_timeout_s: 30}}
        """)
    )
    return path


def test_a_multi_node_run_starts_one_member_per_pool(lab: Lab) -> None:
    (record,) = lab.submit(nodes_recipe(lab.tmp), on="local:0,local:1")
    assert record.status == RunStatus.RUNNING and len(record.members) == 2
    first, second = lab.fake.launched
    assert (first.name, second.name) == (record.run_id, f"{record.run_id}.m1")
    assert (first.labels["seglab.member"], second.labels["seglab.member"]) == ("0", "1")
    assert first.labels["seglab.nodes"] == "2"
    assert (first.env["SEGLAB_MEMBER"], second.env["SEGLAB_MEMBER"]) == ("0", "1")
    assert [m.handle for m in record.members] == [
        lab.fake.by_name(first.name).ref,
        lab.fake.by_name(second.name).ref,
    ]
    assert sorted(lab.held()) == sorted(gpu.uuid for gpu in replayed_gpus("idle"))


def test_a_failed_member_gives_the_others_their_timeout(lab: Lab) -> None:
    (record,) = lab.submit(nodes_recipe(lab.tmp), on="local:0,local:1")
    zero, one = (m.handle or "" for m in record.members)
    lab.fake.exit(one, 1)
    waiting = lab.manager.refresh(lab.registry.get_run(record.run_id))
    assert waiting.status == RunStatus.RUNNING
    assert waiting.message is not None
    assert waiting.message.startswith("member 1 on local exited 1; the other members end within")
    assert ("kill", zero) not in lab.fake.calls
    assert len(lab.held()) == 2  # still running: both members keep their GPUs


def test_members_still_running_after_the_timeout_are_killed(lab: Lab) -> None:
    (record,) = lab.submit(nodes_recipe(lab.tmp), on="local:0,local:1")
    zero, one = (m.handle or "" for m in record.members)
    lab.fake.advance(-60)  # member 1 failed a minute ago (node_timeout_s is 30)
    lab.fake.exit(one, 1, output=("rank 1: connection reset",))
    lab.fake.advance(60)
    failed = lab.manager.refresh(lab.registry.get_run(record.run_id))
    assert ("kill", zero) in lab.fake.calls
    assert (failed.status, failed.exit_code) == (RunStatus.FAILED, 1)
    assert failed.message is not None
    assert failed.message.startswith("rank 1: connection reset\nmember 1 on local exited 1")
    assert "were killed" in failed.message
    assert lab.held() == {}


def test_reconcile_puts_a_multi_node_run_together_from_its_members(lab: Lab) -> None:
    (record,) = lab.submit(nodes_recipe(lab.tmp), on="local:0,local:1")
    lab.registry.close()
    (lab.tmp / "registry.sqlite3").unlink()
    lab.registry = Registry(lab.tmp / "registry.sqlite3")
    assert lab.new_manager().reconcile() == [record.run_id]
    adopted = lab.registry.get_run(record.run_id)
    assert adopted.members == record.members and adopted.status == RunStatus.RUNNING
    assert sorted(lab.held()) == sorted(gpu.uuid for gpu in replayed_gpus("idle"))


@pytest.mark.parametrize(
    ("drive", "status", "exit_code"),
    [
        (lambda fake, refs: [fake.exit(ref, 0) for ref in refs], RunStatus.FINISHED, 0),
        (lambda fake, refs: [fake.exit(refs[0], 0), fake.oom(refs[1])], "oom_killed", 137),
        (lambda fake, refs: [fake.exit(refs[0], 2), fake.exit(refs[1], 0)], "failed", 2),
    ],
    ids=["all-0", "one-oom", "member-0-fails"],
)
def test_the_members_add_up_to_one_verdict(
    lab: Lab, drive: Callable[[FakeRuntime, list[str]], object], status: str, exit_code: int
) -> None:
    (record,) = lab.submit(nodes_recipe(lab.tmp), on="local:0,local:1")
    drive(lab.fake, [m.handle or "" for m in record.members])
    ended = lab.manager.refresh(lab.registry.get_run(record.run_id))
    assert (ended.status, ended.exit_code) == (status, exit_code)
    assert lab.held() == {}


# -- rollback: a failed launch leaves nothing behind -------------------------------------


def test_a_launch_that_raises_leaves_no_row_reservation_or_run_dir(lab: Lab) -> None:
    lab.fake.refuse(LaunchFailed("the engine refused"))
    with pytest.raises(SeglabError, match="the engine refused"):
        lab.submit(grid(lab.tmp, 1))
    assert lab.registry.list_runs() == []
    assert lab.held() == {}
    assert not lab.runs_root.exists() or list(lab.runs_root.iterdir()) == []
    assert lab.fake.runs == {}


def test_one_failed_start_in_a_grid_leaves_the_others_running(lab: Lab) -> None:
    lab.fake.refuse(LaunchFailed("the engine refused"), lambda spec: spec.gpus == (GPU1,))
    with pytest.raises(RunError, match=r"the engine refused \(started: grid\.lr-lr0\."):
        lab.submit(grid(lab.tmp, 2))
    (survivor,) = lab.registry.list_runs()
    assert survivor.status == RunStatus.RUNNING and survivor.variant == "lr=lr0"
    assert lab.held() == {survivor.gpus[0]: survivor.run_id}
    assert [path.name for path in lab.runs_root.iterdir()] == [survivor.run_id]


def test_a_member_that_fails_to_start_takes_the_started_ones_with_it(lab: Lab) -> None:
    lab.fake.refuse(LaunchFailed("no room"), lambda spec: spec.labels["seglab.member"] == "1")
    with pytest.raises(SeglabError, match="no room"):
        lab.submit(nodes_recipe(lab.tmp), on="local:0,local:1")
    assert [call for call, _ in lab.fake.calls] == ["remove"]  # member 0, started, is gone
    assert lab.fake.runs == {}
    assert lab.registry.list_runs() == [] and lab.held() == {}
    assert not lab.runs_root.exists() or list(lab.runs_root.iterdir()) == []


def test_a_queued_run_that_fails_to_start_is_failed_not_left_starting(lab: Lab) -> None:
    (queued,) = lab.submit(grid(lab.tmp, 1), phase="load")
    lab.fake.refuse(LaunchFailed("the engine refused"))
    assert lab.manager.pump_queue(lab.scheduler("idle")) == []
    after = lab.registry.get_run(queued.run_id)
    assert after.status == RunStatus.FAILED and after.message == "the engine refused"
    assert lab.held() == {} and lab.registry.pending() == []


def test_a_resume_that_fails_to_start_keeps_the_run_as_it_was(lab: Lab) -> None:
    (record,) = lab.submit(grid(lab.tmp, 1))
    lab.fake.exit(lab.ref(record), 1)
    failed = lab.manager.refresh(lab.registry.get_run(record.run_id))
    lab.fake.refuse(LaunchFailed("the engine refused"))
    with pytest.raises(SeglabError, match="the engine refused"):
        lab.manager.resume(record.run_id)
    after = lab.registry.get_run(record.run_id)
    assert (after.status, after.exit_code, after.run_dir) == (
        failed.status,
        failed.exit_code,
        failed.run_dir,
    )
    assert lab.held() == {}
    assert Path(record.run_dir).is_dir()  # the run dir it had is kept


# -- stop, kill, resume, remove, logs ----------------------------------------------------


def test_stop_then_resume_on_the_same_gpus(lab: Lab) -> None:
    (record,) = lab.submit(grid(lab.tmp, 1))
    first = lab.ref(record)
    write_events(record, "stopped")  # what the trainer writes on SIGTERM
    stopped = lab.manager.stop(record.run_id, timeout=5)
    assert stopped.status == RunStatus.STOPPED and ("stop", first) in lab.fake.calls
    assert lab.held() == {}
    write_events(record)  # the resumed trainer starts again
    resumed = lab.manager.resume(record.run_id)
    assert resumed.status == RunStatus.RUNNING and resumed.gpus == record.gpus
    assert ("remove", first) in lab.fake.calls and resumed.handle != first
    assert lab.fake.launched[-1].log_path == Path(record.run_dir) / "train.log"
    assert lab.held() == {record.gpus[0]: record.run_id}


def test_kill_and_remove(lab: Lab) -> None:
    (record,) = lab.submit(grid(lab.tmp, 1))
    with pytest.raises(RunError, match="stop it first"):
        lab.manager.remove(record.run_id)
    killed = lab.manager.kill(record.run_id)
    assert (killed.status, killed.exit_code) == (RunStatus.KILLED, 137)
    lab.manager.remove(record.run_id, purge=True)
    assert lab.registry.list_runs() == [] and lab.fake.runs == {}
    assert not Path(record.run_dir).exists()


def test_a_queued_run_stops_without_starting(lab: Lab) -> None:
    (queued,) = lab.submit(grid(lab.tmp, 1), phase="load")
    stopped = lab.manager.stop(queued.run_id)
    assert stopped.status == RunStatus.STOPPED and lab.registry.pending() == []
    assert lab.fake.launched == []


def test_logs_come_from_the_runtime(lab: Lab) -> None:
    (record,) = lab.submit(grid(lab.tmp, 1))
    lab.fake.exit(lab.ref(record), 0, output=("epoch 1", "epoch 2", "done"))
    assert [line.text for line in lab.manager.logs(record.run_id)] == ["epoch 1", "epoch 2", "done"]
    assert [line.text for line in lab.manager.logs(record.run_id, tail=1)] == ["done"]
    with pytest.raises(RunError, match="not a multi-node run"):
        list(lab.manager.logs(record.run_id, member=1))


def test_pools_are_stored_with_queued_runs(lab: Lab) -> None:
    lab.submit(grid(lab.tmp, 1), on="local:1", phase="load")
    (item,) = lab.registry.pending()
    assert [Pool.from_dict(p) for p in item.request["pools"]] == [Pool("local", gpus=("1",))]
    (started,) = lab.manager.pump_queue(lab.scheduler("idle"))
    assert started.gpus == (replayed_gpus("idle")[1].uuid,)


# -- crash consistency: write-ahead intents, and launch-time resource checks --------------

DEAD_OWNER = "1:1:another-boot"  # the owner of an intent whose seglab has died


def test_a_launch_cut_short_after_the_engine_call_is_adopted(lab: Lab) -> None:
    (record,) = lab.submit(grid(lab.tmp, 1))
    ref = lab.ref(record)
    # As a seglab killed between the engine call and recording the ref leaves it:
    lab.registry.update_run(record.run_id, handle=None, status=RunStatus.STARTING)
    detail = {"hosts": ["local"], "kind": "process", "before": None}
    lab.registry.set_intent(record.run_id, "launching", DEAD_OWNER, detail)
    lab.new_manager().reconcile()
    adopted = lab.registry.get_run(record.run_id)
    assert (adopted.handle, adopted.status) == (ref, RunStatus.RUNNING)
    assert lab.registry.intents() == []
    assert lab.held() == {adopted.gpus[0]: record.run_id}
    killed = lab.manager.kill(record.run_id)
    assert killed.status == RunStatus.KILLED and lab.held() == {}


def test_a_launch_cut_short_before_the_engine_call_is_rolled_back(lab: Lab) -> None:
    (record,) = lab.submit(grid(lab.tmp, 1))
    lab.fake.remove(lab.ref(record), force=True)  # the engine never got the call
    lab.registry.update_run(record.run_id, handle=None, status=RunStatus.STARTING)
    detail = {"hosts": ["local"], "kind": "process", "before": None}
    lab.registry.set_intent(record.run_id, "launching", DEAD_OWNER, detail)
    assert lab.held() != {}
    lab.new_manager().reconcile()
    assert not lab.registry.has_run(record.run_id)
    assert lab.held() == {} and lab.registry.intents() == []


def test_a_starting_run_without_handle_or_intent_is_failed_not_left_starting(lab: Lab) -> None:
    (record,) = lab.submit(grid(lab.tmp, 1))
    lab.fake.remove(lab.ref(record), force=True)
    lab.registry.update_run(record.run_id, handle=None, status=RunStatus.STARTING)
    lab.new_manager().reconcile()
    failed = lab.registry.get_run(record.run_id)
    assert failed.status == RunStatus.FAILED and "killed while starting" in (failed.message or "")
    assert lab.held() == {}
    lab.manager.remove(record.run_id)
    assert not lab.registry.has_run(record.run_id)


def test_a_live_launch_is_not_touched_and_stop_says_why(lab: Lab) -> None:
    (record,) = lab.submit(grid(lab.tmp, 1))
    lab.registry.update_run(record.run_id, handle=None, status=RunStatus.STARTING)
    lab.registry.set_intent(record.run_id, "launching", this_owner(), {"hosts": ["local"]})
    lab.new_manager().reconcile()
    assert lab.registry.get_run(record.run_id).status == RunStatus.STARTING
    with pytest.raises(RunError, match="is being started by seglab process"):
        lab.manager.stop(record.run_id)


def test_a_queued_run_whose_start_was_cut_short_is_queued_again(lab: Lab) -> None:
    (queued,) = lab.submit(grid(lab.tmp, 1), phase="load")
    (item,) = lab.registry.pending()
    lab.registry.drop(item.id)  # pump_queue took it, then its seglab was killed
    lab.registry.update_run(queued.run_id, status=RunStatus.STARTING)
    detail = {
        "hosts": ["local"],
        "kind": "process",
        "before": record_to_json(queued),
        "queue": item.request,
    }
    lab.registry.set_intent(queued.run_id, "launching", DEAD_OWNER, detail)
    lab.new_manager().reconcile()
    assert lab.registry.get_run(queued.run_id).status == RunStatus.QUEUED
    assert [i.run_id for i in lab.registry.pending()] == [queued.run_id]
    (started,) = lab.manager.pump_queue(lab.scheduler("idle"))
    assert started.run_id == queued.run_id and lab.registry.pending() == []
    assert len(lab.fake.launched) == 1  # started once


def test_an_rm_cut_short_is_finished(lab: Lab) -> None:
    (record,) = lab.submit(grid(lab.tmp, 1))
    lab.manager.kill(record.run_id)
    parts = [{"host": "local", "gpus": list(record.gpus), "handle": lab.ref(record)}]
    detail = {"parts": parts, "runtime": "process", "purge": False}
    lab.registry.set_intent(record.run_id, "removing", DEAD_OWNER, detail)
    lab.new_manager().reconcile()
    assert not lab.registry.has_run(record.run_id)
    assert lab.fake.list() == []


def test_a_recipe_whose_activations_cannot_fit_the_gpu_is_refused(lab: Lab) -> None:
    path = lab.tmp / "huge.yaml"
    path.write_text(
        f"extends: {RECIPES / 'tiny.yaml'}\nname: huge\n"
        "data: {crop: [8192, 8192]}\ntrain: {batch_size: 64}\n"
    )
    with pytest.raises(RunError, match=r"cannot fit: .* GiB of activations .* GPU local:0 has"):
        lab.submit(path)
    assert lab.registry.list_runs() == [] and lab.held() == {}
    assert lab.fake.launched == []


def test_a_rebuilt_registry_keeps_each_runs_creation_time(lab: Lab) -> None:
    (record,) = lab.submit(grid(lab.tmp, 1))
    created = lab.registry.get_run(record.run_id).created_at
    lab.registry.delete_run(record.run_id)  # as a registry set aside and started afresh
    assert lab.new_manager().reconcile() == [record.run_id]
    assert lab.registry.get_run(record.run_id).created_at == pytest.approx(created, abs=0.001)
