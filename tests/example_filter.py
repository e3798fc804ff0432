"""An example per-scene filter, written the way a new one is: this file as
``curate/filter_dark.py``, plus its line in ``curate/scene_filters.SCENE_FILTERS`` (and its
name on that file's import line). tests/test_settings.py does exactly that in a copy of the
project. Its config keys and flags (``--dark-filter``, ``--max-mean-luma``) come from its
parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from curate import schema
from curate.filters import Rejection
from curate.scene_features import FrameSeries
from curate.settings import CLIPS, setting

REASON_DARK = "dark"


@dataclass(frozen=True)
class DarkParams:
    enabled: bool = setting(False, "reject dark scenes", key="dark_filter", decides=CLIPS)
    max_mean_luma: float = setting(20.0, "dark when the mean luma (0-255) is under this", decides=CLIPS, ge=0, le=255)


class DarkFeature:
    name = "dark"

    def __init__(self, params: DarkParams):
        self.luma = FrameSeries()

    def push(self, frame_index: int, frame_bgr: np.ndarray) -> None:
        b, g, r = (frame_bgr[..., c].mean() for c in range(3))
        self.luma.append(frame_index, float(0.114 * b + 0.587 * g + 0.299 * r))

    def scene_stats(self, start_frame: int, end_frame: int) -> dict[str, Any]:
        values = self.luma.scene(start_frame, end_frame)
        return {"dark.mean_luma": float(np.mean(values))} if values else {}


def check(stats: dict[str, Any], p: DarkParams) -> Rejection | None:
    luma = stats.get("dark.mean_luma")
    if luma is not None and luma < p.max_mean_luma:
        return Rejection(schema.STAGE_FILTER, REASON_DARK, f"mean luma {luma:.1f} < {p.max_mean_luma:g}")
    return None

