"""`seglab eval` vs the official cityscapesscripts evaluator: whole processes, same files.

Generates N Cityscapes-sized (1024 x 2048) ground-truth / raw-id prediction PNG pairs in a
temporary folder, then, in interleaved rounds, runs as separate processes:

- ``seglab eval --dataset cityscapes --gt ... --pred ... --json`` (this checkout);
- the official ``evalPixelLevelSemanticLabeling.evaluateImgLists`` on the same files
  (nIoU off) in this venv, where cityscapesscripts is the pure-Python package (its
  ``np.unique`` path);
- with ``--cityscapes-src DIR`` (a checkout of the official repository: the package on the
  index ships without the ``.pyx``), the same evaluator with its Cython extension, built
  with ``CYTHONIZE_EVAL`` in the benchmark's own venv (``--venv``, reused when present).

Each run is timed from process start to exit; its process tree is sampled every 20 ms for
peak memory: the largest peak resident set of one process (``VmHWM``; ``ru_maxrss`` would
count the benchmark's own pages copied at fork) and the peak of the tree's summed
proportional set size (PSS: worker processes included, pages they share counted once).
Prints the median and the spread (min-max) per evaluator, the ratios of medians, the load
average before and after, and the largest per-class IoU difference between seglab and each
official run (must be 0).

    .venv/bin/python benchmarks/eval_cityscapes.py --frames 50 --rounds 5 \\
        --cityscapes-src /path/to/cityscapesScripts
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from PIL import Image

_OFFICIAL = """
import json, os, sys
root, gt_dir, pred_dir, out = sys.argv[1:5]
os.environ.update(CITYSCAPES_DATASET=root, CITYSCAPES_RESULTS=pred_dir, CITYSCAPES_EXPORT_DIR=root)
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as m
args = m.args
args.evalInstLevelScore = False
args.JSONOutput = False
args.quiet = True
gts = sorted(os.path.join(d, f) for d, _, fs in os.walk(gt_dir) for f in fs
             if f.endswith("_gtFine_labelIds.png"))
result = m.evaluateImgLists([m.getPrediction(args, gt) for gt in gts], gts, args)
with open(out, "w") as fh:
    json.dump({"cython": bool(m.CSUPPORT), "classScores": result["classScores"],
               "miou": result["averageScoreClasses"]}, fh)
"""


@dataclass
class Series:
    """Wall seconds and peak memory of one evaluator's runs."""

    name: str
    command: list[str]
    wall: list[float] = field(default_factory=list)
    max_rss_mib: list[float] = field(default_factory=list)
    tree_rss_mib: list[float] = field(default_factory=list)


def _generate(root: Path, frames: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    ids = np.arange(34)
    gt_dir, pred_dir = root / "gtFine" / "val", root / "results"
    for i in range(frames):
        city = ("frankfurt", "lindau", "munster")[i % 3]
        stem = f"{city}_{i:06d}_000019"
        gt = rng.choice(ids, size=(32, 64)).repeat(32, axis=0).repeat(32, axis=1)
        pred = gt.copy()
        noise = rng.random(gt.shape) < 0.2
        pred[noise] = rng.choice(ids, size=int(noise.sum()))
        (gt_dir / city).mkdir(parents=True, exist_ok=True)
        pred_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gt.astype(np.uint8)).save(gt_dir / city / f"{stem}_gtFine_labelIds.png")
        Image.fromarray(pred.astype(np.uint8)).save(pred_dir / f"{stem}_pred.png")
    return gt_dir, pred_dir


def _cython_venv(venv: Path, source: Path) -> Path:
    """A venv with cityscapesscripts built from `source` with its Cython extension."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "cython", "numpy", "setuptools", "wheel"], check=True)
        with tempfile.TemporaryDirectory() as tmp:
            build = Path(tmp) / "src"
            shutil.copytree(source, build, ignore=shutil.ignore_patterns(".git"))
            env = {**os.environ, "CYTHONIZE_EVAL": "1"}
            subprocess.run([*pip, "--no-build-isolation", str(build)], check=True, env=env)
    probe = "from cityscapesscripts.evaluation import addToConfusionMatrix"
    subprocess.run([str(python), "-c", probe], check=True)
    return python


def _hwm_kib(pid: int) -> int:
    """The process's own peak resident set (VmHWM: reset at exec, unlike ru_maxrss)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _run(series: Series, stdout: Path) -> None:
    """One timed run, its process tree sampled every 20 ms: each process's VmHWM and the
    tree's summed PSS."""
    start = time.perf_counter()
    with open(stdout, "w") as out:
        proc = psutil.Popen(series.command, stdout=out, stderr=subprocess.PIPE)
    tree_peak = 0
    hwm: dict[int, int] = {}
    while proc.poll() is None:
        try:
            members = [proc, *proc.children(recursive=True)]
            tree_peak = max(tree_peak, sum(p.memory_full_info().pss for p in members))
            for member in members:
                hwm[member.pid] = max(hwm.get(member.pid, 0), _hwm_kib(member.pid))
        except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
            pass  # a member exited between listing and reading: the next sample counts
        time.sleep(0.02)
    wall = time.perf_counter() - start
    errors = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{series.name} failed ({proc.returncode}): {errors}")
    series.wall.append(wall)
    series.max_rss_mib.append(max(hwm.values(), default=0) / 1024)
    series.tree_rss_mib.append(tree_peak / 2**20)


def _spread(values: list[float], unit: str, digits: int = 2) -> str:
    return (
        f"median {statistics.median(values):.{digits}f} {unit} "
        f"(min {min(values):.{digits}f}, max {max(values):.{digits}f})"
    )


def _iou_diff(ours: dict[str, Any], official: dict[str, Any]) -> float:
    worst = 0.0
    for cls in ours["classes"]:
        ref = official["classScores"][cls["name"]]
        if cls["iou"] is None:
            if not math.isnan(ref):
                return math.inf
        else:
            worst = max(worst, abs(cls["iou"] - ref))
    return worst


def main() -> None:
    """Generate the frames, run every evaluator in interleaved rounds, print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--frames", type=int, default=50, help="frame pairs to generate")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--cityscapes-src", type=Path, help="official repo checkout (Cython)")
    parser.add_argument(
        "--venv",
        type=Path,
        default=Path(tempfile.gettempdir()) / "seglab-bench-cityscapes-cython",
        help="the Cython path's own venv (built once, then reused)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="seglab-bench-eval-") as tmp:
        root = Path(tmp)
        gt_dir, pred_dir = _generate(root, args.frames)
        ours_cmd = [sys.executable, "-m", "seglab", "eval", "--dataset", "cityscapes"]
        ours_cmd += ["--gt", str(gt_dir), "--pred", str(pred_dir), "--json"]
        official = [str(root), str(gt_dir), str(pred_dir), str(root / "official.json")]
        runners = [
            Series("seglab eval", ours_cmd),
            Series("official, pure Python", [sys.executable, "-c", _OFFICIAL, *official]),
        ]
        if args.cityscapes_src:
            python = _cython_venv(args.venv, args.cityscapes_src)
            runners.append(Series("official, Cython", [str(python), "-c", _OFFICIAL, *official]))
        load_before = os.getloadavg()
        outputs: dict[str, Any] = {}
        for _ in range(args.rounds):
            for series in runners:
                _run(series, root / "stdout.json")
                outputs[series.name] = (
                    json.loads((root / "stdout.json").read_text())
                    if series is runners[0]
                    else json.loads((root / "official.json").read_text())
                )
        load_after = os.getloadavg()
    print(
        f"{args.frames} frames of 1024x2048, {args.rounds} interleaved rounds, "
        f"{len(os.sched_getaffinity(0))} usable CPUs, load average "
        f"{load_before[0]:.1f} -> {load_after[0]:.1f}"
    )
    for series in runners:
        print(f"{series.name:<22} wall {_spread(series.wall, 's')}")
        print(
            f"{'':<22} peak RSS: one process {_spread(series.max_rss_mib, 'MiB', 0)}; "
            f"process tree (PSS) {_spread(series.tree_rss_mib, 'MiB', 0)}"
        )
    ours = runners[0]
    for series in runners[1:]:
        ratio = statistics.median(series.wall) / statistics.median(ours.wall)
        cython = outputs[series.name]["cython"]
        diff = _iou_diff(outputs[ours.name], outputs[series.name])
        print(
            f"{series.name} / seglab eval: {ratio:.2f}x wall (Cython extension loaded: "
            f"{cython}); max per-class IoU difference {diff:.1e}"
        )


if __name__ == "__main__":
    main()
