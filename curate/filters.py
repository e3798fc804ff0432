"""Keep/drop decisions. The statistics they read are stored on every row (kept or not),
so a threshold can change later without recomputing anything."""

from __future__ import annotations

from dataclasses import dataclass

from curate import schema
from curate.probe import VideoInfo
from curate.settings import CLIPS, setting


@dataclass(frozen=True)
class FilterParams:
    """The size, length and frame-rate filters of the paper."""

    min_duration_s: float = setting(2.0, "drop scenes shorter than this", decides=CLIPS, ge=0)
    min_area: int = setting(256 * 256, "drop clips with fewer pixels (after crop)", decides=CLIPS, ge=0)
    min_side: int = setting(128, "drop clips with a side under this (after crop)", decides=CLIPS, ge=0)
    min_fps: float = setting(23.0, "drop sources below this frame rate", decides=CLIPS, ge=0)
    # Sanity bounds: beyond these a file is broken or hostile, not just unsuitable.
    max_fps: float = setting(240.0, "reject sources above this frame rate as broken", decides=CLIPS, gt=0)
    max_side: int = setting(8192, "reject sources with a side above this as broken", decides=CLIPS, gt=0)

    def __post_init__(self) -> None:
        if self.max_fps <= self.min_fps:
            raise ValueError("max_fps must be above min_fps")


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
