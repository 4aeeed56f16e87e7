"""The pure parts of the TensorBoard/Jupyter forwards: ports, commands, HOST[:GPU]."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from seglab.forwards import (
    PORT_RANGE,
    listening_ports,
    notebook_command,
    parse_where,
    pick_port,
    tensorboard_command,
)
from seglab.runs import RunError


def _proc_net_tcp() -> str:
    return "".join(
        p.read_text() for p in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")) if p.exists()
    )


def test_a_listening_socket_shows_in_proc_net_tcp() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert port in listening_ports(_proc_net_tcp())
    header = "  sl  local_address rem_address   st tx_queue rx_queue\n"
    line = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000\n"
    assert listening_ports(header + line) == {8080}


def test_pick_port_avoids_the_used_ones() -> None:
    used = set(range(PORT_RANGE[0], PORT_RANGE[1] - 1))
    assert pick_port(used, random.Random(1)) in {PORT_RANGE[1] - 1, PORT_RANGE[1]}
    with pytest.raises(RunError, match="no free TCP port"):
        pick_port(set(range(PORT_RANGE[0], PORT_RANGE[1] + 1)), random.Random(1))


def test_commands_bind_loopback() -> None:
    board = tensorboard_command(["tiny.default.ab12cd", "tiny.lr-0.1.ef34ab"], 23456)
    assert board[:3] == ("python3", "-m", "tensorboard.main")
    assert board[board.index("--logdir_spec") + 1] == (
        "tiny.default.ab12cd:/runs/tiny.default.ab12cd/tb,"
        "tiny.lr-0.1.ef34ab:/runs/tiny.lr-0.1.ef34ab/tb"
    )
    assert board[-4:] == ("--host", "127.0.0.1", "--port", "23456")
    lab = notebook_command(23457, "f00d")
    assert "--ip=127.0.0.1" in lab and "--port=23457" in lab
    assert "--ServerApp.token=f00d" in lab and "--no-browser" in lab


def test_where_takes_cpu_or_a_gpu_uuid() -> None:
    assert parse_where("lab1") == ("lab1", None)
    assert parse_where("lab1:cpu") == ("lab1", None)
    assert parse_where("lab1:GPU-3f2a") == ("lab1", "GPU-3f2a")
    with pytest.raises(RunError, match="give the GPU by UUID"):
        parse_where("lab1:0")
    with pytest.raises(RunError, match="expected HOST"):
        parse_where(":cpu")
