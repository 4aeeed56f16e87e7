"""Dataset checks: ask a host about a dataset, judge the answer, remember it.

:func:`ask` runs one :mod:`seglab.data.probe` request on a machine (in this process for the
workstation, as one ``python3 -c`` command over SSH for a remote host). :class:`Check` is
one ``scan`` answer judged against the official split sizes; :class:`CheckCache` keeps the
last check of each host and dataset in the state dir (``data-checks.json``) for
``seglab data ls``, the dashboard's host rows (:class:`HostRows`) and the launch check
(:func:`require_data`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seglab.data import probe
from seglab.errors import SeglabError, UnavailableError
from seglab.hosts import Host
from seglab.machines.base import Machine, MachineSync

if TYPE_CHECKING:
    from seglab.recipeschema import DataConfig

KINDS = ("cityscapes", "ade20k", "voc")
OFFICIAL: Mapping[str, Mapping[str, int]] = {
    "cityscapes": {"train": 2975, "val": 500, "test": 1525},
    "ade20k": {"train": 20210, "val": 2000},
    "voc": {"train": 1464, "val": 1449, "trainaug": 10582},
}
"""Images per split as the datasets publish them (VOC trainaug: with SBD's extra labels)."""

REQUIRED: Mapping[str, tuple[str, ...]] = {
    "cityscapes": ("train", "val"),
    "ade20k": ("train", "val"),
    "voc": ("train", "val"),
}
"""The splits a dataset must have to be usable (the trainer reads train and val)."""

CACHE_FILE = "data-checks.json"
FRESH_SECONDS = 24 * 3600.0
_SOURCE = Path(probe.__file__).read_text()


class DataError(SeglabError):
    """A dataset that is missing, incomplete or unreadable where it is needed."""


async def ask(machine: Machine, request: Mapping[str, Any], timeout: float = 600.0) -> Any:
    """The answer of :func:`seglab.data.probe.answer` to ``request`` on ``machine``."""
    if machine.is_local:
        try:
            return await asyncio.to_thread(probe.answer, dict(request))
        except probe.ProbeError as exc:
            raise DataError(str(exc)) from exc
    result = await machine.run(
        ["python3", "-I", "-S", "-c", _SOURCE], stdin=json.dumps(request), timeout=timeout
    )
    if result.returncode == probe.PROBE_FAILED:
        raise DataError(f"{machine.name}: {json.loads(result.stdout)['error']}")
    if result.returncode != 0:
        raise UnavailableError(
            f"{machine.name}: the dataset probe ({request['op']}) failed: "
            f"{result.output[-500:] or f'exit status {result.returncode}'}",
            hint="seglab data needs python3 on the host",
        )
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise UnavailableError(f"{machine.name}: unreadable probe answer: {exc}") from exc


@dataclass(frozen=True)
class Check:
    """One dataset on one host as last scanned (``scan``: the probe's answer)."""

    host: str
    name: str
    scan: Mapping[str, Any]
    checked_at: float

    @property
    def kind(self) -> str | None:
        """cityscapes, ade20k or voc (None when the layout is not recognised)."""
        kind: str | None = self.scan.get("kind")
        return kind

    @property
    def splits(self) -> Mapping[str, Mapping[str, Any]]:
        """Per split: images, labels, missing_labels, examples."""
        splits: Mapping[str, Mapping[str, Any]] = self.scan.get("splits", {})
        return splits

    def problems(self, splits: Sequence[str] | None = None, counts: bool = True) -> list[str]:
        """What is wrong with the dataset for ``splits`` (default: the required ones);
        with ``counts``, a split smaller than the official size is a problem too."""
        where = f"{self.host}:{self.scan.get('root')}"
        if not self.scan.get("present"):
            return [
                f"dataset root {self.scan.get('root')} ({self.name}) does not exist on {self.host}"
            ]
        if self.kind is None:
            return [f"{where} is not in a known layout ({', '.join(KINDS)})"]
        wanted = list(splits) if splits is not None else list(REQUIRED[self.kind])
        found: list[str] = []
        for split in wanted:
            info = self.splits.get(split)
            if info is None or not info["images"]:
                found.append(f"{self.name}: split {split!r} is missing under {where}")
                continue
            if info["missing_labels"]:
                found.append(
                    f"{self.name} {split}: {info['missing_labels']} image(s) without a label "
                    f"(e.g. {', '.join(info['examples'][:3])})"
                )
            official = OFFICIAL[self.kind].get(split)
            if counts and official is not None and info["images"] < official:
                found.append(
                    f"{self.name} {split}: {info['images']} of the {official} official images"
                )
        bad = self.scan.get("bad_files") or []
        if bad:
            found.append(f"{self.name}: unreadable or not an image: {', '.join(bad[:3])}")
        return found

    @property
    def ok(self) -> bool:
        """Present, its required splits complete and every image labelled."""
        return not self.problems()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``seglab data ls --json`` and the cache)."""
        return {
            "host": self.host,
            "name": self.name,
            "checked_at": self.checked_at,
            "ok": self.ok,
            "problems": self.problems(),
            **self.scan,
        }


async def scan(
    machine: Machine, name: str, root: str, kind: str = "auto", deep: bool = False
) -> Check:
    """Scan dataset ``name`` at ``root`` on ``machine`` now."""
    answer = await ask(machine, {"op": "scan", "kind": kind, "root": root, "deep": deep})
    return Check(machine.name, name, answer, time.time())


class CheckCache:
    """The last :class:`Check` of each host and dataset, in ``STATE_DIR/data-checks.json``."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / CACHE_FILE

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data: dict[str, dict[str, Any]] = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise DataError(
                f"cannot read {self.path}: {exc}", hint="delete it; `seglab data ls` rebuilds it"
            ) from exc
        return data

    def get(self, host: str, name: str) -> Check | None:
        """The last check of ``name`` on ``host``, if any."""
        entry = self._read().get(host, {}).get(name)
        if entry is None:
            return None
        return Check(host, name, entry["scan"], entry["checked_at"])

    def by_host(self) -> dict[str, list[Check]]:
        """Every remembered check, per host by dataset name (one read of the file)."""
        return {
            host: [Check(host, n, e["scan"], e["checked_at"]) for n, e in sorted(entries.items())]
            for host, entries in self._read().items()
        }

    def put(self, checks: Sequence[Check]) -> None:
        """Remember ``checks`` (written atomically)."""
        data = self._read()
        for check in checks:
            data.setdefault(check.host, {})[check.name] = {
                "scan": dict(check.scan),
                "checked_at": check.checked_at,
            }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_suffix(f".{os.getpid()}.tmp")
        temp.write_text(json.dumps(data, indent=1))
        try:
            os.replace(temp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()


def compact_row(checks: Sequence[Check]) -> str:
    """The dashboard's host-row form: ``cityscapes ✓ ade20k ✗`` (empty when none)."""
    return " ".join(f"{c.name} {'✓' if c.ok else '✗'}" for c in checks)


class HostRows:
    """Every host's :func:`compact_row` from the stored checks (no host is contacted).

    The file is read again only when it changed (its inode, mtime or size; a write replaces
    it), so a call costs one ``stat``: cheap enough for each dashboard tick."""

    def __init__(self, state_dir: Path) -> None:
        self._cache = CheckCache(state_dir)
        self._stamp: tuple[int, int, int] | None = None
        self._rows: dict[str, str] = {}

    def rows(self) -> dict[str, str]:
        """Host name -> ``cityscapes ✓ ade20k ✗`` (hosts without checks are absent)."""
        try:
            info = self._cache.path.stat()
        except FileNotFoundError:
            self._stamp, self._rows = None, {}
            return {}
        except OSError as exc:
            raise DataError(f"cannot read {self._cache.path}: {exc}") from exc
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            found = self._cache.by_host()
            self._rows = {
                host: row for host, checks in found.items() if (row := compact_row(checks))
            }
            self._stamp = stamp
        return dict(self._rows)


def check_for_launch(
    host: Host,
    data: DataConfig,
    state_dir: Path,
    *,
    machine: MachineSync | None = None,
    max_age: float = FRESH_SECONDS,
) -> Check | None:
    """The check of the recipe's dataset (``data``) on ``host`` a launch decides on (None
    for the synthetic dataset, which needs none).

    It is the last ``seglab data ls`` result when that is younger than ``max_age`` seconds,
    was taken at the same root and found nothing unusable; else a scan made now (in this
    process for a local host, through ``machine``, the host's :class:`MachineSync`, for a
    remote one), which is remembered. Synchronous, for the launch path."""
    if data.dataset == "synthetic":
        return None
    name = data.root_name
    root = host.dataset_root(name)
    cache = CheckCache(state_dir)
    check = cache.get(host.name, name)
    if (
        check is not None
        and time.time() - check.checked_at < max_age
        and check.scan.get("root") == root
        and not check.problems(counts=False)
    ):
        return check
    request = {"op": "scan", "kind": data.dataset, "root": root}
    if host.is_local:
        answer = probe.answer(request)
    elif machine is None:
        raise DataError(f"checking {name} on {host.name} needs the host's machine")
    else:
        answer = machine.runner.call(ask(machine.machine, request), 660.0)
    check = Check(host.name, name, answer, time.time())
    cache.put([check])
    return check


def require_data(
    host: Host,
    data: DataConfig,
    state_dir: Path,
    *,
    machine: MachineSync | None = None,
    splits: Sequence[str] = ("train", "val"),
    strict: bool = False,
) -> list[str]:
    """Refuse a launch whose dataset is unusable on ``host``: raise :class:`DataError`
    naming what is missing (the root, a split of ``splits``, labels, readable files).

    Returns the splits smaller than their official size, for the caller to warn about
    (a deliberate subset is allowed); with ``strict`` those are refused too."""
    check = check_for_launch(host, data, state_dir, machine=machine)
    if check is None:
        return []
    problems = check.problems(splits, counts=strict)
    if problems:
        raise launch_error(host.name, data.root_name, problems)
    return check.problems(splits)


def launch_error(host: str, name: str, problems: Sequence[str]) -> DataError:
    """The error a launch raises when :func:`check_for_launch` found ``problems``."""
    return DataError(
        f"dataset {name!r} on host {host} is not ready: " + "; ".join(problems),
        hint=f"`seglab data ls --host {host}` shows it; `seglab data prepare` or "
        f"`seglab data sync {name} --to {host}` puts it there",
    )
