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
from curate.scene_features import FrameSeries, some_stretch_reaches
from curate.settings import CLIPS, setting

SMALL_WIDTH = 64


@dataclass(frozen=True)
class FlatParams:
    enabled: bool = setting(True, "reject flat scenes (one colour, grey fields, sparse title cards)", key="flat_filter",
                            decides=CLIPS)
    min_luma_spread: float = setting(
        12.0, "flat when the 5-95 percentile luma range (0-255) is under this ...", ge=0, decides=CLIPS)
    min_colour_spread: float = setting(4.0, "... and the chroma standard deviation is under this", ge=0, decides=CLIPS)


class FlatFeature:
    name = "flat"

    def __init__(self, params: FlatParams):
        self.params = params
        self.spreads = FrameSeries()  # (luma spread, colour spread) per frame

    def push(self, frame_index: int, frame_bgr: np.ndarray) -> None:
        h, w = frame_bgr.shape[:2]
        small = cv2.resize(frame_bgr, (SMALL_WIDTH, max(1, round(h * SMALL_WIDTH / w))), interpolation=cv2.INTER_AREA)
        ycc = cv2.cvtColor(small, cv2.COLOR_BGR2YCrCb).reshape(-1, 3).astype(np.float32)
        lo, hi = np.percentile(ycc[:, 0], (5, 95))
        self.spreads.append(frame_index, (float(hi - lo), float(max(ycc[:, 1].std(), ycc[:, 2].std()))))

    def scene_stats(self, start_frame: int, end_frame: int) -> dict[str, Any]:
        spreads = self.spreads.scene(start_frame, end_frame)
        if not spreads:
            return {}
        luma, colour = np.median(np.asarray(spreads), axis=0)
        return {"flat.luma_spread": float(luma), "flat.colour_spread": float(colour)}


    def could_pass(self, start_frame: int, end_frame: int, min_frames: int) -> bool:
        """Whether some stretch of at least ``min_frames`` frames of [start, end) could have a
        median spread this filter keeps (at least about half its frames spread enough)."""
        spreads = np.asarray(self.spreads.scene(start_frame, end_frame), np.float64).reshape(-1, 2)
        luma, colour = spreads[:, 0] >= self.params.min_luma_spread, spreads[:, 1] >= self.params.min_colour_spread
        return any(some_stretch_reaches(hits, min_frames, 0.5, slack=1.0) for hits in (luma, colour))


def check(stats: dict[str, Any], p: FlatParams) -> Rejection | None:
    luma, colour = stats.get("flat.luma_spread"), stats.get("flat.colour_spread")
    if luma is None or colour is None:
        return None
    if luma < p.min_luma_spread and colour < p.min_colour_spread:
        return Rejection(schema.STAGE_FILTER, schema.REASON_FLAT,
                         f"flat picture: luma spread {luma:.1f} < {p.min_luma_spread:g}, "
                         f"colour spread {colour:.1f} < {p.min_colour_spread:g}")
    return None
