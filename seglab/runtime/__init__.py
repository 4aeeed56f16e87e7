"""Runtimes: start, find, watch and end runs (docker containers, detached processes).

Import a backend module (``seglab.runtime.docker``, ``seglab.runtime.process``) where it
is used; this package's top level holds only the runtime-independent pieces.
"""

from __future__ import annotations

from seglab.runtime.base import (
    LogCursor,
    LogLine,
    RestartingRuntime,
    RunInfo,
    Runtime,
    RuntimeState,
    Status,
)
from seglab.runtime.errors import (
    EngineUnavailable,
    HostUnreachable,
    ImageMissing,
    LaunchFailed,
    NameInUse,
    NvidiaRuntimeMissing,
    RunLost,
    RunNotFound,
    RunStillRunning,
    RuntimeFailure,
    SpecError,
    UnknownGpu,
    UnsafeMount,
)
from seglab.runtime.spec import LaunchSpec, Mount, default_user, own_run_dir, parse_mounts

__all__ = [
    "EngineUnavailable",
    "HostUnreachable",
    "ImageMissing",
    "LaunchFailed",
    "LaunchSpec",
    "LogCursor",
    "LogLine",
    "Mount",
    "NameInUse",
    "NvidiaRuntimeMissing",
    "RestartingRuntime",
    "RunInfo",
    "RunLost",
    "RunNotFound",
    "RunStillRunning",
    "Runtime",
    "RuntimeFailure",
    "RuntimeState",
    "SpecError",
    "Status",
    "UnknownGpu",
    "UnsafeMount",
    "default_user",
    "own_run_dir",
    "parse_mounts",
]
