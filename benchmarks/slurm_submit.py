"""A grid of N variants on Slurm: one job array vs one job per variant.

Measured in the same run against the same controller, each mode ``--rounds`` times
(interleaved; every job is cancelled and waited out between rounds, not timed):

- array:     SlurmRuntime.submit of N specs -> one ``sbatch --array=0-(N-1)`` call
             (what ``seglab run GRID --on CLUSTER`` does);
- per-job:   SlurmRuntime.launch for each spec -> N ``sbatch`` calls (the baseline);

and, for the jobs just submitted, one status poll of every run (``inspect`` of each ref:
one ``scontrol show job`` each). At the end, every run submitted is polled both ways:
``list()`` (one ``scontrol`` call for all jobs plus one read of the completion log) vs
``inspect`` per run (the baseline). The jobs are held (``--hold``) so the cluster does not
run them while they are timed. Prints medians and the ratio per-job / array. Needs a Slurm
controller (.ci/slurm.sh WORKDIR; export SLURM_CONF=WORKDIR/slurm.conf).

    .venv/bin/python benchmarks/slurm_submit.py [--count 16] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from seglab.hosts import SlurmOptions
from seglab.runtime.slurm import SlurmRuntime, split_ref
from seglab.runtime.spec import LaunchSpec


class HeldRuntime(SlurmRuntime):
    """Submits with --hold: the jobs stay pending, so nothing runs while it is timed."""

    def sbatch_args(
        self, specs: Sequence[LaunchSpec], gpus: int, output: str, job_name: str
    ) -> list[str]:
        return [*super().sbatch_args(specs, gpus, output, job_name), "--hold"]


def specs(root: Path, count: int, tag: str) -> list[LaunchSpec]:
    out = []
    for index in range(count):
        run_dir = root / f"{tag}-{index}"
        run_dir.mkdir(parents=True, exist_ok=True)
        out.append(
            LaunchSpec(
                name=f"bench-{tag}-{index}",
                image="none",
                command=("true",),
                log_path=run_dir / "train.log",
                labels={"seglab.recipe": "bench"},
            )
        )
    return out


def cancel(runtime: SlurmRuntime, refs: Sequence[str]) -> None:
    jobs = sorted({split_ref(ref)[0].split("_")[0] for ref in refs})
    subprocess.run(["scancel", *jobs], check=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(runtime.inspect(ref).active for ref in refs):
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="seglab-slurm-bench-") as tmp:
        root = Path(tmp)
        runtime = HeldRuntime(root, SlurmOptions())
        every: list[str] = []
        submit: dict[str, list[float]] = {"array": [], "per-job": []}
        poll: dict[str, list[float]] = {"array": [], "per-job": []}
        for round_ in range(args.rounds):
            for mode in ("array", "per-job"):
                batch = specs(root, args.count, f"{mode}{round_}")
                start = time.perf_counter()
                if mode == "array":
                    refs = runtime.submit(batch, 0)
                else:
                    refs = [runtime.launch(spec, 0) for spec in batch]
                submit[mode].append(time.perf_counter() - start)
                start = time.perf_counter()
                states = [runtime.inspect(ref) for ref in refs]
                poll[mode].append(time.perf_counter() - start)
                assert all(state.status == "created" for state in states), states
                cancel(runtime, refs)
                every += refs
        start = time.perf_counter()
        listed = runtime.list()
        list_s = time.perf_counter() - start
        start = time.perf_counter()
        inspected = [runtime.inspect(ref) for ref in every]
        inspect_s = time.perf_counter() - start
        assert len(listed) == len(inspected) == len(every)
        assert {info.ref: info.state for info in listed} == dict(zip(every, inspected, strict=True))
    print(f"grid of {args.count} variants, {args.rounds} rounds (median seconds)")
    for mode in ("array", "per-job"):
        print(
            f"  {mode:<8} submit {statistics.median(submit[mode]):7.3f}   "
            f"poll all {statistics.median(poll[mode]):7.3f}"
        )
    ratio = statistics.median(submit["per-job"]) / statistics.median(submit["array"])
    print(f"  submit: per-job / array = {ratio:.1f}x")
    print(
        f"all {len(every)} runs: list {list_s:.3f} s, inspect each {inspect_s:.3f} s "
        f"({inspect_s / list_s:.1f}x)"
    )


if __name__ == "__main__":
    main()
