"""The process runtime: a run as a detached process group on this machine.

No Docker needed: a laptop with neither GPU nor engine can still run the smoke recipe.
The run directory (the folder of ``spec.log_path``) holds everything a later seglab needs
to find the run again: ``train.log`` (stdout+stderr), ``process.json`` (pid and process
start time, labels, command) and, once the run ends, ``exit_code`` written by a small
wrapper (:mod:`seglab.runtime.procwrap`) that outlives the launcher. A pid counts as the
run only while /proc shows the same start time (and boot), so a reused pid is never
mistaken for it.

The runtime is its own engine across a reboot: a run the machine took down (its process
gone with no exit code, or stopped by the shutdown's SIGTERM/SIGHUP/SIGINT, in an earlier
boot) starts again in its run dir, so the trainer resumes from ``last.pt``, when a seglab
process (the host's queue runner, ``seglab ps``, the dashboard) next looks at it: at most
``spec.restarts`` times, never after :meth:`ProcessRuntime.settle` (a user's stop or kill,
or an end the registry recorded). The trainer (and all it starts) has the run id in
``SEGLAB_RUN_ID``,
which GPU telemetry attributes its processes by. The run is a process of the user running
seglab (``spec.user`` is a container's): its files and its run dir are that user's,
root's under root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from seglab.kinds import RUN_ID_ENV, RuntimeKind
from seglab.runtime import procwrap
from seglab.runtime.base import (
    LogCursor,
    LogLine,
    RunInfo,
    RuntimeState,
    matches,
    wait_for_exit,
)
from seglab.runtime.errors import (
    LaunchFailed,
    NameInUse,
    RunNotFound,
    RunStillRunning,
    RuntimeFailure,
    SpecError,
)
from seglab.runtime.logfile import read_lines
from seglab.runtime.spec import LaunchSpec

PROCESS_FILE = procwrap.PROCESS_FILE
EXIT_FILE = procwrap.EXIT_FILE
_POLL = 0.1
# How a machine's shutdown ends a run: 128 + the signal the trainer stopped cleanly on.
_SHUTDOWN_CODES = {128 + signal.SIGTERM, 128 + signal.SIGHUP, 128 + signal.SIGINT}


def process_alive(pid: int, start_time: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process started at ``start_time`` ticks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0] not in ("Z", "X") and int(fields[19]) == start_time


class ProcessRuntime:
    """Runs as detached process groups; ``runs_root`` is where :meth:`list` looks."""

    kind = RuntimeKind.PROCESS

    def __init__(
        self, runs_root: Path, *, python: str = sys.executable, launch_timeout: float = 30.0
    ) -> None:
        self.runs_root = Path(runs_root)
        self.python = python
        self.launch_timeout = launch_timeout
        self._wrappers: dict[str, subprocess.Popen[bytes]] = {}

    def check(self) -> None:
        """Nothing to reach: processes start on this machine."""

    # -- launching ------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> str:
        """Start ``spec.command`` detached; returns the run directory as the ref.

        The run directory may hold an ended run (resume): its exit code is cleared and
        train.log is appended to.
        """
        if spec.log_path is None:
            raise SpecError("the process runtime needs log_path (train.log in the run dir)")
        log_path = Path(spec.log_path).resolve()
        run_dir = log_path.parent
        workdir = Path(spec.workdir) if spec.workdir else run_dir
        if spec.workdir and not workdir.is_dir():
            raise LaunchFailed(f"working directory {workdir} does not exist")
        run_dir.mkdir(parents=True, exist_ok=True)
        with _run_dir_lock(run_dir):
            ref = str(run_dir)
            if (run_dir / PROCESS_FILE).exists() and self._seen(ref, self._record(ref)).active:
                raise NameInUse(spec.name)
            plan = {
                "name": spec.name,
                "labels": dict(spec.labels),
                "command": list(spec.command),
                "gpus": list(spec.gpus),
                "env": dict(spec.env),
                "workdir": str(workdir),
                "log_path": str(log_path),
                "restarts": spec.restarts,
                "restart_count": 0,
            }
            return self._start(ref, plan)

    def _start(self, ref: str, plan: Mapping[str, Any]) -> str:
        """Start the wrapper for ``plan`` (process.json's launch fields) in run dir ``ref``
        (its lock held); returns ``ref`` once the wrapper reports the run started."""
        run_dir = Path(ref)
        log_path = Path(plan["log_path"])
        for stale in (PROCESS_FILE, EXIT_FILE):
            (run_dir / stale).unlink(missing_ok=True)
        labels = plan["labels"]
        env = {
            **os.environ,
            **plan["env"],
            "CUDA_VISIBLE_DEVICES": ",".join(plan["gpus"]),
            RUN_ID_ENV: labels.get("seglab.run_id", plan["name"]),
        }
        env.setdefault("PYTHONUNBUFFERED", "1")
        created_log = not log_path.exists()
        record = json.dumps(plan)
        report_r, report_w = os.pipe()
        try:
            with open(log_path, "ab") as log_file:
                wrapper = subprocess.Popen(
                    [
                        self.python,
                        "-I",
                        procwrap.__file__,
                        ref,
                        str(report_w),
                        record,
                        "--",
                        *plan["command"],
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=plan["workdir"],
                    start_new_session=True,
                    pass_fds=(report_w,),
                )
        except OSError as exc:
            os.close(report_r)
            raise LaunchFailed(f"cannot start the run wrapper ({self.python}): {exc}") from exc
        finally:
            os.close(report_w)
        self._wrappers[ref] = wrapper
        report = self._read_report(report_r, wrapper, log_path)
        if "error" in report:
            wrapper.wait()
            if created_log and log_path.stat().st_size == 0:
                log_path.unlink()
            raise LaunchFailed(str(report["error"]))
        return ref

    def _read_report(
        self, fd: int, wrapper: subprocess.Popen[bytes], log_path: Path
    ) -> dict[str, Any]:
        data = b""
        deadline = time.monotonic() + self.launch_timeout
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([fd], [], [], _POLL)
                if ready:
                    chunk = os.read(fd, 4096)
                    if not chunk:
                        break
                    data += chunk
        finally:
            os.close(fd)
        try:
            report: dict[str, Any] = json.loads(data)
        except ValueError:
            wrapper.kill()
            wrapper.wait()
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise LaunchFailed(
                f"the run wrapper did not report within {self.launch_timeout} s"
                + (f"; its output:\n{tail}" if tail else "")
            ) from None
        return report

    # -- finding and watching ------------------------------------------------------

    def _record(self, ref: str) -> dict[str, Any]:
        path = Path(ref) / PROCESS_FILE
        try:
            record: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise RunNotFound(ref) from exc
        except ValueError as exc:
            raise RuntimeFailure(f"{path} is damaged ({exc}); remove it to forget the run") from exc
        return record

    def _state(self, ref: str, record: Mapping[str, Any]) -> RuntimeState:
        state = self._seen(ref, record)
        if state.active or (state.status != "dead" and not _may_restart(record)):
            return state  # an exit code read without the lock: only a restart could change it
        return self._confirmed(ref)

    def _confirmed(self, ref: str) -> RuntimeState:
        """The state of a run that looked ended, read again under its run dir's lock: a
        launch or restart in flight there ends first (the files it replaces are never
        taken for an end), and a run the machine took down is started again (by one of
        several seglab processes looking at once)."""
        with _run_dir_lock(Path(ref)):
            record = self._record(ref)
            state = self._seen(ref, record)
            if state.active or not _taken_down(record, state):
                return state
            plan = {key: record[key] for key in _PLAN_KEYS}
            plan["restart_count"] = int(record.get("restart_count", 0)) + 1
            exit_file = Path(ref) / EXIT_FILE
            exit_text = exit_file.read_text() if exit_file.exists() else None
            try:
                self._start(ref, plan)
            except (LaunchFailed, OSError) as exc:
                # Put the ended run back as it was, never to be tried again, and say why.
                why = f"could not start it again after the machine restarted: {exc}"
                procwrap.write_atomic(
                    Path(ref) / PROCESS_FILE,
                    json.dumps({**record, "settled": True, "restart_error": why}, indent=1),
                )
                if exit_text is not None:
                    procwrap.write_atomic(exit_file, exit_text)
                return dataclasses.replace(state, error=why)
            return self._seen(ref, self._record(ref))

    def _seen(self, ref: str, record: Mapping[str, Any]) -> RuntimeState:
        wrapper = self._wrappers.get(ref)
        if wrapper is not None and wrapper.poll() is not None:
            del self._wrappers[ref]  # reaped: no zombie left behind by a long-lived seglab
        started = datetime.fromtimestamp(float(record["started_at"]), tz=timezone.utc)
        detail = _restarted(record)
        ended = self._exit(ref, started)
        if ended is not None:
            return ended
        same_boot = record.get("boot_id") == procwrap.boot_id()
        if same_boot and process_alive(int(record["pid"]), int(record["start_time"])):
            return RuntimeState(
                "running", started_at=started, pid=int(record["pid"]), detail=detail
            )
        if same_boot and process_alive(
            int(record["wrapper_pid"]), int(record["wrapper_start_time"])
        ):
            # The run has ended and its wrapper is writing the exit code right now.
            return RuntimeState("running", started_at=started, detail=detail)
        ended = self._exit(ref, started)
        if ended is not None:
            return ended
        return RuntimeState(
            "dead",
            started_at=started,
            error="the process ended without an exit code (its wrapper was killed, or the "
            "machine rebooted)",
        )

    def _exit(self, ref: str, started: datetime) -> RuntimeState | None:
        path = Path(ref) / EXIT_FILE
        try:
            code = int(path.read_text())
            finished = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise RuntimeFailure(f"{path} is damaged: {exc}") from exc
        return RuntimeState("exited", exit_code=code, started_at=started, finished_at=finished)

    def settle(self, ref: str) -> None:
        """Never start the run again by itself (a user's stop or kill, or an end the
        registry recorded); RunNotFound when it is gone."""
        with _run_dir_lock(Path(ref)):
            record = self._record(ref)
            if not record.get("settled"):
                procwrap.write_atomic(
                    Path(ref) / PROCESS_FILE, json.dumps({**record, "settled": True}, indent=1)
                )

    def inspect(self, ref: str) -> RuntimeState:
        """running / exited(code) / dead, from process.json, /proc and exit_code; a run
        the machine took down is started again first (see the module's docstring)."""
        try:
            record = self._record(ref)
        except RunNotFound:
            if not Path(ref).is_dir():
                raise
            return self._confirmed(ref)  # between two starts, or really gone
        return self._state(ref, record)

    def list(self, labels: Mapping[str, str | None] | None = None) -> list[RunInfo]:
        """Runs under ``runs_root`` (one folder per run) whose labels match."""
        out = []
        for path in sorted(self.runs_root.glob(f"*/{PROCESS_FILE}")):
            ref = str(path.parent.resolve())
            try:
                record = self._record(ref)
                record_labels = {str(k): str(v) for k, v in record.get("labels", {}).items()}
                if not matches(record_labels, labels):
                    continue
                state = self._state(ref, record)
            except RunNotFound:
                continue  # removed between the glob and the read
            out.append(RunInfo(ref, str(record["name"]), record_labels, state))
        return out

    def logs(
        self,
        ref: str,
        *,
        follow: bool = False,
        since: LogCursor | datetime | None = None,
        tail: int | None = None,
    ) -> Iterator[LogLine]:
        """Whole lines of train.log from a cursor (byte offset) or the last ``tail``.

        A final line without a newline is given only once the run has ended.
        """
        if isinstance(since, datetime):
            raise SpecError(
                "train.log has no timestamps: resume the process runtime's log from a LogCursor"
            )
        record = self._record(ref)
        yield from read_lines(
            Path(record["log_path"]),
            lambda: self.inspect(ref).active,
            follow=follow,
            since=since,
            tail=tail,
            poll=_POLL * 2,
        )

    # -- ending ---------------------------------------------------------------------

    def _signal(self, ref: str, signum: int) -> None:
        record = self._record(ref)
        pid = int(record["pid"])
        same_boot = record.get("boot_id") == procwrap.boot_id()
        if same_boot and process_alive(pid, int(record["start_time"])):
            with contextlib.suppress(ProcessLookupError):  # it ended just now
                os.killpg(pid, signum)  # the run leads its own group: pgid == pid

    def _wait_ended(self, ref: str, timeout: float) -> RuntimeState:
        deadline = time.monotonic() + timeout
        while True:
            state = self.inspect(ref)
            if not state.active or time.monotonic() >= deadline:
                return state
            time.sleep(_POLL)

    def stop(self, ref: str, timeout: float = 10.0) -> None:
        """SIGTERM to the run's process group, ``timeout`` s of grace, then SIGKILL (never
        started again by itself afterwards, :meth:`settle`)."""
        self.settle(ref)
        if not self.inspect(ref).active:
            return
        self._signal(ref, signal.SIGTERM)
        if self._wait_ended(ref, timeout).active:
            self.kill(ref)

    def kill(self, ref: str) -> None:
        """SIGKILL to the run's process group; returns once the exit code is recorded
        (never started again by itself afterwards, :meth:`settle`)."""
        self.settle(ref)
        self._signal(ref, signal.SIGKILL)
        if self._wait_ended(ref, 10.0).active:
            raise RuntimeFailure(f"run {ref} survived SIGKILL for 10 s")

    def wait(self, ref: str, timeout: float | None = None) -> int:
        """The exit code once the run ends; TimeoutError after ``timeout`` seconds."""
        return wait_for_exit(self.inspect, ref, timeout, _POLL, "run")

    def remove(self, ref: str, force: bool = False) -> None:
        """Forget the run (process.json, exit_code); train.log and the run dir stay."""
        self.settle(ref)  # not started again by a look while it is being forgotten
        if self.inspect(ref).active:
            if not force:
                raise RunStillRunning(ref)
            self.kill(ref)
        with _run_dir_lock(Path(ref)):
            for name in (PROCESS_FILE, EXIT_FILE):
                (Path(ref) / name).unlink(missing_ok=True)
        self._wrappers.pop(ref, None)


# What process.json keeps of a launch, enough to start the run again.
_PLAN_KEYS = ("name", "labels", "command", "gpus", "env", "workdir", "log_path", "restarts")


@contextlib.contextmanager
def _run_dir_lock(run_dir: Path) -> Iterator[None]:
    """One launch, restart or settle at a time per run dir, across seglab processes."""
    try:
        lock = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError as exc:
        raise RunNotFound(str(run_dir)) from exc
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock)


def _may_restart(record: Mapping[str, Any]) -> bool:
    """Whether the run, if the machine ended it, may start again by itself: it ran in an
    earlier boot, nobody settled it, it has tries left and its record says how."""
    if record.get("settled") or record.get("boot_id") == procwrap.boot_id():
        return False
    if int(record.get("restart_count", 0)) >= int(record.get("restarts", 0)):
        return False
    return all(key in record for key in _PLAN_KEYS)  # an older seglab's record: no


def _taken_down(record: Mapping[str, Any], state: RuntimeState) -> bool:
    """Whether the machine ended the run (it vanished without an exit code, or stopped on
    the shutdown's signal, in an earlier boot) and it may start again by itself."""
    if not _may_restart(record):
        return False
    return state.status == "dead" or state.exit_code in _SHUTDOWN_CODES


def _restarted(record: Mapping[str, Any]) -> str | None:
    """What a running run's message says once it was started again after a reboot."""
    count = int(record.get("restart_count", 0))
    if not count:
        return None
    times = "once" if count == 1 else f"{count} times"
    return (
        f"started again {times} by seglab after the machine restarted "
        f"(at most {record['restarts']}); the trainer resumes from checkpoints/last.pt"
    )
