"""FakeRuntime: the Runtime protocol in memory, with run states a test drives by hand.

Nothing runs. :meth:`FakeRuntime.launch` records the spec and the run is ``running``
until the test ends it (:meth:`~FakeRuntime.exit`, :meth:`~FakeRuntime.oom`,
:meth:`~FakeRuntime.lose`, :meth:`~FakeRuntime.vanish`) or seglab does (``stop`` exits
it with its ``on_term`` code, ``kill`` with 137). A :class:`Behaviour` given before the
launch (:meth:`~FakeRuntime.script`) sets a run's output and how it ends, so the fake can
be held to the same contract as the real runtimes (tests/contract). Errors are the real
ones: NameInUse (a name stays in use until its run is removed, as a container name
does), RunNotFound, RunStillRunning, RunLost, and what :meth:`~FakeRuntime.refuse` sets
for a launch. Times are the wall clock moved by
:meth:`~FakeRuntime.advance` (a member that failed "a minute ago" is one call away).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

from seglab.runtime import (
    LaunchSpec,
    LogCursor,
    LogLine,
    NameInUse,
    RunInfo,
    RunLost,
    RunNotFound,
    RunStillRunning,
    RuntimeState,
    SpecError,
)
from seglab.runtime.base import matches

SIGKILL_CODE = 137  # 128 + SIGKILL, what every real runtime reports for a kill


@dataclass(frozen=True)
class Behaviour:
    """How a fake run behaves: the lines it prints at once, then either an exit code
    (``exit_code``) or running until signalled. On SIGTERM it prints ``term_output`` and
    exits ``on_term`` (None: it ignores SIGTERM, so stop escalates to a kill)."""

    output: tuple[str, ...] = ()
    exit_code: int | None = None
    on_term: int | None = 0
    term_output: tuple[str, ...] = ()


@dataclass
class FakeRun:
    """One launched run as the fake holds it."""

    ref: str
    spec: LaunchSpec
    state: RuntimeState
    behaviour: Behaviour
    output: list[str] = field(default_factory=list)

    def line_cursors(self) -> list[LogCursor]:
        """The cursor just after each line (byte offsets, as the process runtime's)."""
        cursors, offset = [], 0
        for line in self.output:
            offset += len(line.encode()) + 1
            cursors.append(LogCursor(offset=offset))
        return cursors


class FakeRuntime:
    """The Runtime protocol in memory (thread-safe: RunManager launches in threads)."""

    def __init__(self, kind: str = "process") -> None:
        self.kind = kind
        self.runs: dict[str, FakeRun] = {}
        self.launched: list[LaunchSpec] = []
        self.calls: list[tuple[str, str]] = []  # (method, ref) of stop/kill/remove
        self.offset = timedelta(0)
        self._refusals: list[tuple[Callable[[LaunchSpec], bool], Exception]] = []
        self._scripts: dict[str, Behaviour] = {}
        self._ids = itertools.count(1)
        self._changed = threading.Condition()

    # -- driving it (the test's side) ------------------------------------------------

    def script(self, name: str, behaviour: Behaviour) -> None:
        """Make the next run launched as ``name`` behave so."""
        self._scripts[name] = behaviour

    def refuse(
        self, error: Exception, matching: Callable[[LaunchSpec], bool] = lambda _: True
    ) -> None:
        """Make the next launch of a spec ``matching`` raise ``error`` (once)."""
        self._refusals.append((matching, error))

    def advance(self, seconds: float) -> None:
        """Move the fake's clock (``started_at``/``finished_at`` of what happens next)."""
        self.offset += timedelta(seconds=seconds)

    def now(self) -> datetime:
        """The fake's clock: the wall clock plus what :meth:`advance` added."""
        return datetime.now(timezone.utc) + self.offset

    def by_name(self, name: str) -> FakeRun:
        """The run launched as ``name`` that is still known."""
        found = [run for run in self.runs.values() if run.spec.name == name]
        if not found:
            known = sorted(run.spec.name for run in self.runs.values())
            raise KeyError(f"no fake run named {name}; known: {known}")
        return found[-1]

    def exit(self, ref: str, code: int, *, oom: bool = False, output: tuple[str, ...] = ()) -> None:
        """End the run with ``code`` (``oom``: as the kernel's OOM killer does)."""
        with self._changed:
            run = self._run(ref)
            run.output.extend(output)
            run.state = replace(
                run.state,
                status="exited",
                exit_code=code,
                oom_killed=oom,
                finished_at=self.now(),
                pid=None,
            )
            self._changed.notify_all()

    def oom(self, ref: str) -> None:
        """The run was OOM-killed (exit 137, ``oom_killed``)."""
        self.exit(ref, SIGKILL_CODE, oom=True)

    def lose(self, ref: str, why: str = "the machine rebooted") -> None:
        """The run ended without an exit code the runtime can vouch for (``dead``)."""
        with self._changed:
            run = self._run(ref)
            run.state = replace(run.state, status="dead", error=why, pid=None)
            self._changed.notify_all()

    def vanish(self, ref: str) -> None:
        """The run was removed behind seglab's back (``docker rm`` by hand)."""
        with self._changed:
            self._run(ref)
            del self.runs[ref]
            self._changed.notify_all()

    # -- the Runtime protocol -------------------------------------------------------

    def check(self) -> None:
        """The fake always answers."""

    def launch(self, spec: LaunchSpec) -> str:
        """Record the run as running (or raise what :meth:`refuse` set for it)."""
        with self._changed:
            for index, (matching, error) in enumerate(self._refusals):
                if matching(spec):
                    del self._refusals[index]
                    raise error
            if any(run.spec.name == spec.name for run in self.runs.values()):
                raise NameInUse(spec.name)
            ref = f"fake-{self.kind}-{next(self._ids)}"
            behaviour = self._scripts.pop(spec.name, Behaviour())
            state = RuntimeState("running", started_at=self.now(), pid=10_000 + len(self.launched))
            run = FakeRun(ref, spec, state, behaviour, list(behaviour.output))
            self.runs[ref] = run
            self.launched.append(spec)
        if behaviour.exit_code is not None:
            self.exit(ref, behaviour.exit_code)
        return ref

    def list(self, labels: Mapping[str, str | None] | None = None) -> list[RunInfo]:
        """Known runs (also ended ones) whose labels match."""
        with self._changed:
            return [
                RunInfo(run.ref, run.spec.name, dict(run.spec.labels), run.state)
                for run in self.runs.values()
                if matches(run.spec.labels, labels)
            ]

    def inspect(self, ref: str) -> RuntimeState:
        """The run's state; RunNotFound once it is removed or vanished."""
        with self._changed:
            return self._run(ref).state

    def logs(
        self,
        ref: str,
        *,
        follow: bool = False,
        since: LogCursor | datetime | None = None,
        tail: int | None = None,
    ) -> Iterator[LogLine]:
        """Whole lines after ``since`` (a LogCursor) or the last ``tail``; ``follow``
        waits for more until the run ends."""
        if isinstance(since, datetime):
            raise SpecError("the fake runtime's log has no timestamps: resume from a LogCursor")
        with self._changed:
            run = self._run(ref)
            cursors = run.line_cursors()
            start = 0
            if since is not None:
                start = sum(1 for cursor in cursors if cursor.offset <= since.offset)
            elif tail is not None:
                start = max(0, len(cursors) - tail)
        position = start
        while True:
            with self._changed:
                run = self._run(ref)
                lines = list(zip(run.output, run.line_cursors(), strict=True))[position:]
                if not lines and follow and run.state.active:
                    self._changed.wait(0.05)
                    continue
            for text, cursor in lines:
                yield LogLine(text, cursor)
            position += len(lines)
            if not follow or not lines:
                return

    def stop(self, ref: str, timeout: float = 10.0) -> None:
        """SIGTERM: the run exits with its ``on_term`` code; one that ignores it is
        killed (at once: the fake has no grace period to wait out)."""
        self.calls.append(("stop", ref))
        run = self._locked_run(ref)
        if not run.state.active:
            return
        behaviour = run.behaviour
        if behaviour.on_term is None:
            self.exit(ref, SIGKILL_CODE)
            return
        self.exit(ref, behaviour.on_term, output=behaviour.term_output)

    def kill(self, ref: str) -> None:
        """SIGKILL: exit 137 (an ended run stays as it was)."""
        self.calls.append(("kill", ref))
        if self._locked_run(ref).state.active:
            self.exit(ref, SIGKILL_CODE)

    def wait(self, ref: str, timeout: float | None = None) -> int:
        """The exit code once the run ends (RunLost for ``dead``, TimeoutError)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:
                state = self._run(ref).state
                if state.status == "dead":
                    raise RunLost(ref)
                if state.status == "exited" and state.exit_code is not None:
                    return state.exit_code
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"fake run {ref} still running after {timeout} s")
                self._changed.wait(left)

    def remove(self, ref: str, force: bool = False) -> None:
        """Forget the run (RunStillRunning for an active one unless ``force``)."""
        self.calls.append(("remove", ref))
        if self._locked_run(ref).state.active:
            if not force:
                raise RunStillRunning(ref)
            self.exit(ref, SIGKILL_CODE)
        with self._changed:
            self._run(ref)
            del self.runs[ref]
            self._changed.notify_all()

    # -- helpers ----------------------------------------------------------------------

    def _run(self, ref: str) -> FakeRun:
        try:
            return self.runs[ref]
        except KeyError:
            raise RunNotFound(ref) from None

    def _locked_run(self, ref: str) -> FakeRun:
        with self._changed:
            return self._run(ref)
