"""seglab: a terminal workstation manager for semantic-segmentation training."""

from __future__ import annotations

__version__ = "0.1.0"
