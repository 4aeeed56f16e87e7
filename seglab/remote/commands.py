"""Slurm's client commands on a login node reached over SSH (the Slurm runtime's runner)."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence

from seglab.machines import CommandError, CommandResult
from seglab.remote.bridge import RemoteBridge, RemoteUnavailable
from seglab.runtime.errors import HostUnreachable


class RemoteCommands:
    """:class:`seglab.runtime.slurm.Commands` on host ``name`` over its SSH connection.

    A non-interactive SSH session loads no login profile, so the host's ``env_setup``
    lines (``module load slurm``, ``export SLURM_CONF=...``) run first, in bash.
    """

    def __init__(
        self, bridge: Callable[[], RemoteBridge], name: str, env_setup: Sequence[str] = ()
    ) -> None:
        self.bridge = bridge
        self.name = name
        self.env_setup = tuple(env_setup)

    def run(
        self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 30.0
    ) -> CommandResult:
        """Run ``argv`` on the login node; HostUnreachable when it cannot be reached."""
        command = list(argv)
        if self.env_setup:
            command = ["bash", "-c", "\n".join(self.env_setup) + '\nexec "$@"', "bash", *command]
        try:
            bridge = self.bridge()
            bridge.ensure(self.name)
            return bridge.machine(self.name).run(command, stdin=stdin, timeout=timeout)
        except RemoteUnavailable as exc:
            raise HostUnreachable(str(exc)) from exc
        except CommandError as exc:
            raise HostUnreachable(f"{self.name}: {exc}") from exc
        except TimeoutError as exc:
            raise HostUnreachable(
                f"{self.name}: `{shlex.join(argv)}` did not answer within {timeout:g} s"
            ) from exc
