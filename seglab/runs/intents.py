"""Write-ahead intents: every lifecycle operation (launch, stop, kill, remove) writes what
it is about to do to the registry before its first side effect and clears it when done, so
a seglab killed at any instant leaves an intent that the next seglab finishes or rolls back
(see :mod:`seglab.runs.recover`).

:func:`fault_point` marks each step boundary; ``SEGLAB_FAULT=<step>`` makes the process
SIGKILL itself there (the fault suite's hook; a no-op otherwise).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from seglab.registry import IntentRow, Member, Registry, RunRecord, RunStatus
from seglab.runtime import procwrap
from seglab.runtime.process import process_alive

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10
    from seglab.runstate import StrEnum

FAULT_ENV = "SEGLAB_FAULT"


class Op(StrEnum):
    """The operations that write an intent (the run's transient state while they act)."""

    LAUNCHING = "launching"
    STOPPING = "stopping"
    KILLING = "killing"
    REMOVING = "removing"


def fault_point(step: str) -> None:
    """SIGKILL this process when ``SEGLAB_FAULT`` names ``step`` (fault injection)."""
    if os.environ.get(FAULT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def this_owner() -> str:
    """``<pid>:<start time>:<boot id>``: this process, unambiguously, for this boot."""
    pid = os.getpid()
    return f"{pid}:{procwrap.proc_start_time(pid)}:{procwrap.boot_id()}"


def owner_alive(owner: str) -> bool:
    """Whether the seglab process that wrote an intent still runs."""
    pid, start, boot = owner.split(":", 2)
    return boot == procwrap.boot_id() and process_alive(int(pid), int(start))


def record_to_json(record: RunRecord) -> dict[str, Any]:
    """A run record as plain JSON values (for an intent's detail)."""
    data = dataclasses.asdict(record)
    data["status"] = str(record.status)
    return data


def record_from_json(data: Mapping[str, Any]) -> RunRecord:
    """The inverse of :func:`record_to_json`."""
    values = dict(data)
    values["gpus"] = tuple(values["gpus"])
    values["members"] = tuple(Member.from_dict(m) for m in values["members"])
    values["status"] = RunStatus(values["status"])
    return RunRecord(**values)


class Journal:
    """Writes and clears this process's intents in the registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @contextmanager
    def intent(
        self, run_id: str, op: Op, detail: Mapping[str, Any] | None = None
    ) -> Iterator[None]:
        """Hold an intent on ``run_id`` for the block: written before it, cleared after it
        (also when it raises: the block's own error handling has undone what it did)."""
        owner = this_owner()
        self.registry.set_intent(run_id, op, owner, detail or {})
        try:
            yield
        finally:
            self.registry.clear_intent(run_id, owner)

    def note(self, run_id: str, op: Op, detail: Mapping[str, Any]) -> None:
        """Replace the detail of this process's intent on ``run_id`` (what it knows now)."""
        self.registry.set_intent(run_id, op, this_owner(), detail)

    def orphans(self) -> list[IntentRow]:
        """Intents whose seglab process has died: operations cut short."""
        return [row for row in self.registry.intents() if not owner_alive(row.owner)]

    def holder(self, run_id: str) -> IntentRow | None:
        """The live intent on ``run_id`` (another seglab acting on it now), if any."""
        for row in self.registry.intents():
            if row.run_id == run_id and owner_alive(row.owner):
                return row
        return None
