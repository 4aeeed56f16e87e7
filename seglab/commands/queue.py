"""`seglab queue`: the runs waiting in the hosts' queues; move them, cancel them."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from seglab.commands import add_command, print_json

if TYPE_CHECKING:
    from seglab.workstation import Workstation

DESCRIPTION = """\
List the runs waiting in each host's queue, in the order the host's queue runner
will start them, with why each waits; move one up or down; cancel one.

Variants submitted to one host (--on HOST or HOST:GPUS) that find no free GPU wait
in a queue on that host (under its runs root), and a small runner there starts
them as GPUs free up, whether or not this workstation is still around.

Actions:
  (none)         list every host's queue (--json: host, position, run_id, variant, why)
  up RUN [N]     move RUN N places (default 1) towards the front
  down RUN [N]   move RUN N places towards the back
  cancel RUN     take RUN out of its queue (it ends as stopped, never started)

Examples:
  seglab queue
  seglab queue up tiny-six.lr-e.3f2a1c 2
  seglab queue cancel tiny-six.lr-f.9b0d4e
"""


def register(subparsers: Any) -> None:
    """Add the `queue` command."""
    parser = add_command(subparsers, "queue", "list, reorder or cancel queued runs", DESCRIPTION)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    actions = parser.add_subparsers(dest="queue_action", metavar="ACTION", required=False)
    for name, help_text in (("up", "move towards the front"), ("down", "move towards the back")):
        move = actions.add_parser(name, help=help_text)
        move.add_argument("run_id", metavar="RUN")
        move.add_argument("steps", metavar="N", type=int, nargs="?", default=1)
    cancel = actions.add_parser("cancel", help="take a run out of its queue")
    cancel.add_argument("run_id", metavar="RUN")
    parser.set_defaults(func=_queue)


def _workstation() -> Workstation:
    from seglab.workstation import Workstation

    return Workstation()


def _queue(args: argparse.Namespace) -> int:
    ws = _workstation()
    if args.queue_action in ("up", "down"):
        steps = args.steps if args.queue_action == "up" else -args.steps
        moved = ws.move_queued(args.run_id, steps)
        print(f"{moved.run_id}: position {moved.position} on {moved.host}")
        return 0
    if args.queue_action == "cancel":
        if all(q.run_id != args.run_id for q in ws.host_queue()):
            from seglab.commands import CommandError

            raise CommandError(
                f"run {args.run_id} is in no host's queue", "`seglab stop` ends a running run"
            )
        row = ws.stop(args.run_id)
        print(f"{row.run_id}: {row.status}")
        return 0
    ws.pump_queue()
    waiting = ws.host_queue()
    if args.json:
        print_json([q.to_json() for q in waiting])
        return 0
    if not waiting:
        print("no run waits in a host queue")
    for q in waiting:
        print(f"{q.host:<12} {q.position:>3}  {q.run_id:<40} {q.why}")
    return 0
