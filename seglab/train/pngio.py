"""Image and label-map decoding for evaluation and training (numpy, no torch).

8-bit greyscale and 8-bit RGB PNGs (Cityscapes labels, predictions and camera images) are
decoded with libspng through ``pyspng``: on 1024 x 2048 files it takes 0.6-0.8x the time of
Pillow and of OpenCV's ``imdecode`` (``benchmarks/png_decoders.py``, docs/benchmarks.md).
Every other file (palette PNGs such as VOC labels, 16-bit PNGs, JPEGs) goes through Pillow,
which keeps palette indices as they are.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyspng
from PIL import Image

from seglab.errors import SeglabError

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GREY = 0
_RGB = 2


class ImageReadError(SeglabError):
    """A file that cannot be decoded (the message names it)."""


def _png_layout(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR, or None when `data` is not a PNG."""
    if len(data) < 26 or not data.startswith(_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    return data[24], data[25]


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"cannot read {path}: {exc}") from exc


def _spng(data: bytes, path: Path) -> npt.NDArray[Any]:
    try:
        return np.asarray(pyspng.load(data))
    except RuntimeError as exc:  # pyspng's only error type
        raise ImageReadError(f"cannot read {path}: {exc}") from exc


def _pillow(data: bytes, path: Path, mode: str | None) -> tuple[npt.NDArray[Any], str]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            found = image.mode
            return np.array(image if mode is None else image.convert(mode)), found
    except OSError as exc:
        raise ImageReadError(f"cannot read {path}: {exc}") from exc


def read_label(path: Path) -> tuple[npt.NDArray[Any], str]:
    """A label map's values as stored (palette indices for palette PNGs) and its Pillow mode
    ("L" for 8-bit greyscale PNGs)."""
    data = _read_bytes(path)
    if _png_layout(data) == (8, _GREY):
        return _spng(data, path), "L"
    return _pillow(data, path, None)


def read_rgb(path: Path) -> npt.NDArray[np.uint8]:
    """An image as HxWx3 uint8 RGB."""
    data = _read_bytes(path)
    if _png_layout(data) == (8, _RGB):
        return _spng(data, path)
    return _pillow(data, path, "RGB")[0]


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, from its header."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except OSError as exc:
        raise ImageReadError(f"cannot read {path}: {exc}") from exc
