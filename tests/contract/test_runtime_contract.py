"""The Runtime contract: the same lifecycle cases against every runtime.

What RunManager relies on, and what a new runtime must therefore do: a launched run is
found by its labels (which survive as given), is running, has a log read in whole lines
from a resumable cursor, ends on SIGTERM with the code it chose, on SIGKILL with 137,
reports a non-zero exit code as such, and once removed is gone (RunNotFound). A name in
use is refused (NameInUse) and a running run is not removed without ``force``.
"""

from __future__ import annotations

import pytest

from seglab.runtime import NameInUse, RunNotFound, RunStillRunning, RuntimeState
from tests.contract.conftest import SESSION_LABEL, TERM_CODE, Engine, Script
from tests.fakes.runtime import SIGKILL_CODE

pytestmark = pytest.mark.contract


def texts(engine: Engine, ref: str) -> list[str]:
    """The run's whole log lines so far (what it printed itself)."""
    return engine.own(engine.runtime.logs(ref))


def running(engine: Engine, ref: str) -> RuntimeState:
    """The run's state once it is running (a Slurm job may pend first)."""

    def probe() -> RuntimeState | None:
        state = engine.runtime.inspect(ref)
        return state if state.status == "running" else None

    return engine.eventually(probe, "running state")


def printed(engine: Engine, ref: str, last: str) -> list[str]:
    """The log once ``last`` has appeared in it."""

    def probe() -> list[str] | None:
        lines = texts(engine, ref)
        return lines if lines[-1:] == [last] else None

    return engine.eventually(probe, last)


def test_a_run_is_found_watched_stopped_and_removed(engine: Engine) -> None:
    runtime = engine.runtime
    spec = engine.spec("life", Script(("hello", "ready")), role="lifecycle")
    ref = runtime.launch(spec)

    found = runtime.list({SESSION_LABEL: engine.session, "contract.role": "lifecycle"})
    assert [info.ref for info in found] == [ref]
    assert found[0].name == spec.name
    assert dict(spec.labels).items() <= dict(found[0].labels).items()  # labels survive
    assert runtime.list({SESSION_LABEL: engine.session, "contract.role": "other"}) == []
    assert [i.ref for i in runtime.list({SESSION_LABEL: None, "contract.role": None})] == [ref]

    state = running(engine, ref)
    assert state.active and state.exit_code is None

    assert printed(engine, ref, "ready") == ["hello", "ready"]
    first, second = list(runtime.logs(ref))
    assert engine.own(runtime.logs(ref, since=first.cursor)) == ["ready"]
    assert engine.own(runtime.logs(ref, since=second.cursor)) == []
    assert engine.own(runtime.logs(ref, tail=1)) == ["ready"]

    runtime.stop(ref, timeout=30)
    assert runtime.wait(ref, timeout=engine.patience) == TERM_CODE
    ended = runtime.inspect(ref)
    assert (ended.status, ended.exit_code, ended.active) == ("exited", TERM_CODE, False)
    assert not ended.oom_killed
    assert printed(engine, ref, "term") == ["hello", "ready", "term"]
    assert engine.own(runtime.logs(ref, since=second.cursor)) == ["term"]
    (listed,) = runtime.list({SESSION_LABEL: engine.session})
    assert (listed.ref, listed.state.status, listed.state.exit_code) == (ref, "exited", TERM_CODE)

    runtime.remove(ref)
    with pytest.raises(RunNotFound):
        runtime.inspect(ref)
    assert runtime.list({SESSION_LABEL: engine.session}) == []


def test_kill_ends_a_run_that_ignores_sigterm(engine: Engine) -> None:
    runtime = engine.runtime
    ref = runtime.launch(engine.spec("stubborn", Script(("ready",), on_term=None)))
    running(engine, ref)
    printed(engine, ref, "ready")  # the TERM handler is in place
    runtime.kill(ref)
    state = runtime.inspect(ref)
    assert not state.active
    assert runtime.wait(ref, timeout=engine.patience) == SIGKILL_CODE
    runtime.remove(ref)
    with pytest.raises(RunNotFound):
        runtime.inspect(ref)


def test_a_non_zero_exit_is_reported_with_its_code(engine: Engine) -> None:
    runtime = engine.runtime
    ref = runtime.launch(engine.spec("fails", Script(("bye",), exit_code=7)))
    assert runtime.wait(ref, timeout=engine.patience) == 7
    state = runtime.inspect(ref)
    assert (state.status, state.exit_code, state.active, state.oom_killed) == (
        "exited",
        7,
        False,
        False,
    )
    assert printed(engine, ref, "bye") == ["bye"]
    runtime.remove(ref)  # an ended run needs no force
    with pytest.raises(RunNotFound):
        runtime.inspect(ref)


def test_a_name_in_use_is_refused(engine: Engine) -> None:
    runtime = engine.runtime
    spec = engine.spec("twice", Script(("ready",)))
    ref = runtime.launch(spec)
    try:
        second = runtime.launch(spec)
    except NameInUse:
        assert runtime.inspect(ref).active  # the first run is untouched
        assert [info.ref for info in runtime.list({SESSION_LABEL: engine.session})] == [ref]
        return
    runtime.kill(ref)  # both runs go before the failure (they may share one record)
    runtime.remove(second, force=True)
    pytest.fail(f"{engine.kind}: a second run named {spec.name} was launched ({second})")


def test_a_running_run_is_removed_only_with_force(engine: Engine) -> None:
    runtime = engine.runtime
    ref = runtime.launch(engine.spec("busy", Script(("ready",))))
    with pytest.raises(RunStillRunning):
        runtime.remove(ref)
    assert runtime.inspect(ref).active
    runtime.remove(ref, force=True)
    with pytest.raises(RunNotFound):
        runtime.inspect(ref)


def test_wait_gives_up_after_its_timeout(engine: Engine) -> None:
    runtime = engine.runtime
    ref = runtime.launch(engine.spec("waits", Script(("ready",))))
    with pytest.raises(TimeoutError):
        runtime.wait(ref, timeout=0.3)
    assert runtime.inspect(ref).active


def test_a_ref_of_no_run_is_not_found(engine: Engine) -> None:
    with pytest.raises(RunNotFound):
        engine.runtime.inspect(engine.missing_ref)
