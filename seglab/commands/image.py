"""`seglab image build base|full|dev|ci`: build seglab's container images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seglab.commands import add_command

if TYPE_CHECKING:
    from seglab.runtime.docker import DockerRuntime

DESCRIPTION = """\
Build one of seglab's container images on a Docker engine, showing the build's
progress as it runs:

  base   PyTorch 2.6 (CUDA 12.4 wheels) + seglab's trainer, core libraries only
  full   base + Jupyter, OpenCV, scikit-image, TensorBoard   (builds base if missing)
  dev    full + debuggers, profilers, NVTX                   (builds full if missing)
  ci     Debian python3 only, made on this machine with mmdebstrap from its own apt
         sources and `docker import`ed: no registry needed (needs root). Its runs on
         this machine get the trainer's packages and seglab mounted (docs/images.md).

Images are tagged seglab/<name>:latest. The engine is the host's (--host, default
local: $DOCKER_HOST or the socket hosts.yaml names); a remote host's engine is
reached through its SSH forward, and the build context travels over it. Nothing
is pulled implicitly: base/full/dev start from python:3.11-slim-bookworm, which
the engine must have or be able to fetch.
See docs/images.md.
"""


def register(subparsers: Any) -> None:
    """Add the `image` command group."""
    parser = add_command(subparsers, "image", "build seglab's container images", DESCRIPTION)
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    build = add_command(actions, "build", "build an image (base, full, dev or ci)", DESCRIPTION)
    build.add_argument(
        "target",
        choices=("base", "full", "dev", "ci"),
        metavar="IMAGE",
        help="which image: base, full, dev or ci",
    )
    build.add_argument(
        "--host",
        default="local",
        metavar="HOST",
        help="host (hosts.yaml) whose engine builds it; a remote host's "
        "engine is reached through its SSH socket forward",
    )
    build.add_argument(
        "--source",
        type=Path,
        default=None,
        metavar="DIR",
        help="seglab source tree to build from (default: this checkout)",
    )
    build.add_argument(
        "--build-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Dockerfile build argument, e.g. TORCH_VERSION=2.6.0 (repeatable)",
    )
    build.set_defaults(func=_build)


def _build(args: argparse.Namespace) -> int:
    from seglab.commands import CommandError
    from seglab.runtime import RuntimeFailure, images

    buildargs = {}
    for item in args.build_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"--build-arg {item!r}: expected KEY=VALUE")
        buildargs[key] = value

    def show(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        root = args.source.resolve() if args.source else images.source_root()
        if not (root / "images" / args.target).is_dir():
            raise CommandError(f"{root} has no images/{args.target}/: not a seglab source tree")
        runtime = _engine(args.host, args.target)
        client = None if args.target == "ci" else runtime.client
        built = images.build(
            client,
            args.target,
            root=root,
            base_url=runtime.base_url,
            buildargs=buildargs,
            on_output=show,
        )
    except RuntimeFailure as exc:
        raise CommandError(str(exc)) from exc
    print(f"built {', '.join(built)} on {args.host}")
    return 0


def _engine(host_name: str, target: str) -> DockerRuntime:
    """The docker runtime of ``host_name``: its socket, or the SSH forward of a remote one."""
    from seglab.commands import CommandError
    from seglab.runtime.docker import DockerRuntime
    from seglab.workstation import Workstation

    machine = Workstation().machine(host_name)
    if not machine.is_local and target == "ci":
        raise CommandError(
            "the CI image is built on this machine (mmdebstrap, root); build it without --host"
        )
    return DockerRuntime(machine.docker_url(), host=host_name)
