"""`seglab hosts`: list the machines seglab can place runs on (from hosts.yaml)."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seglab.commands import add_command, print_json
from seglab.commands.trust import add_trust_action

if TYPE_CHECKING:
    from seglab.hosts import Host, Inventory
    from seglab.remote.status import HostReport

DESCRIPTION = """\
List the hosts in the inventory: the local machine (always there, as `local`) and
every machine in $XDG_CONFIG_HOME/seglab/hosts.yaml, with how seglab reaches it
(SSH target after ~/.ssh/config), its Docker engine (for this machine DOCKER_HOST
overrides the default socket, and says so), runs root, dataset roots and
where its GPU telemetry comes from, and each host's status: online, offline,
auth-failed or host-key-refused (with the reason), SSH latency, NVIDIA driver and
CUDA version, GPU count, Docker engine version and whether its NVIDIA container
runtime is present. --no-check shows the configuration only ("checked": false).

A mistake in hosts.yaml is reported as FILE:LINE: hosts.NAME.key: message, every
one at once, and the command exits 1. docs/hosts.md documents every key.

--json prints {"file", "file_exists", "hosts": [...]}; each host has name, kind
(docker | slurm), local (true for this machine), ssh (null, or target, user,
hostname, port, alias, identity_files, proxy_jump), docker_socket, docker_url (the
engine seglab uses on this machine; null for remote hosts), docker_url_from_env,
runs_root,
datasets (name -> path), telemetry, telemetry_interval (seconds), nvidia_smi,
gpu_memory_threshold_mib, node_address, node_interface (multi-node runs), slurm
(null, or its keys), checked and (when checked) status: state, message,
latency_ms, driver_version, cuda_version, gpu_count, docker_version,
nvidia_runtime, problems.

Examples:
  seglab hosts
  seglab hosts --json
  seglab hosts --file ./hosts.yaml     # check a file before putting it in place
"""


def register(subparsers: Any) -> None:
    """Add the `hosts` command."""
    parser = add_command(subparsers, "hosts", "list the configured hosts (hosts.yaml)", DESCRIPTION)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--file",
        type=Path,
        metavar="PATH",
        help="read this hosts.yaml instead of the one in the config dir",
    )
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="show the configuration only; do not contact the hosts",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=15.0,
        metavar="S",
        help="seconds to wait for each remote host to answer (default 15)",
    )
    parser.set_defaults(func=_hosts)
    add_trust_action(parser)


def host_json(host: Host) -> dict[str, Any]:
    """One host as the JSON object `seglab hosts --json` prints."""
    ssh = None
    if host.ssh is not None:
        ssh = {
            "target": str(host.ssh),
            "user": host.ssh.user,
            "hostname": host.ssh.hostname,
            "port": host.ssh.port,
            "alias": host.ssh.alias,
            "identity_files": list(host.ssh.identity_files),
            "proxy_jump": host.ssh.proxy_jump,
        }
    return {
        "name": host.name,
        "kind": host.kind,
        "local": host.is_local,
        "ssh": ssh,
        "docker_socket": host.docker_socket,
        "docker_url": engine_url(host)[0],
        "docker_url_from_env": engine_url(host)[1],
        "runs_root": str(host.runs_root),
        "datasets": dict(host.datasets),
        "telemetry": host.telemetry,
        "telemetry_interval": host.telemetry_interval,
        "nvidia_smi": host.nvidia_smi,
        "gpu_memory_threshold_mib": host.gpu_memory_threshold_mib,
        "node_address": host.node_address,
        "node_interface": host.node_interface,
        "slurm": None
        if host.slurm is None
        else {
            "partition": host.slurm.partition,
            "account": host.slurm.account,
            "time_limit": host.slurm.time_limit,
            "container": host.slurm.container,
            "env_setup": list(host.slurm.env_setup),
            "python": host.slurm.python,
            "gres": host.slurm.gres,
        },
        "checked": False,
    }


def _hosts(args: argparse.Namespace) -> int:
    from seglab.hosts import load_inventory
    from seglab.workstation import Workstation

    inventory = load_inventory(args.file) if args.file else Workstation().hosts()
    reports = {} if args.no_check else asyncio.run(_check(inventory, args.timeout))
    rows = []
    for host in inventory:
        row = host_json(host)
        if host.name in reports:
            row["checked"] = True
            row["status"] = reports[host.name].to_json()
        rows.append(row)
    if args.json:
        print_json(
            {
                "file": str(inventory.path),
                "file_exists": inventory.path.exists(),
                "hosts": rows,
            }
        )
        return 0
    _print_text(inventory)
    for name, report in reports.items():
        print(f"\n{name}: {_status_line(report.to_json())}")
    return 0


async def _check(inventory: Inventory, timeout: float) -> dict[str, HostReport]:
    """Status of every host: remote ones over SSH, the local one on this machine."""
    from seglab.remote.manager import check_hosts
    from seglab.remote.status import probe_local

    out: dict[str, HostReport] = {}
    for host in inventory:
        if host.is_local:
            url, _ = engine_url(host)
            out[host.name] = await probe_local(host.name, host.nvidia_smi, url)
    for report in await check_hosts(inventory, timeout=timeout):
        out[report.name] = report
    return out


def engine_url(host: Host) -> tuple[str | None, bool]:
    """The URL of a local host's Docker engine as seglab uses it (``DOCKER_HOST`` overrides
    the default socket, as for the docker CLI) and whether ``DOCKER_HOST`` gave it; None for
    a remote host (its socket is reached through SSH)."""
    if not host.is_local:
        return None, False
    from seglab.machines import LocalMachine

    url = LocalMachine(host.name, host.docker_socket).docker_url
    return url, url == os.environ.get("DOCKER_HOST")


def _status_line(status: dict[str, Any]) -> str:
    parts = [str(status["state"])]
    if status.get("message"):
        parts.append(str(status["message"]))
    if status.get("latency_ms") is not None:
        parts.append(f"latency {status['latency_ms']:.1f} ms")
    gpus = status.get("gpu_count")
    parts.append(
        f"{gpus} GPU(s), driver {status['driver_version']}, CUDA {status['cuda_version']}"
        if gpus
        else "no NVIDIA GPU seen"
    )
    engine = status.get("docker_version")
    runtime = ", NVIDIA runtime" if status.get("nvidia_runtime") else ", no NVIDIA runtime"
    parts.append(f"Docker {engine}{runtime}" if engine else "no Docker engine")
    out = "; ".join(parts)
    for problem in status.get("problems") or []:
        out += f"\n  - {problem}"
    return out


def _print_text(inventory: Inventory) -> None:
    if inventory.path.exists():
        print(f"{len(inventory)} host(s) from {inventory.path}")
    else:
        print(
            f"no {inventory.path} yet: only the local host (docs/hosts.md shows how to "
            "add remote machines)"
        )
    for host in inventory:
        where = "this machine" if host.ssh is None else f"ssh {host.ssh}"
        if host.ssh is not None and host.ssh.alias:
            where += f" (alias {host.ssh.alias})"
        if host.ssh is not None and host.ssh.proxy_jump:
            where += f" via {host.ssh.proxy_jump}"
        datasets = ", ".join(f"{name}={root}" for name, root in host.datasets.items())
        print()
        print(f"{host.name}  [{host.kind}]  {where}")
        url, from_env = engine_url(host)
        engine = f"{host.docker_socket} on the host, reached through SSH"
        if url is not None:
            engine = f"{url} (from DOCKER_HOST)" if from_env else url
        rows = [
            ("docker engine", engine),
            ("runs root", str(host.runs_root)),
            ("datasets", datasets or "none (add `datasets:` to run on real data)"),
            (
                "telemetry",
                f"{host.telemetry}, every {host.telemetry_interval:g} s; "
                f"GPU busy above {host.gpu_memory_threshold_mib} MiB of others' memory",
            ),
            ("nvidia-smi", host.nvidia_smi),
        ]
        for label, value in rows:
            print(f"  {label:<14} {value}")
