"""The runtimes the contract cases run against, as one parametrized ``engine`` fixture.

Each parameter builds a real runtime (process; Docker on the CI image; Slurm on the
cluster SLURM_CONF names) or the in-memory fake, and skips with a reason when its engine
is missing. A case describes a run as a :class:`Script` (lines printed, then an exit code
or a wait for a signal); :meth:`Engine.spec` turns it into a LaunchSpec the runtime can
launch (``sh -c`` for the real ones; a :class:`~tests.fakes.runtime.Behaviour` for the
fake) labelled with this fixture's session, and teardown removes every run it labelled.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from seglab.hosts import SlurmOptions
from seglab.runtime import LaunchSpec, LogLine, Runtime, default_user
from tests.fakes.runtime import Behaviour, FakeRuntime

T = TypeVar("T")

SESSION_LABEL = "contract.session"
TERM_CODE = 3  # what a Script's run exits with on SIGTERM (after printing "term")


@dataclass(frozen=True)
class Script:
    """A tiny run: print ``lines``, then exit ``exit_code``, or (None) wait for a signal;
    on SIGTERM print ``term`` and exit ``on_term`` (None: SIGTERM is ignored)."""

    lines: tuple[str, ...]
    exit_code: int | None = None
    on_term: int | None = TERM_CODE

    def shell(self) -> str:
        """The ``sh -c`` text that behaves so (the sleep's stderr goes nowhere: dash
        reports a child killed by SIGTERM there, which is no output of the run's)."""
        parts = []
        if self.exit_code is None:
            handler = "" if self.on_term is None else f"echo term; exit {self.on_term}"
            parts.append(f"trap {shlex.quote(handler)} TERM")
        parts += [f"echo {shlex.quote(line)}" for line in self.lines]
        parts.append(
            f"exit {self.exit_code}"
            if self.exit_code is not None
            else "while :; do sleep 0.2 2>/dev/null; done"
        )
        return "; ".join(parts)

    def behaviour(self) -> Behaviour:
        """The same run for the fake runtime."""
        return Behaviour(
            output=self.lines,
            exit_code=self.exit_code,
            on_term=self.on_term,
            term_output=() if self.on_term is None else ("term",),
        )


@dataclass
class Engine:
    """One runtime under test and how to use it.

    ``patience``: seconds to wait for a state change (Slurm schedules every few seconds);
    ``poll``: seconds between looks; ``missing_ref``: a well-formed ref of no run;
    ``foreign``: prefixes of lines the runtime itself writes into a run's log (Slurm's
    ``slurmstepd`` notes).
    """

    kind: str
    runtime: Runtime
    build: Callable[[str, tuple[str, ...], Mapping[str, str]], LaunchSpec]
    missing_ref: str
    patience: float
    poll: float
    foreign: tuple[str, ...] = ()
    session: str = field(default_factory=lambda: f"{os.getpid()}-{secrets.token_hex(3)}")

    def spec(self, name: str, script: Script, **labels: str) -> LaunchSpec:
        """A LaunchSpec of ``script`` named ``ct<session>-<name>``, carrying ``labels``
        (as ``contract.<key>``) and the session label."""
        full = f"ct{self.session}-{name}"
        if isinstance(self.runtime, FakeRuntime):
            self.runtime.script(full, script.behaviour())
        all_labels = {
            "seglab.run_id": full,
            SESSION_LABEL: self.session,
            **{f"contract.{key}": value for key, value in labels.items()},
        }
        return self.build(full, ("sh", "-c", script.shell()), all_labels)

    def own(self, lines: Iterable[LogLine]) -> list[str]:
        """The texts of ``lines`` the run printed (the runtime's own notes left out)."""
        return [line.text for line in lines if not line.text.startswith(self.foreign or ())]

    def eventually(self, probe: Callable[[], T | None], what: str) -> T:
        """Poll ``probe`` until it returns something truthy; AssertionError after
        :attr:`patience` seconds, naming ``what`` and the last value."""
        deadline = time.monotonic() + self.patience
        last = probe()
        while not last:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.kind}: no {what} within {self.patience} s: {last!r}")
            time.sleep(self.poll)
            last = probe()
        return last

    def cleanup(self) -> None:
        """Remove every run of this session (killing the ones still running)."""
        for info in self.runtime.list({SESSION_LABEL: self.session}):
            self.runtime.remove(info.ref, force=True)


def _process(tmp_path: Path) -> Engine:
    from seglab.runtime.process import ProcessRuntime

    root = tmp_path / "runs"

    def build(name: str, command: tuple[str, ...], labels: Mapping[str, str]) -> LaunchSpec:
        return LaunchSpec(
            name=name,
            image="unused",
            command=command,
            labels=labels,
            log_path=root / name / "train.log",
        )

    return Engine("process", ProcessRuntime(root), build, str(root / "never-launched"), 20.0, 0.05)


def _docker(request: pytest.FixtureRequest) -> Engine:
    image: str = request.getfixturevalue("ci_image")  # skips without an engine or image
    from seglab.runtime.docker import DockerRuntime

    def build(name: str, command: tuple[str, ...], labels: Mapping[str, str]) -> LaunchSpec:
        return LaunchSpec(
            name=name,
            image=image,
            command=command,
            labels=labels,
            user=default_user(),
            shm_size="64m",
        )

    return Engine("docker", DockerRuntime(host="contract"), build, "0" * 64, 60.0, 0.2)


def _slurm_answers() -> str | None:
    """Why Slurm cannot be used here, or None when a controller answers."""
    if shutil.which("sbatch") is None:
        return "sbatch is not installed; .ci/slurm.sh WORKDIR installs and starts Slurm"
    try:
        ping = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, timeout=15, check=False
        )
    except subprocess.TimeoutExpired:
        return "scontrol ping got no answer within 15 s"
    answer = (ping.stdout + ping.stderr).strip()
    if "is UP" in answer:
        return None
    return (
        f"no Slurm controller answers (SLURM_CONF={os.environ.get('SLURM_CONF')}): {answer}; "
        "source .ci-work/env or export SLURM_CONF=WORKDIR/slurm.conf"
    )


def _slurm(tmp_path: Path) -> Engine:
    why = _slurm_answers()
    if why is not None:
        pytest.skip(why)
    from seglab.runtime.slurm import SlurmRuntime

    root = tmp_path / "slurm-runs"

    def build(name: str, command: tuple[str, ...], labels: Mapping[str, str]) -> LaunchSpec:
        run_dir = root / name
        run_dir.mkdir(parents=True, exist_ok=True)  # sbatch writes train.log into it
        return LaunchSpec(
            name=name,
            image="none",
            command=command,
            labels=labels,
            log_path=run_dir / "train.log",
            workdir=str(run_dir),
        )

    # A 5-minute limit bounds any job a crashed test session leaves in the queue.
    runtime = SlurmRuntime(root, SlurmOptions(time_limit="5"), host="contract")
    return Engine(
        "slurm",
        runtime,
        build,
        f"999999999:{root / 'never-launched'}",
        120.0,
        0.5,
        foreign=("slurmstepd",),
    )


def _fake() -> Engine:
    def build(name: str, command: tuple[str, ...], labels: Mapping[str, str]) -> LaunchSpec:
        return LaunchSpec(name=name, image="unused", command=command, labels=labels)

    return Engine("fake", FakeRuntime(), build, "fake-process-0", 2.0, 0.01)


@pytest.fixture(
    params=[
        pytest.param("process", id="process"),
        pytest.param("docker", id="docker", marks=pytest.mark.docker),
        pytest.param("slurm", id="slurm", marks=pytest.mark.slurm),
        pytest.param("fake", id="fake"),
    ]
)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """Each runtime in turn (skipped with the reason when its engine is missing)."""
    kind: str = request.param
    made: dict[str, Callable[[], Engine]] = {
        "process": lambda: _process(tmp_path),
        "docker": lambda: _docker(request),
        "slurm": lambda: _slurm(tmp_path),
        "fake": _fake,
    }
    engine = made[kind]()
    yield engine
    engine.cleanup()
    close: Any = getattr(engine.runtime, "close", None)
    if close is not None:
        close()
