"""Reading nvidia-smi values: every absent-value token becomes ``None``, never a number.

The driver answers ``[N/A]``, ``N/A``, ``[Not Supported]``, ``[Insufficient Permissions]``,
``[Unknown Error]``, ``[Requested functionality has been deprecated]`` (and, on a sick
board, ``[GPU is lost]``) where it has no value. Any bracketed token is such a message, so
the rule is: a value is a number only when it reads as one.
"""

from __future__ import annotations

import re

ABSENT_TOKENS = frozenset(
    {
        "",
        "N/A",
        "[N/A]",
        "Not Supported",
        "[Not Supported]",
        "[Insufficient Permissions]",
        "[Unknown Error]",
        "[Requested functionality has been deprecated]",
        "[GPU is lost]",
    }
)

# A number, optionally followed by a unit as nvidia-smi prints it without `nounits`.
_NUMBER = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:\s*(?:%|[A-Za-z]+))?$")


def is_absent(token: str) -> bool:
    """Whether a CSV cell says "no value" (any bracketed driver message counts)."""
    text = token.strip()
    return text in ABSENT_TOKENS or (text.startswith("[") and text.endswith("]"))


def text(token: str) -> str | None:
    """The cell as a string, or None when it is an absent-value token."""
    return None if is_absent(token) else token.strip()


def number(token: str) -> float | None:
    """The cell as a float (a trailing unit such as ``W``, ``MiB`` or ``%`` is allowed)."""
    if is_absent(token):
        return None
    match = _NUMBER.match(token.strip())
    return float(match.group(1)) if match else None


def integer(token: str) -> int | None:
    """The cell as an int: decimal (with an optional unit) or ``0x`` hexadecimal."""
    if is_absent(token):
        return None
    value = token.strip()
    if value.lower().startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            return None
    parsed = number(value)
    if parsed is None or not parsed.is_integer():
        return None
    return int(parsed)


# NVML clocks-event (throttle) reason bits, as nvml.h defines them.
THROTTLE_BITS: tuple[tuple[int, str], ...] = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
)


def throttle_reasons(mask: int | None) -> tuple[str, ...] | None:
    """The names of the active clocks-event reasons in an NVML bit mask."""
    if mask is None:
        return None
    return tuple(name for bit, name in THROTTLE_BITS if mask & bit)
