"""What the trainer's start event records about the software and hardware it runs on."""

from __future__ import annotations

import platform
from typing import Any

import torch

from seglab import __version__


def versions(device: torch.device) -> dict[str, Any]:
    """``versions`` (seglab, torch, CUDA, cuDNN, Python) and ``gpu_names`` (the GPUs this
    process sees, by index; empty on CPU) for the start event."""
    cuda = torch.version.cuda
    cudnn = torch.backends.cudnn.version() if cuda else None  # type: ignore[no-untyped-call]
    gpus = []
    if device.type == "cuda":
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "versions": {
            "seglab": __version__,
            "torch": torch.__version__,
            "cuda": cuda,
            "cudnn": cudnn,
            "python": platform.python_version(),
        },
        "gpu_names": gpus,
    }
