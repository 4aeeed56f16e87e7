"""The schema of hosts.yaml: each key's check and message, as a pydantic model.

:class:`HostEntry` checks one entry of the ``hosts:`` mapping as written (validate it with
the context ``{"remote": bool}``: paths of a remote host are not expanded here);
:func:`entry_problems` checks across keys. :mod:`seglab.hosts` locates every error with
:mod:`seglab.yamlpos` and builds the inventory from what passes.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo, model_validator

from seglab.yamlpos import KeyPath

HostKind = Literal["docker", "slurm"]
TelemetrySource = Literal["auto", "nvml", "nvidia-smi"]
KINDS: tuple[HostKind, ...] = ("docker", "slurm")
TELEMETRY_SOURCES: tuple[TelemetrySource, ...] = ("auto", "nvml", "nvidia-smi")
SLURM_KEYS = ("partition", "account", "time_limit", "container", "env_setup", "gres")
"""The keys only a ``kind: slurm`` host takes (the fields of ``seglab.hosts.SlurmOptions``)."""
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?$")
_SLURM_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
_SLURM_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^\d+-\d+$")
_TARGET_FORMS = "user@host[:port], host[:port] or an alias from ~/.ssh/config"


def _remote(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("remote"))


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value.strip()


def _choice(value: Any, choices: tuple[str, ...]) -> Any:
    if isinstance(value, str) and value in choices:
        return value
    raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")


def _kind(value: Any) -> Any:
    return _choice(value, KINDS)


def _docker_socket(value: Any) -> str:
    text = _string(value).removeprefix("unix://")
    if not text.startswith("/"):
        raise ValueError(f"expected the absolute path of the Docker socket, got {value!r}")
    return text


def _runs_root(value: Any, info: ValidationInfo) -> Path | str:
    text = _string(value)
    if _remote(info):
        if not (text.startswith("/") or text == "~" or text.startswith("~/")):
            raise ValueError(
                f"expected an absolute path (or one under ~/) on the remote host, got {value!r}"
            )
        return text
    local = Path(text).expanduser()
    if not local.is_absolute():
        raise ValueError(f"expected an absolute path, got {value!r}")
    return local


def _datasets(value: Any) -> Any:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of dataset name -> absolute path, got {value!r}")
    return value


def _dataset_name(value: Any) -> Any:
    if not isinstance(value, str) or not HOST_NAME.fullmatch(value):
        raise ValueError("a dataset name is letters, digits, '_', '.' and '-'")
    return value


def _dataset_root(value: Any, info: ValidationInfo) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected an absolute path, got {value!r}")
    remote = _remote(info)
    path = value.strip() if remote else os.path.expanduser(value.strip())
    if not path.startswith("/"):
        hint = " (Docker mounts need absolute paths; `~` is not expanded on remote hosts)"
        tilde = remote and path.startswith("~")
        raise ValueError(f"expected an absolute path, got {value!r}{hint if tilde else ''}")
    return path


def _command(value: Any, info: ValidationInfo) -> str:
    text = _string(value)
    path = text if _remote(info) else os.path.expanduser(text)
    if "/" in path and not path.startswith("/"):
        raise ValueError(f"expected a command name on PATH or an absolute path, got {value!r}")
    return path


def _telemetry(value: Any, info: ValidationInfo) -> Any:
    source = _choice(value, TELEMETRY_SOURCES)
    if _remote(info) and source == "nvml":
        raise ValueError(
            "nvml reads this machine's GPUs only; a remote host uses nvidia-smi (or auto)"
        )
    return source


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a number of seconds greater than 0, got {value!r}")
    return float(value)


def _mib(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number of MiB, got {value!r}")
    if value < 0:
        raise ValueError(f"must be 0 or more MiB, got {value}")
    return value


def _slots(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a whole number of runs, 1 or more, got {value!r}")
    return value


def _node_address(value: Any) -> str:
    text = _string(value)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if not _HOSTNAME.fullmatch(text):
            raise ValueError(
                f"expected the host name or IP address other hosts reach this one at "
                f"(for multi-node runs), got {value!r}"
            ) from None
    return text


def _node_interface(value: Any) -> str:
    text = _string(value)
    if not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", text):
        raise ValueError(f"expected a network interface name such as eth0 or ib0, got {value!r}")
    return text


def _slurm_name(value: Any) -> str:
    text = _string(value)
    if not _SLURM_NAME.fullmatch(text):
        raise ValueError(
            f"expected a Slurm name (letters, digits, '_', '.', '+', '-'), got {value!r}"
        )
    return text


def _time_limit(value: Any) -> str:
    number = isinstance(value, int) and not isinstance(value, bool)
    text = str(value) if number else _string(value)
    if not _SLURM_TIME.fullmatch(text):
        raise ValueError(
            f"expected a Slurm time limit such as 90 (minutes), 4:00:00 or "
            f"2-00:00:00, got {value!r}"
        )
    return text


def _lines(value: Any) -> Any:
    lines = [value] if isinstance(value, str) else value
    if not isinstance(lines, list) or not lines:
        raise ValueError(f"expected a shell line or a list of them, got {value!r}")
    return lines


def _shell_line(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or "\n" in value.strip():
        raise ValueError(f"expected one non-empty shell line, got {value!r}")
    return value.strip()


def _python(value: Any) -> str:
    text = _string(value)
    if "/" in text and not text.startswith("/"):
        raise ValueError(f"expected a command name on PATH or an absolute path, got {value!r}")
    return text


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"port must be a number from 1 to 65535, got {text!r}")
    return int(text)


class SSHAddress(NamedTuple):
    """An `ssh:` value as written: `[user@]host[:port]`."""

    user: str | None
    host: str
    port: int | None


def _ssh_address(value: Any) -> SSHAddress:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected user@host[:port] or an alias from ~/.ssh/config, got {value!r}")
    text = value.strip()
    user: str | None = None
    rest = text
    if "@" in text:
        user, _, rest = text.rpartition("@")
        if not _USER.fullmatch(user):
            raise ValueError(f"{user!r} is not a valid user name in {text!r}")
    port: int | None = None
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError(f"expected [address]:port, got {text!r}")
        if ":" not in host:
            raise ValueError(f"brackets are for IPv6 addresses, got {text!r}")
        return SSHAddress(user, host, _port(tail[1:]) if tail else None)
    if rest.count(":") == 1:
        rest, _, port_text = rest.partition(":")
        port = _port(port_text)
    elif rest.count(":") > 1:
        raise ValueError(f"write an IPv6 address in brackets, e.g. [{rest}]:22; got {text!r}")
    if not _HOSTNAME.fullmatch(rest):
        raise ValueError(f"expected {_TARGET_FORMS}, got {text!r}")
    return SSHAddress(user, rest, port)


def _check(check: Callable[..., Any]) -> BeforeValidator:
    return BeforeValidator(check)


class HostEntry(BaseModel):
    """One host's settings as written; None (or empty) where the file leaves a key out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ssh: Annotated[SSHAddress | None, _check(_ssh_address)] = None
    kind: Annotated[HostKind, _check(_kind)] = "docker"
    docker_socket: Annotated[str | None, _check(_docker_socket)] = None
    runs_root: Annotated[Path | str | None, _check(_runs_root)] = None
    datasets: Annotated[
        dict[Annotated[str, _check(_dataset_name)], Annotated[str, _check(_dataset_root)]],
        _check(_datasets),
    ] = {}
    nvidia_smi: Annotated[str | None, _check(_command)] = None
    telemetry: Annotated[TelemetrySource | None, _check(_telemetry)] = None
    telemetry_interval: Annotated[float | None, _check(_seconds)] = None
    gpu_memory_threshold_mib: Annotated[int | None, _check(_mib)] = None
    cpu_slots: Annotated[int | None, _check(_slots)] = None
    node_address: Annotated[str | None, _check(_node_address)] = None
    node_interface: Annotated[str | None, _check(_node_interface)] = None
    partition: Annotated[str | None, _check(_slurm_name)] = None
    account: Annotated[str | None, _check(_slurm_name)] = None
    time_limit: Annotated[str | None, _check(_time_limit)] = None
    container: Annotated[str | None, _check(_string)] = None
    env_setup: Annotated[tuple[Annotated[str, _check(_shell_line)], ...] | None, _check(_lines)] = (
        None
    )
    python: Annotated[str | None, _check(_python)] = None
    gres: Annotated[str | None, _check(_slurm_name)] = None

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping of host settings, got {data!r}")
        return data

    def given(self, keys: tuple[str, ...]) -> dict[str, Any]:
        """The values among `keys` that the file sets (for dataclass keyword arguments)."""
        return {key: getattr(self, key) for key in keys if getattr(self, key) is not None}


class HostsFile(BaseModel):
    """The top level of hosts.yaml: one ``hosts:`` mapping of name -> :class:`HostEntry`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hosts: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("expected a mapping with a `hosts:` key")
        if data.get("hosts") is not None and not isinstance(data["hosts"], dict):
            raise ValueError("hosts: expected a mapping of host name -> settings")
        return data


def entry_problems(data: dict[str, Any], *, local: bool) -> Iterator[tuple[KeyPath, str]]:
    """Checks across one entry's keys, as (key path, message).

    Keys that do not apply are taken out of `data` (an ``ssh`` on the local host, Slurm
    keys on a host of another kind), so that only their misplacement is reported.
    """
    kind = data.get("kind", "docker")
    if "ssh" in data and local:
        del data["ssh"]
        yield (
            ("ssh",),
            "the local host is this machine and takes no ssh target; "
            "add the remote machine under another name",
        )
    elif "ssh" not in data and not local and kind != "slurm":
        yield (
            ("ssh",),
            "required key is missing: give user@host[:port] or an alias from "
            "~/.ssh/config (only a `kind: slurm` host may omit it, meaning its "
            "login node is this machine)",
        )
    if kind != "slurm":
        for key in SLURM_KEYS:
            if key in data:
                del data[key]
                yield (key,), "only a `kind: slurm` host takes this key"
