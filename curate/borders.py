"""Black border (letterbox / pillarbox) detection.

Per sampled full-resolution luma frame we keep only row and column profiles. A scene's
crop is decided on all of its sampled frames together: frames that are dark all over
(fades, night shots) carry no evidence and are skipped; the content box is the union of
the non-black extents of the informative frames, so a frame whose content happens to be
dark near an edge cannot make us cut into the picture. Bars must also be near-symmetric,
which separates real letterboxing from a dark sky or floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curate.settings import BYTES, setting


@dataclass(frozen=True)
class BorderParams:
    """Black-border detection: on the full-resolution luma samples of the analysis decode."""

    enabled: bool = setting(True, "detect and crop letterbox/pillarbox bars", key="crop_borders", decides=BYTES)
    black_level: float = setting(24.0, "mean luma (0-255) at or below which a line is black", decides=BYTES, ge=0, le=255)
    min_px: int = setting(4, "bars thinner than this are kept", decides=BYTES, ge=0)
    samples_per_s: float = setting(2.0, "full-resolution frames sampled per second for borders (and burnt-in text)",
                                   decides=BYTES, gt=0)
    # Not settings: the rules of what a bar is.
    bright_level: float = 48.0  # a black line has at most `max_bright_fraction` of its pixels above this
    max_bright_fraction: float = 0.01
    max_border_fraction: float = 0.35  # never remove more than this per side
    symmetry_tolerance: float = 0.02  # |top - bottom| may differ by this fraction of the side (+2 px)
    # A frame counts as evidence only when this fraction of its pixels is bright: a black
    # frame with a caption or logo on it shows where the text is, not where the picture is.
    min_informative_fraction: float = 0.05


@dataclass(frozen=True)
class FrameProfile:
    """Row/column statistics of one luma frame (full resolution)."""

    frame_index: int
    row_mean: np.ndarray  # (H,)
    row_bright: np.ndarray  # (H,) fraction of pixels above bright_level
    col_mean: np.ndarray  # (W,)
    col_bright: np.ndarray  # (W,)


@dataclass(frozen=True)
class Crop:
    x: int
    y: int
    w: int
    h: int

    def is_full(self, width: int, height: int) -> bool:
        return (self.x, self.y, self.w, self.h) == (0, 0, width, height)


def frame_profile(frame_index: int, luma: np.ndarray, params: BorderParams = BorderParams()) -> FrameProfile:
    bright = luma > params.bright_level
    return FrameProfile(
        frame_index=frame_index,
        row_mean=luma.mean(axis=1, dtype=np.float32),
        row_bright=bright.mean(axis=1, dtype=np.float32),
        col_mean=luma.mean(axis=0, dtype=np.float32),
        col_bright=bright.mean(axis=0, dtype=np.float32),
    )


def _content_extent(mean: np.ndarray, bright: np.ndarray, params: BorderParams) -> tuple[int, int] | None:
    """First and last non-black line, or None when every line is black."""
    content = (mean > params.black_level) | (bright > params.max_bright_fraction)
    idx = np.flatnonzero(content)
    if idx.size == 0:
        return None
    return int(idx[0]), int(idx[-1])


def _bars(lo: int, hi: int, size: int, params: BorderParams) -> tuple[int, int]:
    """Bar thickness on both sides of one axis from the union content extent [lo, hi]."""
    before, after = lo, size - 1 - hi
    cap = int(params.max_border_fraction * size)
    if before > cap or after > cap:
        return 0, 0  # that much "border" is a dark picture, not a letterbox
    if abs(before - after) > params.symmetry_tolerance * size + 2:
        both = min(before, after)  # keep only what is black on both sides
        before = after = both
    if max(before, after) < params.min_px:
        return 0, 0
    return before, after


def _even_inward(before: int, after: int, size: int) -> tuple[int, int]:
    """Offset and length, both even, that stay inside [before, size - after)."""
    start = before + (before % 2)
    length = size - after - start
    length -= length % 2
    return start, length


def detect_crop(
    profiles: list[FrameProfile], width: int, height: int, params: BorderParams = BorderParams()
) -> Crop:
    """The crop for a set of frames of one scene; the full frame when in doubt."""
    rows, cols = [], []
    for p in profiles:
        if float(p.row_bright.mean()) < params.min_informative_fraction:
            continue  # dark all over (fade, night, title card): no evidence
        r = _content_extent(p.row_mean, p.row_bright, params)
        c = _content_extent(p.col_mean, p.col_bright, params)
        if r is None or c is None:
            continue
        rows.append(r)
        cols.append(c)
    if not rows:
        return Crop(0, 0, width, height)
    top, bottom = _bars(min(r[0] for r in rows), max(r[1] for r in rows), height, params)
    left, right = _bars(min(c[0] for c in cols), max(c[1] for c in cols), width, params)
    y, h = _even_inward(top, bottom, height) if (top or bottom) else (0, height)
    x, w = _even_inward(left, right, width) if (left or right) else (0, width)
    return Crop(x, y, w, h)
