"""PID -> container from recorded cgroup v1/v2 contents; user and command from /proc."""

from __future__ import annotations

import asyncio
import getpass
import os
from pathlib import Path

import pytest

from seglab.telemetry.attribution import (
    Attributor,
    ContainerRef,
    DockerLabels,
    container_from_cgroup,
    local_reader,
    user_and_command,
)
from seglab.telemetry.sample import ProcessSample

CID = "3f4e9c0d2a1b8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f"
CID2 = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b"

CGROUP_V2_DOCKER_SYSTEMD = f"0::/system.slice/docker-{CID}.scope\n"
CGROUP_V2_DOCKER_CGROUPFS = f"0::/docker/{CID}\n"
CGROUP_V1_DOCKER = f"""12:pids:/docker/{CID}
11:memory:/docker/{CID}
10:devices:/docker/{CID}
1:name=systemd:/docker/{CID}
0::/system.slice/containerd.service
"""
POD = "/kubepods/burstable/pod1c2d3e4f-0000-4000-8000-000000000001"
CGROUP_V1_K8S_CGROUPFS = f"11:memory:{POD}/{CID}\n1:name=systemd:{POD}/{CID}\n"
CGROUP_V2_K8S_CONTAINERD = (
    "0::/kubepods.slice/kubepods-besteffort.slice/"
    "kubepods-besteffort-pod1c2d3e4f_0000_4000_8000_000000000001.slice/"
    f"cri-containerd-{CID}.scope\n"
)
CGROUP_V2_CRIO = f"0::/kubepods.slice/kubepods-pod1.slice/crio-{CID}.scope\n"
CGROUP_V2_PODMAN = (
    f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope/container\n"
)
CGROUP_V2_HOST = "0::/user.slice/user-1000.slice/session-3.scope\n"
CGROUP_V1_HOST = "12:pids:/user.slice/user-1000.slice/session-2.scope\n1:name=systemd:/user.slice\n"
CGROUP_NESTED = f"0::/docker/{CID}/docker/{CID2}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CGROUP_V2_DOCKER_SYSTEMD, ContainerRef("docker", CID)),
        (CGROUP_V2_DOCKER_CGROUPFS, ContainerRef("docker", CID)),
        (CGROUP_V1_DOCKER, ContainerRef("docker", CID)),
        (CGROUP_V1_K8S_CGROUPFS, ContainerRef("kubernetes", CID)),
        (CGROUP_V2_K8S_CONTAINERD, ContainerRef("containerd", CID)),
        (CGROUP_V2_CRIO, ContainerRef("cri-o", CID)),
        (CGROUP_V2_PODMAN, ContainerRef("podman", CID)),
        (CGROUP_NESTED, ContainerRef("docker", CID2)),
        (CGROUP_V2_HOST, None),
        (CGROUP_V1_HOST, None),
        ("", None),
        ("garbage without colons\n", None),
    ],
)
def test_container_from_recorded_cgroups(text: str, expected: ContainerRef | None) -> None:
    assert container_from_cgroup(text) == expected


def test_short_hex_is_not_a_container_id() -> None:
    assert container_from_cgroup("0::/docker/3f4e9c0d2a1b\n") is None


def test_user_and_command_of_this_process() -> None:
    status = Path(f"/proc/{os.getpid()}/status").read_text()
    cmdline = Path(f"/proc/{os.getpid()}/cmdline").read_text()
    user, command = user_and_command(status, cmdline)
    assert user == getpass.getuser()
    assert command is not None and "pytest" in command


def test_unknown_uid_is_shown_as_a_number() -> None:
    user, command = user_and_command("Name:\tx\nUid:\t4000123\t4000123\t0\t0\n", "a\0b\0")
    assert user == "uid 4000123"
    assert command == "a b"


def test_attributor_on_a_real_host_process() -> None:
    attributor = Attributor(local_reader())
    me = ProcessSample(
        pid=os.getpid(), gpu_uuid="GPU-x", used_memory_mib=10.0, process_name="python"
    )
    gone = ProcessSample(pid=2**22 + 7, gpu_uuid="GPU-x", used_memory_mib=1.0, process_name="ghost")
    mine, ghost = asyncio.run(attributor([me, gone]))
    cgroup = Path(f"/proc/{os.getpid()}/cgroup").read_text()
    if container_from_cgroup(cgroup) is None:
        assert mine.user == getpass.getuser()
        assert mine.command is not None and "pytest" in mine.command
        assert mine.owner.startswith(f"{getpass.getuser()}: ")
    else:  # the test itself runs in a container: its id is what attribution finds
        assert mine.container_id == container_from_cgroup(cgroup).id  # type: ignore[union-attr]
    assert ghost == gone  # a process that is gone keeps what the driver said
    assert ghost.owner == "ghost"


def test_attributor_reads_a_recorded_proc_tree(tmp_path: Path) -> None:
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "cgroup").write_text(CGROUP_V2_DOCKER_SYSTEMD)
    attributor = Attributor(local_reader(tmp_path), labels=None)
    process = ProcessSample(pid=4242, gpu_uuid="GPU-x", used_memory_mib=5.0, process_name="p")
    (found,) = asyncio.run(attributor([process]))
    assert found.container_id == CID
    assert found.run_id is None
    assert found.owner == f"container {CID[:12]}"


def test_no_docker_engine_means_no_run_not_a_crash(tmp_path: Path) -> None:
    labels = DockerLabels(base_url=f"unix://{tmp_path / 'no-engine.sock'}")
    assert asyncio.run(labels.lookup(CID)) is None
    (tmp_path / "77").mkdir()
    (tmp_path / "77" / "cgroup").write_text(CGROUP_V1_DOCKER)
    attributor = Attributor(local_reader(tmp_path), labels)
    process = ProcessSample(pid=77, gpu_uuid="GPU-x", used_memory_mib=1.0, process_name="p")
    (found,) = asyncio.run(attributor([process]))
    assert (found.container_id, found.container_name, found.run_id) == (CID, None, None)
