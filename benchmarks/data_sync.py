"""Copying a Cityscapes-like tree to a loopback sshd: `seglab data sync` vs `rsync -e ssh`
vs `scp -r`, measured in the same run.

The tree is ``leftImg8bit/train/CITY/*_leftImg8bit.png`` files of random (incompressible)
bytes, 1-3 MB each (``--files``, default 200; a few thousand is the real scale). Each tool
copies it to a fresh folder on a real OpenSSH sshd on 127.0.0.1 (first copy), then copies
it again unchanged (re-sync; ``scp -r`` has no notion of it and copies everything again).
Wall time and CPU of the workstation side (the tool and the ssh client it starts, from
``RUSAGE_CHILDREN``) are reported; sshd is the remote side. The tools run in interleaved
rounds (``--rounds``, each round starting with the next tool); the table gives the median
and range of each, the ratios of the medians (and the range of the per-round ratios) vs
rsync and scp, and the load average before and after. Every copy is checked (file count
and bytes). Needs sshd, ssh-keygen, rsync and scp. Never touches the real ~/.ssh.

    .venv/bin/python benchmarks/data_sync.py [--files 200] [--rounds 3] [--cipher NAME]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.sshd import (  # noqa: E402
    SshHome,
    SshServer,
    keygen,
    sshd_missing_reason,
    write_hosts_yaml,
)

TOOLS = ("seglab", "rsync", "scp")
DEFAULT_CIPHERS = (
    "each tool's default (seglab: aes128-gcm@openssh.com where the CPU has AES "
    "instructions; rsync -e ssh and scp: OpenSSH's chacha20-poly1305@openssh.com)"
)


class Round(NamedTuple):
    """One tool's round: wall and CPU seconds of the first copy, then of the re-sync."""

    wall: float
    cpu: float
    wall2: float
    cpu2: float


CITIES = ("aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt")


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
    key = keygen(ssh_dir / "id_ed25519", "seglab-data-sync")
    (ssh_dir / "config").write_text("")
    (ssh_dir / "known_hosts").write_text("")
    os.environ["HOME"] = str(home)
    os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="sl-dsync-")
    os.environ.pop("SSH_AUTH_SOCK", None)
    os.environ.pop("SEGLAB_SSH_CONFIG", None)
    return SshHome(home, ssh_dir, key)


def make_tree(root: Path, files: int, seed: int = 0) -> int:
    """`files` PNG-named files of 1-3 MB of random bytes; their total size."""
    rng = random.Random(seed)
    total = 0
    for i in range(files):
        city = CITIES[i % len(CITIES)]
        path = root / "leftImg8bit" / "train" / city / f"{city}_{i:06d}_000019_leftImg8bit.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        size = rng.randint(1 << 20, 3 << 20)
        path.write_bytes(os.urandom(size))
        total += size
    return total


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: Sequence[str]) -> tuple[float, float]:
    """(wall s, CPU s of the command and its children) of one command that must succeed."""
    cpu, wall = _children_cpu(), time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({out.returncode}): {out.stderr[-2000:]}")
    return time.monotonic() - wall, _children_cpu() - cpu


def _check(target: Path, files: int, total: int) -> None:
    found = [p for p in target.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in found)
    if (len(found), size) != (files, total):
        raise SystemExit(f"{target}: {len(found)} files, {size} bytes; want {files}, {total}")


def main() -> int:
    """Run the three tools and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200, help="files of 1-3 MB (default 200)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds of the three tools (default 3)"
    )
    parser.add_argument(
        "--cipher", help="the one SSH cipher all three use (default: each tool's own choice)"
    )
    args = parser.parse_args()
    missing = sshd_missing_reason() or next(
        (f"{tool} is not installed" for tool in ("rsync", "scp") if not shutil.which(tool)), None
    )
    if missing:
        print(f"skipped: {missing}")
        return 0
    work = Path(tempfile.mkdtemp(prefix="seglab-data-sync-"))
    home = _isolated_home(work)
    server = SshServer(work / "sshd", home.user_key.with_suffix(".pub"))
    server.start()
    try:
        home.add_host("bench", server)
        home.trust(server)
        if args.cipher:  # asyncssh and OpenSSH's ssh both read Ciphers from the config
            with home.config.open("a") as out:
                out.write(f"Host *\n  Ciphers {args.cipher}\n")
        source = work / "src"
        total = make_tree(source, args.files)
        write_hosts_yaml(
            Path(os.environ["XDG_CONFIG_HOME"]),
            {"local": {"datasets": f"{{cityscapes: {source}}}"}, "bench": {"ssh": "bench"}},
        )
        ssh = f"ssh -F {home.config} -o UserKnownHostsFile={home.known_hosts} -o BatchMode=yes"
        load_before = os.getloadavg()
        results: dict[str, list[Round]] = {tool: [] for tool in TOOLS}
        for round_ in range(args.rounds):
            # Interleaved, and each round starts with the next tool: no tool always runs
            # first (cold caches) or last (after the others heated the CPU).
            for tool in TOOLS[round_ % 3 :] + TOOLS[: round_ % 3]:
                target = work / "dst" / f"{tool}-{round_}"
                target.parent.mkdir(exist_ok=True)
                if tool == "seglab":
                    argv = [sys.executable, "-m", "seglab", "data", "sync", "cityscapes"]
                    argv += ["--to", "bench", "--path", str(target)]
                elif tool == "rsync":
                    argv = ["rsync", "-a", "-e", ssh, f"{source}/", f"bench:{target}/"]
                else:
                    argv = ["scp", "-q", "-r", "-F", str(home.config)]
                    argv += ["-o", f"UserKnownHostsFile={home.known_hosts}"]
                    argv += [str(source), f"bench:{target}"]
                first = timed(argv)
                _check(target, args.files, total)
                if tool == "scp":  # into the existing folder, not a copy inside it
                    argv[-2:] = [*map(str, sorted(source.iterdir())), f"bench:{target}/"]
                again = timed(argv)
                _check(target, args.files, total)
                results[tool].append(Round(*first, *again))
                shutil.rmtree(target)
        load_after = os.getloadavg()
        print(f"cipher: {args.cipher or DEFAULT_CIPHERS}")
        _report(args.files, total, results, load_before, load_after)
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _spread(values: list[float]) -> str:
    """Median and the range, as ``median (min-max)``."""
    return f"{statistics.median(values):6.2f} ({min(values):.2f}-{max(values):.2f})"


def _report(
    files: int,
    total: int,
    results: dict[str, list[Round]],
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> None:
    rounds = len(results["seglab"])
    print(
        f"data sync: {files} files, {total / 1e6:.0f} MB to a loopback sshd, {rounds} "
        f"interleaved round(s); {os.cpu_count()} CPUs, load average (1/5/15 min) "
        f"{'/'.join(f'{x:.1f}' for x in load_before)} before, "
        f"{'/'.join(f'{x:.1f}' for x in load_after)} after"
    )
    print("seconds: median (min-max) over the rounds")
    print(f"{'tool':<7} {'first copy':>19} {'MB/s':>6} {'CPU':>19} {'re-sync':>19} {'CPU':>19}")
    for tool, rows in results.items():
        first = statistics.median(r.wall for r in rows)
        print(
            f"{tool:<7} {_spread([r.wall for r in rows]):>19} {total / first / 1e6:6.0f} "
            f"{_spread([r.cpu for r in rows]):>19} {_spread([r.wall2 for r in rows]):>19} "
            f"{_spread([r.cpu2 for r in rows]):>19}"
        )

    def ratio(tool: str, base: str, phase: str) -> str:
        """Ratio of the medians, and the range of the per-round ratios."""
        pairs = [
            getattr(mine, phase) / getattr(theirs, phase)
            for mine, theirs in zip(results[tool], results[base], strict=True)
        ]
        median = statistics.median(getattr(r, phase) for r in results[tool]) / statistics.median(
            getattr(r, phase) for r in results[base]
        )
        return f"{median:.2f}x (rounds {min(pairs):.2f}-{max(pairs):.2f})"

    first, again = (
        statistics.median(getattr(r, phase) for r in results["seglab"])
        / statistics.median(getattr(r, phase) for r in results["rsync"])
        for phase in ("wall", "wall2")
    )
    print(
        f"seglab/rsync: first copy {ratio('seglab', 'rsync', 'wall')} target <= 1.25 "
        f"{'met' if first <= 1.25 else 'missed'}; re-sync {ratio('seglab', 'rsync', 'wall2')} "
        f"target <= 2 {'met' if again <= 2 else 'missed'}"
    )
    print(
        f"seglab/scp:   first copy {ratio('seglab', 'scp', 'wall')}; "
        f"re-sync {ratio('seglab', 'scp', 'wall2')}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
