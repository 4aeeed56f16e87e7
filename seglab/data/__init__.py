"""Datasets on every host: layouts and checks, unpacking the official archives, and
copying trees between machines over seglab's SSH connections (``seglab data``).

The workstation side only: nothing here imports torch. :mod:`seglab.data.probe` is the
standard-library part that runs on the host holding the data.
"""

from __future__ import annotations
