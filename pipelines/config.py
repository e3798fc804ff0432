"""The curate run's configuration: one flat pydantic model.

Every field is a YAML key (``--config FILE``) and a CLI flag (``--field-name``); flags
given on the command line override the file, the file overrides the defaults. The
effective config is written into the output's manifest.
"""

from __future__ import annotations

import argparse
import os
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from curate.analyze import AnalysisParams
from curate.borders import BorderParams
from curate.dedup import MatchParams
from curate.filters import FilterParams
from curate.remote import InputCache, is_uri
from curate.stages import CurateParams
from curate.transcode import TranscodeParams

MOTION_BACKENDS = ("none", "raft", "raft_large", "raft_small", "dis", "farneback")
DEFAULT_CAPTION_MODEL = "llava-hf/LLaVA-NeXT-Video-7B-hf"

# Fields that decide which clips exist and what their bytes are. Resuming into an output
# folder written with different values would mix two datasets, so it is refused.
OUTPUT_FIELDS = (
    "scene_detector", "scene_threshold", "min_scene_len_s", "analysis_width", "crop_borders",
    "border_black_level", "border_min_px", "border_samples_per_s", "min_duration_s", "min_area",
    "min_side", "min_fps", "max_fps", "max_side", "fps", "max_short_side", "codec", "crf",
    "preset", "chunk_s", "reject_decode_errors",
)


class ConfigError(ValueError):
    """A bad config: the message says which key and what to do."""


class CurateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Inputs and outputs (CLI positionals and --out; may also be set in the YAML).
    inputs: list[str] = Field(
        default_factory=list,
        description="video files, folders (searched recursively) or globs; or URIs of them (s3://, gs://, https://, file://)",
    )
    out: Optional[str] = Field(None, description="output folder (shards/, index/, rejects/, manifest.json)")

    # Ray.
    ray_address: Optional[str] = Field(
        None, description="Ray cluster address (e.g. 'ray://head:10001' or 'auto'); default: start a local Ray"
    )
    num_cpus: Optional[int] = Field(None, ge=1, description="CPUs of the local Ray (default: all)")
    workers: Optional[int] = Field(None, ge=1, description="parallel analyse+transcode tasks (default: one per CPU)")
    ffmpeg_threads: int = Field(
        0, ge=0, description="threads per ffmpeg process (0 = ffmpeg's choice, measured fastest even with parallel tasks)"
    )

    # Scene detection.
    scene_detector: Literal["content", "adaptive"] = Field("content", description="PySceneDetect detector")
    scene_threshold: Optional[float] = Field(
        None, gt=0, description="detector threshold (default: content 27, adaptive 3.0)"
    )
    min_scene_len_s: float = Field(0.5, ge=0, description="minimum scene length between cuts, seconds")
    analysis_width: int = Field(256, ge=32, description="frame width for scene detection (downscaled decode)")

    # Black borders.
    crop_borders: bool = Field(True, description="detect and crop letterbox/pillarbox bars")
    border_black_level: float = Field(24.0, ge=0, le=255, description="mean luma at or below which a line is black")
    border_min_px: int = Field(4, ge=0, description="bars thinner than this are kept")
    border_samples_per_s: float = Field(2.0, gt=0, description="full-resolution frames sampled per second for borders")

    # Filters (the statistic is stored on every row; the threshold decides).
    min_duration_s: float = Field(2.0, ge=0, description="drop scenes shorter than this")
    min_area: int = Field(256 * 256, ge=0, description="drop clips with fewer pixels (after crop)")
    min_side: int = Field(128, ge=0, description="drop clips with a side under this (after crop)")
    min_fps: float = Field(23.0, ge=0, description="drop sources below this frame rate")
    max_fps: float = Field(240.0, gt=0, description="reject sources above this frame rate as broken")
    max_side: int = Field(8192, gt=0, description="reject sources with a side above this as broken")

    # Transcode.
    fps: float = Field(24.0, gt=0, description="output frame rate")
    max_short_side: int = Field(1080, ge=16, description="scale down so the short side is at most this (never up)")
    codec: str = Field("libx264", description="ffmpeg video encoder")
    crf: int = Field(18, ge=0, le=51, description="encoder quality (lower is better)")
    preset: str = Field("fast", description="encoder speed preset")

    # Robustness.
    chunk_s: float = Field(600.0, ge=0, description="analyse long sources in chunks of this many seconds (0 = never)")
    reject_decode_errors: bool = Field(
        True, description="reject scenes of a source part whose decode logged errors (corrupt/truncated data)"
    )
    probe_timeout_s: float = Field(60.0, gt=0, description="ffprobe timeout per file")
    decode_timeout_s: float = Field(120.0, gt=0, description="decode timeout per unit, plus 2 s per second of video")
    tmp_dir: Optional[str] = Field(None, description="scratch folder for encoded clips (default: system temp)")
    input_cache_dir: Optional[str] = Field(
        None, description="where each node keeps copies of URI sources (default: <system temp>/kvid-inputs)"
    )
    input_cache_gb: float = Field(50.0, gt=0, description="size cap of that cache per node; least recently used copies go first")

    # Motion.
    motion_backend: str = Field(
        "raft", description="motion score backend: raft (= raft_large), raft_small, dis, farneback or none"
    )
    motion_size: int = Field(256, ge=16, description="short side (px) the flow is computed at; scores are in px/frame at it")
    motion_stride: int = Field(1, ge=1, description="use every k-th consecutive frame pair (long clips)")
    motion_batch_size: int = Field(16, ge=1, description="frame pairs per flow batch")
    motion_weights: Optional[str] = Field(None, description="local RAFT .pth weights (default: torchvision's download)")
    motion_workers: Optional[int] = Field(None, ge=1, description="motion actors (default: GPUs, else 1)")
    motion_device: str = Field("auto", description="auto, cpu or cuda")

    # Captions.
    caption_model: str = Field(
        DEFAULT_CAPTION_MODEL, description="VLM id or local path for captions, or 'none' to skip captioning"
    )
    caption_prompt: str = Field("detailed", description="prompt template name or text")
    caption_frames: int = Field(8, ge=1, description="frames sampled per clip for captioning")
    caption_max_new_tokens: int = Field(128, ge=1, description="caption length limit in tokens")
    caption_batch_size: int = Field(8, ge=1, description="clips per generation batch")
    caption_workers: Optional[int] = Field(None, ge=1, description="caption actors (default: GPUs, else 1)")
    caption_device: str = Field("auto", description="auto, cpu or cuda")

    # Near-duplicates (curate/dedup.py; every clip's signature is stored either way).
    dedup: bool = Field(
        False, description="reject near-duplicate scenes (of this run's clips and those already in --out) before encoding"
    )
    dedup_max_distance: float = Field(
        MatchParams.max_distance, ge=0, le=64, description="mean differing signature bits (of 64) per aligned frame of copies"
    )
    dedup_max_offset_s: float = Field(
        MatchParams.max_offset_s, ge=0, description="copies may be trimmed by up to this many seconds at either end"
    )
    dedup_min_overlap: float = Field(
        MatchParams.min_overlap, gt=0, le=1, description="fraction of the longer clip that must align with the other"
    )

    # Shards.
    shard_max_clips: int = Field(1000, ge=1, description="clips per tar shard")
    shard_max_mb: float = Field(1024.0, gt=0, description="video megabytes per tar shard")
    shard_max_open_s: float = Field(600.0, gt=0, description="commit an open shard after this many seconds")

    @field_validator("motion_backend")
    @classmethod
    def _motion_backend(cls, v: str) -> str:
        if v not in MOTION_BACKENDS:
            raise ValueError(f"must be one of {', '.join(MOTION_BACKENDS)}")
        return v

    @field_validator("out")
    @classmethod
    def _out(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and is_uri(v):
            raise ValueError(
                "must be a folder path (local or a shared mount): shards are committed with atomic "
                "renames, which object stores lack; write there, then sync the finished folder"
            )
        return v

    @field_validator("motion_device", "caption_device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda") and not v.startswith("cuda:"):
            raise ValueError("must be auto, cpu, cuda or cuda:N")
        return v

    @model_validator(mode="after")
    def _check(self) -> "CurateConfig":
        if self.max_fps <= self.min_fps:
            raise ValueError("max_fps must be above min_fps")
        return self

    @property
    def motion_enabled(self) -> bool:
        return self.motion_backend != "none"

    @property
    def caption_enabled(self) -> bool:
        return self.caption_model.lower() != "none"

    def match_params(self) -> MatchParams:
        return MatchParams(max_distance=self.dedup_max_distance, max_offset_s=self.dedup_max_offset_s,
                           min_overlap=self.dedup_min_overlap)

    def output_settings(self) -> dict:
        return {k: getattr(self, k) for k in OUTPUT_FIELDS}

    def curate_params(self) -> CurateParams:
        return CurateParams(
            analysis=AnalysisParams(
                detector=self.scene_detector,
                threshold=self.scene_threshold,
                min_scene_len_s=self.min_scene_len_s,
                analysis_width=self.analysis_width,
                border_samples_per_s=self.border_samples_per_s,
                borders=self.crop_borders,
                border=BorderParams(black_level=self.border_black_level, min_border_px=self.border_min_px),
                threads=self.ffmpeg_threads,
                timeout_s=self.decode_timeout_s,
            ),
            filters=FilterParams(
                min_duration_s=self.min_duration_s,
                min_area=self.min_area,
                min_side=self.min_side,
                min_fps=self.min_fps,
                max_fps=self.max_fps,
                max_side=self.max_side,
            ),
            transcode=TranscodeParams(
                fps=self.fps,
                max_short_side=self.max_short_side,
                codec=self.codec,
                crf=self.crf,
                preset=self.preset,
                threads=self.ffmpeg_threads,
            ),
            chunk_s=self.chunk_s,
            reject_decode_errors=self.reject_decode_errors,
            probe_timeout_s=self.probe_timeout_s,
            tmp_dir=self.tmp_dir,
            input_cache=InputCache(self.input_cache_dir, self.input_cache_gb),
        )


def _format_error(e: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        flag = "--" + key.replace("_", "-")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (see `kvid curate --help` for the keys)"
        lines.append(f"  {key} ({flag}): {msg}")
    return "\n".join(lines)


def load_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, not {type(data).__name__}")
    return data


def build_config(file_values: dict, overrides: dict, origin: str = "config") -> CurateConfig:
    """Defaults < file values < overrides; raises ConfigError with every problem listed."""
    try:
        return CurateConfig(**{**file_values, **overrides})
    except ValidationError as e:
        raise ConfigError(_format_error(e, origin)) from e


# --- CLI flags generated from the model: one place for names, types and help -------------

_POSITIONAL = ("inputs",)


def _is_bool(annotation) -> bool:
    return annotation is bool


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add one --flag per config field (except the positionals). Values stay strings here
    and pydantic converts and validates them, so the CLI and YAML share every rule."""
    group = parser.add_argument_group("configuration (each also a YAML key; flags override the file)")
    for name, field in CurateConfig.model_fields.items():
        if name in _POSITIONAL:
            continue
        flag = "--" + name.replace("_", "-")
        default = field.default if field.default_factory is None else field.default_factory()
        help_text = f"{field.description} (default: {default})"
        if _is_bool(field.annotation):
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(flag, dest=name, default=argparse.SUPPRESS, metavar=name.upper(), help=help_text)


def overrides_from_args(args: argparse.Namespace) -> dict:
    """The config fields that were given on the command line."""
    return {k: v for k, v in vars(args).items() if k in CurateConfig.model_fields}
