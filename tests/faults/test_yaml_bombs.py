"""Alias bombs ("billion laughs") in both configuration file kinds: a recipe and hosts.yaml.

Each is refused by the real command with one located ``FILE:LINE: (yaml): ...`` line and
exit status 1, and refusing it costs little memory: measured in-process with tracemalloc,
and in a child process (under an address-space limit, so that a regression fails instead
of exhausting the machine) as the growth of its peak RSS over the same command on a valid
file.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest

from seglab.cli import main
from seglab.yamlpos import MAX_NODES

pytestmark = pytest.mark.faults

REFUSAL = (
    f"(yaml): more than {MAX_NODES} values once aliases are expanded (an alias bomb?); "
    "write the values out or use fewer aliases"
)
RECIPE = """\
name: bomb
data: {dataset: synthetic, crop: [32, 32]}
train: {iterations: 1, batch_size: 1}
"""


def _laughs(indent: str) -> str:
    lines = [f"{indent}l0: &l0 [{', '.join(['lol'] * 9)}]"]
    lines += [f"{indent}l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 9)]
    return "\n".join(lines) + "\n"


def _bomb_recipe(folder: Path) -> tuple[Path, int]:
    path = folder / "bomb.yaml"
    path.write_text(RECIPE + "description: &d the laughs follow\n" + _laughs(""))
    return path, 4 + 5  # l4 on line 9 takes the count past the cap


def _bomb_hosts(config_home: Path) -> tuple[Path, int]:
    path = config_home / "seglab" / "hosts.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("hosts:\n  lab1:\n    ssh: gpu1\n    datasets:\n" + _laughs("      "))
    return path, 4 + 5


def _refused_in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, int]:
    tracemalloc.start()
    try:
        status = main(argv)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert status == 1
    return capsys.readouterr().err.strip(), peak


def test_a_recipe_bomb_fails_recipe_check_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, line = _bomb_recipe(tmp_path)
    err, peak = _refused_in_process(["recipe", "check", str(path)], capsys)
    assert err == f"{path}:{line}: {REFUSAL}"
    assert peak < 8 * 2**20, f"recipe check held {peak} bytes"


def test_a_hosts_bomb_fails_every_command_that_reads_it_at_its_line(
    isolated_xdg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, line = _bomb_hosts(isolated_xdg / "config")
    err, peak = _refused_in_process(["hosts", "--no-check"], capsys)
    assert err == f"{path}:{line}: {REFUSAL}"
    assert peak < 8 * 2**20, f"seglab hosts held {peak} bytes"
    err, _ = _refused_in_process(["hosts", "--json", "--no-check"], capsys)
    assert err == f"{path}:{line}: {REFUSAL}"


CHILD = textwrap.dedent(
    """
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    from seglab.cli import main
    status = main(sys.argv[1:])
    print("maxrss_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
    sys.exit(status)
    """
)


def _child(argv: list[str], env_home: Path) -> tuple[int, str, int]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(env_home),
        "XDG_CONFIG_HOME": str(env_home / "config"),
        "XDG_STATE_HOME": str(env_home / "state"),
        "XDG_DATA_HOME": str(env_home / "data"),
        "XDG_CACHE_HOME": str(env_home / "cache"),
        "SEGLAB_SSH_CONFIG": str(env_home / "no-ssh-config"),
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    lines = done.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("maxrss_kib "), done.stderr
    return done.returncode, "\n".join(lines[:-1]), int(lines[-1].split()[1])


@pytest.mark.parametrize("kind", ["recipe", "hosts"])
def test_refusing_a_bomb_costs_a_child_process_little_memory(kind: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    valid = tmp_path / "valid.yaml"
    if kind == "recipe":
        valid.write_text(RECIPE)
        path, line = _bomb_recipe(tmp_path)
        command = ["recipe", "check"]
    else:
        valid.write_text("hosts:\n  lab1: {ssh: gpu1, datasets: {voc: /data/voc}}\n")
        path, line = _bomb_hosts(tmp_path / "config")
        command = ["hosts", "--no-check", "--file"]
    status, _, baseline = _child([*command, str(valid)], home)
    assert status == 0
    status, err, peak = _child([*command, str(path)], home)
    assert (status, err) == (1, f"{path}:{line}: {REFUSAL}")
    assert peak - baseline < 32 * 1024, f"peak RSS grew by {peak - baseline} KiB"
