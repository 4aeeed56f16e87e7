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
- cli-same:      8 `docker run -d` started at once, each with everything seglab gave its
                 container (read back with `docker inspect` from an untimed warm-up
                 `seglab run` of the same grid): the trainer command, environment, user,
                 bind mounts (each its own copy of the run dir), shm size, capabilities,
                 security options, network, init and pids limit; labels renamed so that
                 seglab does not take them for its runs. The trainers start working as
                 soon as they are up, as seglab's do;
- cli-parallel:  8 `docker run -d` of `sleep 300` with seglab's default options (labels,
                 cap-drop ALL, no-new-privileges, network none, uid:gid, init, shm size),
                 started at once;
- cli-serial:    the same 8 calls one after another.

Each mode ends when every launch call has returned and the containers are running. Prints
the median per mode and the ratios to cli-parallel and cli-same; the target (issue 15) is
seglab-cli at most 0.8x the parallel CLI (the CLI a user would otherwise script): cli-same
is that CLI starting the very containers seglab starts. Needs an engine ($DOCKER_HOST) and
the CI image (.ci/docker.sh builds both).

    .venv/bin/python benchmarks/launch.py [--count 8] [--rounds 5] [--image seglab/ci:latest]

With ``--phases`` it first prints where one in-process `seglab run` of the grid spends its
time (untimed by the rounds): each step's start and end in seconds from the call, summed
over the per-variant threads where there are several.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from seglab.runtime import LaunchSpec
from seglab.runtime.docker import DockerRuntime

LABEL = "seglab.benchmark=launch"
COMMAND = ("sleep", "300")
RUN_MOUNT = "/seglab/run"  # where seglab mounts a run's directory (seglab.runs.specs)


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


def same_args(attrs: dict[str, Any], name: str, run_dir: Path) -> list[str]:
    """`docker run -d` arguments for the container seglab made (``docker inspect``
    ``attrs``), named ``name``, with ``run_dir`` mounted where its run dir was."""
    config, host = attrs["Config"], attrs["HostConfig"]
    argv = ["docker", "run", "-d", "--name", name, "--label", LABEL]
    for key, value in (config.get("Labels") or {}).items():
        if key.startswith("seglab."):  # the same number of labels, not seglab's keys
            argv += ["--label", f"bench.{key}={value}"]
    for item in config.get("Env") or []:
        argv += ["--env", item]
    argv += ["--user", config["User"]]
    if config.get("WorkingDir"):
        argv += ["--workdir", config["WorkingDir"]]
    for mount in host.get("Mounts") or []:
        source = run_dir if mount["Target"] == RUN_MOUNT else mount["Source"]
        spec = f"type={mount['Type']},source={source},target={mount['Target']}"
        argv += ["--mount", spec + (",readonly" if mount.get("ReadOnly") else "")]
    argv += ["--shm-size", f"{host['ShmSize']}b", "--network", host["NetworkMode"]]
    for cap in host.get("CapDrop") or []:
        argv += ["--cap-drop", cap]
    for opt in host.get("SecurityOpt") or []:
        argv += ["--security-opt", opt]
    if host.get("Init"):
        argv.append("--init")
    if host.get("PidsLimit"):
        argv += ["--pids-limit", str(host["PidsLimit"])]
    if host.get("Memory"):
        argv += ["--memory", f"{host['Memory']}b", "--memory-swap", f"{host['MemorySwap']}b"]
    if host.get("NanoCpus"):
        argv += ["--cpus", str(host["NanoCpus"] / 1e9)]
    return [*argv, config["Image"], *config["Cmd"]]


# (owner module, class or None, function) of the steps --phases times, in call order.
PHASES = (
    ("seglab.workstation", "Workstation", "load_recipe"),
    ("seglab.runs.manager", "RunManager", "reconcile"),
    ("seglab.workstation", "Workstation", "scheduler"),
    ("seglab.runs.submit", None, "_new_record"),
    ("seglab.runs.launch", "Launcher", "_prepare"),
    ("seglab.runs.launch", None, "require_data"),
    ("seglab.runs.launch", None, "build_spec"),
    ("seglab.runtime.docker", "DockerRuntime", "launch"),
    ("seglab.registry", "Registry", "upsert_run"),
    ("seglab.runs.submit", "Submitter", "_start_all"),
)


@contextmanager
def timed_phases(origin: float) -> Iterator[dict[str, list[tuple[float, float]]]]:
    """Wrap the PHASES while the block runs; yields {step: [(start, end), ...]}."""
    import importlib

    spans: dict[str, list[tuple[float, float]]] = {}
    lock = threading.Lock()
    undo = []
    for module_name, class_name, name in PHASES:
        module = importlib.import_module(module_name)
        owner = getattr(module, class_name) if class_name else module
        original = getattr(owner, name)  # AttributeError: a step was renamed

        def wrapper(*a: Any, _f: Any = original, _n: str = name, **k: Any) -> Any:
            started = time.perf_counter() - origin
            try:
                return _f(*a, **k)
            finally:
                with lock:
                    spans.setdefault(_n, []).append((started, time.perf_counter() - origin))

        setattr(owner, name, wrapper)
        undo.append((owner, name, original))
    try:
        yield spans
    finally:
        for owner, name, original in undo:
            setattr(owner, name, original)


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
    parser.add_argument("--phases", action="store_true", help="print one run's steps first")
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

    # Untimed warm-up: one `seglab run` of the grid, whose first container is the
    # template of cli-same (and which warms the engine and page cache for every mode).
    from seglab.workstation import Workstation

    first = Workstation().launch(grid, on="local:cpu", runtime="docker", image=args.image)
    handle = first[0].record.handle
    if handle is None:
        raise SystemExit("warm-up: the first run has no container")
    template = json.loads(
        subprocess.run(["docker", "inspect", handle], check=True, capture_output=True).stdout
    )[0]
    template_dir = Path(first[0].record.run_dir or "")
    cleanup(runtime)
    if args.phases:
        origin = time.perf_counter()
        with timed_phases(origin) as spans:
            Workstation().launch(grid, on="local:cpu", runtime="docker", image=args.image)
        total = time.perf_counter() - origin
        cleanup(runtime)
        print(f"one in-process `seglab run` of {args.count} variants: {total:.3f} s")
        print(f"{'step':<14}{'calls':>6}{'first start':>13}{'last end':>10}{'summed s':>10}")
        for step, found in spans.items():
            summed = sum(end - start for start, end in found)
            first_start, last_end = min(s for s, _ in found), max(e for _, e in found)
            print(f"{step:<14}{len(found):>6}{first_start:>13.3f}{last_end:>10.3f}{summed:>10.3f}")

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

    def cli_same(round_no: int) -> None:
        argvs = []
        for i in range(args.count):  # untimed: each container its own copy of the run dir
            run_dir = work / "cli-same" / f"r{round_no}-{i}"
            shutil.copytree(template_dir, run_dir, ignore=shutil.ignore_patterns("*.jsonl"))
            argvs.append(same_args(template, f"bench-c{round_no}-{i}", run_dir))
        started = time.perf_counter()
        procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL) for argv in argvs]
        if any(proc.wait() for proc in procs):
            raise SystemExit("docker run (cli-same) failed")
        prepared[round_no] = started

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
        "cli-same": cli_same,
        "cli-parallel": cli_parallel,
        "cli-serial": cli_serial,
    }
    times: dict[str, list[float]] = {name: [] for name in modes}
    prepared: dict[int, float] = {}  # cli-same: when its untimed preparation ended
    for round_no in range(args.rounds):
        for name, run in modes.items():
            started = time.perf_counter()
            run(round_no)
            times[name].append(time.perf_counter() - prepared.pop(round_no, started))
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
    head = f"{'mode':<14}{'median s':>10}{'min s':>8}{'max s':>8}"
    print(f"{head}{'x cli-parallel':>16}{'x cli-same':>12}")
    base = statistics.median(times["cli-parallel"])
    same = statistics.median(times["cli-same"])
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:<14}{median:>10.3f}{min(values):>8.3f}{max(values):>8.3f}"
            f"{median / base:>16.2f}{median / same:>12.2f}"
        )
    for name in ("seglab-cli", "seglab-run"):
        for other in ("cli-parallel", "cli-same"):
            ratio = statistics.median(times[name]) / statistics.median(times[other])
            print(
                f"{name} / {other}: {ratio:.3f}x (target <= 0.8x: "
                f"{'met' if ratio <= 0.8 else 'not met'})"
            )


if __name__ == "__main__":
    main()
