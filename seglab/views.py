"""What the CLI and the dashboard show of runs: typed rows, metrics, dashboard snapshots.

The façade (:class:`seglab.workstation.Workstation`) builds them; the CLI prints them and
the dashboard draws them, neither reaching past the façade.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from seglab.kinds import RuntimeKind
from seglab.registry import FINAL_STATUSES, RunRecord, RunStatus

# Statuses whose last message line `seglab ps` prints under the row.
EXPLAINED = frozenset(
    {RunStatus.FAILED, RunStatus.OOM_KILLED, RunStatus.LOST, RunStatus.QUEUED, RunStatus.STARTING}
)


def where(record: RunRecord) -> str:
    """``host:2gpu`` or ``host:cpu``; a multi-node run's members joined by ``+``."""
    parts = record.members or (record,)
    return "+".join(f"{p.host}:{len(p.gpus)}gpu" if p.gpus else f"{p.host}:cpu" for p in parts)


@dataclass(frozen=True)
class MemberRow:
    """One member of a multi-node run."""

    host: str
    gpus: tuple[str, ...]
    run_dir: str | None


@dataclass(frozen=True)
class RunRow:
    """One run as listed (`seglab ps`, the dashboard's runs table)."""

    run_id: str
    recipe: str
    variant: str
    status: RunStatus
    host: str
    gpus: tuple[str, ...]
    where: str
    members: tuple[MemberRow, ...]
    runtime: RuntimeKind
    iteration: int | None
    total_iterations: int | None
    progress: float | None
    eta_s: float | None
    last_loss: float | None
    best_miou: float | None
    img_per_s: float | None
    age_s: float
    exit_code: int | None
    run_dir: str | None
    message: str | None
    queue_position: int | None = None  # a queued run's place in its queue (1 starts first)

    @property
    def ended(self) -> bool:
        """Whether the run has ended (or was lost) and will not change by itself."""
        return self.status in FINAL_STATUSES or self.status == RunStatus.LOST

    @property
    def has_log(self) -> bool:
        """Whether the run has a log to follow yet (queued and starting ones not)."""
        return self.status not in (RunStatus.QUEUED, RunStatus.STARTING)

    @classmethod
    def of(
        cls, record: RunRecord, batch_size: Callable[[], int], now: float | None = None
    ) -> RunRow:
        """The row of ``record``; ``batch_size`` (read only for an ETA) is the run's."""
        progress = None
        if record.total_iters:
            progress = (record.last_iter or 0) / record.total_iters
        eta = None
        if (
            record.img_per_s
            and record.total_iters
            and record.last_iter is not None
            and not record.is_final
        ):
            eta = (record.total_iters - record.last_iter) * batch_size() / record.img_per_s
        return cls(
            run_id=record.run_id,
            recipe=record.recipe,
            variant=record.variant,
            status=RunStatus(record.status),
            host=record.host,
            gpus=tuple(record.gpus),
            where=where(record),
            members=tuple(MemberRow(m.host, m.gpus, m.run_dir or None) for m in record.members),
            runtime=RuntimeKind(record.runtime),
            iteration=record.last_iter,
            total_iterations=record.total_iters,
            progress=progress,
            eta_s=eta,
            last_loss=record.last_loss,
            best_miou=record.best_miou,
            img_per_s=record.img_per_s,
            age_s=(time.time() if now is None else now) - record.created_at,
            exit_code=record.exit_code,
            run_dir=record.run_dir or None,
            message=record.message,
        )

    def to_json(self) -> dict[str, Any]:
        """The documented JSON shape of one run (`seglab ps --json`)."""
        out = asdict(self)
        out["status"] = str(self.status)
        out["runtime"] = str(self.runtime)
        out["gpus"] = list(self.gpus)
        out["members"] = [
            {"host": m.host, "gpus": list(m.gpus), "run_dir": m.run_dir} for m in self.members
        ]
        return out


@dataclass(frozen=True)
class RunMetrics:
    """A run's evaluations and training progress (`seglab metrics`)."""

    run_id: str
    status: RunStatus
    best_miou: float | None
    iteration: int | None
    total_iterations: int | None
    last_loss: float | None
    img_per_s: float | None
    class_names: list[str] | None
    evals: list[dict[str, Any]]
    loss: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        """The documented JSON shape (`seglab metrics --json`)."""
        out = asdict(self)
        out["status"] = str(self.status)
        return out


@dataclass(frozen=True)
class Curves:
    """A run's training loss and evaluation mIoU, as (iteration, value) points."""

    run_id: str
    variant: str
    loss: list[tuple[int, float]]
    miou: list[tuple[int, float]]
    train_seq: int | None = None  # the last train event read (None: none yet)
    eval_seq: int | None = None  # the last eval event read


@dataclass(frozen=True)
class Comparison:
    """One run of an ablation with the numbers the comparison table shows (None: unknown)."""

    run_id: str
    variant: str
    status: RunStatus
    best_miou: float | None
    pixel_acc: float | None
    per_class_iou: tuple[float | None, ...]
    img_per_s: float | None
    time_s: float | None


@dataclass
class Snapshot:
    """What one dashboard poll found: the runs, the selected recipe's curves, and the
    local Docker engines' versions when they were checked this time."""

    rows: list[RunRow]
    curves: list[Curves] = field(default_factory=list)
    engines: dict[str, str] = field(default_factory=dict)
    error: str | None = None
