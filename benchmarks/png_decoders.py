"""PNG decoders on Cityscapes-sized files: which one `seglab eval` and the data pipeline use.

Writes one 1024 x 2048 label-id PNG (blocky, like ``*_gtFine_labelIds.png``), one noisy
prediction PNG (20 % of pixels changed, so it compresses worse) and one RGB camera-like PNG
(``*_leftImg8bit.png``), then decodes each file with every decoder that imports here, in
interleaved rounds, and prints the median and spread of milliseconds per decode (file bytes
already in memory, so only decoding is timed) and the machine's load average.

    .venv/bin/python benchmarks/png_decoders.py --rounds 15

Decoders: Pillow (``Image.open`` + ``np.asarray``), OpenCV (``cv2.imdecode``,
``IMREAD_UNCHANGED``), pyspng (libspng), imagecodecs (``png_decode``, libpng; and
``spng_decode``). A decoder whose package is missing is listed as such, not timed.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

Decoder = Callable[[bytes], Any]


def _pillow(data: bytes) -> Any:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def _decoders() -> tuple[dict[str, Decoder], list[str]]:
    found: dict[str, Decoder] = {"pillow": _pillow}
    missing = []
    try:
        import cv2

        cv2.setNumThreads(1)
        found["opencv imdecode"] = lambda data: cv2.imdecode(
            np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED
        )
    except ImportError:
        missing.append("opencv (cv2)")
    try:
        import pyspng

        found["pyspng"] = pyspng.load
    except ImportError:
        missing.append("pyspng")
    try:
        import imagecodecs

        found["imagecodecs png"] = imagecodecs.png_decode
        found["imagecodecs spng"] = imagecodecs.spng_decode
    except ImportError:
        missing.append("imagecodecs")
    return found, missing


def _files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    label = rng.integers(0, 34, size=(32, 64)).repeat(32, axis=0).repeat(32, axis=1)
    pred = label.copy()
    noise = rng.random(label.shape) < 0.2
    pred[noise] = rng.integers(0, 34, size=int(noise.sum()))
    yy, xx = np.mgrid[0:1024, 0:2048]
    base = (np.sin(xx / 37) + np.cos(yy / 53)) * 50 + 120
    rgb = np.clip(base[..., None] + rng.normal(0, 8, size=(1024, 2048, 3)), 0, 255)
    out = {}
    for name, array in (
        ("label 1024x2048 L", label),
        ("noisy pred 1024x2048 L", pred),
        ("image 1024x2048 RGB", rgb),
    ):
        buffer = io.BytesIO()
        Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
        out[name] = buffer.getvalue()
    return out


def main() -> None:
    """Time every decoder on every file, interleaved, and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    args = parser.parse_args()
    decoders, missing = _decoders()
    files = _files()
    times: dict[tuple[str, str], list[float]] = {}
    reference = {name: _pillow(data) for name, data in files.items()}
    for name, data in files.items():
        for decoder, decode in decoders.items():
            out = np.asarray(decode(data)).reshape(reference[name].shape)
            if decoder.startswith("opencv") and out.ndim == 3:
                out = out[..., ::-1]  # OpenCV gives BGR
            if not np.array_equal(out, reference[name]):
                raise SystemExit(f"{decoder} decodes {name} differently from Pillow")
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for name, data in files.items():
            for decoder, decode in decoders.items():
                start = time.perf_counter()
                decode(data)
                times.setdefault((name, decoder), []).append(time.perf_counter() - start)
    load_after = os.getloadavg()
    print(
        f"{args.rounds} interleaved rounds, {os.cpu_count()} CPUs, load average "
        f"{load_before[0]:.1f} -> {load_after[0]:.1f}"
    )
    if missing:
        print(f"not installed: {', '.join(missing)}")
    for name, data in files.items():
        print(f"{name} ({len(data) / 1024:.0f} KiB):")
        base = statistics.median(times[(name, "pillow")])
        for decoder in decoders:
            series = times[(name, decoder)]
            med = statistics.median(series)
            print(
                f"  {decoder:<17} {1000 * med:7.2f} ms  (min {1000 * min(series):6.2f}, "
                f"max {1000 * max(series):6.2f})  pillow/this {base / med:4.2f}x"
            )


if __name__ == "__main__":
    main()
