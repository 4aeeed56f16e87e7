"""Process-group setup for single-process and `torchrun` runs (NCCL on GPU, gloo on CPU)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from seglab.events import Event, read_jsonl, stop_exit_status
from seglab.multinode import MEMBER_ENV, TIMEOUT_ENV


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank, the world size and its device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    main_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on the main rank, the only one that writes events, checkpoints and
        TensorBoard: rank 0, or in a multi-node run the first process of member 0 (the
        c10d rendezvous numbers the nodes in an order of its own)."""
        return self.rank == self.main_rank

    @property
    def distributed(self) -> bool:
        """True when running with more than one process."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from exc


def setup() -> DistContext:
    """Read RANK/WORLD_SIZE/LOCAL_RANK (set by torchrun), pick the device, init the group.

    The device is ``cuda:LOCAL_RANK`` when CUDA is available (CUDA_VISIBLE_DEVICES decides
    which GPUs that is), else the CPU. In a multi-node run (``SEGLAB_MEMBER`` set) every
    collective times out after ``SEGLAB_DIST_TIMEOUT_S`` seconds, so a member that dies
    fails the others instead of hanging them, and the main rank is found by one all-reduce.
    """
    rank = _env_int("RANK", 0)
    world_size = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} "
                "visible GPU(s); check CUDA_VISIBLE_DEVICES and --nproc_per_node"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = os.environ.get(TIMEOUT_ENV)
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=float(timeout)) if timeout else None,
        )
    main_rank = 0
    member = _env_int(MEMBER_ENV, -1)  # -1: not a multi-node run
    if world_size > 1 and member >= 0:
        mine = rank if member == 0 and local_rank == 0 else 0
        found = torch.tensor([mine], dtype=torch.int64, device=device)
        dist.all_reduce(found)
        main_rank = int(found.item())
    return DistContext(
        rank=rank, local_rank=local_rank, world_size=world_size, device=device, main_rank=main_rank
    )


def share_from_main(ctx: DistContext, value: object) -> object:
    """``value`` as the main rank has it, on every rank (a collective)."""
    if not ctx.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(
        box, src=ctx.main_rank, device=ctx.device if ctx.device.type == "cuda" else None
    )
    return box[0]


def teardown(ctx: DistContext) -> None:
    """Destroy the process group this run created."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(ctx: DistContext, flag: bool) -> bool:
    """True if `flag` is true on any rank (a collective: every rank must call it)."""
    if not ctx.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def mean_over_ranks(ctx: DistContext, value: float) -> float:
    """The mean of a scalar over all ranks (a collective)."""
    if not ctx.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / ctx.world_size


def stop_status(signum: int) -> int:
    """The trainer's exit status after a clean stop on ``signum``: 128 + signum (143 for
    SIGTERM), so that a Docker engine's ``on-failure`` policy starts a run its shutdown
    stopped again; 0 in a Slurm job (``SLURM_JOB_ID``), where a clean stop is a COMPLETED
    job (``afterok`` dependencies hold) and Slurm's requeue is the way back."""
    return 0 if os.environ.get("SLURM_JOB_ID") else stop_exit_status(signum)


def launch(nproc: int, trainer_args: list[str], run_dir: Path) -> int:
    """Run ``python -m seglab.train TRAINER_ARGS`` as `nproc` local DDP processes.

    This is ``torchrun --standalone --nproc_per_node NPROC``, in this process. torchrun
    forwards SIGTERM/SIGINT to the processes (which finish their step, write last.pt and
    emit ``end(stopped)``) and then raises; the exit status here is :func:`stop_status`
    when the run's last event says it stopped cleanly, as a single process's is (1 when
    it did not). A failed process gives 1 (its ``error`` event says why).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        # --local-addr: a container without a network cannot resolve its own host name.
        torchrun(
            [
                "--standalone",
                "--local-addr=127.0.0.1",
                "--nproc_per_node",
                str(nproc),
                "-m",
                "seglab.train",
                *trainer_args,
            ]
        )
    except ChildFailedError as exc:
        print(f"seglab train: a training process failed: {exc}", file=sys.stderr)
        return 1
    except SignalException as exc:
        last = _last_event(run_dir / "events.jsonl")
        if last is not None and last.kind == "end" and last.data.get("status") == "stopped":
            return stop_status(exc.sigval)
        print(
            f"seglab train: stopped by signal {exc.sigval} before the processes ended cleanly",
            file=sys.stderr,
        )
        return 1
    return 0


def _last_event(path: Path) -> Event | None:
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as handle:
        events = list(read_jsonl(handle))
    return events[-1] if events else None
