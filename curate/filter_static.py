"""Static scenes: a still image encoded as video, or a video that freezes.

Per frame: the mean absolute difference to the previous analysis frame over the three BGR
channels (0-255 scale, on the analysis-width frame; colour counts: a hue rotation keeps the
luma). Per scene: the mean of those differences and the fraction of frozen frames, those in
runs of at least ``min_frozen_run`` consecutive differences under ``frozen_diff`` (a
repeated frame decodes nearly identical; the run length keeps the duplicated frames of a
15 fps source in a 30 fps file from counting as a freeze). The filter rejects a scene as
``static`` when too much of it is frozen or when nothing moves on average.
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


@dataclass(frozen=True)
class StaticParams:
    enabled: bool = setting(True, "reject static scenes (a still image, a frozen video)", key="static_filter", decides=CLIPS)
    frozen_diff: float = setting(
        0.5, "mean |change| per pixel and channel (0-255) under which a frame counts as frozen", ge=0, decides=CLIPS)
    min_frozen_run: int = setting(3, "consecutive near-identical frames that count as a freeze", ge=1, decides=CLIPS)
    max_frozen_fraction: float = setting(0.4, "reject a scene with more of its frames frozen", ge=0, le=1, decides=CLIPS)
    min_mean_diff: float = setting(0.25, "reject a scene whose mean frame difference (0-255) is lower", ge=0, decides=CLIPS)


class StaticFeature:
    name = "static"

    def __init__(self, params: StaticParams):
        self.params = params
        self._prev: np.ndarray | None = None
        self.diffs = FrameSeries()  # a frame against the one before it (nan for the first)

    def push(self, frame_index: int, frame_bgr: np.ndarray) -> None:
        self.diffs.append(frame_index, float("nan") if self._prev is None else float(cv2.absdiff(frame_bgr, self._prev).mean()))
        self._prev = frame_bgr.copy()  # the caller reuses its buffer

    def scene_stats(self, start_frame: int, end_frame: int) -> dict[str, Any]:
        # Differences between frames of this scene only (its first frame's is to the last scene).
        d = np.asarray(self.diffs.scene(start_frame + 1, end_frame), np.float64)
        d = d[np.isfinite(d)]
        if d.size == 0:
            return {}
        return {
            "static.mean_diff": float(d.mean()),
            "static.frozen_fraction": frozen_fraction(d, self.params.frozen_diff, self.params.min_frozen_run),
        }


    def could_pass(self, start_frame: int, end_frame: int, min_frames: int) -> bool:
        """Whether some stretch of at least ``min_frames`` frames of [start, end) could have
        a frozen fraction this filter keeps, whatever is cut out of the scene (conservative:
        a stretch's edges may shorten a freeze below the minimum run)."""
        p = self.params
        d = np.asarray(self.diffs.scene(start_frame, end_frame), np.float64)
        d = np.where(np.isfinite(d), d, np.inf)
        low = np.concatenate([[False], d < p.frozen_diff, [False]])
        edges = np.flatnonzero(np.diff(low.astype(np.int8)))
        moving = np.ones(len(d))
        for a, b in zip(edges[::2], edges[1::2]):
            if b - a >= p.min_frozen_run:
                moving[a:b] = 0
        return some_stretch_reaches(moving, min_frames, 1 - p.max_frozen_fraction, slack=2 * (p.min_frozen_run - 1))


def frozen_fraction(diffs: np.ndarray, frozen_diff: float, min_run: int) -> float:
    """Fraction of ``diffs`` that lie in runs of at least ``min_run`` values under ``frozen_diff``."""
    low = np.concatenate([[False], diffs < frozen_diff, [False]])
    edges = np.flatnonzero(np.diff(low.astype(np.int8)))
    runs = edges[1::2] - edges[::2]
    return float(runs[runs >= min_run].sum() / max(len(diffs), 1))


def check(stats: dict[str, Any], p: StaticParams) -> Rejection | None:
    frozen, mean = stats.get("static.frozen_fraction"), stats.get("static.mean_diff")
    if frozen is not None and frozen > p.max_frozen_fraction:
        return Rejection(schema.STAGE_FILTER, schema.REASON_STATIC,
                         f"{frozen:.0%} of frames frozen > {p.max_frozen_fraction:.0%}")
    if mean is not None and mean < p.min_mean_diff:
        return Rejection(schema.STAGE_FILTER, schema.REASON_STATIC,
                         f"mean frame difference {mean:.3f} < {p.min_mean_diff:g}")
    return None
