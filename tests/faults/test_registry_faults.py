"""A registry file that cannot be used never gives a traceback: real SQLite files damaged in
several ways, opened through `seglab ps --json` and through the Registry API.

Each damaged file is moved aside to ``registry.sqlite3.corrupt-<UTC time>``, the user is
told which file and why in one line on stderr, and a fresh registry takes its place.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from seglab.events import Event
from seglab.registry import MIGRATIONS, Registry, RegistryError, RunRecord, RunStatus

pytestmark = pytest.mark.faults

RUNS = 60


def _populated(path: Path) -> None:
    """A registry with finished runs and their events, checkpointed into the main file."""
    with Registry(path) as registry:
        for number in range(RUNS):
            run_id = f"old.v{number}.a1b2"
            registry.upsert_run(
                RunRecord(
                    run_id=run_id,
                    recipe="old",
                    variant=f"v{number}",
                    host="local",
                    runtime="process",
                    status=RunStatus.FINISHED,
                    message="x" * 300,
                )
            )
            registry.add_events(
                run_id,
                [
                    Event("train", seq, 1.0, {"iter": seq, "epoch": 0, "loss": 0.5, "lr": 0.1})
                    for seq in range(20)
                ],
            )
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _root_page_offset(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    conn.close()
    return int((root - 1) * page_size)


def _overwrite(offset: int, data: bytes) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        with open(path, "r+b") as handle:
            handle.seek(offset)
            handle.write(data)

    return damage


def _garble_table(table: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        _overwrite(_root_page_offset(path, table), bytes(range(256)) * 16)(path)

    return damage


def _truncate(size: Callable[[int], int]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        os.truncate(path, size(path.stat().st_size))

    return damage


def _newer(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()


def _text(path: Path) -> None:
    path.write_text("runs:\n  - this is not a database\n")


# (name, damage, what the one-line message says)
DAMAGES: list[tuple[str, Callable[[Path], None], str]] = [
    ("garbled header", _overwrite(0, b"\x00" * 100), "file is not a database"),
    ("text file", _text, "file is not a database"),
    ("truncated to half", _truncate(lambda size: size // 2), "database disk image is malformed"),
    ("truncated to 50 bytes", _truncate(lambda size: 50), "database disk image is malformed"),
    ("garbled schema page", _overwrite(100, b"\xff" * 3000), "malformed"),
    ("garbled runs table", _garble_table("runs"), "database disk image is malformed"),
    ("newer schema", _newer, f"schema version {len(MIGRATIONS) + 1} is newer"),
]


def _set_aside(folder: Path) -> list[Path]:
    """The registries moved aside in ``folder`` (their -wal and -shm files left out)."""
    return [
        path
        for path in folder.glob("registry.sqlite3.corrupt-*")
        if not path.name.endswith(("-wal", "-shm"))
    ]


def _ps_json(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seglab", "ps", "--json", "--all"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("damage", "reason"), [(d, r) for _, d, r in DAMAGES], ids=[n for n, _, _ in DAMAGES]
)
def test_ps_sets_a_damaged_registry_aside_and_says_so_in_one_line(
    isolated_xdg: Path, damage: Callable[[Path], None], reason: str
) -> None:
    path = isolated_xdg / "state" / "seglab" / "registry.sqlite3"
    _populated(path)
    damage(path)
    result = _ps_json(os.environ.copy())
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(result.stdout) == []
    (aside,) = _set_aside(path.parent)
    lines = [line for line in result.stderr.splitlines() if "registry" in line]
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and str(aside) in lines[0] and reason in lines[0]
    # The fresh registry works, and the next command has nothing more to say.
    again = _ps_json(os.environ.copy())
    assert again.returncode == 0 and "registry" not in again.stderr, again.stderr
    assert len(_set_aside(path.parent)) == 1


def test_a_zero_length_registry_is_a_new_one_without_a_word(isolated_xdg: Path) -> None:
    path = isolated_xdg / "state" / "seglab" / "registry.sqlite3"
    path.parent.mkdir(parents=True)
    path.touch()
    result = _ps_json(os.environ.copy())
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "[]", "")
    assert _set_aside(path.parent) == []


def test_damage_found_by_a_later_read_is_recovered_in_the_same_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "registry.sqlite3"
    _populated(path)
    with Registry(path) as registry:
        assert registry.has_run("old.v0.a1b2")  # opened while the file was sound
        _garble_table("events")(path)
        assert registry.events("old.v7.a1b2") == []  # answered by the fresh registry
        assert registry.list_runs() == []
    (aside,) = _set_aside(tmp_path)
    (message,) = caplog.messages
    assert "malformed" in message and str(aside) in message


def test_damage_found_by_a_write_is_refused_in_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    _populated(path)
    with Registry(path) as registry:
        assert registry.has_run("old.v0.a1b2")
        _garble_table("events")(path)
        with pytest.raises(RegistryError, match=r"was damaged .* and has been replaced") as info:
            registry.add_events(
                "old.v3.a1b2",
                [Event("train", 99, 1.0, {"iter": 99, "epoch": 0, "loss": 0.5, "lr": 0.1})],
            )
        assert info.value.hint == "run the command again"
        assert registry.list_runs() == []
    assert len(_set_aside(tmp_path)) == 1


def test_a_long_lived_registry_follows_a_file_set_aside_by_another(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    _populated(path)
    with Registry(path) as dashboard, Registry(path) as command:
        assert len(dashboard.list_runs()) == RUNS
        _garble_table("runs")(path)
        assert command.list_runs() == []  # this one finds the damage and sets it aside
        command.upsert_run(
            RunRecord(
                run_id="new.default.c3d4",
                recipe="new",
                variant="default",
                host="local",
                runtime="process",
            )
        )
        assert [r.run_id for r in dashboard.list_runs()] == ["new.default.c3d4"]
    assert len(_set_aside(tmp_path)) == 1


def test_threads_meeting_the_same_damage_set_it_aside_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "registry.sqlite3"
    _populated(path)
    _garble_table("runs")(path)
    registry = Registry(path)
    barrier = threading.Barrier(8)
    results: list[int] = []

    def read() -> None:
        barrier.wait()
        results.append(len(registry.list_runs()))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    registry.close()
    assert results == [0] * 8
    assert len(_set_aside(tmp_path)) == 1
    assert len(caplog.messages) == 1
