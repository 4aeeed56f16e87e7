"""`seglab show RUN`: one run's provenance and summary, as text or JSON."""

from __future__ import annotations

import time
from typing import Any

from seglab.report.gather import RunSummary, recipe_diff


def _when(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


def show_json(run: RunSummary, base: dict[str, Any] | None) -> dict[str, Any]:
    """The documented `seglab show --json` document."""
    best = run.best
    overrides = recipe_diff(base, run.resolved) if base is not None else {}
    return {
        "run_id": run.run_id,
        "recipe": run.recipe,
        "variant": run.variant,
        "recipe_sha": run.recipe_sha,
        "overrides": {key: value for key, (_, value) in overrides.items()},
        "image": run.image,
        "image_digest": run.image_digest,
        "runtime": run.runtime,
        "host": run.host,
        "gpus": [
            {"uuid": uuid, "name": run.gpu_names[i] if i < len(run.gpu_names) else None}
            for i, uuid in enumerate(run.gpus)
        ],
        "versions": run.versions,
        "status": run.status,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "exit_code": run.exit_code,
        "message": run.message,
        "best_miou": None if best is None else best["miou"],
        "best_iter": None if best is None else best["iter"],
        "evaluations": len(run.evals),
        "gpu_hours": run.gpu_hours,
        "run_dir": run.run_dir,
        "checkpoints": [f"{run.run_dir}/{p}" for p in run.checkpoints],
        "exports": [
            {**e, "path": f"{run.run_dir}/{e['path']}"} if "path" in e else e for e in run.exports
        ],
        "samples_iter": run.samples_iter,
    }


def show_text(doc: dict[str, Any]) -> str:
    """The human-readable form of :func:`show_json`'s document."""
    versions = ", ".join(f"{k} {v}" for k, v in doc["versions"].items() if v is not None)
    gpus = ", ".join(f"{g['name'] or '?'} ({g['uuid']})" for g in doc["gpus"]) or "none (CPU)"
    best = doc["best_miou"]
    lines = [
        f"run        {doc['run_id']}",
        f"recipe     {doc['recipe']} (sha {doc['recipe_sha'] or '-'}), variant {doc['variant']}",
    ]
    for key, value in doc["overrides"].items():
        lines.append(f"  override {key} = {value!r}")
    lines += [
        f"image      {doc['image'] or '-'} ({doc['image_digest'] or 'digest unknown'})",
        f"where      {doc['runtime']} on {doc['host']}; GPUs: {gpus}",
        f"versions   {versions or '- (the trainer has not started)'}",
        f"status     {doc['status']} (exit {_or_dash(doc['exit_code'])})",
        f"started    {_when(doc['started_at']) or '-'}",
        f"ended      {_when(doc['finished_at']) or '-'}",
        "best       "
        + (
            f"mIoU {100 * best:.2f}% at iter {doc['best_iter']} ({doc['evaluations']} evaluations)"
            if best is not None
            else "- (no evaluation yet)"
        ),
        f"run dir    {doc['run_dir'] or '-'}",
    ]
    lines += [f"checkpoint {path}" for path in doc["checkpoints"]]
    for export in doc["exports"]:
        lines.append(
            f"export     {export.get('format')}: {export.get('path') or export.get('error')}"
        )
    if doc["samples_iter"] is not None:
        lines.append(f"samples    {doc['run_dir']}/samples/iter_{doc['samples_iter']}")
    if doc["message"]:
        lines.append(f"message    {doc['message']}")
    return "\n".join(lines)
