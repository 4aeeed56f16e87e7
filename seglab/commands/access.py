"""`seglab pull`, `shell`, `tensorboard` and `notebook`: a run's files, its container and
web apps next to it, from the workstation."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seglab.commands import add_command

if TYPE_CHECKING:
    from seglab.forwards import OpenForward
    from seglab.workstation import Workstation


def register(subparsers: Any) -> None:
    """Add `pull`, `shell`, `tensorboard` and `notebook`."""
    pull = add_command(
        subparsers,
        "pull",
        "copy a run's exports or checkpoints to this machine",
        "Copy part of a run directory to this machine (over SFTP for a remote host):\n"
        "  export  the export/ folder (TorchScript, ONNX, Triton)\n"
        "  best    checkpoints/best.pt\n"
        "  all     the whole run directory\n"
        "into DEST/<run id>/ (default: ./<run id>/).",
    )
    pull.add_argument("run_id", metavar="RUN")
    pull.add_argument(
        "--what",
        choices=("export", "best", "all"),
        default="export",
        help="which part (default: export)",
    )
    pull.add_argument(
        "--dest",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="where to put the <run id> folder (default: here)",
    )
    pull.set_defaults(func=_pull)

    shell = add_command(
        subparsers,
        "shell",
        "open a shell in a run's container",
        "Open an interactive shell (/bin/sh) in a running container of seglab, through\n"
        "`docker exec` on its host's engine (the SSH-forwarded socket for a remote host).\n"
        "Exit the shell to come back; the run is not affected.",
    )
    shell.add_argument("run_id", metavar="RUN")
    shell.set_defaults(func=_shell)

    board = add_command(
        subparsers,
        "tensorboard",
        "open TensorBoard over a run or a recipe's runs",
        "Start TensorBoard over the tb/ folders of one run, or of every run of a recipe\n"
        "(on the host of its newest run), in a container on that host bound to its\n"
        "loopback; a remote host's port is forwarded over SSH. Prints the URL to open\n"
        "here and keeps it up until Ctrl-C (or SIGTERM), then removes the container.\n"
        "Where runs are processes it runs TensorBoard (pip install 'seglab[train]') as a\n"
        "plain process instead: this Python's on this machine for process-runtime runs, a\n"
        "local kind: slurm host or when no Docker engine answers, and the host's python\n"
        "(over SSH, forwarded here) on a remote kind: slurm host.",
    )
    board.add_argument("target", metavar="RUN|RECIPE", help="a run id or a recipe name")
    board.add_argument(
        "--port", type=_port, metavar="N", help="local port of the URL (default: a free one)"
    )
    board.set_defaults(func=_tensorboard)

    notebook = add_command(
        subparsers,
        "notebook",
        "open JupyterLab on a host, optionally on one GPU",
        "Start JupyterLab in a container on HOST, bound to its loopback (a remote host's\n"
        "port is forwarded over SSH), with the host's runs root read-only at /runs.\n"
        "Without --image, where runs are processes it runs JupyterLab (pip install\n"
        "'seglab[notebook]') as a plain process over the runs root instead: this Python's\n"
        "on this machine when no Docker engine answers, and the host's python (over SSH,\n"
        "forwarded here) on a kind: slurm host.\n"
        "HOST[:GPU] is HOST, HOST:cpu or HOST:<GPU UUID> (`seglab gpus` shows the UUIDs).\n"
        "Prints the URL with its token and keeps it up until Ctrl-C (or SIGTERM).",
    )
    notebook.add_argument("where", metavar="HOST[:GPU]")
    notebook.add_argument(
        "--image", metavar="IMG", help="image with JupyterLab (default: seglab/full:latest)"
    )
    notebook.add_argument(
        "--port", type=_port, metavar="N", help="local port of the URL (default: a free one)"
    )
    notebook.set_defaults(func=_notebook)


def _pull(args: argparse.Namespace) -> int:
    from seglab.workstation import Workstation

    ws = Workstation()
    dest = args.dest / args.run_id
    files = ws.pull(args.run_id, args.what, dest)
    for path in files:
        print(path)
    print(f"{len(files)} file(s) in {dest}")
    return 0


def _shell(args: argparse.Namespace) -> int:
    from seglab.workstation import Workstation

    argv, env = Workstation().shell_command(args.run_id)
    return subprocess.run(argv, env=env, check=False).returncode


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return port


def _tensorboard(args: argparse.Namespace) -> int:
    return _serve(lambda ws: ws.tensorboard(args.target, args.port))


def _notebook(args: argparse.Namespace) -> int:
    return _serve(lambda ws: ws.notebook(args.where, args.image, args.port))


def _serve(open_forward: Callable[[Workstation], OpenForward]) -> int:
    """Open the forward, print its URL, keep it until SIGINT/SIGTERM, then undo it.

    While it opens, either signal interrupts the opening (which undoes what it started).
    """
    from seglab.workstation import Workstation

    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, signal.default_int_handler)
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    ws = Workstation()
    try:
        opened: OpenForward = open_forward(ws)
        for sig in previous:
            signal.signal(sig, lambda *_: stop.set())
        try:
            print(f"{opened.kind} on {opened.host}: {opened.url}", flush=True)
            print("Ctrl-C stops it.", flush=True)
            while not stop.wait(5.0):
                if not opened.alive():
                    print(
                        f"seglab: {opened.kind} on {opened.host} stopped by itself", file=sys.stderr
                    )
                    return 1
        finally:
            opened.close()
    finally:
        ws.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
