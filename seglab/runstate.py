"""What the registry holds about a run: its status, its record, its members, queue items and
intents, and the errors naming a run; plain data, shared by every layer."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from seglab.errors import SeglabError, did_you_mean

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10

    class StrEnum(str, Enum):
        """`enum.StrEnum` for Python 3.10."""

        def __str__(self) -> str:
            return str(self.value)


class RunStatus(StrEnum):
    """Where a run is in its life."""

    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    OOM_KILLED = "oom_killed"
    STOPPED = "stopped"
    KILLED = "killed"
    LOST = "lost"


FINAL_STATUSES = frozenset(
    {
        RunStatus.FINISHED,
        RunStatus.FAILED,
        RunStatus.OOM_KILLED,
        RunStatus.STOPPED,
        RunStatus.KILLED,
    }
)


class RegistryError(SeglabError):
    """The registry file cannot be used (for example, a newer seglab wrote it)."""


class UnusableRegistryError(RegistryError):
    """A registry file that cannot be opened as this seglab's registry; ``reason`` says why."""

    def __init__(self, path: Path, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the registry {path} cannot be used: {reason}")


class UnknownRunError(SeglabError):
    """A run id that the registry does not hold."""

    def __init__(self, run_id: str, known: Iterable[str] = ()) -> None:
        self.run_id = run_id
        super().__init__(
            f"no run {run_id!r} in the registry{did_you_mean(run_id, known)}",
            "`seglab ps --all` lists every run",
        )


class AmbiguousRunError(SeglabError):
    """A run id prefix that more than one run starts with."""

    def __init__(self, prefix: str, matches: Sequence[str]) -> None:
        self.prefix = prefix
        self.matches = list(matches)
        shown = ", ".join(self.matches[:10]) + (", ..." if len(self.matches) > 10 else "")
        super().__init__(
            f"{prefix!r} names {len(self.matches)} runs: {shown}",
            "type more of the run id",
        )


@dataclass(frozen=True)
class Member:
    """One host's part of a multi-node run: its GPUs, its container/process, its run dir."""

    host: str
    gpus: tuple[str, ...] = ()
    handle: str | None = None
    run_dir: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Member:
        """Inverse of :func:`dataclasses.asdict`."""
        return cls(
            str(data["host"]),
            tuple(data.get("gpus") or ()),
            data.get("handle"),
            str(data.get("run_dir") or ""),
        )


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """One run as the registry knows it (times are Unix seconds; unknown values None)."""

    run_id: str
    recipe: str
    variant: str
    recipe_sha: str = ""
    resolved_recipe: str = ""
    host: str
    gpus: tuple[str, ...] = ()
    runtime: str
    handle: str | None = None
    run_dir: str = ""
    status: RunStatus = RunStatus.QUEUED
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    best_miou: float | None = None
    last_iter: int | None = None
    total_iters: int | None = None
    last_loss: float | None = None
    img_per_s: float | None = None
    message: str | None = None
    members: tuple[Member, ...] = ()  # a multi-node run's members, member 0 first

    @property
    def is_final(self) -> bool:
        """True once the run has ended and will not change by itself."""
        return self.status in FINAL_STATUSES


RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunRecord))


@dataclass(frozen=True)
class QueueItem:
    """A pending (or claimed) launch: the run and its placement request."""

    id: int
    run_id: str
    request: dict[str, Any]
    created_at: float
    state: str


@dataclass(frozen=True)
class IntentRow:
    """A lifecycle operation's intent: what ``owner`` (a seglab process) set out to do."""

    run_id: str
    op: str
    owner: str
    created_at: float
    detail: dict[str, Any]
