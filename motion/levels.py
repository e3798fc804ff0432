"""Motion levels: map 'low' / 'medium' / 'high' to motion scores of a curated set.

``generate`` conditions on a motion score; users ask for a level. The levels are
percentiles (default 10th / 50th / 90th) of the scores of a curated set, in the same
units (px/frame at ``size`` px with one backend), written to ``OUT/motion_levels.json``::

    {"backend": "raft_large", "size": 256,
     "percentiles": {"low": 10, "medium": 50, "high": 90},
     "levels": {"low": 0.8, "medium": 3.1, "high": 9.4},
     "num_clips": 1234, "kvid_version": "0.1.0"}

Scores from different backends or sizes are not comparable, so mixing them is refused.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from curate.levels_file import LEVELS_FILE, LevelsFileError, read_levels_file, write_levels_file  # noqa: F401

DEFAULT_PERCENTILES: dict[str, float] = {"low": 10, "medium": 50, "high": 90}


# Bad input for, or a bad file of, motion levels (the file's errors are curate's, one class).
MotionLevelsError = LevelsFileError


def kvid_version() -> str:
    from curate.version import KVID_VERSION

    return KVID_VERSION


def _check_percentiles(percentiles: Mapping[str, float] | None) -> dict[str, float]:
    pct = dict(DEFAULT_PERCENTILES if percentiles is None else percentiles)
    if not pct:
        raise MotionLevelsError("percentiles must name at least one level")
    for name, p in pct.items():
        if not isinstance(name, str) or not name:
            raise MotionLevelsError(f"level names must be non-empty strings, got {name!r}")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 100:
            raise MotionLevelsError(f"percentile for {name!r} must be a number in [0, 100], got {p!r}")
    return pct


def _check_scores(scores: Iterable[float]) -> np.ndarray:
    vals = list(scores)
    if not vals:
        raise MotionLevelsError("no motion scores: cannot compute levels from an empty set")
    bad = [
        v for v in vals if v is None or isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(v)
    ]
    if bad:
        raise MotionLevelsError(f"{len(bad)} of {len(vals)} motion scores are missing or not finite (e.g. {bad[0]!r})")
    arr = np.asarray(vals, dtype=np.float64)
    if (arr < 0).any():
        raise MotionLevelsError("motion scores are magnitudes and cannot be negative")
    return arr


def compute_levels(scores: Iterable[float], percentiles: Mapping[str, float] | None = None) -> dict[str, float]:
    """``{level: percentile of scores}`` (linear interpolation, numpy's default)."""
    pct = _check_percentiles(percentiles)
    arr = _check_scores(scores)
    return {name: float(np.percentile(arr, p)) for name, p in pct.items()}


def _rows(rows: Any) -> list[dict]:
    if hasattr(rows, "to_pylist"):  # pyarrow Table
        return rows.to_pylist()
    return [r.to_row() if hasattr(r, "to_row") else dict(r) for r in rows]


def collect_scores(rows: Any) -> tuple[list[float], str, int]:
    """Scores, backend and size from clip records (dicts, ClipRecords or a pyarrow Table).

    Uses rows with status 'ok' and a motion score; refuses more than one (backend, size).
    """
    scores: list[float] = []
    pairs: Counter = Counter()
    for r in _rows(rows):
        if r.get("status", "ok") != "ok" or r.get("motion_score") is None:
            continue
        scores.append(r["motion_score"])
        pairs[(r.get("motion_backend"), r.get("motion_size"))] += 1
    if not scores:
        raise MotionLevelsError("no clips with a motion score (status 'ok'): run motion scoring first")
    _refuse_mixed(pairs)
    (backend, size), = pairs
    return scores, backend, size


def _refuse_mixed(pairs: Counter) -> None:
    if len(pairs) > 1:
        found = ", ".join(f"{b} at {s} px: {n} clips" for (b, s), n in sorted(pairs.items(), key=lambda kv: -kv[1]))
        raise MotionLevelsError(
            "motion scores come from more than one (backend, size) and are not comparable "
            f"({found}); recompute motion with one backend and size, or select one set"
        )
    (backend, size), = pairs
    if not backend or size is None:
        raise MotionLevelsError(f"motion scores lack their backend or size (backend={backend!r}, size={size!r})")


def write_levels(
    out_dir: str | os.PathLike,
    scores: Sequence[float] | Any,
    backend: str | Sequence[str] | None = None,
    size: int | Sequence[int] | None = None,
    percentiles: Mapping[str, float] | None = None,
) -> str:
    """Write ``out_dir/motion_levels.json`` atomically; return its path.

    ``scores`` are floats with ``backend`` and ``size`` either one value each or one per
    score (refused when they differ), or clip records (then leave backend/size None).
    """
    if backend is None and size is None:
        scores, backend, size = collect_scores(scores)
    else:
        scores = list(scores)
        n = len(scores)
        b_list = list(backend) if isinstance(backend, (list, tuple, np.ndarray)) else [backend] * n
        s_list = list(size) if isinstance(size, (list, tuple, np.ndarray)) else [size] * n
        if len(b_list) != n or len(s_list) != n:
            raise MotionLevelsError("backend and size must be single values or one per score")
        if n:
            _refuse_mixed(Counter(zip(b_list, s_list)))
            backend, size = b_list[0], s_list[0]
    pct = _check_percentiles(percentiles)
    levels = compute_levels(scores, pct)
    doc = {
        "backend": str(backend),
        "size": int(size),
        "percentiles": pct,
        "levels": levels,
        "num_clips": len(scores),
        "kvid_version": kvid_version(),
    }
    return write_levels_file(out_dir, doc)


def read_levels(path_or_dir: str | os.PathLike) -> dict:
    """Read and validate a levels file (or ``DIR/motion_levels.json``)."""
    return read_levels_file(path_or_dir)
