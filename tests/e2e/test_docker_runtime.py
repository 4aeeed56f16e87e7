"""The docker runtime against a real engine and the CI image (marker `docker`)."""

from __future__ import annotations

import importlib.util
import os
import sysconfig
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from seglab import events, recipes
from seglab.runtime import (
    ImageMissing,
    LaunchSpec,
    LogCursor,
    Mount,
    NameInUse,
    NvidiaRuntimeMissing,
    RunNotFound,
    UnsafeMount,
    default_user,
    own_run_dir,
)
from seglab.runtime.docker import DockerRuntime

pytestmark = pytest.mark.docker

USER = default_user()  # the invoking user; 1000:1000 under root (CI)
UID, GID = (int(part) for part in USER.split(":"))
# Labels this test session's containers, so cleanup never touches another session's.
SESSION = str(os.getpid())
REPO = Path(__file__).resolve().parents[2]
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])


@pytest.fixture
def runtime(docker_client: Any) -> Iterator[DockerRuntime]:
    """A docker runtime on the test engine; removes every container a test left."""
    rt = DockerRuntime(
        host="test",
        dev_mounts=(
            Mount(SITE_PACKAGES, "/usr/local/lib/python3.11/dist-packages"),
            Mount(REPO, "/opt/seglab"),
        ),
    )
    yield rt
    for info in rt.list({"seglab.test": SESSION}):
        rt.remove(info.ref, force=True)
    rt.close()


def make_spec(name: str, image: str, code: str, tmp_path: Path, **extra: Any) -> LaunchSpec:
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    run_dir = tmp_path / "run"
    own_run_dir(run_dir, USER)
    fields: dict[str, Any] = {
        "name": f"{name}.{os.getpid()}",
        "image": image,
        "command": ("python3", "-c", code),
        "user": USER,
        "shm_size": "256m",
        "mounts": (Mount(data, "/data"), Mount(run_dir, "/run-dir", read_only=False)),
        "labels": {"seglab.run_id": name, "seglab.recipe": "e2e", "seglab.test": SESSION},
        **extra,
    }
    return LaunchSpec(**fields)


PROBE = textwrap.dedent(
    """
    import os
    print("uid", os.getuid(), os.getgid())
    try:
        open("/data/x", "w")
        print("data writable")
    except OSError as exc:
        print("data read-only", exc.errno)
    open("/run-dir/out.txt", "w").write("ok")
    print("ifaces", sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]))
    print("capeff", [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0])
    print("nnp", [l.split()[1] for l in open("/proc/self/status") if l.startswith("NoNewPrivs")][0])
    import shutil; print("shm", shutil.disk_usage("/dev/shm").total)
    """
)


def test_launch_applies_the_container_defaults(
    runtime: DockerRuntime, docker_client: Any, ci_image: str, tmp_path: Path
) -> None:
    spec = make_spec("defaults", ci_image, PROBE, tmp_path)
    ref = runtime.launch(spec)
    assert runtime.wait(ref, timeout=60) == 0
    attrs = docker_client.api.inspect_container(ref)
    host = attrs["HostConfig"]
    assert attrs["Name"] == f"/seglab-{spec.name}"
    assert dict(spec.labels).items() <= attrs["Config"]["Labels"].items()
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Privileged"] is False
    assert host["NetworkMode"] == "none"
    assert host["ShmSize"] == 256 * 1024 * 1024
    assert host["Init"] is True
    assert host["PidsLimit"] == 4096  # the default pids limit (a recipe's resources.pids)
    assert attrs["Config"]["User"] == USER
    assert "NVIDIA_VISIBLE_DEVICES=void" in attrs["Config"]["Env"]
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts["/data"]["RW"] is False and mounts["/run-dir"]["RW"] is True
    assert mounts["/opt/seglab"]["RW"] is False
    assert not any("docker.sock" in m["Source"] for m in attrs["Mounts"])
    out = [line.text for line in runtime.logs(ref)]
    assert out == [
        f"uid {UID} {GID}",
        "data read-only 30",  # EROFS
        "ifaces ['lo']",
        "capeff 0000000000000000",
        "nnp 1",
        f"shm {256 * 1024 * 1024}",
    ]
    written = tmp_path / "run" / "out.txt"
    assert written.read_text() == "ok" and written.stat().st_uid == UID


def test_logs_are_whole_lines_and_resume_without_gap_or_duplicate(
    runtime: DockerRuntime, ci_image: str, tmp_path: Path
) -> None:
    # Lines longer than the engine's 16 KiB record size arrive split into several records.
    code = textwrap.dedent(
        """
        import sys, time
        for i in range(60):
            stream = sys.stderr if i % 7 == 0 else sys.stdout
            print(f"line {i} " + "x" * (40000 if i in (5, 33) else i), file=stream, flush=True)
            if i % 20 == 0:
                time.sleep(0.3)
        sys.stdout.write("@seglab " + '{"v":1,"kind":"error","seq":0,"time":1.0,"message":"m"}')
        """
    )
    expected = [f"line {i} " + "x" * (40000 if i in (5, 33) else i) for i in range(60)]
    event = '@seglab {"v":1,"kind":"error","seq":0,"time":1.0,"message":"m"}'
    ref = runtime.launch(make_spec("logs", ci_image, code, tmp_path))
    followed = list(runtime.logs(ref, follow=True))
    texts = [line.text for line in followed]
    # The engine copies stdout and stderr concurrently: each stream keeps its own order.
    assert sorted(texts) == sorted([*expected, event])
    assert [t for t in texts if t in expected[::7]] == expected[::7]  # stderr
    stdout = [e for i, e in enumerate(expected) if i % 7]
    assert [t for t in texts if t in stdout] == stdout
    assert texts[-1] == event and events.parse_line(texts[-1]) is not None
    for cut in range(len(texts)):
        cursor = LogCursor.decode(followed[cut].cursor.encode())
        resumed = [line.text for line in runtime.logs(ref, since=cursor)]
        assert resumed == texts[cut + 1 :], f"resumed after line {cut}"
    assert [line.text for line in runtime.logs(ref, tail=3)] == texts[-3:]


def test_a_newline_less_stream_is_read_with_bounded_lines(
    runtime: DockerRuntime, ci_image: str, tmp_path: Path
) -> None:
    """A 2 MB progress bar redrawn with CR and no newline (the engine splits it into 16 KiB
    records) comes out as one line cut at 64 KiB with a marker saying how much was cut."""
    code = textwrap.dedent(
        """
        import sys
        sys.stdout.write("\\r 42%|####  | 4200/10000" * 80000)
        sys.stdout.write("\\nafter\\n")
        sys.stdout.flush()
        """
    )
    ref = runtime.launch(make_spec("progress", ci_image, code, tmp_path))
    texts = [line.text for line in runtime.logs(ref, follow=True)]
    assert texts[-1] == "after" and len(texts) == 2
    total = len("\r 42%|####  | 4200/10000") * 80000
    assert texts[0].endswith(f"… [{total - 64 * 1024} bytes cut]")
    assert len(texts[0].encode()) < 64 * 1024 + 64


def test_stop_kill_and_exit_codes(runtime: DockerRuntime, ci_image: str, tmp_path: Path) -> None:
    graceful = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('saving', flush=True), "
        "sys.exit(0)))\nprint('ready', flush=True)\ntime.sleep(120)"
    )
    stubborn = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\ntime.sleep(120)"
    )
    failing = "import sys; print('boom', file=sys.stderr); sys.exit(3)"
    refs = {
        name: runtime.launch(make_spec(name, ci_image, code, tmp_path / name))
        for name, code in (
            ("graceful", graceful),
            ("stubborn", stubborn),
            ("killed", stubborn),
            ("failing", failing),
        )
    }
    for name in ("graceful", "stubborn", "killed"):
        lines = runtime.logs(refs[name], follow=True)
        assert next(lines).text == "ready"
    runtime.stop(refs["graceful"], timeout=20)
    runtime.stop(refs["stubborn"], timeout=1)
    runtime.kill(refs["killed"])
    assert runtime.wait(refs["graceful"], timeout=30) == 0
    assert [line.text for line in runtime.logs(refs["graceful"])] == ["ready", "saving"]
    assert runtime.wait(refs["stubborn"], timeout=30) == 137
    assert runtime.wait(refs["killed"], timeout=30) == 137
    assert runtime.wait(refs["failing"], timeout=30) == 3
    states = {name: runtime.inspect(ref) for name, ref in refs.items()}
    assert {name: (s.status, s.exit_code, s.oom_killed) for name, s in states.items()} == {
        "graceful": ("exited", 0, False),
        "stubborn": ("exited", 137, False),
        "killed": ("exited", 137, False),
        "failing": ("exited", 3, False),
    }
    runtime.kill(refs["failing"])  # killing an ended run is a no-op
    mine = runtime.list({"seglab.recipe": "e2e", "seglab.test": SESSION})
    found = {info.name: info.state.exit_code for info in mine}
    assert {name.split(".")[0]: code for name, code in found.items()} == {
        "graceful": 0,
        "stubborn": 137,
        "killed": 137,
        "failing": 3,
    }
    runtime.remove(refs["failing"])
    with pytest.raises(RunNotFound):
        runtime.inspect(refs["failing"])


def test_oom_kill_is_reported(runtime: DockerRuntime, ci_image: str, tmp_path: Path) -> None:
    hog = "blocks = []\nwhile True:\n    blocks.append(bytearray(8 * 2**20))"
    ref = runtime.launch(make_spec("oom", ci_image, hog, tmp_path, memory="64m"))
    assert runtime.wait(ref, timeout=60) == 137
    state = runtime.inspect(ref)
    assert (state.status, state.exit_code, state.oom_killed) == ("exited", 137, True)


def test_refusals_leave_nothing_behind(
    runtime: DockerRuntime, docker_client: Any, ci_image: str, tmp_path: Path
) -> None:
    def mine() -> list[Any]:
        return list(
            docker_client.containers.list(all=True, filters={"label": f"seglab.test={SESSION}"})
        )

    assert mine() == []
    with pytest.raises(ImageMissing, match="image seglab/absent:1 is not on host test"):
        runtime.launch(make_spec("noimage", "seglab/absent:1", "pass", tmp_path))
    gpu = "GPU-9d0c2a3e-5f1b-4c6e-8a7d-0b1c2d3e4f50"
    with pytest.raises(NvidiaRuntimeMissing, match="host test cannot give GPUs"):
        runtime.launch(make_spec("gpu", ci_image, "pass", tmp_path, gpus=(gpu,)))
    sock = tmp_path / "docker.sock"
    sock.touch()
    with pytest.raises(UnsafeMount, match="Docker socket"):
        make_spec("sock", ci_image, "pass", tmp_path, mounts=(Mount(sock, "/var/run/x"),))
    assert mine() == []  # the refused launches left no container behind
    spec = make_spec("twice", ci_image, "import time; time.sleep(30)", tmp_path)
    runtime.launch(spec)
    with pytest.raises(NameInUse, match=spec.container_name):
        runtime.launch(spec)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("seglab.train.loop") is None,
    reason="the trainer (seglab.train.loop) has not landed",
)
def test_trainer_runs_in_the_ci_image_and_stops_with_last_checkpoint(
    runtime: DockerRuntime, ci_image: str, tmp_path: Path, repo_root: Path
) -> None:
    recipe = recipes.load_resolved(repo_root / "recipes" / "synthetic-smoke.yaml")
    synthetic = {"train_size": 32, "val_size": 8, "image_size": [64, 64], "num_classes": 4}
    small = recipe.model_copy(
        update={
            "train": recipe.train.model_copy(update={"epochs": 50, "log_interval": 1}),
            "data": recipe.data.model_copy(
                update={
                    "synthetic": recipe.data.synthetic.model_copy(update=synthetic)
                    if recipe.data.synthetic
                    else None
                }
            ),
            "export": [],
        }
    )
    run_dir = tmp_path / "run"
    own_run_dir(run_dir, USER)
    (run_dir / "recipe.yaml").write_text(small.to_yaml())
    spec = make_spec(
        "trainer",
        ci_image,
        "",
        tmp_path,
        command=(
            "python3",
            "-m",
            "seglab.train",
            "--config",
            "/run-dir/recipe.yaml",
            "--run-dir",
            "/run-dir",
        ),
        env={"HOME": "/tmp", "OMP_NUM_THREADS": "1"},
    )
    ref = runtime.launch(spec)
    kinds = []
    for line in runtime.logs(ref, follow=True):
        event = events.parse_line(line.text)
        if event is not None:
            kinds.append(event.kind)
            if event.kind == "train":
                break
    assert kinds[0] == "start"
    runtime.stop(ref, timeout=60)
    assert runtime.wait(ref, timeout=60) == 143  # 128 + SIGTERM after a clean stop
    assert (run_dir / "checkpoints" / "last.pt").stat().st_uid == UID
    ended = [events.parse_line(line.text) for line in runtime.logs(ref, tail=20)]
    assert any(e is not None and e.kind == "end" and e.data["status"] == "stopped" for e in ended)


def test_follow_outlasts_the_client_timeout_and_list_filters_by_label(
    docker_client: Any, ci_image: str, tmp_path: Path
) -> None:
    # A client whose requests time out after 1 s: a follow must not (runs are quiet for
    # long stretches between log lines).
    impatient = DockerRuntime(timeout=1)
    quiet = "import time\nprint('a', flush=True)\ntime.sleep(2.5)\nprint('b', flush=True)"
    spec = make_spec("quiet", ci_image, quiet, tmp_path)
    ref = impatient.launch(spec)
    try:
        assert [line.text for line in impatient.logs(ref, follow=True)] == ["a", "b"]
        mine = {"seglab.run_id": "quiet", "seglab.test": spec.labels["seglab.test"]}
        assert [info.ref for info in impatient.list(mine)] == [ref]
        assert impatient.list({**mine, "seglab.run_id": "other"}) == []
        assert [info.name for info in impatient.list({"seglab.run_id": None, **mine})] == [
            spec.name
        ]
    finally:
        impatient.remove(ref, force=True)
        impatient.close()
