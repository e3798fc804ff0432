"""Per-scene measurements taken in the analysis decode, before anything is encoded.

The analysis decode (``curate/analyze.py``) hands every small BGR frame of a unit, in order,
to one ``FrameFeature`` instance per measurement. After the scene cuts are known, each
feature sums its per-frame measurements up per scene (``scene_stats``); the statistics go
on the scene's record (kept or rejected), and a filter's decision reads them. Features keep
small per-frame values (a number, a 64-bit hash, a 48x27 thumbnail), never whole frames,
so a 10-minute unit stays in bounded memory.

A new statistic is one class implementing this protocol plus its registration in the
analysis' feature list.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


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
