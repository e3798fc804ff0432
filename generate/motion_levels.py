"""Motion levels: 'low' / 'medium' / 'high' -> motion score for the keyframe U-Net.

Units (the kvid convention): mean optical-flow magnitude in px/frame, frames at 24 fps,
short side 256 px. ``kvid motion levels DIR`` writes ``DIR/motion_levels.json`` (format and its one reader:
``curate/levels_file.py``)::

    {"backend": "raft_large", "size": 256, "percentiles": {"low": 10, "medium": 50, "high": 90},
     "levels": {"low": 0.8, "medium": 3.1, "high": 9.4}, "num_clips": 1234, "kvid_version": "0.1.0"}

Give that file (or the folder holding it) as ``motion_levels`` and the names map through its
``levels``. Without a file the official defaults apply: low 1, medium 10, high 50, extreme 100,
in the units of the training-time motion score of the released model (its own RAFT-based
score, not necessarily ours). A number is used as is. Unknown names are an error (the official
code silently falls back to 'medium').
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from curate.levels_file import LEVELS_FILE  # noqa: F401 (part of generate's API)

OFFICIAL_MOTION_LEVELS: dict[str, float] = {"low": 1.0, "medium": 10.0, "high": 50.0, "extreme": 100.0}


@dataclass
class MotionLevels:
    levels: dict[str, float]
    source: str  # path of the file, or "official-defaults"
    backend: str | None = None
    size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def official(cls) -> MotionLevels:
        return cls(dict(OFFICIAL_MOTION_LEVELS), "official-defaults")

    def resolve(self, motion: str | float | int) -> float:
        return resolve_motion(motion, self)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "backend": self.backend, "size": self.size, "levels": dict(self.levels)}


def load_motion_levels(path: str | os.PathLike | MotionLevels | None) -> MotionLevels:
    """Read ``motion_levels.json`` (file, or a folder containing it); None -> official defaults;
    a ``MotionLevels`` is returned as it is. The file is read by the one reader of its format
    (``curate.levels_file``)."""
    from curate.levels_file import LevelsFileMissing, levels_path, read_levels_file

    if isinstance(path, MotionLevels):
        return path
    if path is None:
        return MotionLevels.official()
    try:
        doc = read_levels_file(path)
    except LevelsFileMissing as e:
        raise FileNotFoundError(f"{e}; or leave motion_levels unset to use the official defaults "
                                f"{OFFICIAL_MOTION_LEVELS}") from e
    extra = {k: v for k, v in doc.items() if k not in ("backend", "size", "levels")}
    return MotionLevels({k: float(v) for k, v in doc["levels"].items()}, levels_path(path), doc["backend"], doc["size"], extra)


def resolve_motion(motion: str | float | int, levels: MotionLevels | None = None) -> float:
    """Motion name or number -> motion score. Raises ``ValueError`` on unknown names."""
    levels = levels or MotionLevels.official()
    if isinstance(motion, bool):
        raise ValueError(f"motion must be a level name or a number, got {motion!r}")
    if isinstance(motion, (int, float)):
        value = float(motion)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"motion score must be a finite non-negative number, got {motion!r}")
        return value
    if isinstance(motion, str):
        key = motion.strip().lower()
        if key in levels.levels:
            return float(levels.levels[key])
        try:
            return resolve_motion(float(key), levels)
        except ValueError:
            pass
        raise ValueError(
            f"unknown motion level {motion!r}: use one of {sorted(levels.levels)} (from {levels.source}) or a number"
        )
    raise ValueError(f"motion must be a level name or a number, got {type(motion).__name__}")
