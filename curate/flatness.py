"""Flat scenes: a single colour, a grey field, a title card of a few thin letters.

Per frame, on a 64-pixel-wide copy of the analysis frame: the luma spread (the range
between the 5th and 95th percentile, robust to a line of text) and the colour spread (the
larger standard deviation of the two chroma planes). Per scene: the median over its frames.
A scene is ``flat`` when both spreads are small.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from curate import schema
from curate.filters import Rejection

SMALL_WIDTH = 64


@dataclass(frozen=True)
class FlatParams:
    enabled: bool = True
    min_luma_spread: float = 12.0  # 5th-95th percentile luma range (0-255) under which a frame is flat ...
    min_colour_spread: float = 4.0  # ... when its chroma standard deviation is under this too


class FlatFeature:
    name = "flat"

    def __init__(self, params: FlatParams):
        self.params = params
        self.first_frame: int | None = None
        self._luma: list[float] = []
        self._colour: list[float] = []

    def push(self, frame_index: int, frame_bgr: np.ndarray) -> None:
        if self.first_frame is None:
            self.first_frame = frame_index
        h, w = frame_bgr.shape[:2]
        small = cv2.resize(frame_bgr, (SMALL_WIDTH, max(1, round(h * SMALL_WIDTH / w))), interpolation=cv2.INTER_AREA)
        ycc = cv2.cvtColor(small, cv2.COLOR_BGR2YCrCb).reshape(-1, 3).astype(np.float32)
        lo, hi = np.percentile(ycc[:, 0], (5, 95))
        self._luma.append(float(hi - lo))
        self._colour.append(float(max(ycc[:, 1].std(), ycc[:, 2].std())))

    def scene_stats(self, start_frame: int, end_frame: int) -> dict[str, Any]:
        first = self.first_frame or 0
        a, b = max(0, start_frame - first), max(0, end_frame - first)
        if b <= a or a >= len(self._luma):
            return {}
        return {
            "flat.luma_spread": float(np.median(self._luma[a:b])),
            "flat.colour_spread": float(np.median(self._colour[a:b])),
        }


def check(stats: dict[str, Any], p: FlatParams) -> Rejection | None:
    luma, colour = stats.get("flat.luma_spread"), stats.get("flat.colour_spread")
    if luma is None or colour is None:
        return None
    if luma < p.min_luma_spread and colour < p.min_colour_spread:
        return Rejection(schema.STAGE_FILTER, schema.REASON_FLAT,
                         f"flat picture: luma spread {luma:.1f} < {p.min_luma_spread:g}, "
                         f"colour spread {colour:.1f} < {p.min_colour_spread:g}")
    return None
