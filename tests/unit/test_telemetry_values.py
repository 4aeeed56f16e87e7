"""Absent-value tokens never become numbers; units and hex masks are read correctly."""

from __future__ import annotations

import pytest

from seglab.telemetry import values

ABSENT = [
    "[N/A]",
    "N/A",
    "[Not Supported]",
    "[Insufficient Permissions]",
    "[Unknown Error]",
    "[Requested functionality has been deprecated]",
    "[GPU is lost]",
    "",
    "  [N/A] ",
]


@pytest.mark.parametrize("token", ABSENT)
def test_absent_tokens_are_none(token: str) -> None:
    assert values.is_absent(token)
    assert values.number(token) is None
    assert values.integer(token) is None
    assert values.text(token) is None


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("631.95 W", 631.95),
        ("100 %", 100.0),
        ("19818 MiB", 19818.0),
        ("0", 0.0),
        ("1980 MHz", 1980.0),
        ("0 us", 0.0),
        ("-3.5", -3.5),
    ],
)
def test_numbers_with_and_without_units(token: str, expected: float) -> None:
    assert values.number(token) == expected


def test_zero_is_a_value_not_an_absence() -> None:
    assert values.number("0 %") == 0.0
    assert values.integer("0") == 0


def test_words_are_not_numbers() -> None:
    assert values.number("Disabled") is None
    assert values.integer("P0") is None
    assert values.text("Disabled") == "Disabled"


def test_hex_masks_and_throttle_reasons() -> None:
    assert values.integer("0x0000000000000004") == 4
    assert values.integer("0xZZ") is None
    assert values.integer("2.5") is None
    assert values.throttle_reasons(0x4 | 0x40) == ("sw_power_cap", "hw_thermal_slowdown")
    assert values.throttle_reasons(0) == ()
    assert values.throttle_reasons(None) is None
