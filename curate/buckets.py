"""Shape buckets of a kvid folder: which clips can share a batch without padding.

A clip's bucket is decided from its index row alone (``width``, ``height``, ``duration_s``),
before anything is decoded:

- **aspect ratio**: the nearest of ``Buckets.aspect_ratios`` (width / height, compared on a
  log scale, so 4:3 and 3:4 are equally far from 1:1). Every clip of the bucket is resized
  to cover the bucket's frame and centre-cropped to it, so all have one (H, W).
- **resolution**: the stored clip's short side, cut at ``resolution_edges`` (px). The loader
  resizes every clip to its own ``short_side``, so this groups clips by the detail they
  carry (a 360p clip upscaled beside 1080p ones), it does not change the tensor size.
- **duration**: ``duration_s`` cut at ``duration_edges`` (s): like-length clips together.

This module holds the settings and the arithmetic only (numpy, no torch), so `kvid inspect`
can show the histogram without importing torch; ``curate.loader`` batches with it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

BucketKey = tuple[int, int, int]  # (aspect index, resolution bin, duration bin)


_RATIO_NAMES = {"16:9": 16 / 9, "9:16": 9 / 16, "4:3": 4 / 3, "3:4": 3 / 4, "1:1": 1.0, "21:9": 21 / 9,
                "9:21": 9 / 21, "3:2": 3 / 2, "2:3": 2 / 3, "2:1": 2.0, "1:2": 0.5}


def _ratio_name(r: float) -> str:
    for name, value in _RATIO_NAMES.items():
        if abs(r - value) < 1e-3:
            return name
    return f"{r:.3g}:1"


def _bin_name(i: int, edges: tuple[float, ...], unit: str) -> str:
    fmt = lambda v: f"{v:g}"  # noqa: E731
    if not edges:
        return "any"
    if i == 0:
        return f"<{fmt(edges[0])}{unit}"
    if i == len(edges):
        return f">={fmt(edges[-1])}{unit}"
    return f"{fmt(edges[i - 1])}-{fmt(edges[i])}{unit}"


@dataclass(frozen=True)
class Buckets:
    """Bucket edges of the loader and of `kvid inspect` (defaults here, nowhere else).

    aspect_ratios: width/height of each aspect bucket; a clip goes to the nearest (log scale),
        so the edges between two buckets lie at their geometric mean. Default: 9:16, 3:4,
        1:1, 4:3, 16:9, 21:9.
    resolution_edges: short side of the stored clip in px; n edges make n+1 bins.
    duration_edges: clip duration in seconds; n edges make n+1 bins.
    """

    aspect_ratios: tuple[float, ...] = (9 / 16, 3 / 4, 1.0, 4 / 3, 16 / 9, 21 / 9)
    resolution_edges: tuple[float, ...] = (480.0, 720.0, 1080.0)
    duration_edges: tuple[float, ...] = (4.0, 8.0, 16.0)

    def __post_init__(self) -> None:
        for name in ("aspect_ratios", "resolution_edges", "duration_edges"):
            values = tuple(float(v) for v in getattr(self, name))
            if any(not math.isfinite(v) or v <= 0 for v in values):
                raise ValueError(f"{name} must be positive numbers, got {values}")
            if list(values) != sorted(set(values)):
                raise ValueError(f"{name} must be increasing, without repeats, got {values}")
            object.__setattr__(self, name, values)
        if not self.aspect_ratios:
            raise ValueError("aspect_ratios needs at least one ratio")

    def keys(self, width, height, duration_s) -> np.ndarray:
        """Bucket keys of many clips at once: an int array [N, 3] (aspect, resolution, duration)."""
        w = np.asarray(width, dtype=np.float64)
        h = np.asarray(height, dtype=np.float64)
        d = np.nan_to_num(np.asarray(duration_s, dtype=np.float64))
        log_ar = np.log(np.maximum(w, 1) / np.maximum(h, 1))
        aspect = np.abs(log_ar[:, None] - np.log(np.asarray(self.aspect_ratios))[None, :]).argmin(axis=1)
        res = np.searchsorted(np.asarray(self.resolution_edges), np.minimum(w, h), side="right")  # an edge opens a bin
        dur = np.searchsorted(np.asarray(self.duration_edges), d + 1e-6, side="right")  # 95.999.../24 s is 4 s
        return np.stack([aspect, res, dur], axis=1).astype(np.int64)

    def key(self, width: int, height: int, duration_s: float) -> BucketKey:
        a, r, d = self.keys([width], [height], [duration_s])[0]
        return int(a), int(r), int(d)

    def frame_size(self, key: BucketKey, short_side: int) -> tuple[int, int]:
        """(H, W) of every clip of the bucket at ``short_side``; both even."""
        ratio = self.aspect_ratios[key[0]]
        long_side = 2 * max(1, round(short_side * max(ratio, 1 / ratio) / 2))
        return (short_side, long_side) if ratio >= 1 else (long_side, short_side)

    def label(self, key: BucketKey) -> str:
        a, r, d = key
        return (f"{_ratio_name(self.aspect_ratios[a])} {_bin_name(r, self.resolution_edges, 'px')} "
                f"{_bin_name(d, self.duration_edges, 's')}")


def parse_edges(text: str) -> tuple[float, ...]:
    """'0.5625,0.75,1' or '9:16,3:4,1:1' -> floats (a flag's value)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if ":" in part:
            a, b = part.split(":", 1)
            out.append(float(a) / float(b))
        else:
            out.append(float(part))
    return tuple(out)


def histogram(rows: list[dict], buckets: Buckets) -> list[tuple[str, int]]:
    """(bucket label, clips) for every bucket holding clips, the fullest first. ``rows`` need
    ``width``, ``height`` and ``duration_s``; rows without a size are left out."""
    rows = [r for r in rows if r.get("width") and r.get("height")]
    if not rows:
        return []
    keys = buckets.keys([r["width"] for r in rows], [r["height"] for r in rows],
                        [r.get("duration_s") or 0.0 for r in rows])
    counts = Counter((int(a), int(r), int(d)) for a, r, d in keys)
    return [(buckets.label(k), n) for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
