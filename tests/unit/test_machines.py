"""This machine through the Machine interface, synchronously on a loop thread as the
façade uses it: commands (stdin, env, exit status, timeouts), streams, files, ports."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from seglab.machines import CommandError, LocalMachine, LoopThread, MachineSync


@pytest.fixture
def machine() -> Iterator[MachineSync]:
    loop = LoopThread("test-machines")
    try:
        yield MachineSync(LocalMachine("here"), loop)
    finally:
        loop.close()


def test_commands_report_status_and_output_with_stdin_and_env(machine: MachineSync) -> None:
    result = machine.run(
        ["sh", "-c", 'cat; echo "$GREETING"; echo oops >&2; exit 3'],
        stdin="from stdin\n",
        env={"GREETING": "hello"},
    )
    assert (result.returncode, result.stdout, result.stderr) == (3, "from stdin\nhello\n", "oops\n")
    assert result.output == "oops"


def test_a_missing_program_and_a_slow_one(machine: MachineSync, tmp_path: Path) -> None:
    with pytest.raises(CommandError) as caught:
        machine.run(["/nonexistent/tool"])
    assert caught.value.not_found
    marker = tmp_path / "survived"
    with pytest.raises(TimeoutError):
        machine.run(["sh", "-c", f"sleep 2; touch {marker}"], timeout=0.3)
    machine.run(["sleep", "2.5"])
    assert not marker.exists()  # the child was killed at the timeout


def test_files_from_an_offset_in_new_folders(machine: MachineSync, tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "events.jsonl"
    machine.write_text(str(path), "first\nsecond\n")
    assert machine.read_text(str(path)) == "first\nsecond\n"
    assert machine.read_bytes(str(path), 6) == b"second\n"
    assert machine.exists(str(path)) and not machine.exists(str(tmp_path / "nope"))
    assert machine.listdir(str(tmp_path / "a")) == ["b"]
    with pytest.raises(FileNotFoundError):
        machine.read_bytes(str(tmp_path / "nope"))


def test_streams_and_ports_and_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    async def lines() -> tuple[list[str], int | None]:
        stream = await LocalMachine().stream(["sh", "-c", "echo one; echo two"])
        assert stream.pid is not None
        got = []
        while (line := await stream.readline()) is not None:
            got.append(line)
        returncode, _ = await stream.finish()
        return got, returncode

    assert asyncio.run(lines()) == (["one", "two"], 0)
    assert asyncio.run(LocalMachine().forward_port(8888)).local_port == 8888
    monkeypatch.setenv("DOCKER_HOST", "unix:///elsewhere.sock")
    assert LocalMachine().docker_url == "unix:///elsewhere.sock"
    assert LocalMachine(docker_socket="/own.sock").docker_url == "unix:///own.sock"
    monkeypatch.delenv("DOCKER_HOST")
    assert LocalMachine().docker_url == "unix:///var/run/docker.sock"
