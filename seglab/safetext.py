"""Untrusted run output made safe to show: the one function every sink calls.

A run's output is untrusted input (a dataset's file names, a library's messages, a
colleague's code). :func:`safe_line` turns one line of it into text that cannot drive a
terminal or a widget:

* escape sequences (CSI, OSC, DCS, SOS, PM, APC and the short ``ESC x`` forms, started
  by ``ESC`` or by their 8-bit C1 introducers, terminated or not) become one ``␛``;
* every other C0 control (tab is kept) becomes its Unicode control picture (``␇``,
  ``␍``, ...), DEL becomes ``␡``, any other C1 control becomes ``␛``;
* invalid UTF-8 (and lone surrogates) becomes ``�``;
* a line longer than :data:`MAX_LINE_BYTES` (bytes, or characters of a ``str``) is
  cut there, followed by ``… [N bytes cut]``.

Colour is dropped, not kept: SGR sequences are removed like every other sequence, so the
CLI and the dashboard show the same plain text. One trailing carriage return (a CRLF line
end) is dropped without a marker. The result never holds ESC, a C0 control other than tab,
DEL, a C1 control or a lone surrogate, and ``safe_line(safe_line(x)) == safe_line(x)``.
"""

from __future__ import annotations

import re

MAX_LINE_BYTES = 64 * 1024
"""The longest line shown (bytes, or characters of a ``str``); the rest is cut with a marker."""

SEQUENCE_MARK = "\u241b"  # ␛
INVALID_MARK = "\ufffd"  # �

_CUT = re.compile(r"… \[(\d+) bytes cut\]\Z")

# Any character that needs work: C0 (except tab), DEL, C1, lone surrogates.
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")

# ECMA-48 sequences, each introduced by ESC + Fe or by the equivalent C1 character.
_SEQUENCE = re.compile(
    "|".join(
        (
            # CSI: parameters, intermediates, a final byte (absent when cut off).
            "(?:\x1b\\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?",
            # OSC: up to BEL or ST, or the end of the line.
            "(?:\x1b\\]|\x9d).*?(?:\x07|\x1b\\\\|\x9c|\\Z)",
            # DCS, SOS, PM, APC: up to ST, or the end of the line.
            "(?:\x1b[PX^_]|[\x90\x98\x9e\x9f]).*?(?:\x1b\\\\|\x9c|\\Z)",
            # Any other escape: intermediates and a final byte (ESC c, ESC 7, ESC ( B).
            "\x1b[\x20-\x2f]*[\x30-\x7e]?",
        )
    ),
    re.DOTALL,
)


def cut_marker(count: int) -> str:
    """The marker put where ``count`` bytes of a too long line were cut."""
    return f"… [{count} bytes cut]"


def safe_line(line: str | bytes, *, limit: int = MAX_LINE_BYTES) -> str:
    """One line of untrusted output as safe, visible text (see the module docstring).

    ``bytes`` are cut after ``limit`` bytes and decoded as UTF-8; a ``str`` is cut after
    ``limit`` characters and may already end with a :func:`cut_marker` (from a reader
    that cut the line), whose count is kept and added to. Either way the marker counts
    UTF-8 bytes.
    """
    if isinstance(line, bytes):
        cut = 0
        if len(line) > limit:
            keep = whole_chars(line[:limit])
            cut, line = len(line) - keep, line[:keep]
        text = line.decode("utf-8", "replace")
    else:
        if len(line) <= limit and _UNSAFE.search(line) is None:
            return line  # the common case: not too long and clean
        marker = _CUT.search(line, max(0, len(line) - 64))  # only a marker at the end
        cut = int(marker[1]) if marker else 0
        text = line[: marker.start()] if marker else line
        if len(text) > limit:
            rest = len(text) - limit
            cut += rest if text.isascii() else len(text[limit:].encode("utf-8", "surrogatepass"))
            text = text[:limit]
    if text.endswith("\r"):
        text = text[:-1]
    if _UNSAFE.search(text) is not None:
        text = _UNSAFE.sub(_picture, _SEQUENCE.sub(SEQUENCE_MARK, text))
    return text + cut_marker(cut) if cut else text


def whole_chars(raw: bytes) -> int:
    """The length of ``raw`` without an incomplete UTF-8 character at its end."""
    for back in range(1, min(4, len(raw)) + 1):
        byte = raw[-back]
        if byte & 0xC0 == 0x80:
            continue  # a continuation byte: its lead is further back
        need = (
            2
            if 0xC0 <= byte < 0xE0
            else 3
            if 0xE0 <= byte < 0xF0
            else 4
            if 0xF0 <= byte < 0xF8
            else 1
        )
        return len(raw) - back if need > back else len(raw)
    return len(raw)


def _picture(match: re.Match[str]) -> str:
    code = ord(match[0])
    if code < 0x20:
        return chr(0x2400 + code)  # the control pictures block: ␀ ... ␟
    if code == 0x7F:
        return "\u2421"  # ␡
    if code <= 0x9F:
        return SEQUENCE_MARK  # a C1 control is an escape in one character
    return INVALID_MARK  # a lone surrogate
