"""Multi-node runs: the rendezvous command, member addresses, how member states add up, and
the placement of members."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from seglab.hosts import Host, SSHTarget, load_inventory, local_host
from seglab.multinode import (
    MultiNodeError,
    Rendezvous,
    addresses,
    combine,
    free_local_port,
    member_name,
)
from seglab.registry import Registry
from seglab.runtime import RuntimeState
from seglab.scheduler import Placement, PlacementError, Scheduler, parse_on
from seglab.telemetry.sample import GpuSample, HostState, HostStatus

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def remote(name: str, hostname: str, **settings: str) -> Host:
    return Host(name=name, ssh=SSHTarget(user="ml", hostname=hostname), **settings)


def test_member_commands_join_one_c10d_rendezvous_served_by_member_0() -> None:
    rdzv = Rendezvous(
        "grid.a.1f2e3d", "10.0.0.5", 29411, ("10.0.0.5", "10.0.0.6"), ("eth0", None), 120.0
    )
    first = rdzv.command("python3", "/seglab/run", 8, 0)
    second = rdzv.command("python3", "/seglab/run", 8, 1)
    for command in (first, second):
        assert "--rdzv-backend=c10d" in command
        assert "--rdzv-endpoint=10.0.0.5:29411" in command
        assert "--rdzv-id=grid.a.1f2e3d" in command
        assert "--nnodes=2" in command and "--nproc-per-node=8" in command
        assert "--max-restarts=0" in command
        assert command[-6:] == (
            "-m",
            "seglab.train",
            "--config",
            "/seglab/run/recipe.yaml",
            "--run-dir",
            "/seglab/run",
        )
    assert "--rdzv-conf=is_host=true,join_timeout=120,read_timeout=120,close_timeout=120" in first
    assert "--rdzv-conf=is_host=false,join_timeout=120,read_timeout=120,close_timeout=120" in second
    assert "--local-addr=10.0.0.5" in first and "--local-addr=10.0.0.6" in second
    assert rdzv.env(0) == {
        "SEGLAB_MEMBER": "0",
        "SEGLAB_DIST_TIMEOUT_S": "120.0",
        "GLOO_SOCKET_IFNAME": "eth0",
        "NCCL_SOCKET_IFNAME": "eth0",
    }
    assert rdzv.env(1) == {"SEGLAB_MEMBER": "1", "SEGLAB_DIST_TIMEOUT_S": "120.0"}


def test_members_on_this_machine_meet_on_loopback_each_at_an_address_of_its_own() -> None:
    # torchrun names a node by address and pid; containers repeat pids.
    assert addresses([local_host(), local_host()]) == (("127.0.0.1", "127.0.0.2"), ("lo", "lo"))


def test_remote_members_use_their_ssh_names_unless_hosts_yaml_names_an_address() -> None:
    hosts = [
        remote("lab1", "lab1.example.org", node_interface="ib0"),
        remote("lab2", "lab2.example.org", node_address="10.1.0.2"),
    ]
    assert addresses(hosts) == (("lab1.example.org", "10.1.0.2"), ("ib0", None))


def test_this_machine_with_remote_members_needs_its_address() -> None:
    with pytest.raises(MultiNodeError, match=r"host local .* no `node_address:`"):
        addresses([local_host(), remote("lab1", "lab1.example.org")])
    both = addresses([local_host(node_address="10.0.0.9"), remote("lab1", "10.0.0.5")])
    assert both == (("10.0.0.9", "10.0.0.5"), (None, None))
    # Every address on loopback (one machine playing two hosts): gloo/NCCL use lo.
    loop = addresses([local_host(node_address="127.0.0.1"), remote("lab1", "localhost")])
    assert loop == (("127.0.0.1", "127.0.0.2"), ("lo", "lo"))


def test_two_members_on_one_real_host_are_refused() -> None:
    with pytest.raises(
        MultiNodeError,
        match=r"members 0 and 1 .* both at gpu1: a multi-node "
        "run takes one member per host",
    ):
        addresses([remote("lab1", "gpu1"), remote("lab1-again", "gpu1")])


def test_member_names_and_a_free_port() -> None:
    assert member_name("r.a.1", 0) == "r.a.1"
    assert member_name("r.a.1", 3) == "r.a.1.m3"
    assert 0 < free_local_port() < 65536


def running() -> RuntimeState:
    return RuntimeState("running", started_at=T0)


def exited(code: int, after_s: float, oom: bool = False) -> RuntimeState:
    return RuntimeState(
        "exited",
        exit_code=code,
        oom_killed=oom,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=after_s),
    )


HOSTS = ["lab1", "lab2", "lab3"]


def test_running_members_make_a_running_run() -> None:
    verdict = combine([running(), running(), RuntimeState("created")], HOSTS, 60, T0)
    assert verdict.state.status == "created" and verdict.failed is None
    verdict = combine([running(), running(), running()], HOSTS, 60, T0)
    assert verdict.state.status == "running" and verdict.message is None


def test_a_failed_member_gives_the_others_the_timeout_then_they_are_killed() -> None:
    states = [running(), exited(137, 10), running()]
    waiting = combine(states, HOSTS, 60, T0 + timedelta(seconds=30))
    assert waiting.state.status == "running" and waiting.kill == ()
    assert waiting.failed == 1
    assert waiting.message == (
        "member 1 on lab2 exited 137 (SIGKILL); the other members end within 40 s"
    )
    late = combine(states, HOSTS, 60, T0 + timedelta(seconds=71))
    assert late.kill == (0, 2)


def test_the_run_ends_when_every_member_has_with_the_first_failure() -> None:
    verdict = combine(
        [exited(1, 12), exited(137, 10), exited(1, 11)], HOSTS, 60, T0 + timedelta(seconds=20)
    )
    assert verdict.state.status == "exited" and verdict.state.exit_code == 137
    assert verdict.failed == 1
    assert verdict.message == "member 1 on lab2 exited 137 (SIGKILL) first"
    assert verdict.state.finished_at == T0 + timedelta(seconds=12)


def test_members_that_all_exit_0_finish_and_oom_is_kept() -> None:
    done = combine([exited(0, 5), exited(0, 6)], HOSTS[:2], 60, T0)
    assert done.state.exit_code == 0 and done.failed is None and done.message is None
    oom = combine([exited(0, 5), exited(137, 4, oom=True)], HOSTS[:2], 60, T0)
    assert oom.state.oom_killed and oom.message == "member 1 on lab2 ran out of memory (OOM-killed)"


# -- placement: one member per pool, reserved in the real registry -----------------------


def _scheduler(tmp_path: Path) -> Scheduler:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("hosts:\n  lab1: {ssh: gpu1}\n  lab2: {ssh: gpu2}\n  cluster: {kind: slurm}\n")
    inventory = load_inventory(hosts)
    states = {
        name: HostState(
            name,
            "replay",
            HostStatus.OK,
            gpus=tuple(GpuSample(name, i, f"GPU-{name}-{i}") for i in range(4)),
        )
        for name in ("lab1", "lab2")
    }
    return Scheduler(inventory, Registry(tmp_path / "registry.sqlite3"), states)


def test_members_come_one_per_pool_and_are_reserved_together(tmp_path: Path) -> None:
    scheduler = _scheduler(tmp_path)
    pools = parse_on("lab1:0-3,lab2:0-3")
    first = scheduler.place_members(pools, 2, 2, "a")
    assert first == [
        Placement("lab1", ("GPU-lab1-0", "GPU-lab1-1"), (0, 1)),
        Placement("lab2", ("GPU-lab2-0", "GPU-lab2-1"), (0, 1)),
    ]
    second = scheduler.place_members(pools, 2, 2, "b")
    assert second is not None and [p.indices for p in second] == [(2, 3), (2, 3)]
    # Nothing left: a third run reserves nothing (not even on the first pool it tried).
    assert scheduler.place_members(pools, 2, 2, "c") is None
    assert "c" not in scheduler.registry.holders().values()
    # auto: one member per docker host (never the Slurm cluster).
    scheduler.registry.release("a")
    auto = scheduler.place_members(parse_on("auto"), 2, 2, "d")
    assert auto is not None and [p.host for p in auto] == ["lab1", "lab2"]


def test_pools_that_can_never_hold_the_members_are_refused(tmp_path: Path) -> None:
    scheduler = _scheduler(tmp_path)
    with pytest.raises(
        PlacementError,
        match=r"spans 3 hosts \(resources.nodes\) but --on "
        r"lab1,lab2:0,1 gives 2 place\(s\)",
    ):
        scheduler.check_nodes(parse_on("lab1,lab2:0-1"), 1, 3)
    with pytest.raises(PlacementError, match="needs 8 GPUs per run"):
        scheduler.check_nodes(parse_on("lab1,lab2"), 8, 2)
    scheduler.check_nodes(parse_on("local:cpu,local:cpu"), 1, 2)


@pytest.mark.parametrize(
    ("text", "pools"),
    [
        ("auto", ["auto"]),
        ("lab1,lab2", ["lab1", "lab2"]),
        ("lab1:0,1,lab2:2-3", ["lab1:0,1", "lab2:2,3"]),
        ("lab1:0,lab2", ["lab1:0", "lab2"]),
        ("lab1:GPU-aa11,GPU-bb22,local:cpu", ["lab1:GPU-aa11,GPU-bb22", "local:cpu"]),
        ("local:cpu,local:cpu", ["local:cpu", "local:cpu"]),
        ("lab1:cpu,lab2", ["lab1:cpu", "lab2"]),
    ],
)
def test_on_lists_pools(text: str, pools: list[str]) -> None:
    assert [str(p) for p in parse_on(text)] == pools


def test_on_refuses_gpus_after_cpu_and_auto_with_hosts() -> None:
    with pytest.raises(PlacementError, match="GPUs listed after 'lab1:cpu'"):
        parse_on("lab1:cpu,0")
    with pytest.raises(PlacementError, match="cannot be combined"):
        parse_on("lab1,auto")
