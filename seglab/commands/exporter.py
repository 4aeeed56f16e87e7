"""`seglab exporter`: serve Prometheus metrics for every GPU and every recent run."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from seglab.commands import add_command

if TYPE_CHECKING:
    from seglab.telemetry.exporter import EnergyMeter, RunBook, RunMetrics
    from seglab.telemetry.live import LiveTelemetry
    from seglab.views import RunRow
    from seglab.workstation import Workstation

log = logging.getLogger(__name__)

DESCRIPTION = """\
Serve Prometheus metrics at http://BIND:PORT/metrics until Ctrl-C or SIGTERM (both
end it cleanly with exit status 0):

  seglab_gpu_*       every GPU of every host in hosts.yaml (labels host, index, uuid,
                     name): utilisation and fan as 0-1 ratios, memory bytes, celsius,
                     watts, hertz, ECC errors and energy (joules) as counters, one
                     throttle-reason series per reason
  seglab_gpu_process_info{uuid,run_id,container}   1 per run/container on a GPU: join
                     a GPU series to its run with `* on(uuid) group_left(run_id)`
  seglab_run_*       every active run (labels run_id, host), read every
                     --runs-interval seconds, ended ones kept for an hour: loss, best
                     mIoU ratio, images per second, iteration, ended
  seglab_host_telemetry_up   1 while a host's telemetry is current

A value the driver does not report is left out (never exported as 0). The server
binds to the loopback address unless --bind says otherwise.

Example Prometheus scrape config:
  - job_name: seglab
    static_configs: [{targets: ["127.0.0.1:9400"]}]
"""


def register(subparsers: Any) -> None:
    """Add the `exporter` command."""
    parser = add_command(
        subparsers, "exporter", "serve Prometheus metrics for GPUs and runs", DESCRIPTION
    )
    parser.add_argument(
        "--port", type=int, default=9400, help="TCP port (default 9400; 0 picks a free one)"
    )
    parser.add_argument(
        "--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument("--host", metavar="H", help="only this host (a name from hosts.yaml)")
    parser.add_argument(
        "--runs-interval",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between readings of the runs (default 5)",
    )
    parser.set_defaults(func=_exporter)


def _exporter(args: argparse.Namespace) -> int:
    from seglab.commands import CommandError

    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port must be between 0 and 65535, got {args.port}")
    if args.runs_interval <= 0:
        raise CommandError("--runs-interval must be a positive number of seconds")
    return asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    from seglab.commands import CommandError
    from seglab.commands.gpus import open_telemetry
    from seglab.telemetry.exporter import EnergyMeter, RunBook, TelemetryCollector, serve
    from seglab.workstation import Workstation

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    book, energy = RunBook(), EnergyMeter()
    async with open_telemetry(args.host) as telemetry:
        collector = TelemetryCollector(telemetry.states, book.runs, energy)
        try:
            server, _ = serve(collector, args.port, args.bind)
        except OSError as exc:
            raise CommandError(f"cannot listen on {args.bind}:{args.port}: {exc}") from exc
        print(
            f"serving metrics on http://{args.bind}:{server.server_port}/metrics"
            " (Ctrl-C or SIGTERM stops)",
            flush=True,
        )
        # The runs' workstation lives on one worker thread: runtimes may block.
        worker = ThreadPoolExecutor(1, thread_name_prefix="seglab-exporter-runs")
        workstation = await asyncio.get_running_loop().run_in_executor(worker, Workstation)
        tasks = [
            asyncio.create_task(_ingest_runs(workstation, worker, book, args.runs_interval)),
            asyncio.create_task(_integrate_energy(telemetry, energy)),
            asyncio.create_task(stop.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # an ingestion loop ends only by a bug: raise it here
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            server.shutdown()
            server.server_close()
            await asyncio.get_running_loop().run_in_executor(worker, workstation.close)
            worker.shutdown()
    return 0


async def _ingest_runs(
    workstation: Workstation, worker: ThreadPoolExecutor, book: RunBook, interval: float
) -> None:
    """Read every run (active and ended) into ``book`` every ``interval`` seconds."""
    from seglab.errors import SeglabError

    loop = asyncio.get_running_loop()
    while True:
        try:
            rows = await loop.run_in_executor(worker, workstation.runs_now, True)
        except SeglabError as exc:  # the last readings stay; the next round tries again
            log.warning("runs unavailable: %s", exc.describe())
        else:
            book.update([_metrics(row) for row in rows], time.time())
        await asyncio.sleep(interval)


async def _integrate_energy(telemetry: LiveTelemetry, energy: EnergyMeter) -> None:
    """Feed every new power reading to ``energy`` (each second; repeats are skipped)."""
    while True:
        energy.add(telemetry.states())
        await asyncio.sleep(1.0)


def _metrics(row: RunRow) -> RunMetrics:
    from seglab.telemetry.exporter import RunMetrics

    return RunMetrics(
        run_id=row.run_id,
        host=row.host,
        loss=row.last_loss,
        best_miou=row.best_miou,
        img_per_s=row.img_per_s,
        iteration=row.iteration,
        ended=row.ended,
        age_s=row.age_s,
    )
