"""The trainer's datasets: :mod:`.base` (sample type, transforms), :mod:`.folders`
(Cityscapes, ADE20K, VOC on disk) and :mod:`.synthetic` (generated shapes)."""

from __future__ import annotations
