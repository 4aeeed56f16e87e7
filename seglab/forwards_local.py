"""TensorBoard and JupyterLab as plain processes on this machine's loopback, without Docker.

Used when the run's host is this machine and its runtime is ``process``, or when no Docker
engine answers here: the train extra's ``tensorboard`` in this Python over each run's
``tb/`` folder (:func:`start_local_tensorboard`), or the notebook extra's JupyterLab over
the runs root (:func:`start_local_notebook`); each is stopped by the function returned.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from seglab.errors import RunError

if TYPE_CHECKING:
    from seglab.registry import RunRecord

READY_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0


def tensorboard_process_command(
    runs: Sequence[RunRecord], port: int, python: str = sys.executable
) -> tuple[str, ...]:
    """``python``'s TensorBoard (default: this one's) over each run's ``tb/`` folder on
    127.0.0.1:``port`` of the runs' host."""
    spec = ",".join(f"{run.run_id}:{Path(run.run_dir) / 'tb'}" for run in runs)
    return (
        python,
        "-m",
        "tensorboard.main",
        "--logdir_spec",
        spec,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    )


def start_local_tensorboard(
    runs: Sequence[RunRecord], port: int, timeout: float = READY_TIMEOUT
) -> tuple[subprocess.Popen[bytes], Callable[[], None]]:
    """Start TensorBoard as a process on ``port`` and wait until it answers HTTP; the
    process, and the function that stops it (and drops its log)."""
    if importlib.util.find_spec("tensorboard") is None:
        raise RunError(
            "tensorboard is not installed in this Python and no Docker engine is used",
            hint="install the train extra: pip install 'seglab[train]'",
        )
    return _start(
        "tensorboard",
        tensorboard_process_command(runs, port),
        f"http://127.0.0.1:{port}/",
        timeout,
    )


def notebook_process_command(
    root: str | Path, port: int, python: str = sys.executable
) -> tuple[str, ...]:
    """``python``'s JupyterLab (default: this one's) on 127.0.0.1:``port`` of the host with
    ``root`` as its root folder (allowed to run as root; the token travels in the
    environment, not on the command line other users can read)."""
    return (
        python,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.allow_root=True",
        f"--ServerApp.root_dir={root}",
    )


def start_local_notebook(
    root: Path,
    port: int,
    token: str,
    gpu: str | None = None,
    timeout: float = READY_TIMEOUT,
) -> tuple[subprocess.Popen[bytes], Callable[[], None]]:
    """Start JupyterLab as a process on ``port`` over ``root``, guarded by ``token`` and
    seeing only GPU ``gpu`` (none when None); the process and the function that stops it."""
    if importlib.util.find_spec("jupyterlab") is None:
        raise RunError(
            "JupyterLab is not installed in this Python and no Docker engine is used",
            hint="install the notebook extra: pip install 'seglab[notebook]'",
        )
    env = {
        **os.environ,
        "JUPYTER_TOKEN": token,
        "CUDA_VISIBLE_DEVICES": gpu or "",
    }
    return _start(
        "JupyterLab",
        notebook_process_command(root, port),
        f"http://127.0.0.1:{port}/api",
        timeout,
        env,
    )


def _start(
    name: str,
    argv: Sequence[str],
    url: str,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], Callable[[], None]]:
    """Start ``argv`` with its output in a temporary file and wait until ``url`` answers."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the forward
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )

    def stop() -> None:
        _stop(process)
        log.close()

    try:
        _wait_ready(name, process, url, log, timeout)
    except BaseException:
        stop()
        raise
    return process, stop


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_ready(
    name: str,
    process: subprocess.Popen[bytes],
    url: str,
    log: IO[bytes],
    timeout: float,
) -> None:
    def check() -> None:
        code = process.poll()
        if code is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace").splitlines()[-8:]
            raise RunError(
                f"{name} exited (code {code}) before answering"
                + ("\n  " + "\n  ".join(tail) if tail else "")
            )

    if not answers_within(url, timeout, check):
        raise RunError(f"{name} did not answer on {url} within {timeout:.0f} s")


def answers_within(url: str, timeout: float, check: Callable[[], None]) -> bool:
    """Whether ``url`` answers HTTP (any status: a login page is an answer) within
    ``timeout`` s; ``check`` runs before each try and raises once the server has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check()
        try:
            with urllib.request.urlopen(url, timeout=5):
                return True
        except urllib.error.HTTPError:
            return True  # it answered
        except OSError:
            time.sleep(0.5)  # not listening yet
    return False
