"""The process runtime's wrapper: starts the run, then records its exit code.

Run as ``python -I procwrap.py RUN_DIR REPORT_FD -- COMMAND...`` in a session of its own
(the launcher uses ``start_new_session``), with stdout/stderr already on train.log. It
starts COMMAND in a new session and process group (so stopping the run signals the
trainer and its workers, never this wrapper), reports ``{"pid", "start_time"}`` or
``{"error"}`` as one JSON line on REPORT_FD, waits, and writes the exit code (128+N for signal N) to
``RUN_DIR/exit_code`` atomically. Once launched it needs nobody: the launcher may exit,
and a later seglab reads ``exit_code`` because it cannot ``waitpid`` a stranger.

Stdlib only, and runnable as a plain script, so it does not depend on how seglab is
installed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

EXIT_FILE = "exit_code"


def proc_start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat: the process start time in clock ticks since boot."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Field 2 (comm) may hold spaces and parentheses: split after its closing one.
    return int(stat[stat.rindex(")") + 2:].split()[19])


def write_exit_code(run_dir: Path, code: int) -> None:
    """Write ``exit_code`` atomically (temp file, fsync, rename)."""
    tmp = run_dir / f".{EXIT_FILE}.tmp"
    with open(tmp, "w") as handle:
        handle.write(f"{code}\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, run_dir / EXIT_FILE)


def _report(fd: int, message: dict[str, object]) -> None:
    try:
        with os.fdopen(fd, "w") as pipe:
            pipe.write(json.dumps(message) + "\n")
    except OSError as exc:
        # The launcher went away before reading: the run goes on regardless.
        print(f"seglab wrapper: could not report to the launcher: {exc}", file=sys.stderr)


def _ignore(signum: int, frame: object) -> None:
    """Signals meant for the run must not end the wrapper before it records the exit."""


def main(argv: list[str]) -> int:
    """Start the command, report it, wait for it, record its exit code."""
    if len(argv) < 4 or argv[2] != "--":
        print("usage: procwrap.py RUN_DIR REPORT_FD -- COMMAND...", file=sys.stderr)
        return 2
    run_dir, report_fd, command = Path(argv[0]), int(argv[1]), argv[3:]
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        # A Python handler (not SIG_IGN) is reset to the default in the child on exec.
        signal.signal(signum, _ignore)
    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        code = 127 if isinstance(exc, FileNotFoundError) else 126
        write_exit_code(run_dir, code)
        _report(report_fd, {"error": f"cannot start {command[0]}: {exc.strerror or exc}"})
        return code
    _report(report_fd, {"pid": child.pid, "start_time": proc_start_time(child.pid)})
    returncode = child.wait()
    code = 128 - returncode if returncode < 0 else returncode
    write_exit_code(run_dir, code)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
