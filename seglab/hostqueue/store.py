"""The files of a host queue, under ``<runs root>/.seglab-queue/``.

- ``queue.json``: the queued variants in order, each with its full launch request;
  rewritten atomically (a temporary file renamed over it) under the booking lock.
- ``book.lock``: the booking lock (``fcntl.flock``). Whoever places runs on the host's
  GPUs holds it from reading the GPUs' state to the run's start: the runner, and a
  workstation launching on that host directly; so a GPU is never booked twice.
- ``runner.lock`` / ``runner.pid``: held for the runner's whole life (one runner per host).
- ``host.json``: the host's settings (GPUs, engine socket, datasets) for the runner.
- ``round``: when the runner last finished a round (a submission waits for the next one).
- ``journal.jsonl``: what the runner did, one JSON object a line: ``started`` (with the
  run's handle, GPUs and run dir), ``failed`` (could not start) and ``ended`` (the
  notifications a workstation reads on reattach).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TextIO

from seglab.hosts import Host

DIR = ".seglab-queue"
HOST_KEYS = (
    "kind",
    "docker_socket",
    "nvidia_smi",
    "telemetry",
    "telemetry_interval",
    "gpu_memory_threshold_mib",
    "cpu_slots",
    "node_address",
    "node_interface",
)
"""The settings of a host a queued request carries (the runner's host is local to it)."""


def host_settings(host: Host) -> dict[str, Any]:
    """What a queued request carries of its host (the runner rebuilds it from this)."""
    settings = {key: getattr(host, key) for key in HOST_KEYS}
    return {"name": host.name, "datasets": dict(host.datasets), **settings}


def host_of(settings: Mapping[str, Any], root: Path) -> Host:
    """The host as its runner sees it: local, with ``root`` as its runs root."""
    values = {key: settings[key] for key in HOST_KEYS if key in settings}
    datasets = MappingProxyType(dict(settings.get("datasets", {})))
    return Host(name=settings["name"], ssh=None, runs_root=root, datasets=datasets, **values)


@dataclass(frozen=True)
class HostQueue:
    """The queue files of one host, as paths on that host."""

    root: Path  # the host's runs root

    @property
    def dir(self) -> Path:
        """The folder of the queue files."""
        return self.root / DIR

    @property
    def queue_file(self) -> Path:
        """The queued launch requests, in order."""
        return self.dir / "queue.json"

    @property
    def journal_file(self) -> Path:
        """What the runner did (started, failed, ended), one JSON object a line."""
        return self.dir / "journal.jsonl"

    @property
    def host_file(self) -> Path:
        """The host's settings as the workstation that queued last knows them."""
        return self.dir / "host.json"

    @property
    def round_file(self) -> Path:
        """When the runner last finished a round (seconds since the epoch)."""
        return self.dir / "round"

    @property
    def pid_file(self) -> Path:
        """The pid of the runner while it lives."""
        return self.dir / "runner.pid"

    @property
    def log_file(self) -> Path:
        """The runner's stdout and stderr."""
        return self.dir / "runner.log"

    @property
    def state_dir(self) -> Path:
        """The runner's own registry (the runs it knows of on this host)."""
        return self.dir / "state"

    @contextmanager
    def booking(self) -> Iterator[None]:
        """Hold the booking lock (blocking) while placing and starting runs."""
        with self._lock_file("book.lock") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    @contextmanager
    def _lock_file(self, name: str) -> Iterator[TextIO]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / name, "a+", encoding="utf-8") as handle:
            yield handle

    def try_runner_lock(self) -> TextIO | None:
        """The runner lock's open file (held until closed), or None when a runner lives."""
        self.dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.dir / "runner.lock", "a+", encoding="utf-8")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        self.pid_file.write_text(f"{os.getpid()}\n")
        return handle

    def has_runner(self) -> bool:
        """Whether a runner holds this host's runner lock now."""
        with self._lock_file("runner.lock") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False

    def items(self) -> list[dict[str, Any]]:
        """The queued launch requests, first to start first (hold the booking lock)."""
        if not self.queue_file.exists():
            return []
        items: list[dict[str, Any]] = json.loads(self.queue_file.read_text(encoding="utf-8"))
        return items

    def write(self, items: list[dict[str, Any]]) -> None:
        """Replace the queue atomically (hold the booking lock)."""
        self._replace(self.queue_file, json.dumps(items, indent=1))

    def _replace(self, path: Path, text: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)

    def mark_round(self) -> None:
        """Record that the runner finished a round now."""
        self._replace(self.round_file, f"{time.time()!r}\n")

    def last_round(self) -> float:
        """When the runner last finished a round (0 before any)."""
        try:
            return float(self.round_file.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return 0.0

    def host_settings(self) -> dict[str, Any] | None:
        """The host's settings written by the last workstation that queued here."""
        if not self.host_file.exists():
            return None
        settings: dict[str, Any] = json.loads(self.host_file.read_text(encoding="utf-8"))
        return settings

    def set_host(self, settings: Mapping[str, Any]) -> None:
        """Write the host's settings (atomically; hold the booking lock)."""
        self._replace(self.host_file, json.dumps(settings, indent=1))

    def note(self, kind: str, run_id: str, **fields: Any) -> None:
        """Append one journal line (a single write: lines never interleave)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"kind": kind, "run_id": run_id, "time": time.time(), **fields})
        with open(self.journal_file, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def journal(self) -> list[dict[str, Any]]:
        """Every journal line (a torn last line, still being written, is left out)."""
        if not self.journal_file.exists():
            return []
        return parse_journal(self.journal_file.read_text(encoding="utf-8"))


def parse_journal(text: str) -> list[dict[str, Any]]:
    """The complete lines of a journal's text."""
    out: list[dict[str, Any]] = []
    for line in text.splitlines(keepends=True):
        if line.endswith("\n") and line.strip():
            out.append(json.loads(line))
    return out


def latest(journal: list[dict[str, Any]]) -> Mapping[str, dict[str, Any]]:
    """Each run's last journal line."""
    return {entry["run_id"]: entry for entry in journal}
