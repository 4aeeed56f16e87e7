"""Runtime kinds: how a run is executed on a host (a domain type, shared by every layer)."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10
    from seglab.runstate import StrEnum

from seglab.errors import RunError

RUN_ID_ENV = "SEGLAB_RUN_ID"
"""The environment variable that holds a process run's id in the trainer and every
process it starts: GPU telemetry attributes processes outside any container by it."""


class RuntimeKind(StrEnum):
    """A runtime: Docker containers, detached processes or Slurm jobs; ``auto`` asks
    seglab to choose (slurm on a Slurm host, else docker when an engine answers)."""

    AUTO = "auto"
    DOCKER = "docker"
    PROCESS = "process"
    SLURM = "slurm"

    @classmethod
    def parse(cls, text: str, *, auto: bool = True) -> RuntimeKind:
        """The kind named ``text`` (``auto`` only where a choice is requested)."""
        allowed = [k for k in cls if auto or k is not cls.AUTO]
        for kind in allowed:
            if kind.value == text:
                return kind
        names = ", ".join(k.value for k in allowed)
        raise RunError(f"unknown runtime {text!r}; choose one of {names}")
