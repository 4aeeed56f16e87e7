"""`seglab pull` and `seglab shell`: a run's files and its container, from the workstation."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Any

from seglab.commands import add_command


def register(subparsers: Any) -> None:
    """Add `pull` and `shell`."""
    pull = add_command(
        subparsers, "pull", "copy a run's exports or checkpoints to this machine",
        "Copy part of a run directory to this machine (over SFTP for a remote host):\n"
        "  export  the export/ folder (TorchScript, ONNX, Triton)\n"
        "  best    checkpoints/best.pt\n"
        "  all     the whole run directory\n"
        "into DEST/<run id>/ (default: ./<run id>/).")
    pull.add_argument("run_id", metavar="RUN")
    pull.add_argument("--what", choices=("export", "best", "all"), default="export",
                      help="which part (default: export)")
    pull.add_argument("--dest", type=Path, default=Path("."), metavar="DIR",
                      help="where to put the <run id> folder (default: here)")
    pull.set_defaults(func=_pull)

    shell = add_command(
        subparsers, "shell", "open a shell in a run's container",
        "Open an interactive shell (/bin/sh) in a running container of seglab, through\n"
        "`docker exec` on its host's engine (the SSH-forwarded socket for a remote host).\n"
        "Exit the shell to come back; the run is not affected.")
    shell.add_argument("run_id", metavar="RUN")
    shell.set_defaults(func=_shell)


def _pull(args: argparse.Namespace) -> int:
    from seglab.commands.runs import guard
    from seglab.workstation import Workstation

    ws = Workstation()
    dest = args.dest / args.run_id
    files = guard(lambda: ws.pull(args.run_id, args.what, dest))
    for path in files:
        print(path)
    print(f"{len(files)} file(s) in {dest}")
    return 0


def _shell(args: argparse.Namespace) -> int:
    from seglab.commands.runs import guard
    from seglab.workstation import Workstation

    argv, env = guard(lambda: Workstation().shell_command(args.run_id))
    return subprocess.run(argv, env=env, check=False).returncode
