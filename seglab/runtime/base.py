"""The Runtime protocol every backend (docker, process, later slurm/k8s) implements.

A runtime names each run by an opaque ``ref`` string it hands out from :meth:`launch`
(a container id for docker, the run directory for the process runtime). Every call may
block; async callers run them in threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from seglab.runtime.spec import LaunchSpec

Status = Literal["created", "running", "paused", "exited", "dead"]


@dataclass(frozen=True)
class RuntimeState:
    """What the runtime itself says about a run (the truth the registry caches).

    ``status`` ``dead`` means the run ended without an exit code the runtime can vouch
    for (``error`` says why). ``detail`` is what a scheduler adds while the run waits or
    runs (a Slurm job's pending reason, restarts), else None.
    """

    status: Status
    exit_code: int | None = None
    oom_killed: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    pid: int | None = None
    error: str | None = None
    detail: str | None = None

    @property
    def active(self) -> bool:
        """Still holding its resources (created, running or paused)."""
        return self.status in ("created", "running", "paused")


@dataclass(frozen=True)
class RunInfo:
    """One run found by :meth:`Runtime.list`."""

    ref: str
    name: str
    labels: Mapping[str, str]
    state: RuntimeState


@dataclass(frozen=True)
class LogCursor:
    """A resumable position in a run's log.

    Docker: for stdout and for stderr, the position of the last log record of that stream
    already given out, as (timestamp in ns, ordinal among the records with that exact
    timestamp). Process runtime: byte ``offset`` in train.log. :meth:`encode` gives a
    short string for the registry.
    """

    time_ns: int = 0
    seen: int = 0
    err_time_ns: int = 0
    err_seen: int = 0
    offset: int = 0

    @property
    def timed(self) -> bool:
        """Whether this is a docker (timestamp) cursor."""
        return bool(self.time_ns or self.err_time_ns)

    def encode(self) -> str:
        """``t<ns>.<seen>.<err_ns>.<err_seen>`` or ``o<offset>``."""
        if self.timed:
            return f"t{self.time_ns}.{self.seen}.{self.err_time_ns}.{self.err_seen}"
        return f"o{self.offset}"

    @classmethod
    def decode(cls, text: str) -> LogCursor:
        """The inverse of :meth:`encode`."""
        try:
            if text.startswith("t"):
                time_ns, seen, err_time_ns, err_seen = (int(v) for v in text[1:].split("."))
                return cls(time_ns, seen, err_time_ns, err_seen)
            if text.startswith("o"):
                return cls(offset=int(text[1:]))
        except ValueError as exc:
            raise ValueError(f"not a log cursor: {text!r}") from exc
        raise ValueError(f"not a log cursor: {text!r}")


@dataclass(frozen=True)
class LogLine:
    """One whole log line (no trailing newline) and the cursor just after it."""

    text: str
    cursor: LogCursor
    time: datetime | None = field(default=None)


@runtime_checkable
class Runtime(Protocol):
    """Start, find, watch and end runs on one host."""

    @property
    def kind(self) -> str:
        """Which runtime this is (a :class:`seglab.kinds.RuntimeKind` value)."""
        ...

    def check(self) -> None:
        """Raise RuntimeFailure (EngineUnavailable for an engine) unless the runtime
        answers now; connecting is part of the check."""
        ...

    def launch(self, spec: LaunchSpec) -> str:
        """Start the run; returns its ref. Leaves nothing behind when it raises."""
        ...

    def list(self, labels: Mapping[str, str | None] | None = None) -> list[RunInfo]:
        """Runs (also ended ones) whose labels match: ``{key: value}``, or None = has key."""
        ...

    def inspect(self, ref: str) -> RuntimeState:
        """The run's state; raises RunNotFound when it is gone."""
        ...

    def logs(
        self,
        ref: str,
        *,
        follow: bool = False,
        since: LogCursor | datetime | None = None,
        tail: int | None = None,
    ) -> Iterator[LogLine]:
        """Whole lines, from ``since`` (exclusive) or the last ``tail``; ``follow`` waits
        for more until the run ends."""
        ...

    def stop(self, ref: str, timeout: float = 10.0) -> None:
        """SIGTERM, up to ``timeout`` seconds of grace, then SIGKILL."""
        ...

    def kill(self, ref: str) -> None:
        """SIGKILL now."""
        ...

    def wait(self, ref: str, timeout: float | None = None) -> int:
        """Block until the run ends; its exit code. Raises TimeoutError."""
        ...

    def remove(self, ref: str, force: bool = False) -> None:
        """Forget the run on the runtime (its run directory stays)."""
        ...


@runtime_checkable
class RestartingRuntime(Protocol):
    """A runtime whose engine may start an ended run again by itself (Docker's restart
    policy brings back a run that ended non-zero when the engine starts)."""

    def settle(self, ref: str) -> None:
        """Never start the run again by itself; raises RunNotFound when it is gone."""
        ...


def matches(labels: Mapping[str, str], wanted: Mapping[str, str | None] | None) -> bool:
    """Whether ``labels`` satisfy a :meth:`Runtime.list` filter."""
    if not wanted:
        return True
    return all(
        key in labels and (value is None or labels[key] == value) for key, value in wanted.items()
    )


def wait_for_exit(
    inspect: Callable[[str], RuntimeState], ref: str, timeout: float | None, poll: float, what: str
) -> int:
    """Poll ``inspect(ref)`` until the run ends: its exit code; RunLost for a run that
    ended without one, TimeoutError after ``timeout`` seconds (``what`` names it)."""
    from seglab.runtime.errors import RunLost

    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        state = inspect(ref)
        if state.status == "exited" and state.exit_code is not None:
            return state.exit_code
        if state.status == "dead":
            raise RunLost(ref)
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"{what} {ref} still running after {timeout} s")
        time.sleep(poll)
