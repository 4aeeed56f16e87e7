"""LaunchSpec validation, mount safety, dev-mount parsing, log cursors, engine timestamps."""

from __future__ import annotations

import os
import socket
import sysconfig
from pathlib import Path

import docker
import pytest

import seglab
from seglab.runtime import (
    EngineUnavailable,
    LaunchFailed,
    LaunchSpec,
    LogCursor,
    Mount,
    NvidiaRuntimeMissing,
    SpecError,
    UnknownGpu,
    UnsafeMount,
    default_user,
    images,
    parse_mounts,
)
from seglab.runtime.docker import IMAGE_MOUNTS_LABEL, DockerRuntime, start_failure
from seglab.runtime.dockerstate import parse_timestamp_ns, state_from_attrs

GPU = "GPU-5a1c9e2b-7d34-4f0e-9b6a-1c2d3e4f5a6b"


def spec(**fields: object) -> LaunchSpec:
    base: dict[str, object] = {
        "name": "smoke.default.ab12",
        "image": "img",
        "command": ("python3", "-V"),
        "user": "1000:1000",
    }
    return LaunchSpec(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "bad name"}, "run name 'bad name'"),
        ({"command": ()}, "the command is empty"),
        ({"user": "alice"}, "expected numeric uid:gid"),
        ({"user": "0:0"}, "never run as root"),
        ({"shm_size": "lots"}, "shm_size 'lots'"),
        ({"memory": "1.5g"}, "memory '1.5g'"),
        ({"cpus": 0.0}, "cpus 0.0"),
        ({"gpus": ("0",)}, "GPU '0' is not a GPU UUID"),
        ({"gpus": (GPU, GPU)}, "names a GPU twice"),
        ({"mounts": (Mount(Path("/a"), "/x"), Mount(Path("/b"), "/x"))}, "share a target"),
        ({"restarts": -1}, "restarts -1"),
    ],
)
def test_bad_specs_are_refused_with_the_reason(fields: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        spec(**fields)


def test_a_good_spec_names_its_container() -> None:
    good = spec(gpus=(GPU, "MIG-0b6e0c4d-1111-2222-3333-444455556666"), memory="512m", cpus=2.5)
    assert good.container_name == "seglab-smoke.default.ab12"


def test_docker_socket_mounts_are_refused_by_name_kind_link_and_folder(tmp_path: Path) -> None:
    with pytest.raises(UnsafeMount, match="never mounted"):
        Mount(Path("/var/run/docker.sock"), "/x").check_safe()
    with pytest.raises(UnsafeMount):
        Mount(tmp_path, "/run/docker.sock").check_safe()
    sock_path = tmp_path / "engine.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(sock_path))
        with pytest.raises(UnsafeMount, match="unix sockets"):
            Mount(sock_path, "/x").check_safe()
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "docker.sock").touch()
    with pytest.raises(UnsafeMount, match="contains the Docker socket"):
        Mount(folder, "/x").check_safe()
    link = tmp_path / "innocent"
    link.symlink_to(folder / "docker.sock")
    with pytest.raises(UnsafeMount, match="resolves to the Docker socket"):
        Mount(link, "/x").check_safe()
    with pytest.raises(UnsafeMount):
        spec(mounts=(Mount(folder, "/data"),))
    with pytest.raises(UnsafeMount):
        DockerRuntime(dev_mounts=(Mount(folder, "/opt/x"),))
    with pytest.raises(SpecError, match="must be read-only"):
        DockerRuntime(dev_mounts=parse_mounts(f"{tmp_path}:/opt/x:rw"))


def test_dev_mounts_parse_read_only_by_default() -> None:
    assert parse_mounts("/venv/site:/usr/local/lib/python3.11/dist-packages, /src:/opt/s:rw") == (
        Mount(Path("/venv/site"), "/usr/local/lib/python3.11/dist-packages", read_only=True),
        Mount(Path("/src"), "/opt/s", read_only=False),
    )
    assert parse_mounts("") == ()
    with pytest.raises(SpecError, match="expected SRC:DST"):
        parse_mounts("/a:/b:maybe")
    with pytest.raises(SpecError, match="absolute"):
        parse_mounts("relative:/b")


def test_run_defaults_are_in_the_create_arguments() -> None:
    runtime = DockerRuntime(dev_mounts=parse_mounts("/src:/opt/seglab"))
    # create_host_config needs the engine's API version; give the one seglab targets.
    runtime._client = docker.DockerClient(base_url="unix:///nonexistent", version="1.41")
    args = runtime.create_args(
        spec(gpus=(GPU,), memory="1g", cpus=1.5, labels={"seglab.run_id": "r"})
    )
    assert (args["name"], args["user"], args["labels"]) == (
        "seglab-smoke.default.ab12",
        "1000:1000",
        {"seglab.run_id": "r"},
    )
    host = args["host_config"]
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["NetworkMode"] == "none" and not host.get("Privileged")
    assert host["ShmSize"] == 8 * 2**30 and host["Init"] is True
    assert host["Memory"] == host["MemorySwap"] == 2**30
    assert host["NanoCpus"] == 1_500_000_000
    assert host["PidsLimit"] == 4096  # the default; resources.pids changes it
    (request,) = host["DeviceRequests"]
    assert request["DeviceIDs"] == [GPU] and request["Capabilities"] == [["gpu"]]
    assert request["Count"] == 0  # pinned by UUID, never by count
    assert "NVIDIA_VISIBLE_DEVICES" not in args["environment"]
    assert [(m["Target"], m["ReadOnly"]) for m in host["Mounts"]] == [("/opt/seglab", True)]
    networked = runtime.create_args(spec(network=True))
    assert networked["host_config"]["NetworkMode"] == "default"
    assert networked["environment"]["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert runtime.create_args(spec(pids_limit=100))["host_config"]["PidsLimit"] == 100
    with pytest.raises(SpecError, match="pids limit 0"):
        spec(pids_limit=0)
    on_host = runtime.create_args(spec(network_mode="host"))
    assert on_host["host_config"]["NetworkMode"] == "host"
    with pytest.raises(SpecError, match="network mode"):
        spec(network_mode="host net")
    assert "RestartPolicy" not in host  # a spec's default: the engine never restarts it
    restarted = runtime.create_args(spec(restarts=3))["host_config"]
    assert restarted["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}


def test_log_cursors_round_trip() -> None:
    for cursor in (LogCursor(offset=12345), LogCursor(1795756166656807634, 3, 17957561666, 1)):
        assert LogCursor.decode(cursor.encode()) == cursor
    with pytest.raises(ValueError, match="not a log cursor"):
        LogCursor.decode("t1.2")


def test_engine_timestamps_keep_nanoseconds() -> None:
    assert parse_timestamp_ns("1970-01-01T00:00:01.000000007Z") == 1_000_000_007
    assert parse_timestamp_ns("1970-01-01T01:00:01.5+01:00") == 1_500_000_000
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_timestamp_ns("yesterday")


def test_state_from_inspect_output() -> None:
    state = state_from_attrs(
        {
            "State": {
                "Status": "exited",
                "ExitCode": 137,
                "OOMKilled": True,
                "Pid": 0,
                "StartedAt": "2026-01-02T03:04:05.123456789Z",
                "FinishedAt": "2026-01-02T03:05:00Z",
            }
        }
    )
    assert (state.status, state.exit_code, state.oom_killed, state.pid) == (
        "exited",
        137,
        True,
        None,
    )
    assert state.started_at is not None and state.started_at.microsecond == 123456
    created = state_from_attrs(
        {"State": {"Status": "created", "ExitCode": 0, "StartedAt": "0001-01-01T00:00:00Z"}}
    )
    assert (created.status, created.exit_code, created.started_at) == ("created", None, None)
    assert created.detail is None


def test_the_engine_restarts_of_a_container_are_its_state_detail() -> None:
    restarting = state_from_attrs(
        {"RestartCount": 2, "State": {"Status": "restarting", "ExitCode": 143, "Pid": 0}}
    )
    assert (restarting.status, restarting.exit_code, restarting.active) == ("running", None, True)
    assert restarting.detail == "restarting after exit 143 (engine restart 2)"
    running = state_from_attrs({"RestartCount": 1, "State": {"Status": "running", "Pid": 7}})
    assert running.detail == "restarted 1 time by the engine"
    given_up = state_from_attrs({"RestartCount": 3, "State": {"Status": "exited", "ExitCode": 1}})
    assert (given_up.status, given_up.exit_code) == ("exited", 1)
    assert given_up.detail == "restarted 3 times by the engine"


def test_no_engine_is_a_clear_error(tmp_path: Path) -> None:
    runtime = DockerRuntime(f"unix://{tmp_path}/absent.sock", host="lab1")
    with pytest.raises(EngineUnavailable, match=r"no Docker engine answers at lab1 \(unix://"):
        runtime.launch(spec())


def test_engine_start_errors_map_to_specific_failures() -> None:
    pinned = spec(gpus=(GPU,))
    # What dockerd 20.10 answers when it has no NVIDIA device driver (seen on this engine).
    missing = start_failure(
        "lab1", pinned, 'could not select device driver "" with capabilities: [[gpu]]'
    )
    assert isinstance(missing, NvidiaRuntimeMissing)
    assert "host lab1 cannot give GPUs to containers" in str(missing)
    # What nvidia-container-cli reports for a UUID the driver does not know.
    unknown = start_failure(
        "lab1",
        pinned,
        "OCI runtime create failed: container_linux.go:380: starting container process "
        "caused: process_linux.go:545: container init caused: Running hook #0:: error "
        "running hook: exit status 1, stdout: , stderr: nvidia-container-cli: device "
        f"error: {GPU}: unknown device: unknown",
    )
    assert isinstance(unknown, UnknownGpu)
    assert f"host lab1 has no GPU {GPU}" in str(unknown)
    other = start_failure("lab1", spec(), "error mounting /data: no such file or directory")
    assert isinstance(other, LaunchFailed)
    assert str(other) == (
        "lab1: seglab-smoke.default.ab12 did not start: error mounting "
        "/data: no such file or directory"
    )


def test_runs_default_to_the_invoking_user_and_never_to_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SEGLAB_CONTAINER_USER", raising=False)
    monkeypatch.delenv("SUDO_UID", raising=False)
    monkeypatch.delenv("SUDO_GID", raising=False)
    if os.getuid() != 0:
        assert default_user() == f"{os.getuid()}:{os.getgid()}"
        return
    assert default_user() == "1000:1000"
    monkeypatch.setenv("SUDO_UID", "1234")
    monkeypatch.setenv("SUDO_GID", "567")
    assert default_user() == "1234:567"
    monkeypatch.setenv("SEGLAB_CONTAINER_USER", "2000:2000")
    assert default_user() == "2000:2000"


def test_the_ci_image_gets_this_environment_and_seglab_mounted_read_only() -> None:
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    source = Path(seglab.__file__).resolve().parent.parent
    ci = {"seglab.image": "ci"}
    expected = [(site, "/usr/local/lib/python3.11/dist-packages")]
    if source != site:  # a checkout (editable install): the .pth file in the image finds it
        expected.append((source, "/opt/seglab"))
    assert [(m.source, m.target, m.read_only) for m in images.host_mounts(ci)] == [
        (src, dst, True) for src, dst in expected
    ]
    relabelled = images.host_mounts({**ci, "seglab.mount.site-packages": "/srv/site"})
    assert relabelled[0].target == "/srv/site"
    assert images.host_mounts({"seglab.image": "base"}) == images.host_mounts({}) == ()
    with pytest.raises(SpecError, match=r"the CI image runs Python 3\.9"):
        images.host_mounts({**ci, "seglab.python": "3.9"})


def test_a_local_engine_adds_the_image_mounts_and_records_them() -> None:
    local = DockerRuntime(local=True, dev_mounts=parse_mounts("/src:/opt/seglab"))
    local._image_labels["seglab/ci:latest"] = {"seglab.image": "ci"}  # as the engine said
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    (extra,) = local.image_mounts("seglab/ci:latest")  # the dev mount's target wins
    assert (extra.source, extra.target) == (site, "/usr/local/lib/python3.11/dist-packages")
    local._client = docker.DockerClient(base_url="unix:///nonexistent", version="1.41")
    args = local.create_args(spec(image="seglab/ci:latest"), (extra,))
    recorded = f"{site}:/usr/local/lib/python3.11/dist-packages:ro"
    assert args["labels"][IMAGE_MOUNTS_LABEL] == recorded
    mounts = {m["Target"]: (m["Source"], m["ReadOnly"]) for m in args["host_config"]["Mounts"]}
    assert mounts["/usr/local/lib/python3.11/dist-packages"] == (str(site), True)
    assert mounts["/opt/seglab"] == ("/src", True)
    # A remote host's engine cannot see this machine's files: nothing is added there.
    assert DockerRuntime().image_mounts("seglab/ci:latest") == ()


def test_run_and_resume_get_the_same_local_runtime_from_any_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run` and `resume` both take the host's runtime from Runtimes: on this machine's
    engine it adds the image's mounts itself, whatever the shell holds."""
    from seglab.hosts import load_inventory
    from seglab.runs.hostio import HostIO
    from seglab.runs.runtimes import Runtimes

    monkeypatch.delenv("SEGLAB_DEV_MOUNTS", raising=False)
    engine = tmp_path / "engine.sock"
    engine.touch()  # only its existence is checked before the first call
    monkeypatch.setenv("DOCKER_HOST", f"unix://{engine}")
    runtime = Runtimes(load_inventory(), HostIO()).get("local", "docker")
    assert isinstance(runtime, DockerRuntime)
    assert runtime.local and runtime.dev_mounts == ()
    runtime._image_labels["seglab/ci:latest"] = {"seglab.image": "ci"}
    site, *_ = runtime.image_mounts("seglab/ci:latest")
    assert site.target == "/usr/local/lib/python3.11/dist-packages"
