"""`seglab.yamlpos` reads within bounds: size, expanded values, nesting; refusals are located."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from seglab.yamlpos import MAX_BYTES, MAX_DEPTH, MAX_NODES, ConfigError, load_file, load_text


def laughs(levels: int = 9, width: int = 9, indent: str = "") -> str:
    """A "billion laughs" document: each level a list of `width` aliases to the one above."""
    lines = [f"{indent}l0: &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        refs = ", ".join([f"*l{level - 1}"] * width)
        lines.append(f"{indent}l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\n"


def refusal(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(text, "doc.yaml")
    (problem,) = info.value.problems
    return str(problem)


def test_an_alias_bomb_is_refused_at_the_alias_with_little_memory() -> None:
    text = laughs()  # 9 ** 9 = 387 million values once expanded
    tracemalloc.start()
    try:
        message = refusal(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # keys and values counted: 11 + 92 + 821 + 7382 + 66431 passes 50 000 in l4 (line 5)
    assert message == (
        f"doc.yaml:5: (yaml): more than {MAX_NODES} values once aliases are expanded "
        "(an alias bomb?); write the values out or use fewer aliases"
    )
    assert peak < 5 * 2**20, f"refusing the bomb took {peak} bytes"


def test_aliases_within_the_cap_expand_as_before() -> None:
    doc = load_text("base: &b {lr: 0.1, nested: [1, 2]}\nother: *b\nlist: [*b, *b]\n", "d.yaml")
    assert doc.data["other"] == doc.data["list"][1] == {"lr": 0.1, "nested": [1, 2]}
    assert doc.data["other"] is not doc.data["base"]  # expanded, not shared
    assert doc.line_of(("other",)) == 2
    assert load_text(laughs(levels=4), "d.yaml").data["l3"][8][8][8] == ["lol"] * 9


def test_a_self_referencing_alias_is_refused() -> None:
    assert refusal("a: 1\nloop: &x [1, *x]\n") == "doc.yaml:2: (yaml): alias *x refers to itself"
    assert refusal("loop: &x {again: *x}\n").startswith("doc.yaml:1: (yaml): alias *x")


def test_deep_nesting_is_refused_at_its_line() -> None:
    text = "ok: 1\ndeep: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n"
    assert refusal(text) == f"doc.yaml:2: (yaml): nested deeper than {MAX_DEPTH} levels"
    block = "".join(f"{'  ' * i}k{i}:\n" for i in range(MAX_DEPTH + 2))
    assert refusal(block).endswith(f"(yaml): nested deeper than {MAX_DEPTH} levels")
    shallow = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    assert load_text(shallow, "d.yaml").data is not None


def test_a_file_over_the_size_cap_is_not_read_past_it(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    line = "key_" + "x" * 60 + ": 1\n"
    with path.open("w") as handle:
        for number in range(3 * MAX_BYTES // len(line)):
            handle.write(line.replace("key_", f"k{number}_"))
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as info:
            load_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    (problem,) = info.value.problems
    assert problem.file == str(path) and problem.key == "(yaml)"
    assert problem.line > 1000 and "larger than 1 MiB" in problem.message
    assert peak < 3 * MAX_BYTES


def test_text_over_the_size_cap_is_refused() -> None:
    assert refusal("a: '" + "x" * MAX_BYTES + "'\n").startswith("doc.yaml:1: (yaml): larger")


def test_bytes_that_are_not_utf8_are_located(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"a: 1\nb: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert [str(p) for p in info.value.problems] == [f"{path}:2: (file): not UTF-8 text"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\nb: !!python/object:os.system x\n", "doc.yaml:2: (syntax): could not determine"),
        ("a: !!binary zzz\n", "doc.yaml:1: (syntax): failed to decode base64 data"),
        (
            "base: &b {x: 1}\nother:\n  <<: *b\n",
            "doc.yaml:3: other: merge keys (<<) are not supported; write the keys out",
        ),
    ],
)
def test_tags_safeloader_refuses_are_located_not_tracebacks(text: str, expected: str) -> None:
    assert refusal(text).startswith(expected)
