"""``DIR/motion_levels.json``: the motion-score percentiles of a curated set.

Written by `kvid motion levels` (motion/levels.py), read by `kvid generate` to map 'low' /
'medium' / 'high' to scores (generate/motion_levels.py). One reader and one writer, so
both sides agree on the file::

    {"backend": "raft_large", "size": 256, "percentiles": {"low": 10, "medium": 50, "high": 90},
     "levels": {"low": 0.8, "medium": 3.1, "high": 9.4}, "num_clips": 1234, "kvid_version": "0.1.0"}

``backend`` is the canonical backend name (``raft`` is written as ``raft_large``);
``percentiles`` and ``num_clips`` are optional in a file written by hand.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from curate.atomic import atomic_write_json

LEVELS_FILE = "motion_levels.json"


class LevelsFileError(ValueError):
    """A motion levels file that is missing or invalid; the message says which and why."""


class LevelsFileMissing(LevelsFileError, FileNotFoundError):
    pass


def levels_path(path_or_dir: str | os.PathLike) -> str:
    path = os.fspath(path_or_dir)
    return os.path.join(path, LEVELS_FILE) if os.path.isdir(path) else path


def write_levels_file(out_dir: str | os.PathLike, doc: dict[str, Any]) -> str:
    """Write ``out_dir/motion_levels.json`` atomically (validated first); returns its path."""
    path = os.path.join(os.fspath(out_dir), LEVELS_FILE)
    _validate(doc, path)
    os.makedirs(os.fspath(out_dir), exist_ok=True)
    atomic_write_json(path, doc)
    return path


def read_levels_file(path_or_dir: str | os.PathLike) -> dict[str, Any]:
    """The validated contents of a levels file (or of ``DIR/motion_levels.json``)."""
    path = levels_path(path_or_dir)
    if not os.path.isfile(path):
        raise LevelsFileMissing(
            f"no motion levels file at {path}: run `kvid motion levels DIR` on a curated set to write DIR/{LEVELS_FILE}"
        )
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LevelsFileError(f"invalid motion levels file {path}: not a motion levels json file ({e})") from e
    _validate(doc, path)
    return doc


def _validate(doc: Any, path: str) -> None:
    def bad(why: str) -> LevelsFileError:
        return LevelsFileError(f"invalid motion levels file {path}: {why}")

    if not isinstance(doc, dict):
        raise bad("not a motion levels json file (not an object)")
    missing = [k for k in ("backend", "size", "levels") if k not in doc]
    if missing:
        raise bad(f"lacks {', '.join(missing)}")
    if not isinstance(doc["backend"], str) or not doc["backend"]:
        raise bad("backend must name the motion backend")
    if isinstance(doc["size"], bool) or not isinstance(doc["size"], int) or doc["size"] <= 0:
        raise bad("size must be a positive whole number of pixels")
    levels = doc["levels"]
    if not isinstance(levels, dict) or not levels:
        raise bad("levels must name at least one level")
    wrong = {k: v for k, v in levels.items()
             if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0}
    if wrong:
        raise bad(f"levels must be finite non-negative motion scores, got {wrong}")
