"""The trainer: the only part of seglab that imports torch (the `train` extra).

It runs inside the experiment container or the local process runtime: models
(:mod:`~seglab.train.models`), label mappings (:mod:`~seglab.train.labels`, no torch),
metrics, data, the training loop, checkpoints, export and benchmarks. The workstation never
imports this package at module level; CLI handlers import its modules lazily.
"""

from __future__ import annotations
