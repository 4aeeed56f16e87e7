"""The façade's run operations: rows, stop/kill/resume/remove, logs, metrics, curves.

:class:`seglab.workstation.Workstation` delegates to a :class:`RunDesk`, so the CLI and
the dashboard never hold the run manager or the registry themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

from seglab.registry import Registry, RunRecord, RunStatus
from seglab.runs import RunManager, resolved_recipe
from seglab.runtime import LogLine
from seglab.views import Comparison, Curves, RunMetrics, RunRow


class RunDesk:
    """Run operations over a run manager and its registry (both made on first use)."""

    def __init__(
        self,
        manager: Callable[[], RunManager],
        registry: Callable[[], Registry],
        pump_queue: Callable[[], list[RunRecord]],
        positions: Callable[[], dict[str, int]] = dict,
    ) -> None:
        """``positions``: each queued run's place in its queue (host queue or this
        workstation's), 1 starting first."""
        self._manager = manager
        self._registry = registry
        self._pump_queue = pump_queue
        self._positions = positions

    @staticmethod
    def row(record: RunRecord) -> RunRow:
        """The row of one run."""
        return RunRow.of(record, lambda: resolved_recipe(record).train.batch_size)

    def find(self) -> list[str]:
        """Adopt runs the registry lacks (after another seglab was killed); their ids."""
        return self._manager().reconcile()

    def rows(self, include_final: bool = False) -> list[RunRow]:
        """Every run that can still change, refreshed (with the ended ones if asked); a
        queued run with its place in its queue."""
        rows = [self.row(r) for r in self._manager().refresh_all(include_final=include_final)]
        if not any(row.status == RunStatus.QUEUED for row in rows):
            return rows
        places = self._positions()
        return [
            replace(row, queue_position=places.get(row.run_id))
            if row.status == RunStatus.QUEUED
            else row
            for row in rows
        ]

    def show(self, run_id: str) -> RunRow:
        """One run, refreshed."""
        return self.row(self._manager().refresh(self._registry().get_run(run_id)))

    def watch(self, run_ids: Iterable[str]) -> list[RunRow]:
        """Start queued runs whose GPUs are free, then the named runs, refreshed."""
        self._pump_queue()
        return [self.show(run_id) for run_id in run_ids]

    def stop(self, run_id: str, timeout: float = 60.0) -> RunRow:
        """Stop a run gracefully (SIGTERM, ``timeout`` s of grace, then SIGKILL)."""
        return self.row(self._manager().stop(run_id, timeout=timeout))

    def kill(self, run_id: str) -> RunRow:
        """Kill a run now."""
        return self.row(self._manager().kill(run_id))

    def resume(self, run_id: str) -> RunRow:
        """Start an ended run again from its last checkpoint."""
        return self.row(self._manager().resume(run_id))

    def remove(self, run_id: str, purge: bool = False, force: bool = False) -> None:
        """Forget a run (its run dir stays unless ``purge``)."""
        self._manager().remove(run_id, purge=purge, force=force)

    def logs(
        self, run_id: str, follow: bool = False, tail: int | None = None, member: int = 0
    ) -> Iterator[LogLine]:
        """A run's log as whole lines (of member ``member``), followed if asked."""
        return self._manager().logs(run_id, follow=follow, tail=tail, member=member)

    def metrics(self, run_id: str) -> RunMetrics:
        """A run's evaluations and training progress, refreshed."""
        registry = self._registry()
        record = self._manager().refresh(registry.get_run(run_id))
        evals = [e.data | {"seq": e.seq, "time": e.time} for e in registry.events(run_id, "eval")]
        start = registry.events(run_id, kind="start")
        return RunMetrics(
            run_id=record.run_id,
            status=RunStatus(record.status),
            best_miou=record.best_miou,
            iteration=record.last_iter,
            total_iterations=record.total_iters,
            last_loss=record.last_loss,
            img_per_s=record.img_per_s,
            class_names=start[-1].data.get("class_names") if start else None,
            evals=evals,
            loss=[
                {"iter": e.data["iter"], "loss": e.data["loss"]}
                for e in registry.events(run_id, kind="train")
            ],
        )

    def curves(self, run_id: str, since: Curves | None = None) -> Curves:
        """The loss and mIoU curves of a run, from its ingested events; ``since`` (the
        run's curves from an earlier call) is extended by the events after it only."""
        registry = self._registry()
        record = registry.get_run(run_id)
        after = (None, None) if since is None else (since.train_seq, since.eval_seq)
        trains = registry.events(run_id, kind="train", after_seq=after[0])
        evals = registry.events(run_id, kind="eval", after_seq=after[1])
        loss = [
            (int(e.data["iter"]), float(e.data["loss"]))
            for e in trains
            if e.data.get("loss") is not None
        ]
        miou = [
            (int(e.data["iter"]), float(e.data["miou"]))
            for e in evals
            if e.data.get("miou") is not None
        ]
        if since is None:
            return Curves(
                run_id,
                record.variant,
                loss,
                miou,
                trains[-1].seq if trains else None,
                evals[-1].seq if evals else None,
            )
        return Curves(
            run_id,
            record.variant,
            since.loss + loss,
            since.miou + miou,
            trains[-1].seq if trains else since.train_seq,
            evals[-1].seq if evals else since.eval_seq,
        )

    def comparison(self, run_ids: Iterable[str], now: float | None = None) -> list[Comparison]:
        """Per run: best mIoU with the pixel accuracy and per-class IoU of that evaluation,
        img/s and wall time (``now`` ends the time of runs still going)."""
        registry = self._registry()
        rows = []
        for run_id in run_ids:
            record = registry.get_run(run_id)
            evals = [
                e.data
                for e in registry.events(run_id, kind="eval")
                if e.data.get("miou") is not None
            ]
            best = max(evals, key=lambda d: float(d["miou"])) if evals else None
            end = record.finished_at or (now if now is not None else time.time())
            rows.append(
                Comparison(
                    run_id=run_id,
                    variant=record.variant,
                    status=RunStatus(record.status),
                    best_miou=record.best_miou if best is None else float(best["miou"]),
                    pixel_acc=None if best is None else best.get("pixel_acc"),
                    per_class_iou=tuple(best.get("per_class_iou") or ()) if best else (),
                    img_per_s=record.img_per_s,
                    time_s=None if record.started_at is None else end - record.started_at,
                )
            )
        return rows

    def class_names(self, run_id: str) -> list[str] | None:
        """The class names a run's trainer announced in its start event."""
        start = self._registry().events(run_id, kind="start")
        names = start[-1].data.get("class_names") if start else None
        return [str(n) for n in names] if names else None
