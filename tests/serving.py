"""Helpers for the tests of `seglab tensorboard` and `seglab notebook`: a finished run with
TensorBoard scalars, the real CLI serving in a subprocess until the test is done (or
failing), and what it serves, fetched over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from seglab.registry import Registry, RunRecord, RunStatus


def login_node(
    hosts_yaml: Path, runs_root: Path, python: str | Path, env_setup: Sequence[str] = ()
) -> None:
    """hosts.yaml with `cluster`: a kind: slurm host reached as `lab1` (the test sshd),
    whose runs are processes under ``python`` after ``env_setup``."""
    hosts_yaml.write_text(
        "hosts:\n"
        "  cluster:\n"
        "    kind: slurm\n"
        "    ssh: lab1\n"
        f"    runs_root: {runs_root}\n"
        f"    python: {python}\n"
        + (f"    env_setup: {json.dumps(list(env_setup))}\n" if env_setup else "")
    )


def finished_run_with_scalars(
    run_dir: Path,
    run_id: str,
    scalars: Mapping[str, Sequence[tuple[int, float]]],
    *,
    host: str,
    runtime: str,
) -> None:
    """A finished run in the registry whose tb/ holds ``scalars`` (tag: (step, value)),
    written by the train extra's writer as the trainer writes them."""
    summary = pytest.importorskip("torch.utils.tensorboard", reason="the train extra is absent")
    writer = summary.SummaryWriter(str(run_dir / "tb"))
    for tag, points in scalars.items():
        for step, value in points:
            writer.add_scalar(tag, value, step)
    writer.close()
    recipe, variant, _ = run_id.split(".")
    with Registry() as registry:
        registry.upsert_run(
            RunRecord(
                run_id=run_id,
                recipe=recipe,
                variant=variant,
                host=host,
                runtime=runtime,
                run_dir=str(run_dir),
                status=RunStatus.FINISHED,
            )
        )


@contextmanager
def serving(
    args: Sequence[str], banner: str, env: Mapping[str, str] | None = None
) -> Iterator[tuple[psutil.Process, str]]:
    """`seglab ARGS` until the block ends: its process and the URL its first line prints
    (the word ``banner`` ends in); then SIGTERM, on which it must exit 0."""
    process = subprocess.Popen(
        [sys.executable, "-m", "seglab", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env if env is not None else os.environ),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(banner), line + (process.stderr.read() if process.stderr else "")
        yield psutil.Process(process.pid), line.split()[len(banner.split()) - 1]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert process.returncode == 0


def failing(
    args: Sequence[str],
    python: str | Path = sys.executable,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """What `seglab ARGS` (under ``python``) prints on stderr; it must exit 1."""
    out = subprocess.run(
        [str(python), "-m", "seglab", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=cwd,
    )
    assert out.returncode == 1, out
    return out.stderr


def fetch(url: str, token: str | None = None, timeout: float = 10) -> str:
    """The body at ``url`` (with a Jupyter ``token`` in the Authorization header)."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"token {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body: bytes = response.read()
    return body.decode()


def tensorboard_scalars(base: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Run ``run_id``'s scalars by tag as TensorBoard at ``base`` serves them (it loads the
    event files in the background: waits up to a minute for the run to show)."""
    deadline = time.monotonic() + 60
    while not (tags := json.loads(fetch(base + "data/plugin/scalars/tags"))):
        assert time.monotonic() < deadline, "TensorBoard loaded no run"
        time.sleep(0.5)
    (run,) = tags  # TensorBoard names it "<run id>/."
    assert run.split("/")[0] == run_id
    scalars = {}
    for tag in tags[run]:
        query = urllib.parse.urlencode({"run": run, "tag": tag})
        rows = json.loads(fetch(base + "data/plugin/scalars/scalars?" + query))
        scalars[tag] = [(step, value) for _, step, value in rows]
    return scalars
