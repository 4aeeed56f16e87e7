"""Colour palettes of the supported datasets (numpy only, no torch): train id -> RGB.

- **cityscapes**: the official colours of the 19 evaluated classes (cityscapesscripts'
  ``labels.py``, road (128, 64, 128) ... bicycle (119, 11, 32)).
- **ade20k**: the 150-colour palette of the SceneParsing benchmark's tools, as used by
  mmsegmentation (wall (120, 120, 120), building (180, 120, 120), ...).
- **voc**: the VOC devkit's ``labelcolormap`` (bits of the class id spread over R, G, B).
- **synthetic**: generated: class 0 (background) dark grey, the shapes evenly spaced hues.

Ignored pixels (255) are drawn black in every palette.
"""

from __future__ import annotations

import colorsys

import numpy as np
import numpy.typing as npt

CITYSCAPES_COLOURS: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)

# ADE20K's 150 colours as hex RGB triples, class 0 (wall) first.
_ADE20K_HEX = (
    "787878b4787806e6e650323204c8037878508c8c8ccc05ffe6e6e604fa07e005ffebff0796053d787846"
    "08ff33ff06528fff8cccff04ff3307cc46030066c83de6faff06330b66ffff0747ff09e00907e6dcdcdc"
    "ff095c7009ff08ffd607ffe0ffb8060aff47ff290a07ffffe0ff086608ffff3d06ffc207ff7a0800ff14"
    "ff0829ff05990633ffeb0cffa0961400a3ff8c8c8cfa0a0f14ff001fff00ff1f00ffe00099ff000000ff"
    "ff470000ebff00adff1f00ff0bc8c8ff520000fff5003dff00ff7000ff85ff0000ffa300ff6600c2ff00"
    "008fff33ff000052ff00ff2900ffad0a00ffadff0000ff99ff5c00ff00ffff00f5ff0066ffad00ff0014"
    "ffb8b8001fff00ff3d0047ffff00cc00ffc200ff52000aff0070ff3300ff00c2ff007aff00ffa3ff9900"
    "00ff0aff70008fff005200ffa3ff00ffeb0008b8aa8500ff00ff5cb800ffff001f00b8ff00d6ffff0070"
    "5cff0000e0ff70e0ff46b8a0a300ff9900ff47ff00ff00a3ffcc00ff008f00ffeb85ff00ff00ebf500ff"
    "ff007afff5000abed4d6ff0000ccff1400ffffff000099ff0029ff00ffcc2900ff29ff00ad00ff00f5ff"
    "4700ff7a00ff00ffb8005cffb8ff000085ffffd60019c2c266ff005c00ff"
)

IGNORED_COLOUR = (0, 0, 0)


def _ade20k() -> npt.NDArray[np.uint8]:
    raw = bytes.fromhex("".join(_ADE20K_HEX))
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).copy()


def voc_colours(count: int = 21) -> npt.NDArray[np.uint8]:
    """The VOC devkit colour map: bit ``j`` of the id goes to bit ``7 - j // 3`` of R, G or B."""
    colours = np.zeros((count, 3), dtype=np.uint8)
    for index in range(count):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colours[index] = (r, g, b)
    return colours


def generated_colours(count: int) -> npt.NDArray[np.uint8]:
    """Class 0 dark grey, classes 1.. at evenly spaced saturated hues."""
    colours = np.zeros((count, 3), dtype=np.uint8)
    colours[0] = (64, 64, 64)
    for index in range(1, count):
        rgb = colorsys.hsv_to_rgb((index - 1) / max(count - 1, 1), 0.85, 0.95)
        colours[index] = tuple(round(255 * part) for part in rgb)
    return colours


def palette(dataset: str, num_classes: int) -> npt.NDArray[np.uint8]:
    """A 256 x 3 lookup table (train id -> RGB) for `dataset`; 255 and unused ids black."""
    if dataset == "cityscapes":
        colours = np.asarray(CITYSCAPES_COLOURS, dtype=np.uint8)
    elif dataset == "ade20k":
        colours = _ade20k()
    elif dataset == "voc":
        colours = voc_colours()
    else:
        colours = generated_colours(num_classes)
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: min(len(colours), num_classes)] = colours[:num_classes]
    table[255] = IGNORED_COLOUR
    return table


def colourise(label: npt.NDArray[np.uint8], table: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """An HxW map of train ids as HxWx3 RGB through `table` (from :func:`palette`)."""
    return table[label]
