"""Motion levels: 'low' / 'medium' / 'high' -> motion score for the keyframe U-Net.

Units (the kvid convention): mean RAFT optical-flow magnitude in px/frame, frames at 24 fps,
short side 256 px. ``kvid motion levels DIR`` writes ``DIR/motion_levels.json``::

    {"backend": "raft", "size": 256, "percentiles": {"low": 10, "medium": 50, "high": 90},
     "levels": {"low": 0.8, "medium": 3.1, "high": 9.4}, "num_clips": 1234, "kvid_version": "0.1.0"}

Give that file (or the folder holding it) as ``motion_levels`` and the names map through its
``levels``. Without a file the official defaults apply: low 1, medium 10, high 50, extreme 100,
in the units of the training-time motion score of the released model (its own RAFT-based
score, not necessarily ours). A number is used as is. Unknown names are an error (the official
code silently falls back to 'medium').
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LEVELS_FILE = "motion_levels.json"
OFFICIAL_MOTION_LEVELS: dict[str, float] = {"low": 1.0, "medium": 10.0, "high": 50.0, "extreme": 100.0}


@functools.cache
def _levels_file_model():
    """The file's pydantic model, built on first use: importing generate needs no pydantic
    (the GPU bench runs where it is not installed)."""
    from pydantic import BaseModel, ConfigDict, field_validator

    class MotionLevelsFile(BaseModel):
        model_config = ConfigDict(extra="allow")

        backend: str
        size: int
        levels: dict[str, float]
        percentiles: dict[str, float] | None = None
        num_clips: int | None = None
        kvid_version: str | None = None

        @field_validator("levels")
        @classmethod
        def _finite(cls, v: dict[str, float]) -> dict[str, float]:
            if not v:
                raise ValueError("levels must name at least one level")
            bad = {k: x for k, x in v.items() if not math.isfinite(x) or x < 0}
            if bad:
                raise ValueError(f"levels must be finite non-negative motion scores, got {bad}")
            return v

    return MotionLevelsFile


@dataclass
class MotionLevels:
    levels: dict[str, float]
    source: str  # path of the file, or "official-defaults"
    backend: str | None = None
    size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def official(cls) -> "MotionLevels":
        return cls(dict(OFFICIAL_MOTION_LEVELS), "official-defaults")

    def resolve(self, motion: str | float | int) -> float:
        return resolve_motion(motion, self)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "backend": self.backend, "size": self.size, "levels": dict(self.levels)}


def load_motion_levels(path: str | os.PathLike | None) -> MotionLevels:
    """Read ``motion_levels.json`` (file, or a folder containing it); None -> official defaults."""
    if path is None:
        return MotionLevels.official()
    p = Path(path)
    if p.is_dir():
        p = p / LEVELS_FILE
    if not p.is_file():
        raise FileNotFoundError(
            f"motion levels file not found: {p}. Run `kvid motion levels DIR` on a curated set to write "
            f"DIR/{LEVELS_FILE}, or leave motion_levels unset to use the official defaults {OFFICIAL_MOTION_LEVELS}"
        )
    try:
        data = _levels_file_model().model_validate(json.loads(p.read_text()))
    except (ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"invalid motion levels file {p}: {e}") from e
    extra = {k: v for k, v in data.model_dump().items() if k not in ("backend", "size", "levels")}
    return MotionLevels(dict(data.levels), str(p), data.backend, data.size, extra)


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
