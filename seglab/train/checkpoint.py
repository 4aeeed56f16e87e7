"""Checkpoints: atomic writes (temp file, fsync, rename, fsync dir) and RNG state capture.

A checkpoint is a dict with the keys ``model`` (state_dict of the unwrapped model),
``optimizer``, ``scheduler``, ``scaler`` (None without fp16), ``iter`` (iterations done),
``epoch``, ``best_miou`` (None before the first eval), ``rng`` (python, numpy, torch,
cuda) and ``event_seq`` (the last event seq written before it).
"""

from __future__ import annotations

import errno
import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seglab.train import storage

CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"


def rng_state() -> dict[str, Any]:
    """The state of every random generator the trainer draws from."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Put back generator states captured by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write `payload` to `path` so that a crash leaves either the old or the new file.

    A full disk or an I/O error raises StorageError naming the device and `path`; the
    partial temp file is removed and the previous `path` (if any) is left as it was.
    """
    kept = "; the previous checkpoint there is kept" if path.exists() else ""
    with storage.guard(path, kept):
        path.parent.mkdir(parents=True, exist_ok=True)
        # One writer per run dir (its trainer's main rank): a fixed name, so a file left by
        # a trainer killed mid-write is overwritten by the next write, not kept forever.
        tmp = _temporary(path)
        try:
            with open(tmp, "wb") as handle:
                torch.save(payload, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)


def _temporary(path: Path) -> Path:
    """The name `path` is written under before its rename (hidden, in the same folder)."""
    return path.with_name(f".{path.name}.tmp")


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# Where a file system has no hard links (some network and FAT-like mounts say so this way).
_NO_HARD_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


def link_atomic(source: Path, path: Path) -> bool:
    """Make `path` a hard link to `source`, replacing any old `path` in one rename.

    best.pt is written this way when it equals last.pt: one copy on disk until the next
    last.pt replaces its own name (a new file), which leaves best.pt as it was. Returns
    False where the file system has no hard links (the caller then writes a copy).
    """
    tmp = _temporary(path)
    tmp.unlink(missing_ok=True)  # left by a trainer killed between link and rename
    with storage.guard(path, "; the previous checkpoint there is kept"):
        try:
            os.link(source, tmp)
        except OSError as exc:
            if exc.errno in _NO_HARD_LINKS:
                return False
            raise
        try:
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
    return True


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read back."""


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_atomic` onto the CPU."""
    try:
        # The payload holds RNG states (numpy arrays, tuples): not loadable with weights_only.
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:
        raise CheckpointError(
            f"{path} cannot be read ({type(exc).__name__}: {exc}); move it "
            "away to start the run over, or put back a good copy"
        ) from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} is not a seglab checkpoint (no dict inside)")
    return payload
