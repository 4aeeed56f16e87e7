"""What refusing hostile YAML costs: time and peak traced memory of `seglab.yamlpos.load_text`.

Loads alias bombs of growing size (each refused), the deepest nesting allowed plus one,
and the largest aliased document accepted (just under the expanded-values cap), and prints
milliseconds and peak MiB for each.

    .venv/bin/python benchmarks/yaml_bounds.py
"""

from __future__ import annotations

import time
import tracemalloc

from seglab.yamlpos import MAX_DEPTH, MAX_NODES, ConfigError, load_text


def _laughs(levels: int, width: int) -> str:
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * width)}]" for n in range(1, levels)]
    return "\n".join(lines) + "\n"


def _measure(label: str, text: str) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        load_text(text, "bench.yaml")
        outcome = "accepted"
    except ConfigError as exc:
        outcome = f"refused at line {exc.problems[0].line}"
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"{label:44} {outcome:22} {elapsed * 1000:8.1f} ms {peak / 2**20:7.2f} MiB")


def main() -> None:
    """Print the cost of each case."""
    for levels, width in ((9, 9), (12, 12), (30, 30)):
        _measure(f"bomb {width}^{levels} values", _laughs(levels, width))
    deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    _measure(f"nesting {MAX_DEPTH + 1} levels", deep)
    width = 1000
    copies = MAX_NODES // (width + 1) - 2
    largest = f"a: &a [{', '.join(['1'] * width)}]\nb: [{', '.join(['*a'] * copies)}]\n"
    _measure(f"{(copies + 1) * (width + 1)} values via aliases", largest)


if __name__ == "__main__":
    main()
