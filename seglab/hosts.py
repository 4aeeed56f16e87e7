"""The host inventory: `hosts.yaml` plus the user's `~/.ssh/config`.

The ``local`` host (this machine) always exists; an entry named ``local`` configures it.
Every other entry is a remote machine reached over SSH (``ssh: user@host[:port]`` or an
alias from ``~/.ssh/config``), or a Slurm cluster (``kind: slurm``; without ``ssh`` its
login node is this machine). The file is read by :mod:`seglab.yamlpos` (bounded, with the
line of every key) and checked by a pydantic schema, like recipes; every problem is
reported at once, each as ``FILE:LINE: hosts.NAME.key: message`` (see docs/hosts.md).
``~/.ssh/config`` is read by asyncssh's own parser, the one it connects with, imported
only when an entry names a remote machine.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from seglab import paths
from seglab.errors import SeglabError, did_you_mean
from seglab.hostschema import (
    HOST_NAME,
    SLURM_KEYS,
    HostEntry,
    HostKind,
    HostsFile,
    SSHAddress,
    TelemetrySource,
    entry_problems,
)
from seglab.yamlpos import (
    ConfigError,
    KeyPath,
    Located,
    Problem,
    dotted,
    load_file,
    validation_problems,
)

LOCAL = "local"
DEFAULT_SSH_PORT = 22
DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"
DEFAULT_REMOTE_RUNS_ROOT = "~/seglab/runs"
DEFAULT_NVIDIA_SMI = "nvidia-smi"
DEFAULT_TELEMETRY_INTERVAL = 1.0
DEFAULT_GPU_MEMORY_THRESHOLD_MIB = 256
DEFAULT_PYTHON = "python3"
DEFAULT_SLURM_GRES = "gpu"
SSH_CONFIG_ENV = "SEGLAB_SSH_CONFIG"
_HOST_KEYS = (
    "kind",
    "docker_socket",
    "nvidia_smi",
    "telemetry",
    "telemetry_interval",
    "gpu_memory_threshold_mib",
    "cpu_slots",
    "python",
    "node_address",
    "node_interface",
)


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to reach a remote host, with `~/.ssh/config` already applied.

    ``alias`` is the name as written in hosts.yaml when `~/.ssh/config` changes where
    it leads (a ``HostName``, ``Port`` or ``ProxyJump`` for it; else None);
    ``hostname`` is the machine to connect to. ``user`` is None when neither hosts.yaml
    nor the ssh config names one (the local user applies).
    """

    user: str | None
    hostname: str
    port: int = DEFAULT_SSH_PORT
    alias: str | None = None
    identity_files: tuple[str, ...] = ()
    proxy_jump: str | None = None

    def __str__(self) -> str:
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port != DEFAULT_SSH_PORT else ""
        return f"{user}{host}{port}"


class UnknownHostError(SeglabError):
    """A host name that the inventory does not have."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(name)

    def __str__(self) -> str:
        return (
            f"unknown host {self.name!r}{did_you_mean(self.name, self.known)}; "
            f"known hosts: {', '.join(self.known)}"
        )


class UnknownDatasetError(SeglabError):
    """A dataset name that a host has no root for."""

    def __init__(self, host: str, dataset: str, known: list[str]) -> None:
        self.host = host
        self.dataset = dataset
        self.known = known
        super().__init__(dataset)

    def __str__(self) -> str:
        known = ", ".join(self.known) if self.known else "none"
        return (
            f"host {self.host!r} has no root for dataset {self.dataset!r}"
            f"{did_you_mean(self.dataset, self.known)}; add it to hosts.yaml as "
            f"`hosts: {{{self.host}: {{datasets: {{{self.dataset}: /absolute/path}}}}}}` "
            f"(datasets configured there: {known})"
        )


@dataclass(frozen=True)
class SlurmOptions:
    """How a ``kind: slurm`` host submits jobs (hosts.yaml keys of the same names).

    ``container`` is an Apptainer/Singularity image (or a pyxis/enroot reference) the
    trainer runs in; without it the trainer runs under ``python`` after ``env_setup``
    (shell lines such as ``source /opt/venv/bin/activate`` or ``module load cuda``).
    """

    partition: str | None = None
    account: str | None = None
    time_limit: str | None = None
    container: str | None = None
    env_setup: tuple[str, ...] = ()
    python: str = DEFAULT_PYTHON
    gres: str = DEFAULT_SLURM_GRES


@dataclass(frozen=True)
class Host:
    """One machine (or cluster) seglab can place runs on.

    ``runs_root`` is a :class:`Path` on this machine for local hosts and a string path
    (absolute, or starting with ``~/``) on the remote machine otherwise.
    """

    name: str
    ssh: SSHTarget | None
    kind: HostKind = "docker"
    docker_socket: str = DEFAULT_DOCKER_SOCKET
    runs_root: Path | str = DEFAULT_REMOTE_RUNS_ROOT
    datasets: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    nvidia_smi: str = DEFAULT_NVIDIA_SMI
    telemetry: TelemetrySource = "auto"
    telemetry_interval: float = DEFAULT_TELEMETRY_INTERVAL
    gpu_memory_threshold_mib: int = DEFAULT_GPU_MEMORY_THRESHOLD_MIB
    cpu_slots: int | None = None
    python: str = DEFAULT_PYTHON
    slurm: SlurmOptions | None = None
    node_address: str | None = None
    node_interface: str | None = None

    @property
    def is_local(self) -> bool:
        """True when this host's commands run on this machine (no SSH hop)."""
        return self.ssh is None

    def dataset_root(self, name: str) -> str:
        """The absolute root of dataset `name` on this host (UnknownDatasetError if unset)."""
        try:
            return self.datasets[name]
        except KeyError:
            raise UnknownDatasetError(self.name, name, sorted(self.datasets)) from None


@dataclass(frozen=True)
class Inventory:
    """Every configured host by name (``local`` first), and the file they came from."""

    hosts: dict[str, Host]
    path: Path

    def get(self, name: str) -> Host:
        """The host called `name` (UnknownHostError names the known ones)."""
        try:
            return self.hosts[name]
        except KeyError:
            raise UnknownHostError(name, list(self.hosts)) from None

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts.values())

    def __len__(self) -> int:
        return len(self.hosts)


def local_host(**settings: Any) -> Host:
    """The implicit local host, with `settings` overriding the defaults."""
    values: dict[str, Any] = {"runs_root": paths.default_runs_root(), **settings}
    return Host(name=LOCAL, ssh=None, **values)


def ssh_config_path() -> Path:
    """The OpenSSH client config to read: `$SEGLAB_SSH_CONFIG`, else `~/.ssh/config`."""
    override = os.environ.get(SSH_CONFIG_ENV, "")
    return Path(override) if override else Path.home() / ".ssh" / "config"


def load_inventory(path: Path | None = None) -> Inventory:
    """Load hosts.yaml (default: `seglab.paths.hosts_file()`); a missing file means `local` only.

    Raises :class:`ConfigError` listing every problem in the file (and in `~/.ssh/config`
    entries it relies on).
    """
    path = path if path is not None else paths.hosts_file()
    if not path.exists():
        return Inventory({LOCAL: local_host()}, path)
    doc = load_file(path)
    problems: list[Problem] = []
    hosts: dict[str, Host] = {}
    for name, entry in _host_entries(doc, problems).items():
        host = _parse_host(doc, name, entry, problems)
        if host is not None:
            hosts[name] = host
    if problems:
        raise ConfigError(problems)
    hosts.setdefault(LOCAL, local_host())
    ordered = {LOCAL: hosts.pop(LOCAL), **hosts}
    return Inventory(ordered, path)


def _host_entries(doc: Located, problems: list[Problem]) -> dict[str, Any]:
    try:
        top = HostsFile.model_validate(doc.data)
    except ValidationError as exc:
        problems += validation_problems(exc, HostsFile, doc.where)
        hosts = doc.data.get("hosts") if isinstance(doc.data, dict) else None
        return hosts if isinstance(hosts, dict) else {}
    return top.hosts or {}


def _parse_host(doc: Located, name: str, entry: Any, problems: list[Problem]) -> Host | None:
    base: KeyPath = ("hosts", name)
    found: list[Problem] = []
    entry = {} if entry is None else entry
    if not HOST_NAME.fullmatch(name):
        found.append(
            doc.problem(
                base,
                "a host name is letters, digits, '_', '.' and '-', starting with a letter or digit",
            )
        )
    data = dict(entry) if isinstance(entry, dict) else entry  # a copy: checks pop keys
    remote = name != LOCAL and isinstance(data, dict) and "ssh" in data
    if isinstance(data, dict):
        for at, message in entry_problems(data, local=name == LOCAL):
            found.append(doc.problem((*base, *at), message))
    try:
        parsed = HostEntry.model_validate(data, context={"remote": remote})
    except ValidationError as exc:
        problems += found + validation_problems(exc, HostEntry, doc.where, at=base)
        return None
    target = None
    if parsed.ssh is not None and not found:
        target = _ssh_target(doc, base, parsed.ssh, found)
    problems += found
    return None if found else _host(name, parsed, target, remote)


def _host(name: str, entry: HostEntry, target: SSHTarget | None, remote: bool) -> Host:
    slurm = SlurmOptions(**entry.given((*SLURM_KEYS, "python"))) if entry.kind == "slurm" else None
    runs_root = entry.runs_root
    if runs_root is None:
        runs_root = DEFAULT_REMOTE_RUNS_ROOT if remote else paths.default_runs_root()
    return Host(
        name=name,
        ssh=target,
        runs_root=runs_root,
        datasets=MappingProxyType(dict(entry.datasets)),
        slurm=slurm,
        **entry.given(_HOST_KEYS),
    )


# -- ~/.ssh/config, through asyncssh ------------------------------------------------------------

_PARSE_ERROR = re.compile(r"^(?P<file>.+) line (?P<line>\d+): (?P<reason>.*)$", re.DOTALL)


def _ssh_target(
    doc: Located, base: KeyPath, address: SSHAddress, found: list[Problem]
) -> SSHTarget:
    """`address` with `~/.ssh/config` applied as asyncssh applies it when it connects.

    A problem in the ssh config is added to `found`, located in that file when asyncssh
    says where (the target is then returned as written).
    """
    config_path = ssh_config_path()
    plain = SSHTarget(address.user, address.host, address.port or DEFAULT_SSH_PORT)
    if not config_path.is_file():
        return plain
    try:
        options = _ssh_options(config_path, address, dotted((*base, "ssh")))
    except ConfigError as exc:
        found.extend(exc.problems)
        return plain
    port = options.get("Port")
    if not isinstance(port, int) or not 0 < port < 65536:
        found.append(doc.problem((*base, "ssh"), f"ssh config Port {port} is not from 1 to 65535"))
        return plain
    hostname = str(options.get("Hostname") or address.host)
    listed = options.get("IdentityFile")
    identities = listed if isinstance(listed, list) else []
    proxy = options.get("ProxyJump")
    user = options.get("User")
    steered = any(options.get(k) is not None for k in ("Hostname", "ProxyJump"))
    return SSHTarget(
        user=str(user) if user else None,
        hostname=hostname,
        port=port,
        alias=address.host if steered or port != (address.port or DEFAULT_SSH_PORT) else None,
        identity_files=tuple(os.path.expanduser(str(path)) for path in identities),
        proxy_jump=str(proxy) if proxy else None,
    )


def _ssh_options(config_path: Path, address: SSHAddress, key: str) -> dict[str, object]:
    """The options asyncssh's config parser gives `address` (imported here, on first use).

    A config asyncssh refuses is a ConfigError at the line asyncssh names, keyed `key`.
    """
    from asyncssh.config import ConfigParseError, SSHClientConfig, SSHConfig
    from asyncssh.misc import IllegalUserName

    def load(final: bool) -> SSHConfig:
        return SSHClientConfig.load(
            None,
            [config_path],
            False,
            False,
            final,
            getpass.getuser(),
            address.user if address.user else (),
            address.host,
            address.port if address.port else (),
        )

    try:
        config = load(final=False)
        if config.has_match_final():  # asyncssh reads it again with `Match final` true
            config = load(final=True)
    except (ConfigParseError, IllegalUserName, OSError) as exc:
        text = exc.reason if isinstance(exc, IllegalUserName) else str(exc)
        where = _PARSE_ERROR.match(text)
        file, line, reason = (
            (where["file"], int(where["line"]), where["reason"])
            if where
            else (str(config_path), 1, text)
        )
        raise ConfigError([Problem(file, line, key, f"ssh config: {reason}")]) from exc
    names = ("Hostname", "User", "IdentityFile", "ProxyJump")
    options: dict[str, object] = {name: config.get(name) for name in names}
    options["Port"] = config.get("Port", DEFAULT_SSH_PORT)
    return options
