"""Wall time to get 8 containers running: seglab vs the docker CLI.

Measured in the same run on the same engine and image, each mode `--rounds` times
(interleaved, containers removed between rounds, removal not timed):

- seglab-cli:    the whole command a user types, `seglab run GRID --on local:cpu --runtime
                 docker --image IMAGE` in its own process (interpreter start, imports,
                 recipe load, telemetry, placement, registry, launch, output), until it
                 has exited and all 8 containers are running;
- seglab-run:    `seglab run GRID --on local:cpu --runtime docker` as the façade does it
                 (Workstation.launch): an 8-variant grid of the synthetic-smoke recipe,
                 reconcile, placement, run dirs, registry, 8 trainer containers started
                 in parallel; ends when every container is started;
- runtime:       DockerRuntime.launch for 8 LaunchSpecs from a pool of 8 threads (the
                 layer under seglab-run), each with seglab's defaults (labels, cap-drop
                 ALL, no-new-privileges, no network, uid:gid, init, shm size);
- cli-parallel:  8 `docker run -d` with the same options, started at once;
- cli-serial:    the same 8 calls one after another.

Each mode ends when every launch call has returned and the containers are running. Prints
the median per mode and the ratios to cli-parallel; the target (issue 15) is seglab-cli at
most 0.8x cli-parallel (the CLI a user would otherwise script). Needs an engine
($DOCKER_HOST) and the CI image (.ci/docker.sh builds both).

    .venv/bin/python benchmarks/launch.py [--count 8] [--rounds 5] [--image seglab/ci:latest]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from seglab.runtime import LaunchSpec
from seglab.runtime.docker import DockerRuntime

LABEL = "seglab.benchmark=launch"
COMMAND = ("sleep", "300")


def cli_args(image: str, name: str) -> list[str]:
    return [
        "docker",
        "run",
        "-d",
        "--name",
        name,
        "--label",
        LABEL,
        "--label",
        f"seglab.run_id={name}",
        "--network",
        "none",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--user",
        "1000:1000",
        "--init",
        "--shm-size",
        "256m",
        image,
        *COMMAND,
    ]


def ours(runtime: DockerRuntime) -> list[str]:
    """Refs of the benchmark's containers (its own and the grid's)."""
    refs = [i.ref for i in runtime.list({"seglab.benchmark": "launch"})]
    return refs + [i.ref for i in runtime.list({"seglab.recipe": "bench-grid"})]


def cleanup(runtime: DockerRuntime) -> None:
    for ref in ours(runtime):
        runtime.remove(ref, force=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--image", default="seglab/ci:latest")
    args = parser.parse_args()
    runtime = DockerRuntime()
    runtime.client.images.get(args.image)  # fail early when the image is missing
    cleanup(runtime)

    repo = Path(__file__).resolve().parents[1]
    work = Path(tempfile.mkdtemp(prefix="seglab-launch-bench-"))
    for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME"):
        os.environ[var] = str(work / var.lower())
    site = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    os.environ.setdefault(
        "SEGLAB_DEV_MOUNTS",
        f"{site / 'site-packages'}:/usr/local/lib/python3.11/dist-packages,{repo}:/opt/seglab",
    )
    grid = work / "bench-grid.yaml"
    levels = "".join(f"    s{i}: {{train.seed: {i}}}\n" for i in range(args.count))
    grid.write_text(
        f"extends: {repo / 'recipes' / 'synthetic-smoke.yaml'}\n"
        f"name: bench-grid\nexport: []\nablate:\n  seed:\n{levels}"
    )

    seglab_bin = str(Path(sys.executable).with_name("seglab"))

    def seglab_cli(round_no: int) -> None:
        argv = [seglab_bin, "run", str(grid), "--on", "local:cpu", "--runtime", "docker"]
        subprocess.run([*argv, "--image", args.image], check=True, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(ours(runtime)) < args.count:  # "all 8 running" as docker lists them
            if time.monotonic() > deadline:
                raise SystemExit("seglab-cli: the containers did not all start within 60 s")
            time.sleep(0.01)

    def seglab_run(round_no: int) -> None:
        from seglab.workstation import Workstation

        Workstation().launch(grid, on="local:cpu", runtime="docker", image=args.image)

    def seglab(round_no: int) -> None:
        specs = [
            LaunchSpec(
                name=f"bench-s{round_no}-{i}",
                image=args.image,
                command=COMMAND,
                user="1000:1000",
                shm_size="256m",
                labels={"seglab.benchmark": "launch", "seglab.run_id": f"bench-s{round_no}-{i}"},
            )
            for i in range(args.count)
        ]
        with ThreadPoolExecutor(max_workers=args.count) as pool:
            list(pool.map(runtime.launch, specs))

    def cli_parallel(round_no: int) -> None:
        procs = [
            subprocess.Popen(
                cli_args(args.image, f"bench-p{round_no}-{i}"), stdout=subprocess.DEVNULL
            )
            for i in range(args.count)
        ]
        if any(proc.wait() for proc in procs):
            raise SystemExit("docker run failed")

    def cli_serial(round_no: int) -> None:
        for i in range(args.count):
            subprocess.run(
                cli_args(args.image, f"bench-q{round_no}-{i}"),
                check=True,
                stdout=subprocess.DEVNULL,
            )

    modes: dict[str, Callable[[int], None]] = {
        "seglab-cli": seglab_cli,
        "seglab-run": seglab_run,
        "runtime": seglab,
        "cli-parallel": cli_parallel,
        "cli-serial": cli_serial,
    }
    times: dict[str, list[float]] = {name: [] for name in modes}
    for round_no in range(args.rounds):
        for name, run in modes.items():
            started = time.perf_counter()
            run(round_no)
            times[name].append(time.perf_counter() - started)
            running = [
                ref for ref in ours(runtime) if runtime.inspect(ref).status in ("running", "exited")
            ]
            if len(running) != args.count:
                raise SystemExit(f"{name}: {len(running)} of {args.count} running")
            cleanup(runtime)
    server = runtime.client.version()
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"{args.count} containers of {args.image}, {args.rounds} rounds, engine "
        f"{server['Version']} (API {server['ApiVersion']}), {os.cpu_count()} CPUs, "
        f"load average {load}"
    )
    print(f"{'mode':<14}{'median s':>10}{'min s':>8}{'max s':>8}{'x cli-parallel':>16}")
    base = statistics.median(times["cli-parallel"])
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:<14}{median:>10.3f}{min(values):>8.3f}{max(values):>8.3f}{median / base:>16.2f}"
        )
    for name in ("seglab-cli", "seglab-run"):
        ratio = statistics.median(times[name]) / base
        print(
            f"{name} / cli-parallel: {ratio:.3f}x (target <= 0.8x: "
            f"{'met' if ratio <= 0.8 else 'not met'})"
        )


if __name__ == "__main__":
    main()
