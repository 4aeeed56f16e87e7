"""Everything a report or `seglab show` says about one run, read from the registry and the
run directory (through the host's machine, so remote runs' files come over its SSH link)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import yaml

from seglab.errors import SeglabError
from seglab.events import Event
from seglab.registry import RunRecord

SAMPLES_DIR = "samples"
INDEX_FILE = "index.json"


class Files(Protocol):
    """The part of a machine a report reads run files through."""

    def read_bytes(self, path: str, offset: int = 0) -> bytes:
        """A file's bytes."""

    def listdir(self, path: str) -> list[str]:
        """The names in a directory."""

    def exists(self, path: str) -> bool:
        """Whether a path exists."""


class EventSource(Protocol):
    """The part of the registry a report reads."""

    def get_run(self, run_id: str) -> RunRecord:
        """One run's record."""

    def events(self, run_id: str, kind: str | None = None) -> list[Event]:
        """A run's events, of one kind if given."""


@dataclass(frozen=True)
class SampleImage:
    """One sample image of one evaluation: its views as PNG bytes and error-map counts."""

    id: str
    views: dict[str, bytes]
    counts: dict[str, int]


@dataclass
class RunSummary:
    """One run's provenance, numbers and latest samples."""

    run_id: str
    recipe: str
    variant: str
    status: str
    host: str
    gpus: tuple[str, ...]
    runtime: str
    run_dir: str
    recipe_sha: str
    image: str
    resolved: dict[str, Any]
    started_at: float | None
    finished_at: float | None
    exit_code: int | None
    message: str | None
    class_names: list[str]
    evals: list[dict[str, Any]]
    img_per_s: float | None
    versions: dict[str, Any] = field(default_factory=dict)
    gpu_names: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    exports: list[dict[str, Any]] = field(default_factory=list)
    samples_iter: int | None = None
    samples: list[SampleImage] = field(default_factory=list)
    image_digest: str | None = None

    @property
    def best(self) -> dict[str, Any] | None:
        """The evaluation with the highest mIoU."""
        scored = [e for e in self.evals if e.get("miou") is not None]
        return max(scored, key=lambda e: float(e["miou"])) if scored else None

    @property
    def gpu_hours(self) -> float | None:
        """Wall time x GPUs held, in hours (None before the run started or on CPU)."""
        if self.started_at is None or not self.gpus:
            return None
        end = self.finished_at if self.finished_at is not None else self.started_at
        return (end - self.started_at) * len(self.gpus) / 3600


def gather(
    registry: EventSource,
    files_of: Callable[[str], Files],
    run_id: str,
    *,
    images: bool = True,
    image_digest: str | None = None,
) -> RunSummary:
    """The summary of run `run_id`; with `images`, its latest samples' PNGs too."""
    record = registry.get_run(run_id)
    start = registry.events(run_id, "start")
    end = registry.events(run_id, "end")
    checkpoints = sorted({str(e.data["path"]) for e in registry.events(run_id, "checkpoint")})
    first = start[-1].data if start else {}
    resolved = yaml.safe_load(record.resolved_recipe) if record.resolved_recipe else {}
    summary = RunSummary(
        run_id=record.run_id,
        recipe=record.recipe,
        variant=record.variant,
        status=str(record.status),
        host=record.host,
        gpus=tuple(record.gpus),
        runtime=str(record.runtime),
        run_dir=record.run_dir,
        recipe_sha=record.recipe_sha,
        image=str(resolved.get("image", "")),
        resolved=resolved if isinstance(resolved, dict) else {},
        started_at=record.started_at,
        finished_at=record.finished_at,
        exit_code=record.exit_code,
        message=record.message,
        class_names=[str(n) for n in first.get("class_names") or []],
        evals=[e.data for e in registry.events(run_id, "eval")],
        img_per_s=record.img_per_s,
        versions=dict(first.get("versions") or {}),
        gpu_names=[str(n) for n in first.get("gpu_names") or []],
        checkpoints=checkpoints,
        exports=list(end[-1].data.get("exports") or []) if end else [],
        image_digest=image_digest,
    )
    samples = registry.events(run_id, "samples")
    if samples:
        summary.samples_iter = int(samples[-1].data["iter"])
        if images and record.run_dir:
            summary.samples = read_samples(files_of(record.host), record.run_dir, samples[-1].data)
    return summary


def read_samples(files: Files, run_dir: str, index: Mapping[str, Any]) -> list[SampleImage]:
    """The sample images an index (a ``samples`` event's payload) names, read from the run
    dir; the reference image and ground truth are added as views ``image`` and ``gt``."""
    folder = f"{run_dir}/{index['dir']}"
    reference = f"{run_dir}/{SAMPLES_DIR}/reference"
    out = []
    for item in index["images"]:
        name = str(item["id"])
        views = {view: files.read_bytes(f"{folder}/{name}_{view}.png") for view in index["views"]}
        for view in ("image", "gt"):
            path = f"{reference}/{name}_{view}.png"
            if files.exists(path):
                views[view] = files.read_bytes(path)
        counts = {k: int(item[k]) for k in ("correct", "wrong", "ignored") if k in item}
        out.append(SampleImage(name, views, counts))
    return out


def sample_iterations(files: Files, run_dir: str) -> list[int]:
    """The iterations that have complete samples (an index.json) in a run dir, ascending."""
    root = f"{run_dir}/{SAMPLES_DIR}"
    if not files.exists(root):
        return []
    found = []
    for name in files.listdir(root):
        complete = name.startswith("iter_") and name[5:].isdigit()
        if complete and files.exists(f"{root}/{name}/{INDEX_FILE}"):
            found.append(int(name[5:]))
    return sorted(found)


def read_index(files: Files, run_dir: str, iteration: int) -> dict[str, Any]:
    """The index.json of one evaluation's samples."""
    raw = files.read_bytes(f"{run_dir}/{SAMPLES_DIR}/iter_{iteration}/{INDEX_FILE}")
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise SeglabError(f"{run_dir}: samples index of iter {iteration} is not an object")
    return data


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``dotted.key -> value``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def recipe_diff(base: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``key -> (base value, other value)`` for every dotted key that differs (name and
    variant aside)."""
    left, right = flatten(base), flatten(other)
    skip = {"name", "variant", "description"}
    return {
        key: (left.get(key), right.get(key))
        for key in sorted(left.keys() | right.keys())
        if key not in skip and left.get(key) != right.get(key)
    }
