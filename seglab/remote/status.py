"""What `seglab hosts` shows per remote host: link state, latency, driver, CUDA, GPUs, Docker.

The GPU facts come from the host's configured ``nvidia_smi`` (run over the SSH connection);
the Docker facts from ``docker version`` / ``docker info`` through the forwarded socket. A
fact that cannot be read is None and the reason is listed in ``problems``.
"""

from __future__ import annotations

import asyncio
import errno
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from seglab.machines import CommandError, LocalMachine, Machine
from seglab.remote.connection import LinkState
from seglab.remote.machine import SSHMachine

_CUDA = re.compile(r"CUDA Version\s*:\s*([0-9][0-9.]*)")
_TIMEOUT = 10.0


@dataclass(frozen=True)
class HostReport:
    """One host's status; `latency_ms` is the round trip of a no-op command over SSH."""

    name: str
    state: str
    message: str | None
    latency_ms: float | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    gpu_count: int | None = None
    docker_version: str | None = None
    nvidia_runtime: bool | None = None
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The report as `seglab hosts --json` prints it (snake_case keys, null if unknown)."""
        return asdict(self)


async def probe(machine: SSHMachine, nvidia_smi: str, docker_socket: Path | None) -> HostReport:
    """Ask the host for every fact; an offline host gets its state and message only."""
    connection = machine.connection
    status = connection.status
    if status.state is not LinkState.ONLINE:
        return HostReport(connection.name, status.state.value, status.message)
    problems: list[str] = []
    latency = await _latency(machine, problems)
    driver, count, cuda = await _gpus(machine, nvidia_smi, problems)
    docker_version, nvidia = (None, None)
    if docker_socket is not None:
        docker_version, nvidia = await asyncio.to_thread(
            _docker,
            f"unix://{docker_socket}",
            f"{connection.name}'s Docker socket (through SSH)",
            problems,
        )
    status = connection.status
    return HostReport(
        name=connection.name,
        state=status.state.value,
        message=status.message,
        latency_ms=latency,
        driver_version=driver,
        cuda_version=cuda,
        gpu_count=count,
        docker_version=docker_version,
        nvidia_runtime=nvidia,
        problems=problems,
    )


async def probe_local(name: str, nvidia_smi: str, docker_url: str | None) -> HostReport:
    """The same facts for this machine (nvidia-smi run locally, the engine at
    ``docker_url``)."""
    problems: list[str] = []
    driver, count, cuda = await _gpus(LocalMachine(name), nvidia_smi, problems)
    docker_version, nvidia = (None, None)
    if docker_url is not None:
        docker_version, nvidia = await asyncio.to_thread(_docker, docker_url, docker_url, problems)
    return HostReport(
        name=name,
        state="online",
        message=None,
        latency_ms=0.0,
        driver_version=driver,
        cuda_version=cuda,
        gpu_count=count,
        docker_version=docker_version,
        nvidia_runtime=nvidia,
        problems=problems,
    )


async def _latency(machine: Machine, problems: list[str]) -> float | None:
    start = time.perf_counter()
    try:
        result = await machine.run(["true"], timeout=_TIMEOUT)
    except (CommandError, TimeoutError) as exc:
        problems.append(f"no-op command failed: {exc}")
        return None
    if result.returncode != 0:
        problems.append(f"no-op command exited {result.returncode}")
        return None
    return round((time.perf_counter() - start) * 1000, 2)


async def _gpus(
    machine: Machine, nvidia_smi: str, problems: list[str]
) -> tuple[str | None, int | None, str | None]:
    """(driver version, GPU count, CUDA version) from nvidia-smi."""
    try:
        query = await machine.run(
            [nvidia_smi, "--query-gpu=driver_version,count", "--format=csv,noheader,nounits"],
            timeout=_TIMEOUT,
        )
        table = await machine.run([nvidia_smi], timeout=_TIMEOUT)
    except (CommandError, TimeoutError) as exc:
        problems.append(f"{nvidia_smi}: {exc}")
        return None, None, None
    if query.returncode != 0:
        reason = (query.stdout.strip() or query.stderr.strip()).splitlines()
        problems.append(
            f"{nvidia_smi} failed (exit {query.returncode})" + (f": {reason[0]}" if reason else "")
        )
        return None, None, None
    first = query.stdout.strip().splitlines()[:1]
    driver: str | None = None
    count: int | None = None
    if first:
        cells = [cell.strip() for cell in first[0].split(",")]
        driver = cells[0] or None
        count = int(cells[1]) if len(cells) > 1 and cells[1].isdigit() else None
    match = _CUDA.search(table.stdout)
    if match is None:
        problems.append(f"{nvidia_smi} did not show a CUDA version")
    return driver, count, match.group(1) if match else None


def _docker(url: str, where: str, problems: list[str]) -> tuple[str | None, bool | None]:
    """(engine version, NVIDIA runtime present) of the engine at ``url`` (blocking); a
    failure is listed in plain words naming ``where``."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.DockerClient(base_url=url, timeout=_TIMEOUT)
    except (DockerException, OSError) as exc:  # requests' errors are OSErrors
        problems.append(engine_reason(exc, where))
        return None, None
    try:
        version = client.version().get("Version")
        runtimes = client.info().get("Runtimes") or {}
    except (DockerException, OSError) as exc:  # requests' errors are OSErrors
        problems.append(engine_reason(exc, where))
        return None, None
    finally:
        client.close()
    return (str(version) if version else None), "nvidia" in runtimes


def engine_reason(exc: BaseException, where: str) -> str:
    """Why the Docker engine at ``where`` did not answer, in plain words (from the OS
    error under the Docker SDK's wrapping, else its last line)."""
    causes = _causes(exc)
    code = next((c.errno for c in reversed(causes) if isinstance(c, OSError) and c.errno), None)
    if code == errno.ENOENT:
        return (
            f"no Docker engine: nothing at {where} (the Docker daemon is not installed or "
            "not running, or DOCKER_HOST / docker_socket names the wrong socket)"
        )
    if code == errno.ECONNREFUSED:
        return f"no Docker engine: nothing accepts connections at {where} (dockerd is not running)"
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"no permission to use the Docker engine at {where} (add your user to the "
            "docker group and log in again)"
        )
    if code in (errno.ECONNRESET, errno.EPIPE) or any(
        isinstance(c, ConnectionResetError) for c in causes
    ):
        return (
            f"no Docker engine: {where} closed the connection without answering (is dockerd "
            "running there, and is docker_socket right?)"
        )
    if any(isinstance(c, TimeoutError) or "timed out" in str(c) for c in causes):
        return f"the Docker engine at {where} did not answer within {_TIMEOUT:g} s"
    text = str(exc).strip().splitlines()
    return (
        f"the Docker engine at {where} cannot be asked: {text[-1] if text else type(exc).__name__}"
    )


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc``, what it was raised from, and the exceptions in their arguments (the Docker
    SDK wraps requests' error, which wraps urllib3's, which wraps the OS error)."""
    out: list[BaseException] = []
    todo = [exc]
    while todo and len(out) < 20:
        current = todo.pop(0)
        if any(current is seen for seen in out):
            continue
        out.append(current)
        todo += [arg for arg in current.args if isinstance(arg, BaseException)]
        todo += [c for c in (current.__cause__, current.__context__) if c is not None]
    return out
