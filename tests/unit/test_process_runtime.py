"""The process runtime with real detached processes (no Docker needed)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from seglab.runtime import LaunchFailed, LaunchSpec, LogCursor, NameInUse, RunLost
from seglab.runtime.logfile import tail_offset
from seglab.runtime.process import PROCESS_FILE, ProcessRuntime
from seglab.runtime.procwrap import proc_start_time
from seglab.safetext import MAX_LINE_BYTES, cut_marker

# A stand-in trainer: prints numbered lines, and on SIGTERM writes a checkpoint marker and
# exits 0 (what seglab.train does); it ends by itself when `done` appears in its cwd.
TRAINER = textwrap.dedent(
    """
    import os, signal, sys, time
    def term(signum, frame):
        open("last.pt", "w").write("ckpt")
        print("stopping", flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, term)
    print("pid", os.getpid(), "gpus=" + os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
    i = 0
    while not os.path.exists("done"):
        print("iter", i, flush=True)
        i += 1
        time.sleep(0.05)
    """
)


def spec_for(root: Path, name: str, code: str = TRAINER, gpus: tuple[str, ...] = ()) -> LaunchSpec:
    return LaunchSpec(
        name=name,
        image="unused",
        command=(sys.executable, "-c", code),
        gpus=gpus,
        labels={"seglab.run_id": name, "seglab.recipe": "unit"},
        log_path=root / name / "train.log",
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[ProcessRuntime]:
    """A process runtime; kills whatever a test (even a failing one) left running."""
    rt = ProcessRuntime(tmp_path / "runs")
    yield rt
    for info in rt.list():
        if info.state.active:
            rt.kill(info.ref)


def test_launch_records_pid_and_start_time_then_exit_code(runtime: ProcessRuntime) -> None:
    spec = spec_for(runtime.runs_root, "rec", "print('hello'); raise SystemExit(7)")
    ref = runtime.launch(spec)
    record = json.loads((Path(ref) / PROCESS_FILE).read_text())
    assert record["labels"] == {"seglab.run_id": "rec", "seglab.recipe": "unit"}
    assert record["pid"] != record["wrapper_pid"] != os.getpid()
    assert runtime.wait(ref, timeout=20) == 7
    state = runtime.inspect(ref)
    assert (state.status, state.exit_code) == ("exited", 7)
    assert state.finished_at is not None and state.started_at is not None
    assert state.finished_at >= state.started_at
    assert [line.text for line in runtime.logs(ref)] == ["hello"]
    assert (Path(ref) / "exit_code").read_text().strip() == "7"


def test_run_survives_the_launching_process_and_a_new_seglab_stops_it(
    runtime: ProcessRuntime,
) -> None:
    launcher = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from seglab.runtime import LaunchSpec
        from seglab.runtime.process import ProcessRuntime
        root = Path({str(runtime.runs_root)!r})
        spec = LaunchSpec(name="detached", image="unused",
                          command=({sys.executable!r}, "-c", {TRAINER!r}),
                          labels={{"seglab.run_id": "detached"}},
                          log_path=root / "detached" / "train.log")
        print(ProcessRuntime(root).launch(spec))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", launcher], capture_output=True, text=True, timeout=60, check=True
    )
    ref = done.stdout.strip()
    # The launcher has exited; a fresh runtime object (a new seglab) finds the run by label.
    found = runtime.list({"seglab.run_id": "detached"})
    assert [info.ref for info in found] == [ref]
    assert found[0].state.status == "running"
    pid = found[0].state.pid
    assert pid is not None
    wait_for(lambda: any(line.text.startswith("iter 3") for line in runtime.logs(ref)))
    runtime.stop(ref, timeout=10)
    # The wrapper, not this process, collected the exit status: it is not our child.
    assert (Path(ref) / "exit_code").read_text().strip() == "0"
    assert runtime.wait(ref, timeout=5) == 0
    assert (Path(ref) / "last.pt").read_text() == "ckpt"
    texts = [line.text for line in runtime.logs(ref)]
    assert texts[0] == f"pid {pid} gpus=" and texts[-1] == "stopping"


def test_stop_escalates_to_sigkill_after_the_grace(runtime: ProcessRuntime) -> None:
    stubborn = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\ntime.sleep(60)"
    )
    ref = runtime.launch(spec_for(runtime.runs_root, "stubborn", stubborn))
    wait_for(lambda: [line.text for line in runtime.logs(ref)] == ["ready"])
    started = time.monotonic()
    runtime.stop(ref, timeout=1.0)
    assert time.monotonic() - started >= 1.0
    assert runtime.inspect(ref).exit_code == 128 + signal.SIGKILL


def test_kill_records_137_and_reaches_the_whole_group(runtime: ProcessRuntime) -> None:
    # The run forks a worker (as DataLoader does); killing the run must take the worker too.
    forking = (
        "import os, time, subprocess, sys\n"
        "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(w.pid, flush=True)\ntime.sleep(60)"
    )
    ref = runtime.launch(spec_for(runtime.runs_root, "forking", forking))
    wait_for(lambda: len(list(runtime.logs(ref))) == 1)
    worker = int(next(iter(runtime.logs(ref))).text)
    runtime.kill(ref)
    assert runtime.inspect(ref).exit_code == 137
    wait_for(
        lambda: (
            not Path(f"/proc/{worker}").exists()
            or Path(f"/proc/{worker}/stat").read_text().split(") ")[1][0] == "Z"
        )
    )


def test_a_reused_pid_is_never_taken_for_the_run(runtime: ProcessRuntime) -> None:
    ref = runtime.launch(spec_for(runtime.runs_root, "reused", "print('x')"))
    assert runtime.wait(ref, timeout=20) == 0
    # Forge the state of a run whose wrapper died (no exit code) and whose pid now belongs
    # to an unrelated process: same pid, different start time.
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        path = Path(ref) / PROCESS_FILE
        record = json.loads(path.read_text())
        real_start = proc_start_time(stranger.pid)
        (Path(ref) / "exit_code").unlink()
        for start, expected in ((real_start, "running"), (real_start - 1, "dead")):
            record.update(
                pid=stranger.pid,
                start_time=start,
                wrapper_pid=stranger.pid,
                wrapper_start_time=start,
            )
            path.write_text(json.dumps(record))
            assert runtime.inspect(ref).status == expected
        runtime.stop(ref, timeout=0.5)
        runtime.kill(ref)
        assert stranger.poll() is None, "seglab signalled a process that is not its run"
        with pytest.raises(RunLost, match="without recording an exit code"):
            runtime.wait(ref, timeout=1)
    finally:
        stranger.kill()
        stranger.wait()


def test_logs_are_whole_lines_follow_and_resume_without_gap_or_duplicate(
    runtime: ProcessRuntime,
) -> None:
    writer = textwrap.dedent(
        """
        import sys, time
        for i in range(30):
            line = f"line {i} " + "x" * (70000 if i == 10 else i)
            # Write each line in two pieces so a reader sees half lines on the file.
            half = len(line) // 2
            sys.stdout.write(line[:half]); sys.stdout.flush(); time.sleep(0.01)
            sys.stdout.write(line[half:] + "\\n"); sys.stdout.flush()
        sys.stdout.write("unterminated")
        """
    )
    expected = [f"line {i} " + "x" * (70000 if i == 10 else i) for i in range(30)]
    # A line over the cap (64 KiB) comes cut, with a marker counting what was left out.
    expected[10] = expected[10][:MAX_LINE_BYTES] + cut_marker(len(expected[10]) - MAX_LINE_BYTES)
    expected.append("unterminated")
    ref = runtime.launch(spec_for(runtime.runs_root, "lines", writer))
    followed = list(runtime.logs(ref, follow=True))
    assert [line.text for line in followed] == expected
    assert runtime.inspect(ref).status == "exited"
    for cut in (0, 9, 10, 29):
        resumed = runtime.logs(ref, since=LogCursor.decode(followed[cut].cursor.encode()))
        assert [line.text for line in resumed] == expected[cut + 1 :]
    assert [line.text for line in runtime.logs(ref, tail=3)] == expected[-3:]
    assert [line.text for line in runtime.logs(ref, tail=0)] == []


def test_tail_offset_counts_complete_lines(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes(b"a\nbb\nccc\npartial")
    assert log.read_bytes()[tail_offset(log, 2) :] == b"ccc\npartial"
    assert tail_offset(log, 10) == 0
    log.write_bytes(b"a\nbb\nccc\n")
    assert log.read_bytes()[tail_offset(log, 2) :] == b"bb\nccc\n"
    assert log.read_bytes()[tail_offset(log, 3) :] == b"a\nbb\nccc\n"
    assert tail_offset(log, 0) == log.stat().st_size


def test_gpus_are_pinned_through_cuda_visible_devices(runtime: ProcessRuntime) -> None:
    code = "import os; print(repr(os.environ['CUDA_VISIBLE_DEVICES']))"
    pinned = runtime.launch(
        spec_for(
            runtime.runs_root,
            "pinned",
            code,
            gpus=(
                "GPU-1b2c3d4e-0000-1111-2222-333344445555",
                "MIG-aa11bb22-3344-5566-7788-99aabbccddee",
            ),
        )
    )
    cpu = runtime.launch(spec_for(runtime.runs_root, "cpu", code))
    assert runtime.wait(pinned, 20) == runtime.wait(cpu, 20) == 0
    assert [line.text for line in runtime.logs(pinned)] == [
        "'GPU-1b2c3d4e-0000-1111-2222-333344445555,MIG-aa11bb22-3344-5566-7788-99aabbccddee'"
    ]
    assert [line.text for line in runtime.logs(cpu)] == ["''"]


def test_failed_start_leaves_nothing_behind(runtime: ProcessRuntime) -> None:
    spec = LaunchSpec(
        name="nocmd",
        image="unused",
        command=("/nonexistent/trainer",),
        log_path=runtime.runs_root / "nocmd" / "train.log",
    )
    with pytest.raises(LaunchFailed, match="cannot start /nonexistent/trainer"):
        runtime.launch(spec)
    assert sorted(p.name for p in (runtime.runs_root / "nocmd").iterdir()) == []
    assert runtime.list() == []


def test_an_active_run_dir_cannot_be_launched_twice_but_an_ended_one_resumes(
    runtime: ProcessRuntime,
) -> None:
    spec = spec_for(runtime.runs_root, "twice")
    ref = runtime.launch(spec)
    with pytest.raises(NameInUse, match="twice"):
        runtime.launch(spec)
    wait_for(lambda: any(line.text.startswith("iter") for line in runtime.logs(ref)))
    runtime.stop(ref)
    assert runtime.wait(ref, 5) == 0
    (Path(ref) / "done").write_text("")
    assert runtime.launch(spec) == ref  # resume: same run dir, log appended
    assert runtime.wait(ref, 20) == 0
    texts = [line.text for line in runtime.logs(ref)]
    assert texts.count("stopping") == 1 and sum(t.startswith("pid ") for t in texts) == 2


def test_wrapper_killed_with_its_run_reads_as_lost(runtime: ProcessRuntime) -> None:
    ref = runtime.launch(spec_for(runtime.runs_root, "lost"))
    record = json.loads((Path(ref) / PROCESS_FILE).read_text())
    os.kill(record["wrapper_pid"], signal.SIGKILL)
    os.killpg(record["pid"], signal.SIGKILL)
    wait_for(lambda: runtime.inspect(ref).status == "dead")
    assert runtime.inspect(ref).error is not None
    runtime.remove(ref)
    assert runtime.list() == []
    assert (Path(ref) / "train.log").exists()  # the run dir and its log stay


def test_the_run_is_recorded_even_when_the_launcher_dies_before_reading_the_report(
    runtime: ProcessRuntime,
) -> None:
    # Start the wrapper as the launcher does, then close the report pipe unread, as a
    # launcher SIGKILLed right after spawning would: the wrapper must record the run anyway.
    from seglab.runtime import procwrap

    run_dir = runtime.runs_root / "orphan"
    run_dir.mkdir(parents=True)
    read_end, write_end = os.pipe()
    os.close(read_end)
    record = json.dumps(
        {
            "name": "orphan",
            "labels": {"seglab.run_id": "orphan"},
            "command": [],
            "gpus": [],
            "log_path": str(run_dir / "train.log"),
        }
    )
    with open(run_dir / "train.log", "ab") as log:
        wrapper = subprocess.Popen(
            [
                sys.executable,
                "-I",
                procwrap.__file__,
                str(run_dir),
                str(write_end),
                record,
                "--",
                sys.executable,
                "-c",
                "print('alone'); raise SystemExit(5)",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=(write_end,),
        )
    os.close(write_end)
    assert wrapper.wait(timeout=30) == 0
    (found,) = runtime.list({"seglab.run_id": "orphan"})
    assert (found.name, found.state.status, found.state.exit_code) == ("orphan", "exited", 5)
    texts = [line.text for line in runtime.logs(found.ref)]
    assert sorted(texts) == [
        "alone",
        "seglab wrapper: could not report to the launcher: [Errno 32] Broken pipe",
    ]


def test_racing_launches_into_one_run_dir_start_it_once(runtime: ProcessRuntime) -> None:
    launcher = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from seglab.runtime import LaunchSpec, NameInUse
        from seglab.runtime.process import ProcessRuntime
        root = Path({str(runtime.runs_root)!r})
        spec = LaunchSpec(name="raced", image="unused",
                          command=({sys.executable!r}, "-c", {TRAINER!r}),
                          labels={{"seglab.run_id": "raced"}},
                          log_path=root / "raced" / "train.log")
        try:
            ProcessRuntime(root).launch(spec)
            print("started")
        except NameInUse:
            print("in use")
        """
    )
    racers = [
        subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outcomes = sorted(racer.communicate(timeout=60)[0].strip() for racer in racers)
    assert outcomes == ["in use", "in use", "started"]
    (info,) = runtime.list({"seglab.run_id": "raced"})
    runtime.stop(info.ref, timeout=5)


def test_workers_in_sessions_of_their_own_die_with_the_run(runtime: ProcessRuntime) -> None:
    # torchrun starts its ranks with start_new_session: killing torchrun's process group
    # orphans them. The wrapper adopts such orphans (a child subreaper) and kills them.
    detached = (
        "import subprocess, sys, time\n"
        "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
        " start_new_session=True)\n"
        "print(w.pid, flush=True)\ntime.sleep(60)"
    )
    ref = runtime.launch(spec_for(runtime.runs_root, "detached", detached))
    wait_for(lambda: len(list(runtime.logs(ref))) == 1)
    worker = int(next(iter(runtime.logs(ref))).text)
    assert Path(f"/proc/{worker}").exists()
    runtime.kill(ref)
    assert runtime.inspect(ref).exit_code == 137
    assert not Path(f"/proc/{worker}").exists(), "the exit code is written once none is left"


# A stand-in trainer that, like seglab.train, exits 128 + the signal after a clean stop,
# and counts its starts in its run dir (a start after the first is its resume).
RESUMING = textwrap.dedent(
    """
    import os, signal, sys, time
    starts = int(open("starts").read()) + 1 if os.path.exists("starts") else 1
    open("starts", "w").write(str(starts))
    def term(signum, frame):
        print("stopping", flush=True)
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, term)
    print("start", starts, flush=True)
    while not os.path.exists("done"):
        time.sleep(0.05)
    """
)


def resuming(runtime: ProcessRuntime, name: str, restarts: int = 3) -> str:
    spec = spec_for(runtime.runs_root, name, RESUMING)
    ref = runtime.launch(dataclasses.replace(spec, restarts=restarts))
    wait_for((Path(ref) / "starts").exists)
    return ref


def record_of(ref: str) -> dict[str, object]:
    record: dict[str, object] = json.loads((Path(ref) / PROCESS_FILE).read_text())
    return record


def in_the_next_boot(ref: str) -> None:
    """What a reboot changes for a run's record: it was started in another boot."""
    record = record_of(ref)
    record["boot_id"] = "an-earlier-boot"
    (Path(ref) / PROCESS_FILE).write_text(json.dumps(record))


def power_cut(ref: str) -> None:
    """The run and its wrapper vanish at once, with no exit code written."""
    record = record_of(ref)
    os.kill(int(str(record["wrapper_pid"])), signal.SIGKILL)
    os.killpg(int(str(record["pid"])), signal.SIGKILL)


def test_a_run_the_shutdown_stopped_starts_again_in_the_next_boot(
    runtime: ProcessRuntime,
) -> None:
    ref = resuming(runtime, "shutdown")
    os.killpg(int(str(record_of(ref)["pid"])), signal.SIGTERM)  # the wrapper ignores it
    assert runtime.wait(ref, 10) == 128 + signal.SIGTERM
    in_the_next_boot(ref)
    state = runtime.inspect(ref)  # the first look in the new boot starts it again
    assert state.status == "running"
    assert state.detail is not None and "started again once" in state.detail
    wait_for(lambda: (Path(ref) / "starts").read_text() == "2")
    again = record_of(ref)
    assert again["restart_count"] == 1 and again["boot_id"] != "an-earlier-boot"
    (Path(ref) / "done").write_text("")
    assert runtime.wait(ref, 10) == 0
    texts = [line.text for line in runtime.logs(ref)]
    assert texts == ["start 1", "stopping", "start 2"]


def test_a_run_the_machine_lost_starts_again_at_most_restarts_times(
    runtime: ProcessRuntime,
) -> None:
    ref = resuming(runtime, "powercut", restarts=2)
    for attempt in (1, 2):
        power_cut(ref)
        wait_for(lambda: runtime._seen(ref, record_of(ref)).status == "dead")
        in_the_next_boot(ref)
        assert runtime.inspect(ref).status == "running"
        assert record_of(ref)["restart_count"] == attempt
        wait_for(lambda a=attempt: (Path(ref) / "starts").read_text() == str(a + 1))
    power_cut(ref)
    wait_for(lambda: runtime._seen(ref, record_of(ref)).status == "dead")
    in_the_next_boot(ref)
    assert runtime.inspect(ref).status == "dead"  # its tries are spent: it stays lost
    assert (Path(ref) / "starts").read_text() == "3"


def test_runs_stopped_by_their_user_or_ended_on_their_own_are_never_started_again(
    runtime: ProcessRuntime,
) -> None:
    stopped = resuming(runtime, "stopped")
    runtime.stop(stopped)  # seglab stop: settled first, then SIGTERM
    killed = resuming(runtime, "killed")
    runtime.kill(killed)
    failed = runtime.launch(spec_for(runtime.runs_root, "failed", "raise SystemExit(1)"))
    by_hand = resuming(runtime, "byhand")
    os.killpg(int(str(record_of(by_hand)["pid"])), signal.SIGTERM)
    assert runtime.wait(by_hand, 10) == 143
    runtime.settle(by_hand)  # what seglab does once its registry records the end
    same_boot = resuming(runtime, "sameboot")
    os.killpg(int(str(record_of(same_boot)["pid"])), signal.SIGTERM)
    assert runtime.wait(same_boot, 10) == 143
    assert runtime.inspect(same_boot).status == "exited"  # no reboot: nothing restarts
    for ref in (stopped, killed, failed, by_hand):
        runtime.wait(ref, 10)
        in_the_next_boot(ref)
    codes = {
        Path(ref).name: runtime.inspect(ref).exit_code for ref in (stopped, killed, failed, by_hand)
    }
    assert codes == {"stopped": 143, "killed": 137, "failed": 1, "byhand": 143}
    assert all((Path(ref) / "starts").read_text() == "1" for ref in (stopped, killed, by_hand))


def test_seglab_processes_looking_at_once_start_it_once(runtime: ProcessRuntime) -> None:
    ref = resuming(runtime, "race")
    power_cut(ref)
    wait_for(lambda: runtime._seen(ref, record_of(ref)).status == "dead")
    in_the_next_boot(ref)
    lookers = [ProcessRuntime(runtime.runs_root) for _ in range(6)]
    with ThreadPoolExecutor(len(lookers)) as pool:
        states = list(pool.map(lambda rt: rt.inspect(ref), lookers))
    assert {state.status for state in states} == {"running"}
    assert record_of(ref)["restart_count"] == 1
    wait_for(lambda: (Path(ref) / "starts").read_text() == "2")
    assert [line.text for line in runtime.logs(ref)].count("start 2") == 1


def test_a_restart_that_cannot_start_leaves_the_run_ended_and_says_why(
    runtime: ProcessRuntime,
) -> None:
    ref = resuming(runtime, "nopython")
    os.killpg(int(str(record_of(ref)["pid"])), signal.SIGTERM)
    assert runtime.wait(ref, 10) == 143
    in_the_next_boot(ref)
    record = record_of(ref)
    record["command"] = ["/nonexistent/python", "-c", "pass"]  # gone since the reboot
    (Path(ref) / PROCESS_FILE).write_text(json.dumps(record))
    state = runtime.inspect(ref)
    assert (state.status, state.exit_code) == ("exited", 143)
    assert state.error is not None and "could not start it again" in state.error
    assert record_of(ref)["settled"] is True  # never tried again
    assert [info.state.exit_code for info in runtime.list()] == [143]
