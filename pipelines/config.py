"""The curate run's configuration: one flat pydantic model.

Every field is a YAML key (``--config FILE``) and a CLI flag (``--field-name``); flags
given on the command line override the file, the file overrides the defaults. The
effective config is written into the output's manifest.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import os
import typing
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from curate import scene_filters
from curate.analyze import AnalysisParams
from curate.borders import BorderParams
from curate.dedup import MatchParams
from curate.filters import FilterParams
from curate.remote import InputCache, is_uri
from curate.scene_filters import SceneFilterParams
from curate.shards import ShardWriter
from curate.stages import CurateParams
from curate.transcode import TranscodeParams
from curate.transitions import TransitionParams
from motion.backends import ALIASES as MOTION_ALIASES
from motion.backends import BACKENDS as FLOW_BACKENDS
from motion.backends import canonical_backend_name

# The backends live in motion/backends.py; "none" turns motion scoring off.
MOTION_BACKENDS = ("none", *MOTION_ALIASES, *FLOW_BACKENDS)
DEFAULT_CAPTION_MODEL = "llava-hf/LLaVA-NeXT-Video-7B-hf"

# Fields that decide which clips exist and what their bytes are. Resuming into an output
# folder written with different values would mix two datasets, so it is refused.
OUTPUT_FIELDS = (
    "scene_detector", "scene_threshold", "min_scene_len_s", "analysis_width", "crop_borders",
    "border_black_level", "border_min_px", "border_samples_per_s", "min_duration_s", "min_area",
    "min_side", "min_fps", "max_fps", "max_side", "fps", "max_short_side", "codec", "crf",
    "preset", "chunk_s", "reject_decode_errors",
    "transitions", "transition_threshold", "transition_extend_threshold", "transition_cascade",
    *(s.key for s in scene_filters.settings()),  # every per-scene filter setting decides which clips exist
)
# Fields that decide the units of the motion scores (which flow method, at which size).
# Scores of two backends or sizes are not comparable, so resuming with others is refused too.
MOTION_FIELDS = ("motion_backend", "motion_size")


def shard_writer_default(name: str):
    """A ShardWriter argument's default (defaults live once: in the stage parameters, read as
    their class attributes, and here in the writer's signature)."""
    return inspect.signature(ShardWriter).parameters[name].default


class ConfigError(ValueError):
    """A bad config: the message says which key and what to do."""


class _CurateConfigBase(BaseModel):
    # The whole model is CurateConfig below: these fields plus the scene filters' settings.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Inputs and outputs (CLI positionals and --out; may also be set in the YAML).
    inputs: list[str] = Field(
        default_factory=list,
        description="video files, folders (searched recursively) or globs; or URIs of them (s3://, gs://, https://, file://)",
    )
    out: str | None = Field(None, description="output folder (shards/, index/, rejects/, manifest.json)")

    # Ray.
    ray_address: str | None = Field(
        None, description="Ray cluster address (e.g. 'ray://head:10001' or 'auto'); default: start a local Ray"
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray (default: all)")
    workers: int | None = Field(None, ge=1, description="parallel analyse+transcode tasks (default: one per CPU)")
    ffmpeg_threads: int = Field(
        TranscodeParams.threads,
        ge=0,
        description="threads per ffmpeg process (0 = ffmpeg's choice, measured fastest even with parallel tasks)",
    )

    # Scene detection.
    scene_detector: Literal["content", "adaptive", "transnetv2"] = Field(
        AnalysisParams.detector,
        description="content or adaptive (PySceneDetect), or transnetv2 (neural; also finds gradual transitions)",
    )
    scene_threshold: float | None = Field(
        None, gt=0, description="detector threshold (default: content 27, adaptive 3.0)"
    )
    min_scene_len_s: float = Field(
        AnalysisParams.min_scene_len_s, ge=0, description="minimum scene length between cuts, seconds"
    )
    analysis_width: int = Field(
        AnalysisParams.analysis_width, ge=32, description="frame width for scene detection (downscaled decode)"
    )

    # Transitions (TransNetV2). The per-scene filters' keys (flat, static, text) are not
    # written here: each filter declares them in its file (see _scene_filter_fields below).
    transitions: bool = Field(
        AnalysisParams.transitions,
        description="with a PySceneDetect detector, also find fades/dissolves/wipes with TransNetV2; their frames go to no clip",
    )
    transition_threshold: float = Field(
        TransitionParams.threshold,
        gt=0,
        lt=1,
        description="TransNetV2 probability above which a frame is part of a transition",
    )
    transition_extend_threshold: float = Field(
        TransitionParams.extend_threshold, gt=0, lt=1,
        description="a transition extends over neighbouring frames above this probability (faint fade frames)",
    )
    transition_cascade: bool = Field(
        TransitionParams.cascade,
        description="TransNetV2 verifies only the frames cheap statistics propose (blends, fades); "
                    "--no-transition-cascade runs it on every frame",
    )
    transnet_device: str = Field(TransitionParams.device, description="TransNetV2 device: auto, cpu, cuda or cuda:N")

    # Black borders.
    crop_borders: bool = Field(AnalysisParams.borders, description="detect and crop letterbox/pillarbox bars")
    border_black_level: float = Field(
        BorderParams.black_level, ge=0, le=255, description="mean luma at or below which a line is black"
    )
    border_min_px: int = Field(BorderParams.min_border_px, ge=0, description="bars thinner than this are kept")
    border_samples_per_s: float = Field(
        AnalysisParams.border_samples_per_s, gt=0, description="full-resolution frames sampled per second for borders"
    )

    # Filters (the statistic is stored on every row; the threshold decides).
    min_duration_s: float = Field(FilterParams.min_duration_s, ge=0, description="drop scenes shorter than this")
    min_area: int = Field(FilterParams.min_area, ge=0, description="drop clips with fewer pixels (after crop)")
    min_side: int = Field(FilterParams.min_side, ge=0, description="drop clips with a side under this (after crop)")
    min_fps: float = Field(FilterParams.min_fps, ge=0, description="drop sources below this frame rate")
    max_fps: float = Field(FilterParams.max_fps, gt=0, description="reject sources above this frame rate as broken")
    max_side: int = Field(FilterParams.max_side, gt=0, description="reject sources with a side above this as broken")

    # Transcode.
    fps: float = Field(TranscodeParams.fps, gt=0, description="output frame rate")
    max_short_side: int = Field(
        TranscodeParams.max_short_side, ge=16, description="scale down so the short side is at most this (never up)"
    )
    codec: str = Field(TranscodeParams.codec, description="ffmpeg video encoder")
    crf: int = Field(TranscodeParams.crf, ge=0, le=51, description="encoder quality (lower is better)")
    preset: str = Field(TranscodeParams.preset, description="encoder speed preset")

    # Robustness.
    chunk_s: float = Field(
        CurateParams.chunk_s, ge=0, description="analyse long sources in chunks of this many seconds (0 = never)"
    )
    reject_decode_errors: bool = Field(
        CurateParams.reject_decode_errors,
        description="reject scenes of a source part whose decode logged errors (corrupt/truncated data)",
    )
    probe_timeout_s: float = Field(CurateParams.probe_timeout_s, gt=0, description="ffprobe timeout per file")
    decode_timeout_s: float = Field(
        AnalysisParams.timeout_s, gt=0, description="decode timeout per unit, plus 2 s per second of video"
    )
    tmp_dir: str | None = Field(None, description="scratch folder for encoded clips (default: system temp)")
    input_cache_dir: str | None = Field(
        None, description="where each node keeps copies of URI sources (default: <system temp>/kvid-inputs)"
    )
    input_cache_gb: float = Field(
        InputCache.max_gb, gt=0, description="size cap of that cache per node; least recently used copies go first"
    )

    # Motion.
    motion_backend: str = Field(
        "raft",
        description="motion score backend: raft (= raft_large), raft_small, dis, farneback or none",
        json_schema_extra={"choices": MOTION_BACKENDS},
    )
    motion_size: int = Field(256, ge=16, description="short side (px) the flow is computed at; scores are in px/frame at it")
    motion_stride: int = Field(1, ge=1, description="use every k-th consecutive frame pair (long clips)")
    motion_batch_size: int = Field(16, ge=1, description="frame pairs per flow batch")
    motion_weights: str | None = Field(None, description="local RAFT .pth weights (default: torchvision's download)")
    motion_workers: int | None = Field(None, ge=1, description="motion actors (default: GPUs, else 1)")
    motion_device: str = Field("auto", description="auto, cpu or cuda")

    # Captions.
    caption_model: str = Field(
        DEFAULT_CAPTION_MODEL, description="VLM id or local path for captions, or 'none' to skip captioning"
    )
    caption_prompt: str = Field("detailed", description="prompt template name or text")
    caption_frames: int = Field(8, ge=1, description="frames sampled per clip for captioning")
    caption_max_new_tokens: int = Field(128, ge=1, description="caption length limit in tokens")
    caption_batch_size: int = Field(8, ge=1, description="clips per generation batch")
    caption_workers: int | None = Field(None, ge=1, description="caption actors (default: GPUs, else 1)")
    caption_device: str = Field("auto", description="auto, cpu or cuda")

    # Near-duplicates (curate/dedup.py; every clip's signature is stored either way).
    dedup: bool = Field(
        True, description="reject near-duplicate scenes (of this run's clips and those already in --out) before encoding"
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
    shard_max_clips: int = Field(shard_writer_default("max_clips"), ge=1, description="clips per tar shard")
    shard_max_mb: float = Field(1024.0, gt=0, description="video megabytes per tar shard")
    shard_max_open_s: float = Field(
        shard_writer_default("max_open_s"), gt=0, description="commit an open shard after this many seconds"
    )

    @field_validator("motion_backend")
    @classmethod
    def _motion_backend(cls, v: str) -> str:
        if v not in MOTION_BACKENDS:
            raise ValueError(f"must be one of {', '.join(MOTION_BACKENDS)}")
        return v

    @field_validator("out")
    @classmethod
    def _out(cls, v: str | None) -> str | None:
        if v is not None and is_uri(v):
            raise ValueError(
                "must be a folder path (local or a shared mount): shards are committed with atomic "
                "renames, which object stores lack; write there, then sync the finished folder"
            )
        return v

    @field_validator("motion_device", "caption_device", "transnet_device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda") and not v.startswith("cuda:"):
            raise ValueError("must be auto, cpu, cuda or cuda:N")
        return v

    @model_validator(mode="after")
    def _check(self) -> CurateConfig:
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

    def motion_units(self) -> dict:
        """What the motion scores' units depend on, aliases resolved (``raft`` = ``raft_large``);
        the size is left out when motion is off (there are no scores)."""
        return motion_units(self.model_dump())

    def args_for(self, target: type, prefix: str = "", **keys: str | None) -> dict:
        """The keyword arguments of ``target`` (a stage or its parameter dataclass) that this
        config sets: each parameter from the config key ``prefix + name`` (or the key named in
        ``keys``, None for none); parameters the config has no key for keep their own default. So --min-fps is
        FilterParams.min_fps and --motion-size is MotionStage(size=...), each under one name."""
        fields = type(self).model_fields
        wanted = {name: keys.get(name, prefix + name) for name in inspect.signature(target).parameters}
        return {name: getattr(self, key) for name, key in wanted.items() if key is not None and key in fields}

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
                transitions=self.transitions,
                transition=TransitionParams(threshold=self.transition_threshold,
                                             extend_threshold=self.transition_extend_threshold, device=self.transnet_device,
                                             cascade=self.transition_cascade),
                scene_filters=SceneFilterParams.from_settings(self.model_dump()),
            ),
            filters=FilterParams(**self.args_for(FilterParams)),
            transcode=TranscodeParams(**self.args_for(TranscodeParams, threads="ffmpeg_threads")),
            chunk_s=self.chunk_s,
            reject_decode_errors=self.reject_decode_errors,
            probe_timeout_s=self.probe_timeout_s,
            tmp_dir=self.tmp_dir,
            input_cache=InputCache(self.input_cache_dir, self.input_cache_gb),
        )


def _scene_filter_fields() -> dict[str, typing.Any]:
    """One field per setting the per-scene filters declare (curate/scene_filters.py): its
    type, default, help and bounds come from the filter's own file, so a new filter brings
    its YAML keys and flags with it."""
    return {s.key: (s.type, Field(s.default, description=s.help, **s.bounds)) for s in scene_filters.settings()}


def config_model() -> type[_CurateConfigBase]:
    """The config model: the fields above plus the settings of the registered filters."""
    return create_model(  # type: ignore[call-overload]
        "CurateConfig", __base__=_CurateConfigBase, __module__=__name__, **_scene_filter_fields()
    )


CurateConfig = config_model()


def motion_units(config: dict) -> dict:
    """``motion_units`` of a config dict (a manifest's ``config``). A manifest written before
    the backend was recorded gives what it has; an unknown backend name is kept as written."""
    backend = config.get("motion_backend")
    if backend is None:
        return {}
    if backend == "none":
        return {"motion_backend": "none"}
    try:
        backend = canonical_backend_name(backend)
    except ValueError:
        pass
    units = {"motion_backend": backend}
    if "motion_size" in config:
        units["motion_size"] = config["motion_size"]
    return units


def resume_problem(cfg: CurateConfig, manifest: dict | None) -> str | None:
    """Why curating ``cfg`` into the folder of ``manifest`` would mix two datasets, or None.

    Compares the clip-defining settings (OUTPUT_FIELDS) and the motion score units
    (MOTION_FIELDS, as the manifest records them after `kvid motion recompute` too)."""
    if not manifest:
        return None
    before = manifest.get("config", {})
    changed = [(k, before[k], v) for k, v in cfg.output_settings().items() if k in before and before[k] != v]
    old_units, new_units = motion_units(before), cfg.motion_units()
    changed += [(k, old_units[k], new_units[k]) for k in MOTION_FIELDS
                if k in old_units and k in new_units and old_units[k] != new_units[k]]
    if not changed:
        return None
    diffs = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changed)
    advice = "use a new --out folder, or the same settings as before"
    if any(k in MOTION_FIELDS for k, _, _ in changed):
        advice += (f" (the folder's motion scores are {_describe_units(old_units)}; to change them for every clip, "
                   f"run `kvid motion recompute {cfg.out} --backend B --size N` first)")
    return f"{cfg.out} was written with different settings ({diffs}). Resuming would mix two datasets: {advice}."


def _describe_units(units: dict) -> str:
    if units.get("motion_backend") == "none":
        return "absent (motion_backend none)"
    size = f" at {units['motion_size']} px" if "motion_size" in units else ""
    return f"{units['motion_backend']}{size}"


def _format_error(e: ValidationError, origin: str) -> str:
    """Every problem on one line (``kvid: error: ...``), each naming its key and flag."""
    lines = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        flag = "--" + key.replace("_", "-")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            hint = suggest(key, list(CurateConfig.model_fields))
            msg = f"unknown key; did you mean {hint}?" if hint else "unknown key (`kvid curate --help` lists the keys)"
            lines.append(f"{key}: {msg}")
            continue
        lines.append(f"{key} ({flag}): {msg}")
    return f"invalid configuration ({origin}): " + "; ".join(lines)


def suggest(word: str, known: list[str]) -> str | None:
    """The known name ``word`` most likely meant: the same name spelled with - or _ the
    other way, else the closest match (typos), else None."""
    for sep_from, sep_to in (("-", "_"), ("_", "-")):
        if word.replace(sep_from, sep_to) in known:
            return word.replace(sep_from, sep_to)
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.75)
    return close[0] if close else None


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


def field_choices(name: str) -> tuple | None:
    """The allowed values of a field: its Literal values, or ``choices`` in its schema extra."""
    field = CurateConfig.model_fields[name]
    if typing.get_origin(field.annotation) is Literal:
        return typing.get_args(field.annotation)
    extra = field.json_schema_extra
    return tuple(extra["choices"]) if isinstance(extra, dict) and "choices" in extra else None


def field_help(name: str) -> str:
    """The flag's help: the description and its default, said once (a description that
    explains its own default, e.g. "(default: all)", keeps its words). Choices show in the
    flag's metavar."""
    field = CurateConfig.model_fields[name]
    default = field.default if field.default_factory is None else field.default_factory()
    text = field.description or ""
    if "default" not in text.lower() and default is not None and default != []:
        text += f" (default: {default})"
    return text


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add one --flag per config field (except the positionals). Values stay strings here
    and pydantic converts and validates them, so the CLI and YAML share every rule."""
    general = parser.add_argument_group("configuration (each also a YAML key; flags override the file)")
    filters = parser.add_argument_group("per-scene filters (judged in the analysis decode, before any encode)")
    filter_keys = {s.key for s in scene_filters.settings()}
    for name, field in CurateConfig.model_fields.items():
        if name in _POSITIONAL:
            continue
        group = filters if name in filter_keys else general
        flag = "--" + name.replace("_", "-")
        help_text = field_help(name)
        if _is_bool(field.annotation):
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        elif choices := field_choices(name):
            group.add_argument(flag, dest=name, default=argparse.SUPPRESS, choices=[str(c) for c in choices],
                               metavar="{" + ",".join(map(str, choices)) + "}", help=help_text)
        else:
            group.add_argument(flag, dest=name, default=argparse.SUPPRESS, metavar=name.upper(), help=help_text)


def overrides_from_args(args: argparse.Namespace) -> dict:
    """The config fields that were given on the command line. An empty positional list
    means none were given (a YAML ``inputs:`` then counts), not "no inputs"."""
    return {
        k: v for k, v in vars(args).items()
        if k in CurateConfig.model_fields and not (k in _POSITIONAL and not v)
    }
