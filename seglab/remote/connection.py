"""One supervised asyncssh connection per remote host.

A :class:`HostConnection` keeps one SSH connection to a host open: it connects with the
user's OpenSSH settings (resolved by :mod:`seglab.hosts`, plus `~/.ssh/config` for what
asyncssh reads itself, such as the hosts a ProxyJump goes through), authenticates with the
SSH agent or key files only (never a password), checks the server's host key strictly
against `~/.ssh/known_hosts`, sends keepalives so that a dead link is noticed within a few
seconds, and reconnects with capped exponential backoff. Everything else in
:mod:`seglab.remote` multiplexes channels over it.

The host's state is one of :class:`LinkState`; :attr:`HostConnection.status` carries it with
a message for the user.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import functools
import getpass
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh.config import SSHClientConfig, SSHConfig
from asyncssh.encryption import get_default_encryption_algs

from seglab.errors import UnavailableError
from seglab.hosts import SSHTarget, ssh_config_path
from seglab.remote.tasks import cancel_and_wait

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT = 5.0


class LinkState(str, enum.Enum):
    """Where a host's SSH connection stands."""

    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"
    AUTH_FAILED = "auth-failed"
    HOST_KEY_REFUSED = "host-key-refused"


_USABLE_OR_REFUSED = (LinkState.ONLINE, LinkState.AUTH_FAILED, LinkState.HOST_KEY_REFUSED)


@dataclass(frozen=True)
class ConnectOptions:
    """Timings of the connection supervisor (seconds)."""

    keepalive_interval: float = 1.0
    keepalive_count_max: int = 2
    connect_timeout: float = 10.0
    backoff_initial: float = 0.25
    backoff_max: float = 4.0
    refused_retry: float = 30.0


@dataclass(frozen=True)
class LinkStatus:
    """A host's connection state, why it is so, and since when (Unix time)."""

    host: str
    state: LinkState
    message: str | None
    since: float
    fingerprint: str | None = None


class NotConnectedError(UnavailableError):
    """The host has no working connection now; the message says why."""


class HostKeyRefusedError(UnavailableError):
    """The server's host key is not in known_hosts (or differs from the one there)."""

    def __init__(self, name: str, target: SSHTarget, fingerprint: str, changed: bool) -> None:
        self.name = name
        self.target = target
        self.fingerprint = fingerprint
        self.changed = changed
        super().__init__(host_key_message(name, target, fingerprint, changed))


def known_hosts_path() -> Path:
    """The user's OpenSSH known_hosts file (`~/.ssh/known_hosts`)."""
    return Path.home() / ".ssh" / "known_hosts"


def known_hosts_name(target: SSHTarget) -> str:
    """How known_hosts names the target: `host`, or `[host]:port` off port 22."""
    if target.port == 22:
        return target.hostname
    return f"[{target.hostname}]:{target.port}"


def host_key_message(name: str, target: SSHTarget, fingerprint: str, changed: bool) -> str:
    """The refusal text: what happened, the server's SHA256 fingerprint, how to trust it."""
    where = f"{known_hosts_name(target)} ({name})"
    if changed:
        return (
            f"host key of {where} CHANGED: the server now presents {fingerprint}, which "
            f"differs from the key in {known_hosts_path()}. This may be a reinstalled server "
            f"or someone intercepting the connection. If you know why it changed, remove the "
            f"old line (ssh-keygen -R '{known_hosts_name(target)}') and run "
            f"`seglab hosts trust {name}`"
        )
    return (
        f"host key of {where} is unknown: the server presents {fingerprint}. Compare it with "
        f"the server's own key (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the "
        f"server), then run `seglab hosts trust {name}`"
    )


def read_known_hosts() -> asyncssh.SSHKnownHosts:
    """The user's known_hosts (empty when the file does not exist)."""
    path = known_hosts_path()
    if not path.exists():
        return asyncssh.import_known_hosts("")
    return asyncssh.read_known_hosts(str(path))


class _Client(asyncssh.SSHClient):
    """Records why a connection ended and the host key a refusal was about."""

    def __init__(self, known: asyncssh.SSHKnownHosts) -> None:
        self._known = known
        self.refused_key: asyncssh.SSHKey | None = None
        self.refused_changed = False
        self.lost: Exception | None = None
        self.closed = asyncio.Event()

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        """Called only for keys known_hosts does not trust: remember the key, refuse it."""
        trusted = self._known.match(host, addr, port)[0]
        self.refused_key = key
        self.refused_changed = bool(trusted)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Remember the reason the connection ended."""
        self.lost = exc
        self.closed.set()


AES_GCM = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
"""The ciphers offered first where the CPU has AES instructions (see :func:`ciphers`)."""


@functools.cache
def cpu_has_aes() -> bool:
    """Whether this CPU has AES instructions (True where /proc/cpuinfo cannot tell)."""
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:  # not Linux: every Mac and current x86/arm64 CPU has them
        return True
    flags = (line.split(":", 1)[1].split() for line in info.splitlines() if ":" in line)
    return any("aes" in words for words in flags)


def ciphers(target: SSHTarget, config: Path) -> list[str] | None:
    """The ciphers to offer `target`, most wanted first; None leaves asyncssh's choice.

    asyncssh encrypts every packet in Python; with AES-GCM that is one call into
    `cryptography` (AES-NI) per packet, with its default chacha20-poly1305 several, so a
    bulk copy (``seglab data sync``) runs about 1.5x faster with AES-GCM. Where the CPU
    has AES instructions and the user's ssh config names no ``Ciphers`` for the host,
    AES-GCM is offered first and asyncssh's other defaults after it: a server without
    AES-GCM picks one of those, as before.
    """
    if not cpu_has_aes():
        return None
    if config.exists():

        def load(final: bool) -> SSHConfig:
            user = target.user or ()
            return SSHClientConfig.load(
                None, [config], False, False, final, getpass.getuser(), user, target.hostname,
                target.port,
            )  # fmt: skip

        parsed = load(final=False)
        if parsed.has_match_final():  # as asyncssh reads it when it connects
            parsed = load(final=True)
        if parsed.get("Ciphers") is not None:
            return None
    defaults = [alg.decode() for alg in get_default_encryption_algs()]
    fast = [alg for alg in AES_GCM if alg in defaults]  # those asyncssh can use here
    return [*fast, *(alg for alg in defaults if alg not in fast)] if fast else None


def connect_kwargs(target: SSHTarget, options: ConnectOptions) -> dict[str, Any]:
    """The asyncssh.connect arguments for `target`: key-based auth only, strict host keys,
    AES-GCM first where it is fast (:func:`ciphers`)."""
    config = ssh_config_path()
    kwargs: dict[str, Any] = {
        "host": target.hostname,
        "port": target.port,
        "config": [str(config)] if config.exists() else None,
        "password": None,
        "password_auth": False,
        "kbdint_auth": False,
        "preferred_auth": "publickey",
        "ignore_encrypted": True,
        "keepalive_interval": options.keepalive_interval,
        "keepalive_count_max": options.keepalive_count_max,
        "connect_timeout": options.connect_timeout,
    }
    if target.user:
        kwargs["username"] = target.user
    existing = [path for path in target.identity_files if Path(path).exists()]
    if existing:  # else asyncssh's defaults (~/.ssh/id_*); the agent is used either way
        kwargs["client_keys"] = existing
    if target.proxy_jump:
        kwargs["tunnel"] = target.proxy_jump
    preferred = ciphers(target, config)
    if preferred is not None:
        kwargs["encryption_algs"] = preferred
    return kwargs


async def open_connection(
    name: str, target: SSHTarget, options: ConnectOptions
) -> tuple[asyncssh.SSHClientConnection, _Client]:
    """Connect and authenticate once; raises HostKeyRefusedError, PermissionDenied, OSError…"""
    known = read_known_hosts()
    client = _Client(known)
    try:
        conn = await asyncssh.connect(
            known_hosts=known, client_factory=lambda: client, **connect_kwargs(target, options)
        )
    except asyncssh.HostKeyNotVerifiable:
        key = client.refused_key
        if key is None:
            raise
        raise HostKeyRefusedError(
            name, target, key.get_fingerprint("sha256"), client.refused_changed
        ) from None
    return conn, client


Hook = Callable[[asyncssh.SSHClientConnection], Awaitable[None]]


@dataclass
class ConnectionCounters:
    """Connections made, attempts, and the recent state changes (monotonic time)."""

    connects: int = 0
    attempts: int = 0
    history: list[tuple[float, LinkState, str | None]] = field(default_factory=list)


class HostConnection:
    """The supervised SSH connection to one host (start it inside a running event loop)."""

    def __init__(self, name: str, target: SSHTarget, options: ConnectOptions | None = None) -> None:
        self.name = name
        self.target = target
        self.options = options or ConnectOptions()
        self.counters = ConnectionCounters()
        self._status = LinkStatus(name, LinkState.CONNECTING, "not started", time.time())
        self._conn: asyncssh.SSHClientConnection | None = None
        self._hooks: list[Hook] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    # -- reading ------------------------------------------------------------------------

    @property
    def status(self) -> LinkStatus:
        """The current state and its message."""
        return self._status

    @property
    def is_online(self) -> bool:
        """True while a connection is up."""
        return self._conn is not None and self._status.state is LinkState.ONLINE

    async def wait_for(self, *states: LinkState, timeout: float) -> LinkStatus:
        """Wait until the state is one of `states` (TimeoutError after `timeout` s)."""

        def reached() -> bool:
            return self._status.state in states

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(reached), timeout)
        return self._status

    async def connection(self, timeout: float) -> asyncssh.SSHClientConnection:
        """The live connection, waiting up to `timeout` s for one (NotConnectedError).

        A refused host key or refused keys end the wait at once: only the user can fix them.
        """
        if self._conn is None:
            with contextlib.suppress(asyncio.TimeoutError):  # reported just below
                await self.wait_for(*_USABLE_OR_REFUSED, timeout=timeout)
            status = self._status
            if status.state is not LinkState.ONLINE:
                raise NotConnectedError(
                    f"host {self.name} is {status.state.value}: {status.message}"
                )
        conn = self._conn
        if conn is None:
            raise NotConnectedError(f"host {self.name} went offline: {self._status.message}")
        return conn

    # -- running ------------------------------------------------------------------------

    def on_connect(self, hook: Hook) -> None:
        """Run `hook(conn)` after every (re)connect, before the host is reported online."""
        self._hooks.append(hook)

    async def start(self) -> None:
        """Start the supervisor (returns at once; watch :attr:`status`)."""
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"ssh:{self.name}")

    async def stop(self) -> None:
        """Close the connection and stop reconnecting."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            try:
                await asyncio.wait_for(conn.wait_closed(), _CLOSE_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning(
                    "%s: the connection did not close within %g s; dropping it",
                    self.name,
                    _CLOSE_TIMEOUT,
                )
        await self._set(LinkState.OFFLINE, "stopped")

    async def _supervise(self) -> None:
        delay = self.options.backoff_initial
        while True:
            self.counters.attempts += 1
            await self._set(LinkState.CONNECTING, f"connecting to {self.target}")
            try:
                conn, client = await open_connection(self.name, self.target, self.options)
            except HostKeyRefusedError as exc:
                await self._set(LinkState.HOST_KEY_REFUSED, str(exc), exc.fingerprint)
                await asyncio.sleep(self.options.refused_retry)
                continue
            except asyncssh.PermissionDenied as exc:
                await self._set(
                    LinkState.AUTH_FAILED,
                    f"{self.target} refused every key offered (agent and key files; "
                    f"seglab never uses passwords): {exc.reason}",
                )
                await asyncio.sleep(self.options.refused_retry)
                continue
            except (OSError, asyncio.TimeoutError, asyncssh.Error) as exc:
                await self._set(
                    LinkState.OFFLINE,
                    f"cannot connect to {self.target}: {network_reason(exc, self.target)}; "
                    f"retrying in {delay:g} s",
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.options.backoff_max)
                continue
            if await self._serve(conn, client):
                delay = self.options.backoff_initial
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.options.backoff_max)

    async def _serve(self, conn: asyncssh.SSHClientConnection, client: _Client) -> bool:
        """Run the hooks, then hold the connection until it ends; False if setup failed."""
        try:
            for hook in self._hooks:
                await hook(conn)
        except Exception as exc:  # a failed forward must not end supervision: report, retry
            log.warning(
                "%s: setting up the connection failed: %s",
                self.name,
                exc,
                exc_info=not isinstance(exc, (OSError, asyncssh.Error)),
            )
            conn.close()
            await self._set(LinkState.OFFLINE, f"setting up the connection failed: {exc}")
            return False
        self._conn = conn
        self.counters.connects += 1
        await self._set(LinkState.ONLINE, f"connected to {self.target}")
        try:
            await client.closed.wait()
        finally:
            self._conn = None
            conn.close()
        reason = _reason(client.lost) if client.lost else "closed by the server"
        await self._set(LinkState.OFFLINE, f"connection lost: {reason}; reconnecting")
        return True

    async def _set(
        self, state: LinkState, message: str | None, fingerprint: str | None = None
    ) -> None:
        if state is not self._status.state:
            log.info("%s: %s (%s)", self.name, state.value, message)
            self.counters.history.append((time.monotonic(), state, message))
            del self.counters.history[:-50]
        since = self._status.since if state is self._status.state else time.time()
        self._status = LinkStatus(self.name, state, message, since, fingerprint)
        async with self._changed:
            self._changed.notify_all()


def _reason(exc: BaseException) -> str:
    """Why an established connection ended."""
    if isinstance(exc, asyncssh.DisconnectError):
        return exc.reason or type(exc).__name__
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


_UNRESOLVED = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME), socket.EAI_FAIL}
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}


def network_reason(exc: BaseException, target: SSHTarget) -> str:
    """Why connecting to ``target`` failed, in plain words on one line."""
    where = f"{target.hostname} port {target.port}"
    if isinstance(exc, socket.gaierror):
        if exc.errno == socket.EAI_AGAIN:
            return f"the name {target.hostname} cannot be resolved now (DNS does not answer)"
        if exc.errno in _UNRESOLVED:
            return (
                f"the name {target.hostname} does not resolve (a typo in hosts.yaml or in "
                "HostName of ~/.ssh/config?)"
            )
        return f"the name {target.hostname} cannot be resolved: {exc.strerror or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {where} (no SSH server listens there)"
    if isinstance(exc, TimeoutError):
        return f"timed out connecting to {where} (the host is down or a firewall drops it)"
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
        return f"{target.hostname} cannot be reached ({exc.strerror}): no route to it"
    if isinstance(exc, ConnectionResetError):
        return f"{where} closed the connection at once (sshd refused it: MaxStartups? banned?)"
    if isinstance(exc, asyncssh.DisconnectError):
        return f"{where} ended the connection: {exc.reason or type(exc).__name__}"
    return _reason(exc)
