"""The Python steps of ``benchmarks/gpu_check.sh`` (one subcommand per step).

Each step prints what it measured and exits non-zero when a check fails; with ``--cpu`` it
rehearses on the CPU at a tiny size (the script's ``--dry-run``), with the stand-in NVML and
nvidia-smi for the telemetry steps, so the code path is exercised without a GPU.

    python benchmarks/gpu_check.py versions
    python benchmarks/gpu_check.py nvml [--cpu]
    python benchmarks/gpu_check.py capture OUT_DIR [--cpu]
    python benchmarks/gpu_check.py amp {bf16,fp16} [--iters 300] [--cpu]
    python benchmarks/gpu_check.py export [--cpu]
    python benchmarks/gpu_check.py nccl [--cpu]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SEED_RECIPE = REPO / "recipes" / "cityscapes-deeplabv3plus-r50.yaml"
RULE = "#" * 80
_UUID = re.compile(r"GPU-[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_MIG_UUID = re.compile(r"MIG-[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


class CheckFailed(SystemExit):
    """A check that did not hold: the message says which and by how much."""

    def __init__(self, message: str) -> None:
        super().__init__(f"CHECK FAILED: {message}")


def _torch_device(cpu: bool) -> Any:
    import torch

    if cpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise CheckFailed("torch.cuda.is_available() is False on a GPU check")
    return torch.device("cuda")


# -- versions ----------------------------------------------------------------------------


def versions(_: argparse.Namespace) -> None:
    """Python, torch, CUDA, cuDNN, NCCL and the GPU, as torch sees them."""
    import numpy
    import PIL
    import pyspng
    import torch
    import torchvision

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "pyspng": pyspng.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["cudnn"] = torch.backends.cudnn.version()  # type: ignore[no-untyped-call]
        info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))  # type: ignore[no-untyped-call]
        info["devices"] = [
            {
                "name": torch.cuda.get_device_name(i),
                "capability": list(torch.cuda.get_device_capability(i)),
                "memory_gib": torch.cuda.get_device_properties(i).total_memory / 2**30,
            }
            for i in range(torch.cuda.device_count())
        ]
    print(json.dumps(info, indent=2))


# -- NVML vs nvidia-smi ------------------------------------------------------------------


def _standin_env() -> dict[str, str]:
    return {
        "PATH": f"{REPO / 'tests' / 'standin'}{os.pathsep}{os.environ['PATH']}",
        "SEGLAB_STANDIN_CAPTURE": "linux-x86_64__nvidia-h200__590.48.01.txt",
        "SEGLAB_STANDIN_PHASE": "load",
    }


def nvml(args: argparse.Namespace) -> None:
    """NVML samples against nvidia-smi's numbers, and the sampler's CPU per GPU sample."""
    from seglab.telemetry.nvml import NvmlSource

    module: Any = None
    if args.cpu:
        os.environ.update(_standin_env())
        sys.path.insert(0, str(REPO))
        from tests.standin.nvidia_smi import Capture, resolve_capture
        from tests.standin.nvml_replay import ReplayNvml

        capture = Capture(resolve_capture(os.environ["SEGLAB_STANDIN_CAPTURE"]))
        module = ReplayNvml(capture, phase="load")
    source = NvmlSource(nvml=module)
    source._init()  # the sampler's own set-up and poll, driven synchronously here
    polls = 200
    for i in range(polls):
        source._poll(slow=i == 0, apps=i % 5 == 0)
    per_sample_us = 1e6 * source.poll_cpu_seconds / source.samples_total
    gpus = {s.index: s for s in source.state().gpus}
    fields = "index,uuid,name,memory.total,memory.used,power.limit,temperature.gpu"
    smi = subprocess.run(
        ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    problems = []
    for line in smi.strip().splitlines():
        index, uuid, name, total, used, limit, temp = (v.strip() for v in line.split(","))
        sample = gpus[int(index)]
        checks = [
            ("uuid", sample.uuid, uuid, 0.0),
            ("name", sample.name, name, 0.0),
            ("memory.total MiB", sample.memory_total_mib, float(total), 1.0),
            ("memory.used MiB", sample.memory_used_mib, float(used), 256.0),
            ("power.limit W", sample.power_limit_w, float(limit), 1.0),
            ("temperature C", sample.temperature_c, float(temp), 3.0),
        ]
        for what, ours, theirs, tolerance in checks:
            same = ours == theirs
            if isinstance(theirs, float) and ours is not None:
                same = abs(float(ours) - theirs) <= tolerance
            print(f"GPU {index} {what:<17} nvml {ours!s:<42} nvidia-smi {theirs}")
            if not same:
                problems.append(f"GPU {index} {what}: nvml {ours} vs nvidia-smi {theirs}")
    print(
        f"NVML sampler: {source.samples_total} samples in {polls} polls, "
        f"{per_sample_us:.1f} us CPU per GPU sample"
    )
    if problems:
        raise CheckFailed("; ".join(problems))


# -- nvidia-smi captures -----------------------------------------------------------------

_CAPABILITIES = [
    ("version", ["--version"]),
    ("help (-h)", ["-h"]),
    ("help-query-gpu", ["--help-query-gpu"]),
    ("help-query-compute-apps", ["--help-query-compute-apps"]),
    ("list (-L)", ["-L"]),
    ("topo -m", ["topo", "-m"]),
    ("nvlink -s", ["nvlink", "-s"]),
]
_APPS = "timestamp,gpu_name,gpu_bus_id,gpu_serial,gpu_uuid,pid,process_name,used_gpu_memory"


def _smi(argv: list[str]) -> tuple[int, str]:
    proc = subprocess.run(["nvidia-smi", *argv], capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def _section(phase: str, what: str, argv: list[str] | None, body: str) -> str:
    command = "" if argv is None else f"# $ nvidia-smi {' '.join(argv)}\n"
    return f"{RULE}\n# {phase} :: {what}\n{command}{RULE}\n{body.rstrip()}\n\n\n"


def _query_fields(help_text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r'^"([^"]+)"', help_text, re.MULTILINE)]


def _query_gpu(fields: list[str]) -> tuple[list[str], str]:
    """Every field this driver answers (a field it refuses is dropped and the query retried)."""
    fields = list(fields)
    while True:
        argv = [f"--query-gpu={','.join(fields)}", "--format=csv"]
        code, out = _smi(argv)
        bad = re.search(r'Field "([^"]+)" is not a valid field', out)
        if code == 0:
            return argv, out
        if bad is None or bad.group(1) not in fields:
            raise CheckFailed(f"nvidia-smi --query-gpu failed ({code}): {out[:400]}")
        fields.remove(bad.group(1))


def _phase(phase: str, fields: list[str]) -> str:
    parts = []
    for what, argv in [("nvidia-smi (default table)", []), ("query (-q)", ["-q"])]:
        parts.append(_section(phase, what, argv, _smi(argv)[1]))
    argv, out = _query_gpu(fields)
    parts.append(_section(phase, "query-gpu (csv, what the exporter parses)", argv, out))
    apps = [f"--query-compute-apps={_APPS}", "--format=csv"]
    parts.append(_section(phase, "query-compute-apps (per-process)", apps, _smi(apps)[1]))
    for what, argv in [
        ("pmon (per-process monitor)", ["pmon", "-c", "5"]),
        ("dmon (per-device monitor, incl. PCIe rx/tx)", ["dmon", "-c", "5"]),
    ]:
        parts.append(_section(phase, what, argv, _smi(argv)[1]))
    return "".join(parts)


def _load_process(cpu: bool) -> subprocess.Popen[bytes] | None:
    """A CUDA load (bf16 matmuls plus a 20 % memory hog) until killed."""
    if cpu:
        return None
    code = (
        "import torch\n"
        "free, total = torch.cuda.mem_get_info()\n"
        "hog = torch.empty(int(total * 0.2), dtype=torch.uint8, device='cuda')\n"
        "a = torch.randn(8192, 8192, device='cuda', dtype=torch.bfloat16)\n"
        "while True:\n"
        "    a = (a @ a).clamp_(-1, 1)\n"
        "    torch.cuda.synchronize()\n"
    )
    return subprocess.Popen([sys.executable, "-c", code])


def capture(args: argparse.Namespace) -> None:
    """Idle and load captures of this machine in the tests/fixtures/nvidia-smi format."""
    if args.cpu:
        os.environ.update(_standin_env())
    help_gpu = _smi(["--help-query-gpu"])[1]
    fields = _query_fields(help_gpu)
    if not fields:
        raise CheckFailed("no field names in nvidia-smi --help-query-gpu")
    body = [_section("capabilities", what, argv, _smi(argv)[1]) for what, argv in _CAPABILITIES]
    body.append(
        _section(
            "capabilities",
            "query-gpu field list (derived, used for query-gpu above)",
            None,
            "\n".join(fields),
        )
    )
    os.environ["SEGLAB_STANDIN_PHASE"] = "idle"
    body.append(_phase("idle", fields))
    load = _load_process(args.cpu)
    os.environ["SEGLAB_STANDIN_PHASE"] = "load"
    try:
        time.sleep(0 if args.cpu else 8)  # clocks, power and temperature settle under load
        body.append(_phase("load", fields))
    finally:
        if load is not None:
            load.kill()
            load.wait()
    name_line = _smi(["--query-gpu=name,driver_version", "--format=csv,noheader"])[1]
    name, driver = (v.strip() for v in name_line.splitlines()[0].split(","))
    serials = _smi(["--query-gpu=serial", "--format=csv,noheader"])[1].split()
    text = "".join(body)
    for serial in {s for s in serials if s and s[0].isdigit()}:
        text = text.replace(serial, "0" * len(serial))
    text = _UUID.sub("GPU-00000000-0000-0000-0000-000000000000", text)
    text = _MIG_UUID.sub("MIG-00000000-0000-0000-0000-000000000000", text)
    header = (
        f"{RULE}\n# seglab benchmarks/gpu_check.sh nvidia-smi capture\n"
        "# The GPU model and driver are in the filename; every nvidia-smi value is in the\n"
        "# raw sections below. Same layout as the other files of tests/fixtures/nvidia-smi.\n"
        f"{RULE}\n"
        f"collected_at:   {datetime.datetime.now(datetime.UTC):%Y-%m-%dT%H:%M:%SZ}\n"
        "masked:         yes\n"
        f"os:             {platform.system().lower()} ({platform.platform()})\n"
        f"kernel:         {platform.release()}\n"
        f"arch:           {platform.machine()}\n"
        "load:           torch bf16 8192x8192 matmul loop + 20% memory hog\n\n\n"
    )
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    out = Path(args.out_dir) / f"linux-{platform.machine()}__{slug}__{driver}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + text)
    sys.path.insert(0, str(REPO))
    from tests.standin.nvidia_smi import Capture

    parsed = Capture(out)
    for phase in ("idle", "load"):
        names, _, rows = parsed.table(phase, "query-gpu")
        apps = parsed.table(phase, "query-compute-apps")[2]
        print(
            f"{out.name}: {phase} query-gpu {len(names)} fields x {len(rows)} GPU row(s), "
            f"{len(apps)} compute app(s)"
        )
        if not rows:
            raise CheckFailed(f"{out}: no GPU rows in the {phase} query-gpu section")


# -- mixed-precision training --------------------------------------------------------------


def amp(args: argparse.Namespace) -> None:
    """`--iters` iterations of the seed recipe's model on synthetic Cityscapes-sized data."""
    import torch

    from seglab.recipes import SyntheticConfig, load_resolved
    from seglab.train.datasets.base import TrainTransform
    from seglab.train.datasets.synthetic import SyntheticShapes
    from seglab.train.labels import num_classes
    from seglab.train.loop import optimizer_for, segmentation_loss
    from seglab.train.models import build_model

    device = _torch_device(args.cpu)
    recipe = load_resolved(SEED_RECIPE)
    image = (128, 256) if args.cpu else (1024, 2048)
    crop = (64, 128) if args.cpu else (recipe.data.crop[0], recipe.data.crop[1])
    batch = 2 if args.cpu else recipe.train.batch_size // recipe.resources.gpus
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    torch.manual_seed(0)
    cfg = SyntheticConfig(image_size=[image[0], image[1]], train_size=16, val_size=1)
    shapes = SyntheticShapes(cfg, "train", 0, TrainTransform(crop=crop, scale_range=(0.5, 2.0)))
    pool = [shapes[i] for i in range(len(shapes))]
    images = torch.stack([p[0] for p in pool]).to(device)
    labels = torch.stack([p[1] for p in pool]).to(device).long()
    model_cfg = recipe.model.model_copy(update={"pretrained_backbone": None})
    net = build_model(model_cfg, num_classes(recipe.data)).to(device).train()
    net = net.to(memory_format=torch.channels_last)
    optimizer = optimizer_for(recipe, iter(net.parameters()))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    losses = []
    start = time.perf_counter()
    for step in range(args.iters):
        pick = torch.randint(0, len(pool), (batch,), generator=torch.Generator().manual_seed(step))
        x = images[pick].contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype):
            loss = segmentation_loss(net(x), labels[pick], recipe.train.aux_weight)
        optimizer.zero_grad(set_to_none=True)
        scaled: torch.Tensor = scaler.scale(loss)
        scaled.backward()  # type: ignore[no-untyped-call]
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - start
    window = max(len(losses) // 10, 1)
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    print(
        f"{args.dtype}{' + GradScaler' if dtype == torch.float16 else ''}: {args.iters} iters, "
        f"batch {batch}, crop {crop[0]}x{crop[1]} from {image[0]}x{image[1]}, "
        f"{batch * args.iters / seconds:.1f} img/s; loss first {window}: {first:.4f}, "
        f"last {window}: {last:.4f}; scale {scaler.get_scale() if scaler.is_enabled() else '-'}"
    )
    if not all(math.isfinite(v) for v in losses):
        raise CheckFailed(f"{args.dtype}: a loss was not finite: {losses}")
    if not args.cpu and not last < first:
        raise CheckFailed(f"{args.dtype}: loss did not fall ({first:.4f} -> {last:.4f})")


# -- export parity ---------------------------------------------------------------------------


def export(args: argparse.Namespace) -> None:
    """TorchScript on the device and ONNX (onnxruntime) against eager PyTorch on the device."""
    import onnxruntime
    import torch

    from seglab.recipes import load_resolved
    from seglab.train.export import DEFAULT_TOLERANCE, export_onnx
    from seglab.train.labels import num_classes
    from seglab.train.models import LogitsOnly, build_model

    device = _torch_device(args.cpu)
    # fp32 parity: TF32 convolutions and matmuls (on by default for cuDNN) would differ from
    # the CPU's fp32 by more than the tolerance.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    recipe = load_resolved(SEED_RECIPE)
    height, width = (64, 128) if args.cpu else tuple(recipe.data.crop)
    torch.manual_seed(0)
    model_cfg = recipe.model.model_copy(update={"pretrained_backbone": None})
    model = LogitsOnly(build_model(model_cfg, num_classes(recipe.data))).eval()
    sample = torch.randn(1, 3, height, width)
    with torch.no_grad():
        reference = model.to(device)(sample.to(device)).float().cpu()
        traced = torch.jit.trace(model, sample.to(device))  # type: ignore[no-untyped-call]
        scripted = traced(sample.to(device)).float().cpu()
    ts_diff = float((scripted - reference).abs().max())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model.cpu(), sample, path)
        providers = [
            p
            for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
            if p in onnxruntime.get_available_providers()
        ]
        session = onnxruntime.InferenceSession(str(path), providers=providers)
        (onnx_out,) = session.run(None, {session.get_inputs()[0].name: sample.numpy()})
    onnx_diff = float((torch.from_numpy(onnx_out) - reference).abs().max())
    print(
        f"export parity at 1x3x{height}x{width} vs eager on {device}: TorchScript on {device} "
        f"{ts_diff:.2e}, ONNX ({session.get_providers()[0]}) {onnx_diff:.2e} "
        f"(tolerance {DEFAULT_TOLERANCE:g})"
    )
    if not max(ts_diff, onnx_diff) <= DEFAULT_TOLERANCE:
        raise CheckFailed(f"export differs: TorchScript {ts_diff:.3g}, ONNX {onnx_diff:.3g}")


# -- NCCL ------------------------------------------------------------------------------------


def nccl(args: argparse.Namespace) -> None:
    """A one-rank process group (NCCL; gloo with --cpu) and one all-reduce."""
    import torch
    import torch.distributed as dist

    device = _torch_device(args.cpu)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = "gloo" if args.cpu else "nccl"
    if device.type == "cuda":
        torch.cuda.set_device(0)
    start = time.perf_counter()
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        value = torch.full((4,), 3.0, device=device)
        dist.all_reduce(value)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    finally:
        dist.destroy_process_group()
    print(f"{backend}: one-rank init + all_reduce in {seconds:.2f} s, result {value.tolist()}")
    if value.tolist() != [3.0] * 4:
        raise CheckFailed(f"{backend} all_reduce gave {value.tolist()}")


def main() -> None:
    """Run one step."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    steps.add_parser("versions").set_defaults(func=versions)
    for name, func in (("nvml", nvml), ("export", export), ("nccl", nccl)):
        step = steps.add_parser(name)
        step.add_argument("--cpu", action="store_true", help="rehearse without a GPU")
        step.set_defaults(func=func)
    step = steps.add_parser("capture")
    step.add_argument("out_dir")
    step.add_argument("--cpu", action="store_true", help="capture the stand-in nvidia-smi")
    step.set_defaults(func=capture)
    step = steps.add_parser("amp")
    step.add_argument("dtype", choices=["bf16", "fp16"])
    step.add_argument("--iters", type=int, default=300)
    step.add_argument("--cpu", action="store_true", help="rehearse without a GPU")
    step.set_defaults(func=amp)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
