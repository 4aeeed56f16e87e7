"""Trusting a server's host key: fetch it, show its fingerprint, add it to known_hosts.

This is what `seglab hosts trust NAME` does after the user confirms the fingerprint. The
line appended is the OpenSSH known_hosts format (``[host]:port type base64``), so ssh and
seglab agree on what is trusted. The key exchange stops after the server has shown its key:
nothing is authenticated and no command runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from seglab.hosts import SSHTarget, ssh_config_path
from seglab.remote.connection import known_hosts_name, known_hosts_path, read_known_hosts


@dataclass(frozen=True)
class ServerKey:
    """The host key a server presented, and what known_hosts says about it now."""

    target: SSHTarget
    key_type: str
    fingerprint: str
    line: str
    trusted: bool
    conflicts: bool


async def fetch_server_key(target: SSHTarget, timeout: float = 15.0) -> ServerKey:
    """Connect far enough to see `target`'s host key (raises OSError, asyncssh.Error)."""
    config = ssh_config_path()
    key = await asyncssh.get_server_host_key(
        target.hostname,
        target.port,
        tunnel=target.proxy_jump or (),
        config=[str(config)] if config.exists() else None,
        options=asyncssh.SSHClientConnectionOptions(connect_timeout=timeout),
    )
    if key is None:
        raise asyncssh.KeyExchangeFailed(f"{target} presented no host key")
    public = key.export_public_key("openssh").decode("ascii").split()
    name = known_hosts_name(target)
    trusted_keys = read_known_hosts().match(target.hostname, "", target.port)[0]
    return ServerKey(
        target=target,
        key_type=public[0],
        fingerprint=key.get_fingerprint("sha256"),
        line=f"{name} {public[0]} {public[1]}",
        trusted=key in trusted_keys,
        conflicts=bool(trusted_keys) and key not in trusted_keys,
    )


def add_to_known_hosts(server_key: ServerKey) -> Path:
    """Append the key's line to ~/.ssh/known_hosts (creating ~/.ssh 0700 and the file 0600)."""
    path = known_hosts_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="ascii") as out:
        if out.tell() > 0 and not _ends_with_newline(path):
            out.write("\n")
        out.write(server_key.line + "\n")
    return path


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as existing:
        existing.seek(-1, os.SEEK_END)
        return existing.read(1) == b"\n"
