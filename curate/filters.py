"""Keep/drop decisions. The statistics they read are stored on every row (kept or not),
so a threshold can change later without recomputing anything."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from curate import schema
from curate.probe import VideoInfo


@dataclass(frozen=True)
class FilterParams:
    min_duration_s: float = 2.0
    min_area: int = 256 * 256
    min_side: int = 128
    min_fps: float = 23.0
    # Sanity bounds: beyond these a file is broken or hostile, not just unsuitable.
    max_fps: float = 240.0
    max_side: int = 8192


def setting(default: Any, help: str, key: str | None = None, **bounds: float) -> Any:
    """A filter parameter that is also a config key and a ``--flag``: its default, its help,
    its bounds (``ge``/``gt``/``le``/``lt``, checked by the config) and its key where that is not
    the field's name. Declared once, beside the code that uses it; pipelines/config.py makes
    the key and the flag from it."""
    return field(default=default, metadata={"help": help, "key": key, "bounds": bounds})


@dataclass(frozen=True)
class Rejection:
    stage: str
    reason: str
    message: str


def check_source(info: VideoInfo, p: FilterParams) -> Rejection | None:
    """Decisions that need no decoding: made once per source, before any frame is read."""
    if info.fps > p.max_fps:
        return Rejection(schema.STAGE_PROBE, schema.REASON_BAD_FPS, f"frame rate {info.fps:.3f} > {p.max_fps:g}")
    if max(info.width, info.height) > p.max_side:
        return Rejection(
            schema.STAGE_PROBE,
            schema.REASON_BAD_DIMENSIONS,
            f"{info.width}x{info.height} has a side over {p.max_side} px",
        )
    if info.fps < p.min_fps:
        return Rejection(schema.STAGE_FILTER, schema.REASON_FPS, f"source fps {info.fps:.3f} < {p.min_fps:g}")
    small = check_size(info.width, info.height, p)
    if small:
        return small
    if info.duration_s < p.min_duration_s:
        return Rejection(
            schema.STAGE_FILTER, schema.REASON_TOO_SHORT, f"source lasts {info.duration_s:.2f} s < {p.min_duration_s:g} s"
        )
    return None


def check_size(width: int, height: int, p: FilterParams) -> Rejection | None:
    if width * height < p.min_area or min(width, height) < p.min_side:
        return Rejection(
            schema.STAGE_FILTER,
            schema.REASON_TOO_SMALL,
            f"{width}x{height}: area {width * height} < {p.min_area} or a side < {p.min_side} px",
        )
    return None


def check_scene(duration_s: float, crop_w: int, crop_h: int, p: FilterParams) -> Rejection | None:
    """Per scene: length, then the picture's size after the black borders are cropped."""
    if duration_s < p.min_duration_s:
        return Rejection(
            schema.STAGE_FILTER, schema.REASON_TOO_SHORT, f"scene lasts {duration_s:.2f} s < {p.min_duration_s:g} s"
        )
    return check_size(crop_w, crop_h, p)
