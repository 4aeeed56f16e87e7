"""Docker engine answers as seglab's types: RFC 3339 log and state timestamps, and a
container's state from `docker inspect`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from seglab.runtime.base import RuntimeState, Status

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_STATUSES: dict[str, Status] = {
    "created": "created",
    "running": "running",
    "restarting": "running",
    "paused": "paused",
    "removing": "exited",
    "exited": "exited",
    "dead": "dead",
}


def parse_timestamp_ns(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 timestamp with up to 9 fraction digits."""
    found = _STAMP.match(text.strip())
    if not found:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    whole, fraction, zone = found.groups()
    offset = "+00:00" if zone == "Z" else zone
    seconds = int(datetime.fromisoformat(whole + offset).timestamp())
    return seconds * 1_000_000_000 + int((fraction or "0").ljust(9, "0")[:9])


def datetime_from_ns(ns: int) -> datetime:
    """A UTC datetime from nanoseconds since the epoch (truncated to microseconds)."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=timezone.utc).replace(microsecond=rest // 1000)


def _time(text: str | None) -> datetime | None:
    """A container State time, or None for the engine's zero time."""
    if not text or text.startswith("0001-01-01"):
        return None
    return datetime_from_ns(parse_timestamp_ns(text))


def restart_detail(attrs: Mapping[str, Any]) -> str | None:
    """What the engine's restart policy did to the container (None: nothing yet).

    A container the policy is about to start again is ``restarting``, which counts as
    running: the run is not over until the engine gives up.
    """
    state = attrs.get("State") or {}
    count = int(attrs.get("RestartCount") or 0)
    if state.get("Status") == "restarting":
        # The engine counts the restart it is about to make.
        return f"restarting after exit {state.get('ExitCode')} (engine restart {max(count, 1)})"
    if count:
        return f"restarted {count} time{'s' if count > 1 else ''} by the engine"
    return None


def state_from_attrs(attrs: Mapping[str, Any]) -> RuntimeState:
    """A RuntimeState from `docker inspect` output; ``detail`` is :func:`restart_detail`."""
    state = attrs.get("State") or {}
    status = _STATUSES.get(str(state.get("Status", "")), "dead")
    exited = status in ("exited", "dead")
    return RuntimeState(
        status=status,
        exit_code=int(state["ExitCode"]) if exited and "ExitCode" in state else None,
        oom_killed=bool(state.get("OOMKilled", False)),
        started_at=_time(state.get("StartedAt")),
        finished_at=_time(state.get("FinishedAt")) if exited else None,
        pid=int(state["Pid"]) if state.get("Pid") else None,
        error=state.get("Error") or None,
        detail=restart_detail(attrs),
    )
