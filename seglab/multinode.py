"""Multi-node runs: one member (container or process) per host, joined by torchrun's c10d
rendezvous, shown and ended as one run.

Member 0 holds the run: its host serves the rendezvous (``is_host``, a free port found
there), its run dir gets the events, checkpoints and TensorBoard of the main rank. The
other members' run dirs (``<runs root>/<run id>.m<K>`` on their hosts) hold their ranks'
logs. Every member gets the same timeout (``resources.node_timeout_s``) for joining the
rendezvous, for the store and for every collective, so a member that dies fails the others
instead of hanging them; seglab kills whatever is still running that long after a member
failed (:func:`combine`).
"""

from __future__ import annotations

import ipaddress
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from seglab.errors import ConfigurationError
from seglab.hosts import Host
from seglab.runtime import RuntimeState, Status

LOOPBACK = "127.0.0.1"
MEMBER_ENV = "SEGLAB_MEMBER"  # seglab.train.distributed reads these two
TIMEOUT_ENV = "SEGLAB_DIST_TIMEOUT_S"
FREE_PORT_SCRIPT = "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])"


class MultiNodeError(ConfigurationError):
    """A multi-node run that cannot be set up as placed (an address is missing)."""


def member_name(run_id: str, index: int) -> str:
    """The name (container ``seglab-<name>``, run dir) of member ``index``."""
    return run_id if index == 0 else f"{run_id}.m{index}"


@dataclass(frozen=True)
class Rendezvous:
    """How the members find each other: the endpoint on member 0, each member's address
    and the interface gloo/NCCL use there (None: let them choose)."""

    run_id: str
    endpoint_host: str
    port: int
    addresses: tuple[str, ...]
    interfaces: tuple[str | None, ...]
    timeout_s: float

    @property
    def nodes(self) -> int:
        """How many members the rendezvous waits for."""
        return len(self.addresses)

    def command(self, python: str, run_dir: str, nproc: int, index: int) -> tuple[str, ...]:
        """Member ``index``'s command: torchrun joining the c10d rendezvous."""
        timeout = max(1, round(self.timeout_s))
        conf = (
            f"is_host={'true' if index == 0 else 'false'},join_timeout={timeout},"
            f"read_timeout={timeout},close_timeout={timeout}"
        )
        return (
            python,
            "-m",
            "torch.distributed.run",
            f"--nnodes={self.nodes}",
            f"--nproc-per-node={nproc}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={self.endpoint_host}:{self.port}",
            f"--rdzv-id={self.run_id}",
            f"--rdzv-conf={conf}",
            f"--local-addr={self.addresses[index]}",
            "--max-restarts=0",
            f"--log-dir={run_dir}/ranks",
            "--tee=3",
            "-m",
            "seglab.train",
            "--config",
            f"{run_dir}/recipe.yaml",
            "--run-dir",
            run_dir,
        )

    def env(self, index: int) -> dict[str, str]:
        """Member ``index``'s environment additions."""
        out = {MEMBER_ENV: str(index), TIMEOUT_ENV: str(self.timeout_s)}
        interface = self.interfaces[index]
        if interface is not None:
            out["GLOO_SOCKET_IFNAME"] = interface
            out["NCCL_SOCKET_IFNAME"] = interface
        return out


def addresses(hosts: Sequence[Host]) -> tuple[tuple[str, ...], tuple[str | None, ...]]:
    """Each member host's address and interface for the rendezvous and the collectives.

    A host's ``node_address`` (hosts.yaml) wins; a remote host defaults to the name seglab
    reaches it at over SSH. Members that are all on this machine (every address loopback)
    get 127.0.0.1, 127.0.0.2, ...: torchrun tells nodes apart by address and pid, and pids
    repeat across containers. Elsewhere each member needs a host of its own.
    """
    if all(h.is_local for h in hosts):
        found = [LOOPBACK] * len(hosts)
    else:
        found = []
        for host in hosts:
            if host.node_address is not None:
                found.append(host.node_address)
            elif host.ssh is not None:
                found.append(host.ssh.hostname)
            else:
                raise MultiNodeError(
                    f"host {host.name} joins a multi-node run with remote hosts but has no "
                    "`node_address:` in hosts.yaml: give the address the other hosts reach "
                    "it at"
                )
    if all(_is_loopback(a) for a in found):
        return (
            tuple(f"127.0.0.{index + 1}" for index in range(len(hosts))),
            tuple(h.node_interface or "lo" for h in hosts),
        )
    for index, address in enumerate(found):
        if address in found[:index]:
            raise MultiNodeError(
                f"members {found.index(address)} and {index} of the multi-node run are both "
                f"at {address}: a multi-node run takes one member per host; for several GPUs "
                "of one host use resources.gpus (one container, one node)"
            )
    return tuple(found), tuple(h.node_interface for h in hosts)


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def free_local_port() -> int:
    """A TCP port free on this machine now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Verdict:
    """What the members' states add up to.

    ``state`` is the run's state as one runtime would report it; ``failed`` is the member
    that failed first and ``message`` says how (None when none has); ``kill`` lists the
    members still running that long after a failure (seglab kills them).
    """

    state: RuntimeState
    failed: int | None = None
    message: str | None = None
    kill: tuple[int, ...] = ()


def _failed(state: RuntimeState) -> bool:
    return not state.active and (
        state.status == "dead" or state.oom_killed or (state.exit_code or 0) != 0
    )


def describe_exit(state: RuntimeState) -> str:
    """``exited 137 (killed)``, ``ran out of memory``, ``is gone: ...``."""
    if state.oom_killed:
        return "ran out of memory (OOM-killed)"
    if state.status == "dead":
        return f"ended without an exit code ({state.error or 'unknown'})"
    code = state.exit_code
    if code is not None and code > 128:
        try:
            name = f" ({signal.Signals(code - 128).name})"
        except ValueError:  # not a signal number
            name = ""
        return f"exited {code}{name}"
    return f"exited {code}"


def combine(
    states: Sequence[RuntimeState],
    hosts: Sequence[str],
    timeout_s: float,
    now: datetime | None = None,
) -> Verdict:
    """The run's state from its members' (member 0 first).

    It has ended when every member has; the exit code is that of the member that failed
    first (0 when none failed). While some still run after one failed, the run is running,
    with a message, until ``timeout_s`` has passed since the failure; then ``kill`` names
    the members to kill.
    """
    now = now or datetime.now(timezone.utc)
    failed = sorted(
        (i for i, s in enumerate(states) if _failed(s)), key=lambda i: states[i].finished_at or now
    )
    message = None
    first = failed[0] if failed else None
    if first is not None:
        message = f"member {first} on {hosts[first]} {describe_exit(states[first])}" + (
            " first" if len(failed) > 1 else ""
        )
    active = [i for i, s in enumerate(states) if s.active]
    if active:
        status: Status = (
            "created" if any(states[i].status == "created" for i in active) else "running"
        )
        kill: tuple[int, ...] = ()
        if first is not None:
            since = states[first].finished_at or now
            waited = (now - since).total_seconds()
            if waited >= timeout_s:
                kill = tuple(active)
            else:
                message = f"{message}; the other members end within {timeout_s - waited:.0f} s"
        return Verdict(RuntimeState(status), first, message, kill)
    ended = [s.finished_at for s in states if s.finished_at is not None]
    exit_code = 0 if first is None else states[first].exit_code
    return Verdict(
        RuntimeState(
            "exited",
            exit_code=exit_code if exit_code is not None else 1,
            oom_killed=any(s.oom_killed for s in states),
            finished_at=max(ended) if ended else None,
            error=message,
        ),
        first,
        message,
    )
