"""`seglab run|ps|logs|metrics|stop|kill|resume|rm`: runs from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from seglab.commands import add_command, print_json
from seglab.kinds import RuntimeKind
from seglab.registry import RunStatus
from seglab.safetext import safe_line
from seglab.views import EXPLAINED

if TYPE_CHECKING:
    from seglab.workstation import Workstation

RUN_HELP = """\
Start the variants of a recipe (all of them unless --variant is given), one run per
variant, each on its own GPUs. Prints one run id per line.

Placement (--on):
  auto               free GPUs on any host (the default)
  HOST               free GPUs of that host
  HOST:0,1 | HOST:0-3 | HOST:GPU-<uuid>
                     those GPUs of that host (each run takes resources.gpus of them)
  HOST:cpu           that host's CPU, no GPU (any number of runs share it)

A multi-node recipe (resources.nodes: N, network: host) takes one member from each of N
pools, e.g. --on lab1:0-7,lab2:0-7: one container per host, joined by torchrun's c10d
rendezvous, shown and stopped as one run (docs/scaling.md).

A GPU is free when no seglab run holds it and no other process uses more than the
host's gpu_memory_threshold_mib on it. Variants that find no free GPU wait in a
persistent queue: --wait keeps seglab running until every run has ended, starting
queued ones as GPUs free up; otherwise `seglab ps` or the dashboard starts them later.
--no-queue makes a busy GPU an error instead.

Runtime (--runtime): docker (a container per run; needs a Docker engine), process
(a detached process on this machine), slurm (batch jobs on a `kind: slurm` host: the
variants of a grid become one job array; --on CLUSTER asks the recipe's GPUs as GRES,
CLUSTER:cpu none), or auto (slurm on Slurm hosts, else docker when an engine answers).

Examples:
  seglab run synthetic-smoke --on local:cpu --runtime process --wait
  seglab run recipes/cityscapes-deeplabv3plus-r50-resolution.yaml --on auto
  seglab run my-ablation.yaml --variant lr=low --on lab1:2
  seglab run my-ablation.yaml --on cluster
  seglab run two-node.yaml --on lab1:0-7,lab2:0-7
"""


def register(subparsers: Any) -> None:
    """Add the run lifecycle commands."""
    run = add_command(subparsers, "run", "start the variants of a recipe", RUN_HELP)
    run.add_argument("recipe", metavar="RECIPE", help="recipe file or shipped recipe name")
    run.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME",
        help="only this variant (repeatable; see `seglab recipe expand`)",
    )
    run.add_argument(
        "--on",
        default="auto",
        metavar="PLACEMENT",
        help="where to run: auto, HOST, HOST:0,1, HOST:GPU-uuid, HOST:cpu",
    )
    run.add_argument(
        "--runtime",
        default=RuntimeKind.AUTO.value,
        choices=[kind.value for kind in RuntimeKind],
        help="docker containers, detached processes, or Slurm jobs (default: auto)",
    )
    run.add_argument("--image", help="override the recipe's image")
    run.add_argument(
        "--wait",
        action="store_true",
        help="stay until every run ends, starting queued ones as GPUs free up",
    )
    run.add_argument(
        "--no-queue", action="store_true", help="fail instead of queueing when GPUs are busy"
    )
    run.add_argument("--json", action="store_true", help="print the runs as JSON")
    run.set_defaults(func=_run)

    ps = add_command(
        subparsers,
        "ps",
        "list runs with their progress and metrics",
        "List runs: status, host:GPUs, progress, last loss, best mIoU, img/s, age.\n"
        "Without --all only runs that have not ended are shown. Also starts\n"
        "queued runs whose GPUs have become free.",
    )
    ps.add_argument("--all", "-a", action="store_true", help="include ended runs")
    ps.add_argument("--json", action="store_true", help="machine-readable output")
    ps.set_defaults(func=_ps)

    logs = add_command(
        subparsers,
        "logs",
        "show a run's log",
        "Print a run's log (its trainer's output, whole lines). With -f, keep\n"
        "following until the run ends. The trainer's event lines (@seglab {...},\n"
        "what `seglab metrics` and the dashboard read) are hidden unless --events.\n"
        "Control sequences in a run's output never reach the terminal; --json prints\n"
        "one JSON object per line with the raw text.",
    )
    logs.add_argument("run_id", metavar="RUN")
    logs.add_argument("-f", "--follow", action="store_true", help="follow until the run ends")
    logs.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    logs.add_argument("--events", action="store_true", help="show the @seglab event lines too")
    logs.add_argument(
        "--json", action="store_true", help="one JSON object per line: text (raw), time"
    )
    logs.add_argument(
        "--member",
        type=int,
        default=0,
        metavar="K",
        help="a multi-node run's member K (default 0, which holds the main rank and the events)",
    )
    logs.set_defaults(func=_logs)

    metrics = add_command(
        subparsers,
        "metrics",
        "show a run's evaluation history",
        "Show a run's evaluations (mIoU, pixel accuracy, mean accuracy,\n"
        "per-class IoU) and training progress, from its events.",
    )
    metrics.add_argument("run_id", metavar="RUN")
    metrics.add_argument("--json", action="store_true", help="machine-readable output")
    metrics.set_defaults(func=_metrics)

    stop = add_command(
        subparsers,
        "stop",
        "stop runs gracefully",
        "Send SIGTERM: the trainer finishes its step, writes last.pt and\n"
        "exits 0. After --timeout seconds it is killed. `seglab resume`\n"
        "continues from last.pt. A queued run is taken off the queue.",
    )
    stop.add_argument("run_ids", nargs="+", metavar="RUN")
    stop.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds of grace before SIGKILL (default 60)",
    )
    stop.set_defaults(func=_stop)

    kill = add_command(
        subparsers,
        "kill",
        "kill runs now (SIGKILL)",
        "Kill runs at once. Work since the last checkpoint is lost.",
    )
    kill.add_argument("run_ids", nargs="+", metavar="RUN")
    kill.set_defaults(func=_kill)

    resume = add_command(
        subparsers,
        "resume",
        "continue stopped or failed runs",
        "Start an ended run again with the same run id, run dir and GPUs;\n"
        "the trainer continues from checkpoints/last.pt.",
    )
    resume.add_argument("run_ids", nargs="+", metavar="RUN")
    resume.set_defaults(func=_resume)

    rm = add_command(
        subparsers,
        "rm",
        "forget ended runs",
        "Remove runs: their container (or process record) and registry entry.\n"
        "The run directory stays unless --purge.",
    )
    rm.add_argument("run_ids", nargs="+", metavar="RUN")
    rm.add_argument("--purge", action="store_true", help="also delete the run directory")
    rm.add_argument("--force", action="store_true", help="kill the run first if it is running")
    rm.set_defaults(func=_rm)


def _workstation() -> Workstation:
    from seglab.workstation import Workstation

    return Workstation()


# -- run ------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    ws = _workstation()
    submitted = ws.launch(
        args.recipe,
        args.variant,
        on=args.on,
        runtime=args.runtime,
        image=args.image,
        queue=not args.no_queue,
    )
    if args.json and not args.wait:
        print_json([ws.run_row(s.record).to_json() for s in submitted])
    else:
        for item in submitted:
            print(item.record.run_id)
            if item.queued_because:
                print(f"  queued: {item.queued_because}", file=sys.stderr)
    if not args.wait:
        return 0
    from seglab.commands.waiting import wait

    rows = wait(ws, [s.record.run_id for s in submitted])
    if args.json:
        print_json([row.to_json() for row in rows])
    ok = all(r.status in (RunStatus.FINISHED, RunStatus.STOPPED) for r in rows)
    return 0 if ok else 1


# -- ps -------------------------------------------------------------------------------


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _ps(args: argparse.Namespace) -> int:
    ws = _workstation()
    ws.find_runs()
    ws.pump_queue()
    rows = ws.runs_now(include_final=args.all)
    if args.json:
        print_json([row.to_json() for row in rows])
        return 0
    if not rows:
        print("no runs" + ("" if args.all else " (seglab ps --all shows ended ones)"))
        return 0
    wide = max(14, *(len(row.where) for row in rows))  # multi-node: host:cpu+host:cpu
    header = (
        f"{'RUN':<44} {'STATUS':<10} {'WHERE':<{wide}} {'PROGRESS':>14} {'LOSS':>7} "
        f"{'mIoU':>6} {'IMG/S':>7} {'AGE':>5}"
    )
    print(header)
    for row in rows:
        progress = "-" if row.queue_position is None else f"queued #{row.queue_position}"
        if row.iteration is not None:
            progress = f"{row.iteration}/{row.total_iterations or '?'}"
            if row.progress is not None:
                progress += f" {row.progress:4.0%}"
        loss = "-" if row.last_loss is None else f"{row.last_loss:.3f}"
        miou = "-" if row.best_miou is None else f"{row.best_miou:.3f}"
        ips = "-" if row.img_per_s is None else f"{row.img_per_s:.1f}"
        status = str(row.status)
        print(
            f"{row.run_id:<44} {status:<10} {row.where:<{wide}} {progress:>14} "
            f"{loss:>7} {miou:>6} {ips:>7} {_age(row.age_s):>5}"
        )
        if row.status in EXPLAINED and row.message:
            last = row.message.strip().splitlines()[-1]
            print(f"  {safe_line(last)}")
    return 0


# -- logs, metrics --------------------------------------------------------------------


def _logs(args: argparse.Namespace) -> int:
    from seglab.events import PREFIX

    ws = _workstation()
    ws.find_runs()
    for line in ws.logs(args.run_id, follow=args.follow, tail=args.tail, member=args.member):
        if not args.events and PREFIX in line.text:
            continue
        if args.json:  # the raw text, escaped by JSON: safe for any terminal
            stamp = None if line.time is None else line.time.isoformat()
            print(json.dumps({"text": line.text, "time": stamp}), flush=args.follow)
        else:
            print(safe_line(line.text), flush=args.follow)
    return 0


def _metrics(args: argparse.Namespace) -> int:
    ws = _workstation()
    ws.find_runs()
    metrics = ws.metrics(args.run_id)
    evals, class_names = metrics.evals, metrics.class_names
    if args.json:
        print_json(metrics.to_json())
        return 0
    print(
        f"{metrics.run_id}  {metrics.status}  best mIoU "
        f"{'-' if metrics.best_miou is None else f'{metrics.best_miou:.4f}'}"
    )
    if not evals:
        print("no evaluation yet")
        return 0
    print(f"{'ITER':>8} {'EPOCH':>6} {'mIoU':>8} {'PIXACC':>8} {'MEANACC':>8}")
    for ev in evals:
        print(
            f"{ev['iter']:>8} {ev['epoch']:>6} {ev['miou']:>8.4f} {ev['pixel_acc']:>8.4f} "
            f"{ev['mean_acc']:>8.4f}"
        )
    last = evals[-1]
    names = class_names or [str(i) for i in range(len(last["per_class_iou"]))]
    print("per-class IoU (last evaluation):")
    for name, iou in zip(names, last["per_class_iou"], strict=False):
        print(f"  {name:<20} {'-' if iou is None else f'{iou:.4f}'}")
    return 0


# -- stop, kill, resume, rm -----------------------------------------------------------


def _each(ids: list[str], action: Any) -> int:
    """Apply ``action`` to every run; report each failure and go on with the others."""
    from seglab.errors import SeglabError

    failed = False
    for run_id in ids:
        try:
            result = action(run_id)
        except SeglabError as exc:
            print(f"seglab: {exc.describe()}", file=sys.stderr)
            failed = True
            continue
        print(f"{run_id}: {result}")
    return 1 if failed else 0


def _stop(args: argparse.Namespace) -> int:
    ws = _workstation()
    ws.find_runs()
    return _each(args.run_ids, lambda r: ws.stop(r, timeout=args.timeout).status)


def _kill(args: argparse.Namespace) -> int:
    ws = _workstation()
    ws.find_runs()
    return _each(args.run_ids, lambda r: ws.kill(r).status)


def _resume(args: argparse.Namespace) -> int:
    ws = _workstation()
    ws.find_runs()
    return _each(args.run_ids, lambda r: ws.resume(r).status)


def _rm(args: argparse.Namespace) -> int:
    ws = _workstation()
    ws.find_runs()

    def remove(run_id: str) -> str:
        ws.remove(run_id, purge=args.purge, force=args.force)
        return "removed" + (" with its run dir" if args.purge else "")

    return _each(args.run_ids, remove)
