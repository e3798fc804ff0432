"""Per-scene measurements taken in the analysis decode, before anything is encoded.

The analysis decode (``curate/analyze.py``) hands every small BGR frame of a unit, in order,
to one ``FrameFeature`` instance per measurement. After the scene cuts are known, each
feature sums its per-frame measurements up per scene (``scene_stats``); the statistics go
on the scene's record (kept or rejected), and a filter's decision reads them. Features keep
small per-frame values (a number, a 64-bit hash, a 48x27 thumbnail), never whole frames,
so a 10-minute unit stays in bounded memory.

A new statistic is one class implementing this protocol; a new filter is its file and one
line in ``curate/scene_filters.SCENE_FILTERS``.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class FrameSeries:
    """Values measured per frame of one unit, by source frame index, and their part for a
    scene: the bookkeeping frame features share."""

    def __init__(self) -> None:
        self.first_frame: int | None = None
        self.values: list[Any] = []

    def append(self, frame_index: int, value: Any) -> None:
        if self.first_frame is None:
            self.first_frame = frame_index
        self.values.append(value)

    def span(self, start_frame: int, end_frame: int) -> slice:
        """Where frames [start_frame, end_frame) are in ``values`` (or in any array aligned with them)."""
        first = self.first_frame or 0
        return slice(max(0, start_frame - first), max(0, end_frame - first))

    def scene(self, start_frame: int, end_frame: int) -> list[Any]:
        return self.values[self.span(start_frame, end_frame)]


def some_stretch_reaches(hits: np.ndarray, min_len: int, fraction: float, slack: float = 0.0) -> bool:
    """Whether some run of at least ``min_len`` consecutive values of ``hits`` (0/1) has at
    least ``fraction`` of them set, allowing ``slack`` more: max over windows of length >=
    min_len of sum(hits - fraction) >= -slack, in linear time (prefix sums)."""
    n = len(hits)
    if n < min_len or min_len < 1:
        return False
    prefix = np.concatenate([[0.0], np.cumsum(np.asarray(hits, np.float64) - fraction)])
    lowest = np.minimum.accumulate(prefix[: n - min_len + 1])  # best start for each end >= min_len
    return bool((prefix[min_len:] - lowest).max() >= -slack)


class FrameFeature(Protocol):
    """One measurement over the frames of one unit of work (a new instance per unit)."""

    name: str  # short, unique: also the prefix of the statistics it writes

    def push(self, frame_index: int, frame_bgr: np.ndarray) -> None:
        """Called for every decoded analysis frame, in order. ``frame_index`` is the source
        frame index; ``frame_bgr`` is HxWx3 uint8, ``analysis_width`` wide (do not keep it:
        the buffer is reused)."""
        ...

    def scene_stats(self, start_frame: int, end_frame: int) -> dict[str, Any]:
        """Statistics of the scene [start_frame, end_frame) (source frame indices, end
        exclusive): JSON-able values, stored on the scene's record."""
        ...
