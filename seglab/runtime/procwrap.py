"""The process runtime's wrapper: starts the run, records it, then records its exit code.

Run as ``python -I procwrap.py RUN_DIR REPORT_FD RECORD_JSON -- COMMAND...`` in a session
of its own (the launcher uses ``start_new_session``), with stdout/stderr already on
train.log. It starts COMMAND in a new session and process group (so stopping the run
signals the trainer and its workers, never this wrapper), writes ``RUN_DIR/process.json``
(RECORD_JSON plus the pids, their start times and the boot id), reports
``{"pid", "start_time"}`` or ``{"error"}`` as one JSON line on REPORT_FD, waits, and writes
the exit code (128+N for signal N) to ``RUN_DIR/exit_code``. The wrapper is a child
subreaper: processes the run leaves behind (torchrun starts its workers in sessions of
their own, so killing torchrun's group orphans them) become its children and are killed
before the exit code is written, so an ended run has no process left. Both files are written
atomically. Once the child runs the wrapper needs nobody: the launcher may exit (even
before reading the report), and a later seglab reads ``exit_code`` because it cannot
``waitpid`` a process that is not its child.

Stdlib only, and runnable as a plain script, so it does not depend on how seglab is
installed.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

EXIT_FILE = "exit_code"
PROCESS_FILE = "process.json"
FORMAT = 1
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def proc_start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat: the process start time in clock ticks since boot."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Field 2 (comm) may hold spaces and parentheses: split after its closing one.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def boot_id() -> str:
    """This boot's id (a pid and start time mean nothing across a reboot)."""
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def write_atomic(path: Path, text: str) -> None:
    """Write ``path`` through a temp file, fsync and rename: readers never see half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _report(fd: int, message: Mapping[str, object]) -> None:
    try:
        with os.fdopen(fd, "w") as pipe:
            pipe.write(json.dumps(message) + "\n")
    except OSError as exc:
        # The launcher went away before reading: the run goes on regardless.
        print(f"seglab wrapper: could not report to the launcher: {exc}", file=sys.stderr)


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        error = os.strerror(ctypes.get_errno())
        print(
            f"seglab wrapper: cannot become a child subreaper ({error}); processes the "
            "run orphans may outlive it",
            file=sys.stderr,
        )


def _children() -> list[int]:
    """Pids whose parent is this process (its children, and orphans it adopted)."""
    me, out = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # ended while listing
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == me:
            out.append(int(entry))
    return out


def _reap_leftovers() -> None:
    """Kill and reap every process still left under this wrapper."""
    while children := _children():
        for pid in children:
            with contextlib.suppress(ProcessLookupError):  # it ended just now
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError):  # reaped already
                os.waitpid(pid, 0)


def _ignore(signum: int, frame: object) -> None:
    """Signals meant for the run must not end the wrapper before it records the exit."""


def main(argv: list[str]) -> int:
    """Start the command, record it, report it, wait for it, record its exit code."""
    if len(argv) < 5 or argv[3] != "--":
        print("usage: procwrap.py RUN_DIR REPORT_FD RECORD_JSON -- COMMAND...", file=sys.stderr)
        return 2
    run_dir, report_fd, record, command = Path(argv[0]), int(argv[1]), argv[2], argv[4:]
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        # A Python handler (not SIG_IGN) is reset to the default in the child on exec.
        signal.signal(signum, _ignore)
    _become_subreaper()
    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        _report(report_fd, {"error": f"cannot start {command[0]}: {exc.strerror or exc}"})
        return 127 if isinstance(exc, FileNotFoundError) else 126
    started = {"pid": child.pid, "start_time": proc_start_time(child.pid)}
    write_atomic(
        run_dir / PROCESS_FILE,
        json.dumps(
            {
                "format": FORMAT,
                **json.loads(record),
                **started,
                "wrapper_pid": os.getpid(),
                "wrapper_start_time": proc_start_time(os.getpid()),
                "boot_id": boot_id(),
                "started_at": time.time(),
            },
            indent=1,
        )
        + "\n",
    )
    _report(report_fd, started)
    returncode = child.wait()
    _reap_leftovers()
    code = 128 - returncode if returncode < 0 else returncode
    write_atomic(run_dir / EXIT_FILE, f"{code}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
