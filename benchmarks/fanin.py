"""Workstation CPU to keep 8 remote hosts x 8 GPUs fresh at 1 Hz over SSH.

One real OpenSSH sshd on 127.0.0.1 plays 8 hosts (8 ``Host`` entries in an isolated
``~/.ssh/config`` pointing at it); each host's ``nvidia_smi`` is the stand-in replaying a
real H100 capture with 8 GPUs. Phase "stream" is what seglab does: one connection per host,
one long-lived ``nvidia-smi --query-gpu=... -lms 1000`` channel per host (plus the
process-list poll every 5 s). Phase "per-poll" is the baseline measured in the same run: the
same connections, but a new ``nvidia-smi --query-gpu=...`` command (one channel each) per
host every second. Only this process's CPU is counted (sshd and the stand-ins are the
"remote" side). Needs sshd and ssh-keygen (.ci/sshd.sh). Never touches the real ~/.ssh.

    .venv/bin/python benchmarks/fanin.py [--hosts 8] [--gpus 8] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from seglab.hosts import load_inventory  # noqa: E402
from seglab.remote.connection import LinkState  # noqa: E402
from seglab.remote.manager import RemoteHosts  # noqa: E402
from seglab.remote.tasks import cancel_and_wait  # noqa: E402
from seglab.telemetry.smi import FieldPlan, SmiSource, supported_fields  # noqa: E402
from tests.e2e.sshd import (  # noqa: E402
    SshHome,
    SshServer,
    keygen,
    sshd_missing_reason,
    standin_wrapper,
    write_hosts_yaml,
)


def _isolated_home(work: Path) -> SshHome:
    home = work / "home"
    for var, sub in (
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_STATE_HOME", "state"),
        ("XDG_DATA_HOME", "data"),
        ("XDG_CACHE_HOME", "cache"),
    ):
        (home / sub).mkdir(parents=True)
        os.environ[var] = str(home / sub)
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    key = keygen(ssh_dir / "id_ed25519", "seglab-fanin")
    (ssh_dir / "config").write_text("")
    (ssh_dir / "known_hosts").write_text("")
    os.environ["HOME"] = str(home)
    os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="sl-fanin-")
    os.environ.pop("SSH_AUTH_SOCK", None)
    os.environ.pop("SEGLAB_SSH_CONFIG", None)
    return SshHome(home, ssh_dir, key)


def _cpu() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


async def _measure(seconds: float) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of this process over `seconds`."""
    cpu, wall = _cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    return _cpu() - cpu, time.monotonic() - wall


async def _stream_phase(
    remotes: RemoteHosts, smi: str, gpus: int, seconds: float
) -> dict[str, float]:
    sources = [
        SmiSource(name, remotes.machine(name), nvidia_smi=smi, interval=1.0)
        for name in remotes.names
    ]
    tasks = [asyncio.create_task(source.run()) for source in sources]
    try:
        deadline = time.monotonic() + 60
        while any(len(s.state().gpus) < gpus for s in sources):
            if time.monotonic() > deadline:
                raise SystemExit("the streams did not deliver every GPU within 60 s")
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)  # settle: first process-list polls, plan probes
        channels_before = remotes.counts()["executor_channels"]
        samples_before = sum(s.samples_total for s in sources)
        cpu, wall = await _measure(seconds)
        samples = sum(s.samples_total for s in sources) - samples_before
        now = time.time()
        oldest = max(now - gpu.time for s in sources for gpu in s.state().gpus)
        return {
            "cpu": cpu,
            "wall": wall,
            "samples": samples,
            "oldest_age": oldest,
            "short_channels": remotes.counts()["executor_channels"] - channels_before,
        }
    finally:
        for task in tasks:
            await cancel_and_wait(task)


async def _poll_phase(remotes: RemoteHosts, smi: str, seconds: float) -> dict[str, float]:
    help_text = await remotes.machine(remotes.names[0]).run([smi, "--help-query-gpu"], timeout=30)
    plan = FieldPlan.choose(supported_fields(help_text.stdout))
    argv = [smi, f"--query-gpu={plan.query()}", "--format=csv,noheader,nounits"]
    rows = 0

    async def poll(name: str) -> None:
        nonlocal rows
        executor = remotes.machine(name)
        while True:
            started = time.monotonic()
            result = await executor.run(argv, timeout=10)
            rows += len(result.stdout.splitlines())
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))

    tasks = [asyncio.create_task(poll(name)) for name in remotes.names]
    try:
        await asyncio.sleep(3)
        before_rows, before_channels = rows, remotes.counts()["executor_channels"]
        cpu, wall = await _measure(seconds)
        return {
            "cpu": cpu,
            "wall": wall,
            "samples": rows - before_rows,
            "short_channels": remotes.counts()["executor_channels"] - before_channels,
        }
    finally:
        for task in tasks:
            await cancel_and_wait(task)


async def _run(args: argparse.Namespace, server: SshServer, smi: str) -> None:
    remotes = RemoteHosts(load_inventory())
    await remotes.start()
    try:
        for name in remotes.names:
            await remotes.connection(name).wait_for(LinkState.ONLINE, timeout=30)
        connections = remotes.counts()["connections"]
        assert server.process is not None
        server_sessions = len(psutil.Process(server.process.pid).children())
        stream = await _stream_phase(remotes, smi, args.gpus, args.seconds)
        poll = await _poll_phase(remotes, smi, args.seconds)
    finally:
        await remotes.stop()
    cores = [100.0 * r["cpu"] / r["wall"] for r in (stream, poll)]
    per_sample = [1e6 * r["cpu"] / max(r["samples"], 1) for r in (stream, poll)]
    rate = args.hosts * args.gpus
    print(
        f"fan-in: {args.hosts} hosts x {args.gpus} GPUs at 1 Hz over SSH, "
        f"{args.seconds:g} s per phase, {psutil.cpu_count()} CPUs"
    )
    print(
        f"connections: {connections} (sshd sessions seen on the server: {server_sessions}); "
        f"one per host"
    )
    print(
        f"stream   (seglab):   {cores[0]:5.2f} % of one core, {per_sample[0]:6.0f} us CPU per "
        f"GPU sample; {stream['samples'] / stream['wall']:5.1f} GPU samples/s (want {rate}); "
        f"oldest sample {stream['oldest_age']:.2f} s old; channels: {args.hosts} long-lived "
        f"+ {stream['short_channels']:.0f} short (process-list polls) in "
        f"{stream['wall']:.0f} s"
    )
    print(
        f"per-poll (baseline): {cores[1]:5.2f} % of one core, {per_sample[1]:6.0f} us CPU per "
        f"GPU sample; {poll['samples'] / poll['wall']:5.1f} GPU samples/s; "
        f"channels: {poll['short_channels']:.0f} short in {poll['wall']:.0f} s"
    )
    print(
        f"ratio stream/per-poll: CPU {cores[0] / cores[1]:.2f}, CPU per sample "
        f"{per_sample[0] / per_sample[1]:.2f}  (target: stream <= 3 % of one core: "
        f"{'met' if cores[0] <= 3.0 else 'NOT met'})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    reason = sshd_missing_reason()
    if reason:
        print(f"fanin: {reason}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="seglab-fanin-"))
    runtime_dir: str | None = None
    server: SshServer | None = None
    try:
        home = _isolated_home(work)
        runtime_dir = os.environ["XDG_RUNTIME_DIR"]
        server = SshServer(work / "sshd", home.user_key.with_suffix(".pub"))
        server.start()
        home.trust(server)
        bin_dir = work / "bin"
        bin_dir.mkdir()
        smi = str(standin_wrapper(bin_dir, gpus=args.gpus))
        entries = {}
        for i in range(1, args.hosts + 1):
            home.add_host(f"lab{i}", server)
            entries[f"lab{i}"] = {"ssh": f"lab{i}", "nvidia_smi": smi}
        write_hosts_yaml(Path(os.environ["XDG_CONFIG_HOME"]), entries)
        asyncio.run(_run(args, server, smi))
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(work, ignore_errors=True)
        if runtime_dir:
            shutil.rmtree(runtime_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
