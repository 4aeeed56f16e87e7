"""Multi-node runs: two members joined by torchrun's c10d rendezvous, shown as one run.

Each member is a real torchrun agent with one gloo rank, on loopback: two detached
processes (process runtime), two containers on the host network of one engine, and two
containers on two engines, one of them reached over SSH. seglab shows one row, member 0's
run dir gets the one event stream, `stop` stops every member (the ranks agree on the step,
the main rank writes last.pt) and `resume` starts them again from it. A member that dies
fails the run: the survivors' collectives fail at once (or, when a rank hangs, time out after
`resources.node_timeout_s`), and seglab kills what still runs that long after a failure.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.runlib import (
    DEV_MOUNTS,
    RECIPES,
    events_file,
    final,
    ps,
    run_row,
    seglab,
    stop_then_resume,
    wait_for,
)

pytestmark = pytest.mark.slow

TIMEOUT_S = 30  # resources.node_timeout_s of tiny-nodes.yaml


def _start(on: str, runtime: str) -> tuple[str, dict[str, Any]]:
    (run_id,) = seglab(
        "run", str(RECIPES / "tiny-nodes.yaml"), "--on", on, "--runtime", runtime
    ).stdout.split()
    row = wait_for(
        lambda: (r := run_row(run_id))["iteration"] and r["iteration"] >= 3 and r,
        300,
        "a few iterations on two members",
    )
    return run_id, row


def _one_run_two_members(run_id: str, row: dict[str, Any], where: str) -> Path:
    assert [r["run_id"] for r in ps()].count(run_id) == 1  # one row for the whole run
    assert row["where"] == where
    assert [m["host"] for m in row["members"]] == where.replace(":cpu", "").split("+")
    run_dir = Path(row["run_dir"])
    assert row["members"][0]["run_dir"] == str(run_dir)
    start = next(r for r in events_file(str(run_dir)) if r["kind"] == "start")
    assert start["world_size"] == 2 and start["batch_per_rank"] == 4
    return run_dir


def _stop_resume(run_id: str, run_dir: Path) -> None:
    saved = stop_then_resume(run_id, run_dir, world_size=2)
    wait_for(lambda: (run_row(run_id)["iteration"] or 0) > saved, 180, "training after the resume")


def _fails_within_timeout(run_id: str, killed_at: float) -> dict[str, Any]:
    row: dict[str, Any] = wait_for(
        lambda: final(run_id), TIMEOUT_S + 30, "the run to fail", interval=0.5
    )
    took = time.monotonic() - killed_at
    assert row["status"] == "failed", row
    assert took < TIMEOUT_S, f"the run failed {took:.0f} s after the member died"
    assert "member 1 on " in row["message"] and "exited 137" in row["message"], row["message"]
    return row


def test_two_process_members_rendezvous_stop_resume_and_a_hung_member() -> None:
    run_id, row = _start("local:cpu,local:cpu", "process")
    run_dir = _one_run_two_members(run_id, row, "local:cpu+local:cpu")
    member_dir = Path(row["members"][1]["run_dir"])
    assert member_dir.name == f"{run_id}.m1"
    assert not (member_dir / "events.jsonl").exists()  # only member 0 holds the run
    assert list((member_dir / "ranks").rglob("stdout.log"))
    member_log = seglab("logs", run_id, "--member", "1", "--tail", "50").stdout
    # The rendezvous numbers the members in an order of its own; the main rank is member 0's.
    said = re.search(r"\[default0\]:rank (\d) of 2 on cpu \(main rank: (\d)\) in (\S+)", member_log)
    assert said is not None, member_log
    assert {said[1], said[2]} == {"0", "1"} and said[3] == str(member_dir)
    wrong = seglab("logs", run_id, "--member", "2", check=False)
    assert wrong.returncode != 0 and "has members 0-1, not 2" in wrong.stderr

    _stop_resume(run_id, run_dir)

    # Member 1's rank hangs (stopped, as in a deadlock): member 0's next collective times
    # out after node_timeout_s and fails, and the run with it.
    rank = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit()
        and "seglab.train" in _cmdline(p)
        and str(member_dir) in _cmdline(p)
        and "torch.distributed.run" not in _cmdline(p)
    ]
    assert len(rank) == 1, rank
    os.kill(rank[0], signal.SIGSTOP)
    hung_at = time.monotonic()
    row: dict[str, Any] = wait_for(
        lambda: final(run_id), 2 * TIMEOUT_S + 60, "the run to fail", interval=0.5
    )
    took = time.monotonic() - hung_at
    assert row["status"] == "failed", row
    assert TIMEOUT_S <= took < 2 * TIMEOUT_S + 30, f"failed {took:.0f} s after the hang"
    # Member 0 failed first (its collective timed out); member 1 then ended by itself (its
    # torchrun lost the rendezvous store) or was killed by seglab.
    assert row["message"].splitlines()[-1].startswith("member 0 on local exited 1"), row["message"]
    errors = [r["message"] for r in events_file(str(run_dir)) if r["kind"] == "error"]
    assert f"Timed out waiting {TIMEOUT_S * 1000}ms" in errors[-1], errors  # the set timeout
    for folder in (run_dir, member_dir):
        assert (folder / "exit_code").is_file()
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and run_id in _cmdline(p)]
    assert not leftovers, "no rank of the run outlives it"

    seglab("rm", run_id, "--purge")
    assert not run_dir.exists() and not member_dir.exists()


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""  # ended while listing


@pytest.mark.docker
def test_two_containers_on_the_host_network(
    ci_image: str, docker_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGLAB_DEV_MOUNTS", DEV_MOUNTS)
    run_id, row = _start("local:cpu,local:cpu", "docker")
    run_dir = _one_run_two_members(run_id, row, "local:cpu+local:cpu")
    containers = {
        c.name: c
        for c in docker_client.containers.list(filters={"label": f"seglab.run_id={run_id}"})
    }
    assert sorted(containers) == [f"seglab-{run_id}", f"seglab-{run_id}.m1"]
    for container in containers.values():
        config = container.attrs["HostConfig"]
        assert config["NetworkMode"] == "host"
        assert config["CapDrop"] == ["ALL"] and not config["Privileged"]
        assert container.attrs["Config"]["User"] != "0:0"

    _stop_resume(run_id, run_dir)

    docker_client.containers.get(f"seglab-{run_id}.m1").kill()
    _fails_within_timeout(run_id, time.monotonic())
    seglab("rm", run_id, "--purge")
    assert not docker_client.containers.list(all=True, filters={"label": f"seglab.run_id={run_id}"})


@pytest.mark.docker
@pytest.mark.sshd
def test_members_on_two_engines_one_reached_over_ssh(
    remote_lab: Path, isolated_xdg: Path, docker_client: Any
) -> None:
    # lab1 is this machine's second dockerd behind sshd: both engines share loopback, so
    # the two hosts meet there (hosts.yaml gives this machine's address).
    hosts = isolated_xdg / "config" / "seglab" / "hosts.yaml"
    hosts.write_text(hosts.read_text() + "  local:\n    node_address: 127.0.0.1\n")
    # Member 0 (the rendezvous, the events, last.pt) on the remote host.
    run_id, row = _start("lab1:cpu,local:cpu", "docker")
    run_dir = _one_run_two_members(run_id, row, "lab1:cpu+local:cpu")
    assert run_dir.is_relative_to(remote_lab)
    member_dir = Path(row["members"][1]["run_dir"])
    assert f"{run_id}.m1" in [
        c.name.removeprefix("seglab-") for c in docker_client.containers.list()
    ]

    assert f"{run_id}: stopped" in seglab("stop", run_id, "--timeout", "60").stdout
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert not (member_dir / "checkpoints").exists()
    seglab("resume", run_id)
    wait_for(
        lambda: sum(r["kind"] == "start" for r in events_file(str(run_dir))) == 2,
        180,
        "the resumed members",
    )

    docker_client.containers.get(f"seglab-{run_id}.m1").kill()
    _fails_within_timeout(run_id, time.monotonic())
    seglab("rm", run_id, "--purge")
    assert not run_dir.exists() and not member_dir.exists()
