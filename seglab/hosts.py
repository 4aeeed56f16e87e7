"""The host inventory: `hosts.yaml` plus the user's `~/.ssh/config`.

The ``local`` host (this machine) always exists; an entry named ``local`` configures it.
Every other entry is a remote machine reached over SSH (``ssh: user@host[:port]`` or an
alias from ``~/.ssh/config``), or a Slurm cluster (``kind: slurm``; without ``ssh`` its
login node is this machine). Every problem in the file is reported at once, each as
``FILE:LINE: hosts.NAME.key: message`` (see docs/hosts.md).
"""

from __future__ import annotations

import fnmatch
import getpass
import glob
import ipaddress
import math
import os
import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from seglab import paths
from seglab.errors import SeglabError, did_you_mean
from seglab.yamlpos import ConfigError, KeyPath, Located, Problem, load_file

LOCAL = "local"
DEFAULT_SSH_PORT = 22
DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"
DEFAULT_REMOTE_RUNS_ROOT = "~/seglab/runs"
DEFAULT_NVIDIA_SMI = "nvidia-smi"
DEFAULT_TELEMETRY_INTERVAL = 1.0
DEFAULT_GPU_MEMORY_THRESHOLD_MIB = 256
DEFAULT_SLURM_PYTHON = "python3"
DEFAULT_SLURM_GRES = "gpu"
SSH_CONFIG_ENV = "SEGLAB_SSH_CONFIG"

HostKind = Literal["docker", "slurm"]
TelemetrySource = Literal["auto", "nvml", "nvidia-smi"]
KINDS: tuple[HostKind, ...] = ("docker", "slurm")
TELEMETRY_SOURCES: tuple[TelemetrySource, ...] = ("auto", "nvml", "nvidia-smi")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?$")
_MAX_INCLUDE_DEPTH = 16


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to reach a remote host, with `~/.ssh/config` already applied.

    ``alias`` is the name as written in hosts.yaml when a ``Host`` line of `~/.ssh/config`
    names it (else None); ``hostname`` is the machine to connect to. ``user`` is
    None when neither hosts.yaml nor the ssh config names one (the local user applies).
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
    python: str = DEFAULT_SLURM_PYTHON
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
    entries = _host_entries(doc, problems)
    ssh_config = _SSHConfig(ssh_config_path())
    hosts: dict[str, Host] = {}
    for name, entry in entries.items():
        host = _parse_host(doc, name, entry, ssh_config, problems)
        if host is not None:
            hosts[name] = host
    if problems:
        raise ConfigError(problems)
    hosts.setdefault(LOCAL, local_host())
    ordered = {LOCAL: hosts.pop(LOCAL), **hosts}
    return Inventory(ordered, path)


def ssh_config_path() -> Path:
    """The OpenSSH client config to read: `$SEGLAB_SSH_CONFIG`, else `~/.ssh/config`."""
    override = os.environ.get(SSH_CONFIG_ENV, "")
    return Path(override) if override else Path.home() / ".ssh" / "config"


# -- hosts.yaml ---------------------------------------------------------------------------


class _Invalid(Exception):
    """One or more problems with a value: (sub key path, message) pairs."""

    def __init__(self, *problems: tuple[KeyPath, str]) -> None:
        self.problems = problems
        super().__init__("; ".join(message for _, message in problems))


def _invalid(message: str, at: KeyPath = ()) -> _Invalid:
    return _Invalid((at, message))


def _host_entries(doc: Located, problems: list[Problem]) -> dict[str, Any]:
    data = doc.data
    if not isinstance(data, dict):
        problems.append(doc.problem((), "expected a mapping with a `hosts:` key"))
        return {}
    for key in data:
        if key != "hosts":
            problems.append(doc.problem((key,), f"unknown key{did_you_mean(key, ['hosts'])}"))
    hosts = data.get("hosts")
    if hosts is None:
        return {}
    if not isinstance(hosts, dict):
        problems.append(doc.problem(("hosts",), "expected a mapping of host name -> settings"))
        return {}
    return hosts


def _parse_host(
    doc: Located, name: str, entry: Any, ssh_config: _SSHConfig, problems: list[Problem]
) -> Host | None:
    base: KeyPath = ("hosts", name)
    found: list[Problem] = []

    def report(at: KeyPath, message: str) -> None:
        found.append(doc.problem((*base, *at), message))

    if not _NAME.fullmatch(name):
        report(
            (), "a host name is letters, digits, '_', '.' and '-', starting with a letter or digit"
        )
    if entry is None:
        entry = {}
    if not isinstance(entry, dict):
        report((), f"expected a mapping of host settings, got {entry!r}")
        problems.extend(found)
        return None
    for key in entry:
        if key not in _KEYS:
            report((key,), f"unknown key{did_you_mean(key, _KEYS)}")

    values: dict[str, Any] = {}
    try:
        values["kind"] = _kind(entry.get("kind", "docker"))
    except _Invalid as exc:
        report(("kind",), exc.problems[0][1])
    target: SSHTarget | None = None
    if "ssh" in entry:
        if name == LOCAL:
            report(
                ("ssh",),
                "the local host is this machine and takes no ssh target; "
                "add the remote machine under another name",
            )
        else:
            try:
                target = _ssh_target(entry["ssh"], name, ssh_config)
            except _Invalid as exc:
                report(("ssh",), exc.problems[0][1])
            except ConfigError as exc:  # a bad setting in ~/.ssh/config, located there
                found.extend(exc.problems)
    elif name != LOCAL and values.get("kind") != "slurm":
        report(
            ("ssh",),
            "required key is missing: give user@host[:port] or an alias from "
            "~/.ssh/config (only a `kind: slurm` host may omit it, meaning its "
            "login node is this machine)",
        )
    remote = name != LOCAL and "ssh" in entry
    slurm_values: dict[str, Any] = {}
    for key, parse_slurm in _SLURM_PARSERS.items():
        if key not in entry:
            continue
        if values.get("kind") != "slurm":
            report((key,), "only a `kind: slurm` host takes this key")
            continue
        try:
            slurm_values[key] = parse_slurm(entry[key])
        except _Invalid as exc:
            for at, message in exc.problems:
                report((key, *at), message)
    if values.get("kind") == "slurm":
        values["slurm"] = SlurmOptions(**slurm_values)
    for key, parse in _PARSERS.items():
        if key in entry:
            try:
                values[key] = parse(entry[key], remote)
            except _Invalid as exc:
                for at, message in exc.problems:
                    report((key, *at), message)
    if found:
        problems.extend(found)
        return None
    if not remote:
        values.setdefault("runs_root", paths.default_runs_root())
    return Host(name=name, ssh=target, **values)


def _kind(value: Any) -> HostKind:
    for kind in KINDS:
        if value == kind:
            return kind
    raise _invalid(f"expected one of {', '.join(KINDS)}, got {value!r}")


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _invalid(f"expected a non-empty string, got {value!r}")
    return value.strip()


def _docker_socket(value: Any, remote: bool) -> str:
    text = _string(value).removeprefix("unix://")
    if not text.startswith("/"):
        raise _invalid(f"expected the absolute path of the Docker socket, got {value!r}")
    return text


def _runs_root(value: Any, remote: bool) -> Path | str:
    text = _string(value)
    if remote:
        if not (text.startswith("/") or text == "~" or text.startswith("~/")):
            raise _invalid(
                f"expected an absolute path (or one under ~/) on the remote host, got {value!r}"
            )
        return text
    local = Path(text).expanduser()
    if not local.is_absolute():
        raise _invalid(f"expected an absolute path, got {value!r}")
    return local


def _datasets(value: Any, remote: bool) -> Mapping[str, str]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, dict):
        raise _invalid(f"expected a mapping of dataset name -> absolute path, got {value!r}")
    roots: dict[str, str] = {}
    problems: list[tuple[KeyPath, str]] = []
    for name, root in value.items():
        if not _NAME.fullmatch(name):
            problems.append(((name,), "a dataset name is letters, digits, '_', '.' and '-'"))
            continue
        if not isinstance(root, str) or not root.strip():
            problems.append(((name,), f"expected an absolute path, got {root!r}"))
            continue
        path = root.strip() if remote else os.path.expanduser(root.strip())
        if not path.startswith("/"):
            hint = " (Docker mounts need absolute paths; `~` is not expanded on remote hosts)"
            problems.append(
                (
                    (name,),
                    f"expected an absolute path, got {root!r}"
                    + (hint if remote and path.startswith("~") else ""),
                )
            )
            continue
        roots[name] = path
    if problems:
        raise _Invalid(*problems)
    return MappingProxyType(roots)


def _nvidia_smi(value: Any, remote: bool) -> str:
    text = _string(value)
    path = text if remote else os.path.expanduser(text)
    if "/" in path and not path.startswith("/"):
        raise _invalid(f"expected a command name on PATH or an absolute path, got {value!r}")
    return path


def _telemetry(value: Any, remote: bool) -> TelemetrySource:
    for source in TELEMETRY_SOURCES:
        if value == source:
            if remote and source == "nvml":
                raise _invalid(
                    "nvml reads this machine's GPUs only; a remote host uses nvidia-smi (or auto)"
                )
            return source
    raise _invalid(f"expected one of {', '.join(TELEMETRY_SOURCES)}, got {value!r}")


def _telemetry_interval(value: Any, remote: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(f"expected a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise _invalid(f"must be a number of seconds greater than 0, got {value!r}")
    return float(value)


def _gpu_memory_threshold(value: Any, remote: bool) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"expected a whole number of MiB, got {value!r}")
    if value < 0:
        raise _invalid(f"must be 0 or more MiB, got {value}")
    return value


def _node_address(value: Any, remote: bool) -> str:
    text = _string(value)
    if not (_HOSTNAME.fullmatch(text) or _is_ip(text)):
        raise _invalid(
            f"expected the host name or IP address other hosts reach this one at "
            f"(for multi-node runs), got {value!r}"
        )
    return text


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _node_interface(value: Any, remote: bool) -> str:
    text = _string(value)
    if not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", text):
        raise _invalid(f"expected a network interface name such as eth0 or ib0, got {value!r}")
    return text


_PARSERS: dict[str, Callable[[Any, bool], Any]] = {
    "docker_socket": _docker_socket,
    "runs_root": _runs_root,
    "datasets": _datasets,
    "nvidia_smi": _nvidia_smi,
    "telemetry": _telemetry,
    "telemetry_interval": _telemetry_interval,
    "gpu_memory_threshold_mib": _gpu_memory_threshold,
    "node_address": _node_address,
    "node_interface": _node_interface,
}
_SLURM_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
_SLURM_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^\d+-\d+$")


def _slurm_name(value: Any) -> str:
    text = _string(value)
    if not _SLURM_NAME.fullmatch(text):
        raise _invalid(
            f"expected a Slurm name (letters, digits, '_', '.', '+', '-'), got {value!r}"
        )
    return text


def _time_limit(value: Any) -> str:
    text = (
        str(value).strip()
        if isinstance(value, int) and not isinstance(value, bool)
        else _string(value)
    )
    if not _SLURM_TIME.fullmatch(text):
        raise _invalid(
            f"expected a Slurm time limit such as 90 (minutes), 4:00:00 or "
            f"2-00:00:00, got {value!r}"
        )
    return text


def _env_setup(value: Any) -> tuple[str, ...]:
    lines = [value] if isinstance(value, str) else value
    if not isinstance(lines, list) or not lines:
        raise _invalid(f"expected a shell line or a list of them, got {value!r}")
    problems: list[tuple[KeyPath, str]] = []
    out: list[str] = []
    for index, line in enumerate(lines):
        if not isinstance(line, str) or not line.strip() or "\n" in line.strip():
            problems.append(((index,), f"expected one non-empty shell line, got {line!r}"))
            continue
        out.append(line.strip())
    if problems:
        raise _Invalid(*problems)
    return tuple(out)


def _slurm_python(value: Any) -> str:
    text = _string(value)
    if "/" in text and not text.startswith("/"):
        raise _invalid(f"expected a command name on PATH or an absolute path, got {value!r}")
    return text


_SLURM_PARSERS: dict[str, Callable[[Any], Any]] = {
    "partition": _slurm_name,
    "account": _slurm_name,
    "time_limit": _time_limit,
    "container": _string,
    "env_setup": _env_setup,
    "python": _slurm_python,
    "gres": _slurm_name,
}
_KEYS = ("ssh", "kind", *_PARSERS, *_SLURM_PARSERS)


# -- ssh targets ----------------------------------------------------------------------------


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise _invalid(f"port must be a number from 1 to 65535, got {text!r}")
    return int(text)


def _split_target(value: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]` (or `[user@][v6addr][:port]`) as its three parts."""
    user: str | None = None
    rest = value
    if "@" in value:
        user, _, rest = value.rpartition("@")
        if not _USER.fullmatch(user):
            raise _invalid(f"{user!r} is not a valid user name in {value!r}")
    port: int | None = None
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise _invalid(f"expected [address]:port, got {value!r}")
        if tail:
            port = _port(tail[1:])
        if ":" not in host:
            raise _invalid(f"brackets are for IPv6 addresses, got {value!r}")
        return user, host, port
    if rest.count(":") == 1:
        rest, _, port_text = rest.partition(":")
        port = _port(port_text)
    elif rest.count(":") > 1:
        raise _invalid(f"write an IPv6 address in brackets, e.g. [{rest}]:22; got {value!r}")
    if not _HOSTNAME.fullmatch(rest):
        raise _invalid(
            f"expected user@host[:port], host[:port] or an alias from ~/.ssh/config, got {value!r}"
        )
    return user, rest, port


def _ssh_target(value: Any, host_name: str, ssh_config: _SSHConfig) -> SSHTarget:
    if not isinstance(value, str) or not value.strip():
        raise _invalid(f"expected user@host[:port] or an alias from ~/.ssh/config, got {value!r}")
    user, name, port = _split_target(value.strip())
    options = ssh_config.lookup(name, host_name)
    user = user or options.user
    hostname = _expand(options.hostname, {"h": name}) if options.hostname else name
    identities: tuple[str, ...] = ()
    if options.identity_files:
        local_user = getpass.getuser()
        tokens = {"d": str(Path.home()), "h": hostname, "r": user or local_user, "u": local_user}
        identities = tuple(
            os.path.expanduser(_expand(path, tokens)) for path in options.identity_files
        )
    proxy = options.proxy_jump
    return SSHTarget(
        user=user,
        hostname=hostname,
        port=port or options.port or DEFAULT_SSH_PORT,
        alias=name if options.alias else None,
        identity_files=identities,
        proxy_jump=None if proxy is None or proxy.lower() == "none" else proxy,
    )


def _expand(text: str, tokens: Mapping[str, str]) -> str:
    """OpenSSH `%x` tokens: the given ones and `%%`; any other stays as written."""

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        return "%" if code == "%" else tokens.get(code, match.group(0))

    return re.sub(r"%(.)", one, text)


# -- ~/.ssh/config ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Directive:
    file: str
    line: int
    keyword: str
    args: tuple[str, ...]
    included: tuple[_Directive, ...] = ()


@dataclass
class _SSHOptions:
    """The settings `~/.ssh/config` gives one host name (first value wins, as in ssh)."""

    hostname: str | None = None
    user: str | None = None
    port: int | None = None
    identity_files: list[str] = field(default_factory=list)
    proxy_jump: str | None = None
    alias: bool = False  # a `Host` line names this host literally (not only by wildcard)


_SSH_KEYWORDS = ("hostname", "user", "port", "identityfile", "proxyjump")


class _SSHConfig:
    """An OpenSSH client config file, read on first use.

    Honours ``Host`` patterns (``*``, ``?``, ``!negation``), ``Include`` (globs; relative
    paths under the including file's folder), and ``Match all``; other ``Match`` blocks
    are skipped (seglab cannot evaluate them without running ssh).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._directives: tuple[_Directive, ...] | None = None

    def lookup(self, name: str, host_name: str) -> _SSHOptions:
        """The options for `name`; bad values raise a ConfigError located in the ssh config."""
        if self._directives is None:
            self._directives = self._read(self.path, 0) if self.path.exists() else ()
        options = _SSHOptions()
        problems: list[Problem] = []
        _apply(
            self._directives, name, options, True, key=f"hosts.{host_name}.ssh", problems=problems
        )
        if problems:
            raise ConfigError(problems)
        return options

    def _read(self, path: Path, depth: int) -> tuple[_Directive, ...]:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                [Problem(str(path), 1, "(ssh config)", exc.strerror or str(exc))]
            ) from exc
        out: list[_Directive] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            match = re.match(r"\s*([A-Za-z]+)\s*(?:=\s*|\s+|$)(.*)$", raw)
            if not raw.strip() or raw.lstrip().startswith("#") or match is None:
                continue
            keyword, rest = match.group(1).lower(), match.group(2).strip()
            try:
                args = tuple(shlex.split(rest, comments=True))
            except ValueError as exc:
                raise ConfigError(
                    [Problem(str(path), number, keyword, f"cannot parse arguments: {exc}")]
                ) from exc
            included: tuple[_Directive, ...] = ()
            if keyword == "include":
                if depth >= _MAX_INCLUDE_DEPTH:
                    raise ConfigError(
                        [Problem(str(path), number, "include", "Include nested too deeply")]
                    )
                included = tuple(
                    directive
                    for target in self._include_targets(path, args)
                    for directive in self._read(target, depth + 1)
                )
            out.append(_Directive(str(path), number, keyword, args, included))
        return tuple(out)

    @staticmethod
    def _include_targets(including: Path, patterns: tuple[str, ...]) -> Iterator[Path]:
        for pattern in patterns:
            expanded = os.path.expanduser(pattern)
            if not os.path.isabs(expanded):
                expanded = str(including.parent / expanded)
            for match in sorted(glob.glob(expanded)):
                yield Path(match)


def _host_matches(name: str, patterns: tuple[str, ...]) -> bool:
    hit = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if fnmatch.fnmatchcase(name.lower(), pattern.lstrip("!").lower()):
            if negated:
                return False
            hit = True
    return hit


def _apply(
    directives: tuple[_Directive, ...],
    name: str,
    options: _SSHOptions,
    active: bool,
    *,
    key: str,
    problems: list[Problem],
) -> None:
    for item in directives:
        if item.keyword == "host":
            active = _host_matches(name, item.args)
            if active and name.lower() in (arg.lower() for arg in item.args):
                options.alias = True
        elif item.keyword == "match":
            active = [a.lower() for a in item.args] == ["all"]
        elif item.keyword == "include":
            if active:
                _apply(item.included, name, options, active, key=key, problems=problems)
        elif active and item.keyword in _SSH_KEYWORDS:
            if not item.args:
                problems.append(
                    Problem(
                        item.file, item.line, key, f"{item.keyword} in the ssh config has no value"
                    )
                )
                continue
            _set_option(options, item, key, problems)


def _set_option(options: _SSHOptions, item: _Directive, key: str, problems: list[Problem]) -> None:
    value = item.args[0]
    if item.keyword == "identityfile":
        options.identity_files.append(value)
    elif item.keyword == "hostname" and options.hostname is None:
        options.hostname = value
    elif item.keyword == "user" and options.user is None:
        options.user = value
    elif item.keyword == "proxyjump" and options.proxy_jump is None:
        options.proxy_jump = value
    elif item.keyword == "port" and options.port is None:
        try:
            options.port = _port(value)
        except _Invalid as exc:
            problems.append(
                Problem(item.file, item.line, key, f"ssh config Port: {exc.problems[0][1]}")
            )
