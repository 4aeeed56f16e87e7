"""A host's queue as a workstation reaches it: on this machine, or over SSH.

Reading needs no lock and no program on the host: ``queue.json`` is replaced atomically
and ``journal.jsonl`` only grows, so both are read as files through the host's machine.
Changing the queue is one of :mod:`seglab.hostqueue.ops`, run under the host's booking
lock: in-process for a local host, as ``PYTHON -m seglab.hostqueue --op NAME`` on a
remote one (the host's ``python:`` must import seglab).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from seglab.errors import RunError
from seglab.hostqueue import ops
from seglab.hostqueue.store import DIR, HostQueue, parse_journal
from seglab.hosts import Host
from seglab.machines import MachineSync

OP_TIMEOUT_S = 90.0


class QueueUnavailable(RunError):
    """A host's queue cannot be changed from here (no seglab there, or no connection)."""


class QueueAccess:
    """One host's queue files under its runs root ``root`` (a path on that host)."""

    def __init__(self, host: Host, machine: MachineSync, root: str) -> None:
        self.host = host
        self.machine = machine
        self.root = root

    @property
    def dir(self) -> str:
        """The queue's folder on the host."""
        return posixpath.join(self.root, DIR)

    def _read(self, name: str) -> str | None:
        try:
            return self.machine.read_bytes(posixpath.join(self.dir, name)).decode()
        except FileNotFoundError:
            return None

    def exists(self) -> bool:
        """Whether the host has a queue folder (it had a queue once)."""
        return self.machine.exists(self.dir)

    def items(self) -> list[dict[str, Any]]:
        """The queued requests, first to start first."""
        text = self._read("queue.json")
        return [] if text is None else list(json.loads(text))

    def journal(self) -> list[dict[str, Any]]:
        """What the host's runner did (its complete lines)."""
        text = self._read("journal.jsonl")
        return [] if text is None else parse_journal(text)

    def round_mark(self) -> str | None:
        """The runner's last round as the host wrote it (None before any); it changes
        every round while a runner lives (compared, not read as a time: clocks differ)."""
        return self._read("round")

    def op(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run operation ``name`` of :mod:`seglab.hostqueue.ops` on the host."""
        argv = [self.host.python, "-m", "seglab.hostqueue", "--root", self.root, "--op", name]
        try:
            done = self.machine.run(argv, stdin=json.dumps(args), timeout=OP_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise QueueUnavailable(f"{self.host.name}: the host queue: {exc}") from exc
        if done.returncode != 0:
            raise QueueUnavailable(
                f"{self.host.name}: `{self.host.python} -m seglab.hostqueue` exited "
                f"{done.returncode}: {done.output.splitlines()[-1] if done.output else ''}",
                f"the host's runner needs a Python that imports seglab there: "
                f"`pip install seglab` on {self.host.name}, or set `python:` for it in "
                "hosts.yaml",
            )
        # The answer is the last line: a login script may print before it.
        lines = done.stdout.strip().splitlines()
        try:
            answer = json.loads(lines[-1]) if lines else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise QueueUnavailable(
                f"{self.host.name}: `{self.host.python} -m seglab.hostqueue --op {name}` "
                f"gave no answer seglab can read: {done.stdout.strip()[-200:]!r}"
            )
        return answer


class LocalQueueAccess(QueueAccess):
    """The queue of a host that is this machine: operations in-process."""

    @property
    def files(self) -> HostQueue:
        """The queue files as local paths."""
        return HostQueue(Path(self.root))

    def op(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run operation ``name`` in this process."""
        return ops.OPS[name](self.files, args)

    @contextmanager
    def booking(self) -> Iterator[None]:
        """Hold the host's booking lock (a workstation placing runs here itself; a
        remote host's runs are all placed by its runner)."""
        with self.files.booking():
            yield
