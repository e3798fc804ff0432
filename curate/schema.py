"""The one clip record schema, shared by every stage, shard and index file.

A row is either a kept clip (``status == "ok"``) or a reject (``status == "rejected"``,
with ``reject_stage`` and ``reject_reason``). Rejects carry every statistic that was
computed before the decision, so thresholds can change without recomputation.
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

STATUS_OK = "ok"
STATUS_REJECTED = "rejected"

# Stages, in pipeline order; reject_stage is one of these.
STAGE_PROBE = "probe"
STAGE_SCENES = "scenes"
STAGE_FILTER = "filter"
STAGE_DEDUP = "dedup"
STAGE_TRANSCODE = "transcode"
STAGE_MOTION = "motion"
STAGE_CAPTION = "caption"

# Reject reasons used by more than one module live here; stages may add their own.
REASON_TOO_SHORT = "too_short"
REASON_TOO_SMALL = "too_small"
REASON_FPS = "fps"
REASON_DECODE_ERROR = "decode_error"
REASON_NOT_VIDEO = "not_video"
REASON_EMPTY_FILE = "empty_file"
REASON_MISSING = "missing"
REASON_UNREADABLE = "unreadable"  # exists but cannot be read (permissions, remote storage errors)
REASON_TIMEOUT = "timeout"
REASON_TRUNCATED = "truncated"
REASON_NO_FRAMES = "no_frames"
REASON_BAD_DIMENSIONS = "bad_dimensions"
REASON_BAD_FPS = "bad_fps"
REASON_TRANSCODE_FAILED = "transcode_failed"
REASON_MOTION_FAILED = "motion_failed"
REASON_CAPTION_FAILED = "caption_failed"
# Per-scene filters of the analysis decode (curate/scene_filters.py, curate/transitions.py).
REASON_TRANSITION = "transition"  # the frames of a gradual transition (fade, dissolve, wipe)
REASON_STATIC = "static"
REASON_FLAT = "flat"
REASON_TEXT = "text"
REASON_DUPLICATE = "duplicate"  # a near copy of the clip named in duplicate_of


@dataclass
class ClipRecord:
    """Typed view of one row. Field order is the Parquet column order."""

    clip_id: str
    status: str = STATUS_OK
    reject_stage: str | None = None
    reject_reason: str | None = None
    error_message: str | None = None

    # Where it came from.
    source: str = ""  # path or URI as resolved at run time (stored: see source_bytes)
    # Raw bytes of a source path that is not valid UTF-8 (old archives, network shares).
    # In memory ``source`` is then Python's surrogate-escaped str (it opens the file); in
    # Parquet and the tar's json it is shown with \xNN escapes and these bytes keep it exact.
    source_bytes: bytes | None = None
    source_id: str = ""  # content fingerprint of the source file
    work_unit: str = ""  # (source_id, chunk) unit of work; resume accounting
    work_unit_rows: int = 0  # rows this unit produces in total (clips + rejects)
    source_units: int = 1  # units the source was split into (long videos are chunked)
    scene_index: int | None = None
    source_start_s: float | None = None  # relative to the first frame of the stream
    source_end_s: float | None = None
    start_frame: int | None = None  # source frame index, inclusive
    end_frame: int | None = None  # source frame index, exclusive

    # The source video (dimensions after rotation).
    src_fps: float | None = None
    src_vfr: bool | None = None
    src_width: int | None = None
    src_height: int | None = None
    src_duration_s: float | None = None
    src_rotation: int | None = None
    codec: str | None = None

    # The clip as written (duration_s is the scene's length, also on rejects).
    duration_s: float | None = None
    num_frames: int | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    aspect_ratio: float | None = None
    # Black-border crop in source pixels (after rotation); full frame when no border.
    crop_x: int | None = None
    crop_y: int | None = None
    crop_w: int | None = None
    crop_h: int | None = None
    # Per-scene statistics of the analysis decode, by name ("static.mean_diff", "text.area",
    # ...; see curate/scene_filters.py), on every scene row, kept or rejected. A map, so a new
    # statistic needs no new column.
    scene_stats: dict | None = None

    # Near-duplicates (curate/dedup.py): the scene's perceptual signature (a blob whose
    # header names its kind), and on a `duplicate` reject the id of the clip kept instead.
    signature: bytes | None = None
    duplicate_of: str | None = None

    # Motion (see motion/: px/frame at short side motion_size, 24 fps frames).
    motion_score: float | None = None
    motion_backend: str | None = None
    motion_size: int | None = None
    motion_stride: int | None = None
    motion_camera: float | None = None
    motion_object: float | None = None
    motion_pair_scores: list | None = None

    # Caption.
    caption: str | None = None
    caption_model: str | None = None
    caption_prompt_hash: str | None = None

    # Where it is stored.
    shard: str | None = None  # tar file name under OUT/shards/
    shard_offset: int | None = None  # byte offset of the .mp4 member's data in the tar
    shard_size: int | None = None  # byte size of that member
    config_hash: str = ""
    kvid_version: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.signature, str):  # JSON rows carry the blob as base64 text
            self.signature = base64.b64decode(self.signature)

    def to_row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ClipRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in row.items() if k in known}
        if isinstance(values.get("scene_stats"), list):  # Arrow gives a map back as (key, value) pairs
            values["scene_stats"] = dict(values["scene_stats"])
        return cls(**values)

    def reject(self, stage: str, reason: str, message: str | None = None) -> ClipRecord:
        """Turn this record into a reject (in place) and return it."""
        self.status = STATUS_REJECTED
        self.reject_stage = stage
        self.reject_reason = reason
        self.error_message = message
        return self

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


_ARROW_TYPES = {
    "clip_id": pa.string(),
    "status": pa.string(),
    "reject_stage": pa.string(),
    "reject_reason": pa.string(),
    "error_message": pa.string(),
    "source": pa.string(),
    "source_bytes": pa.binary(),
    "source_id": pa.string(),
    "work_unit": pa.string(),
    "work_unit_rows": pa.int32(),
    "source_units": pa.int32(),
    "scene_index": pa.int32(),
    "source_start_s": pa.float64(),
    "source_end_s": pa.float64(),
    "start_frame": pa.int64(),
    "end_frame": pa.int64(),
    "src_fps": pa.float64(),
    "src_vfr": pa.bool_(),
    "src_width": pa.int32(),
    "src_height": pa.int32(),
    "src_duration_s": pa.float64(),
    "src_rotation": pa.int32(),
    "codec": pa.string(),
    "duration_s": pa.float64(),
    "num_frames": pa.int32(),
    "fps": pa.float64(),
    "width": pa.int32(),
    "height": pa.int32(),
    "aspect_ratio": pa.float64(),
    "crop_x": pa.int32(),
    "crop_y": pa.int32(),
    "crop_w": pa.int32(),
    "crop_h": pa.int32(),
    "scene_stats": pa.map_(pa.string(), pa.float64()),
    "signature": pa.binary(),
    "duplicate_of": pa.string(),
    "motion_score": pa.float64(),
    "motion_backend": pa.string(),
    "motion_size": pa.int32(),
    "motion_stride": pa.int32(),
    "motion_camera": pa.float64(),
    "motion_object": pa.float64(),
    "motion_pair_scores": pa.list_(pa.float32()),
    "caption": pa.string(),
    "caption_model": pa.string(),
    "caption_prompt_hash": pa.string(),
    "shard": pa.string(),
    "shard_offset": pa.int64(),
    "shard_size": pa.int64(),
    "config_hash": pa.string(),
    "kvid_version": pa.string(),
}

CLIP_SCHEMA = pa.schema([pa.field(f.name, _ARROW_TYPES[f.name]) for f in dataclasses.fields(ClipRecord)])
COLUMNS = tuple(CLIP_SCHEMA.names)
MOTION_COLUMNS = tuple(c for c in COLUMNS if c.startswith("motion_"))
CAPTION_COLUMNS = ("caption", "caption_model", "caption_prompt_hash")


def display_source(source: str) -> str:
    """A source name as valid UTF-8 text: bytes that are not UTF-8 shown as \\xNN."""
    try:
        source.encode("utf-8")
        return source
    except UnicodeEncodeError:
        return source.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def source_path(row: dict[str, Any]) -> str:
    """The exact source name of a stored row (undoes ``display_source``)."""
    raw = row.get("source_bytes")
    return raw.decode("utf-8", "surrogateescape") if raw else row["source"]


def _stored(row: dict[str, Any]) -> dict[str, Any]:
    shown = display_source(row.get("source") or "")
    if shown != row.get("source"):
        row = {**row, "source": shown, "source_bytes": row["source"].encode("utf-8", "surrogateescape")}
    return row


def records_to_table(records: list[ClipRecord] | list[dict]) -> pa.Table:
    rows = [_stored(r.to_row() if isinstance(r, ClipRecord) else r) for r in records]
    return pa.Table.from_pylist([{c: row.get(c) for c in COLUMNS} for row in rows], schema=CLIP_SCHEMA)


def table_to_records(table: pa.Table) -> list[ClipRecord]:
    records = []
    for r in table.to_pylist():
        if r.get("source_bytes"):
            r["source"], r["source_bytes"] = source_path(r), None
        records.append(ClipRecord.from_row(r))
    return records


def shard_json(record: ClipRecord) -> dict[str, Any]:
    """The per-clip json stored in the tar: the record minus bulky or location-only fields."""
    row = _stored(record.to_row())
    row.pop("source_bytes", None)  # bytes are not JSON; the index keeps them
    for k in ("shard", "shard_offset", "shard_size", "motion_pair_scores", "work_unit", "work_unit_rows", "source_units",
              "signature"):
        row.pop(k, None)
    return row
