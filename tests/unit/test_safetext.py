"""safe_line over the whole class of terminal sequences: every C0, every C1, CSI with
parameters, OSC/DCS/SOS/PM/APC with each terminator and none, invalid UTF-8, long lines,
and seeded random mixtures of all of them."""

from __future__ import annotations

import random
import re

import pytest

from seglab.safetext import (
    INVALID_MARK,
    MAX_LINE_BYTES,
    SEQUENCE_MARK,
    cut_marker,
    safe_line,
    whole_chars,
)

ESC, BEL, ST7, ST8 = "\x1b", "\x07", "\x1b\\", "\x9c"
UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")
C0 = [chr(c) for c in range(0x20) if chr(c) not in "\t\x1b"]
C1 = [chr(c) for c in range(0x80, 0xA0)]
# String sequences and their two introducers (7-bit ESC + letter, 8-bit C1).
STRINGS = {"OSC": ("\x1b]", "\x9d"), "DCS": ("\x1bP", "\x90"), "SOS": ("\x1bX", "\x98")}
STRINGS |= {"PM": ("\x1b^", "\x9e"), "APC": ("\x1b_", "\x9f")}


def _assert_safe(text: str) -> None:
    found = UNSAFE.search(text)
    assert found is None, f"unsafe {found[0]!r} at {found.start()} in {text!r}"


def test_plain_text_tabs_and_unicode_pass_unchanged() -> None:
    for text in ("", "epoch 3 loss 0.25", "a\tb\tc", "mIoU ≈ 0.71 ✓ 训练 😀", "x" * MAX_LINE_BYTES):
        assert safe_line(text) == text
        assert safe_line(text.encode()) == text


@pytest.mark.parametrize("char", C0, ids=[f"C0-{ord(c):02x}" for c in C0])
def test_every_c0_control_becomes_its_picture(char: str) -> None:
    out = safe_line(f"a{char}b")
    _assert_safe(out)
    assert out == f"a{chr(0x2400 + ord(char))}b"
    assert safe_line(f"a{char}b".encode()) == out


def test_del_and_a_bare_escape_are_marked() -> None:
    assert safe_line("a\x7fb") == "a\u2421b"
    assert safe_line("a\x1b") == f"a{SEQUENCE_MARK}"


@pytest.mark.parametrize("char", C1, ids=[f"C1-{ord(c):02x}" for c in C1])
def test_every_c1_control_is_removed_with_a_mark(char: str) -> None:
    out = safe_line(f"a{char}b")  # as a code point (UTF-8 C2 80..C2 9F)
    _assert_safe(out)
    assert out.startswith(f"a{SEQUENCE_MARK}") and SEQUENCE_MARK in out
    assert safe_line(f"a{char}b".encode()) == out
    # As a raw byte it is not UTF-8 at all.
    assert safe_line(b"a" + bytes([ord(char)]) + b"b") == f"a{INVALID_MARK}b"


def _csi_cases(rng: random.Random, count: int) -> list[str]:
    cases = []
    for _ in range(count):
        params = "".join(rng.choice("0123456789;:<=>?") for _ in range(rng.randrange(0, 12)))
        inter = "".join(rng.choice(" !\"#$%&'()*+,-./") for _ in range(rng.randrange(0, 3)))
        final = chr(rng.randrange(0x40, 0x7F))
        cases.append(params + inter + final)
    return cases


@pytest.mark.parametrize("introducer", ["\x1b[", "\x9b"], ids=["ESC[", "C1-CSI"])
def test_csi_with_any_parameters_is_one_mark(introducer: str) -> None:
    rng = random.Random(13)
    known = ["31m", "0m", "38;2;255;0;0m", "2J", "H", "10;20H", "?25l", "?1049h", "6n", "3 q"]
    for body in known + _csi_cases(rng, 2000):
        out = safe_line(f"left{introducer}{body}right")
        assert out == f"left{SEQUENCE_MARK}right", (body, out)


@pytest.mark.parametrize("introducer", ["\x1b[", "\x9b"], ids=["ESC[", "C1-CSI"])
def test_csi_cut_off_at_the_end_of_the_line_is_removed(introducer: str) -> None:
    for body in ("", "1", "38;2;255", "?10"):
        assert safe_line(f"left{introducer}{body}") == f"left{SEQUENCE_MARK}"


@pytest.mark.parametrize("kind", sorted(STRINGS))
def test_string_sequences_with_each_terminator_and_none(kind: str) -> None:
    rng = random.Random(kind)
    payloads = ["0;pwned title", "52;c;Y3VybCBldmlsLnNofHNo", "8;;http://x.invalid", ""]
    payloads += ["".join(rng.choice("abc;:/=0129 \x08") for _ in range(40)) for _ in range(200)]
    terminators = [ST7, ST8] + ([BEL] if kind == "OSC" else [])
    for introducer in STRINGS[kind]:
        for payload in payloads:
            for end in terminators:
                out = safe_line(f"left{introducer}{payload}{end}right")
                assert out == f"left{SEQUENCE_MARK}right", (introducer, payload, end, out)
            out = safe_line(f"left{introducer}{payload}")  # unterminated: to the line's end
            assert out == f"left{SEQUENCE_MARK}", (introducer, payload, out)


def test_short_escapes_are_one_mark() -> None:
    for seq in ("\x1bc", "\x1b7", "\x1b8", "\x1b(B", "\x1b#8", "\x1b=", "\x1bM", "\x1b%G"):
        assert safe_line(f"a{seq}b") == f"a{SEQUENCE_MARK}b", repr(seq)


def test_invalid_utf8_is_replaced_visibly() -> None:
    cases = {
        b"\xff": INVALID_MARK,
        b"ok\xc3": f"ok{INVALID_MARK}",  # cut in the middle of a character
        b"\xc0\xaf": INVALID_MARK * 2,  # overlong '/'
        b"\xed\xa0\x80": INVALID_MARK * 3,  # an encoded surrogate
        b"\xe2\x82": INVALID_MARK,  # a truncated euro sign
    }
    for raw, expected in cases.items():
        assert safe_line(raw) == expected, raw
    assert safe_line("lone \udcff surrogate") == f"lone {INVALID_MARK} surrogate"


def test_one_trailing_carriage_return_is_a_line_end_others_are_marked() -> None:
    assert safe_line("done\r") == "done"
    assert safe_line(b"10%\r20%\r30%\r") == "10%\u240d20%\u240d30%"


def test_a_long_line_is_cut_with_the_count_of_bytes_left_out() -> None:
    line = "y" * (1024 * 1024)
    out = safe_line(line)
    assert out == "y" * MAX_LINE_BYTES + cut_marker(1024 * 1024 - MAX_LINE_BYTES)
    assert safe_line(line.encode()) == out
    wide = "é" * 40000  # 80,000 bytes: the bytes form cuts at a character boundary
    cut = safe_line(wide.encode())
    assert cut == "é" * (MAX_LINE_BYTES // 2) + cut_marker(80000 - MAX_LINE_BYTES)


def test_a_readers_cut_marker_is_kept_and_added_to() -> None:
    assert safe_line("head\x1b[1m" + cut_marker(500)) == f"head{SEQUENCE_MARK}" + cut_marker(500)
    out = safe_line("z" * (MAX_LINE_BYTES + 10) + cut_marker(500))
    assert out == "z" * MAX_LINE_BYTES + cut_marker(510)


def test_whole_chars_never_splits_a_character() -> None:
    for text in ("a", "é", "€", "😀", "a€😀é"):
        raw = text.encode()
        for end in range(len(raw) + 1):
            keep = whole_chars(raw[:end])
            raw[:keep].decode()  # must not raise
            assert end - keep < 4


def _random_line(rng: random.Random) -> str:
    atoms = [
        ESC,
        BEL,
        ST7,
        ST8,
        "\x9b",
        "\x9d",
        "\x90",
        "[",
        "]",
        "P",
        "_",
        "^",
        "X",
        "\\",
        ";",
        "1",
        "31",
        "m",
        "H",
        "\r",
        "\n",
        "\t",
        "\x00",
        "\x7f",
        "\x85",
        "text",
        "é",
        "😀",
        "\udcff",
    ]
    return "".join(rng.choice(atoms) for _ in range(rng.randrange(0, 60)))


def test_random_mixtures_are_always_safe_and_stable() -> None:
    rng = random.Random(20261129)
    for _ in range(20000):
        line = _random_line(rng)
        out = safe_line(line)
        _assert_safe(out)
        assert safe_line(out) == out, (line, out)
        raw = line.encode("utf-8", "surrogateescape")
        _assert_safe(safe_line(raw))


def test_random_bytes_are_always_safe() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        raw = rng.randbytes(rng.randrange(0, 200))
        out = safe_line(raw)
        _assert_safe(out)
        assert safe_line(out) == out
