"""``kvid generate CONFIG.yaml``: a YAML list of generation jobs, validated with pydantic.

Example (relative paths are resolved against the YAML file's folder)::

    output_dir: out/videos
    weights: /models/KandinskyVideo_1_1     # official files, a save_pretrained folder, or random:tiny
    text_encoder: google/flan-ul2           # optional: hub id or local folder of the T5 encoder
    motion_levels: /data/curated            # optional: motion_levels.json or the folder holding it
    device: cuda                            # auto | cuda | cpu
    dtype: auto                             # U-Nets + text encoder: auto (bf16 CUDA, fp32 CPU) | bf16 | fp16 | fp32
    offload: auto                           # auto | none | text_encoder | model
    defaults:                               # shared by every job, each job may override
      fps: low                              # the default; medium / high: more frames
      motion: medium
      seed: 0
    jobs:
      - name: car
        prompt: a red car driving along the beach at sunset
      - name: dog
        image: dog.png                      # image-to-video: replaces the generated first frame
        prompt: a dog running in the snow
        fps: high
        motion: 4.5                          # a number is used as is
      - name: curated
        index: /data/curated                 # prompts + first frames from a curated set
        limit: 4

Each output ``OUT/<name>.mp4`` (and ``.gif`` if asked) gets ``OUT/<name>.json`` beside it with
the effective parameters (seed included) and the stage timings.
"""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from curate.settings import pydantic_field

from .params import GENERATION_SETTINGS

log = logging.getLogger("kvid.generate")

_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    cleaned = _NAME_RE.sub("_", name).strip("._")
    if not cleaned:
        raise ValueError(f"job name {name!r} has no usable characters")
    return cleaned[:120]


# Old spellings of YAML keys, still read: old -> the name now (one line of warning each time).
RENAMED_KEYS = {"steps": "num_inference_steps"}


def _accept_renamed(data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    for old, new in RENAMED_KEYS.items():
        if old in data:
            if new in data:
                raise ValueError(f"`{old}` is the old name of `{new}`: give `{new}` only")
            log.warning("kvid generate: `%s:` is deprecated, write `%s:` (same meaning)", old, new)
            data = {(new if k == old else k): v for k, v in data.items()}
    return data


class _Params(BaseModel):
    """Both kinds of parameter blocks: unknown keys refused, renamed keys read."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return _accept_renamed(data)


class _JobParamsBase(_Params):
    @field_validator("motion", check_fields=False)
    @classmethod
    def _motion(cls, v: str | float) -> str | float:
        if isinstance(v, bool):
            raise ValueError("motion must be a level name or a number")
        return v


# Generation parameters (the ``defaults`` block; every job may override any of them): those of
# generate/params.py, where their defaults live, plus what a job writes and its motion levels.
JobParams = create_model(  # type: ignore[call-overload]
    "JobParams", __base__=_JobParamsBase, __module__=__name__,
    **{s.key: pydantic_field(s) for s in GENERATION_SETTINGS},
    formats=(list[Literal["mp4", "gif"]], Field(default_factory=lambda: ["mp4"], description="or [mp4, gif]")),
    motion_levels=(str | None, Field(None, description="default: the top-level motion_levels")),
)

_PARAM_FIELDS = set(JobParams.model_fields)

# `weights: random:tiny` is a smoke test of the whole path (YAML -> pipeline -> mp4), not a
# picture: at the default 512x512 its 50 + 10 steps take minutes on a small CPU, at 64x64
# seconds. It uses this size unless the defaults block or the job sets width / height.
SMOKE_WEIGHTS = "random:tiny"
SMOKE_SIZE = 64


class IndexSource(BaseModel):
    """Prompts and first frames from a curated set (``OUT/index/*.parquet`` + ``OUT/shards/*.tar``)."""

    model_config = ConfigDict(extra="forbid")

    path: str
    clip_ids: list[str] | None = None
    limit: int | None = Field(None, ge=1)
    first_frame: bool = True  # image-to-video from the clip's first frame; False: text-to-video


class _JobBase(_Params):
    """What a job is made from; ``Job`` adds the overrides."""

    name: str | None = None
    prompt: str | None = None
    image: str | None = None
    index: IndexSource | str | None = None
    limit: int | None = Field(None, ge=1)  # shorthand for index.limit

    @model_validator(mode="after")
    def _source(self) -> _JobBase:
        if self.index is None and not self.prompt:
            raise ValueError("a job needs a prompt (text-to-video), an image + prompt (image-to-video) or an index")
        if self.index is not None and self.image is not None:
            raise ValueError("a job takes either an image or an index, not both")
        if isinstance(self.index, str):
            self.index = IndexSource(path=self.index)
        if self.limit is not None:
            if self.index is None:
                raise ValueError("limit applies to index jobs only")
            self.index.limit = self.limit
        return self

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump(exclude_unset=True).items() if k in _PARAM_FIELDS}


def _override_type(annotation: Any) -> Any:
    """The type of a per-job override: choices are checked once merged with the defaults, where
    the error names the job."""
    if get_origin(annotation) is Literal:
        return str
    if get_origin(annotation) is list:
        return list[_override_type(get_args(annotation)[0])]
    return annotation


# A job: its prompt, image or index, and a nullable override of every JobParams field.
Job = create_model(  # type: ignore[call-overload]
    "Job", __base__=_JobBase, __module__=__name__,
    **{k: (_override_type(f.annotation) | None, None) for k, f in JobParams.model_fields.items()},
)


class GenerateConfig(BaseModel):
    """Top level of a ``kvid generate`` YAML file."""

    model_config = ConfigDict(extra="forbid")

    output_dir: str | None = None
    weights: str | None = None
    text_encoder: str | None = None
    motion_levels: str | None = None
    device: str = "auto"
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    offload: Literal["auto", "none", "text_encoder", "model"] = "auto"
    compile: bool = False
    decode_chunk_size: int | None = Field(None, ge=1)
    defaults: JobParams = Field(default_factory=JobParams)
    jobs: list[Job] = Field(min_length=1)


def load_config(path: str | Path) -> tuple[GenerateConfig, Path]:
    """Read and validate a job YAML (``yaml.safe_load``); returns the config and its folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping with at least `jobs:` (see `kvid generate --help`)")
    try:
        return GenerateConfig.model_validate(raw), path.resolve().parent
    except ValidationError as e:
        raise ValueError(f"invalid generate config {path}:\n{e}") from e


def _resolve(base: Path, value: str | None) -> str | None:
    if value is None or value.startswith("random:"):
        return value
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    candidate = base / p
    # keep hub ids like "google/flan-ul2" as they are when no such local path exists
    if candidate.exists() or value.startswith((".", "~")):
        return str(candidate)
    return value


def _resolve_path(base: Path, value: str | None) -> str | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)


@dataclass
class ResolvedJob:
    name: str
    prompt: str
    params: JobParams
    image: str | None = None  # path of an image file
    clip: dict[str, Any] | None = None  # curated index row (image = its first frame)
    skipped: str | None = None

    def describe_source(self) -> dict[str, Any]:
        if self.clip is not None:
            return {"kind": "index", "clip_id": self.clip["clip_id"], "shard": self.clip.get("shard"),
                    "caption": self.clip.get("caption"), "motion_score": self.clip.get("motion_score")}
        if self.image is not None:
            return {"kind": "image", "path": self.image}
        return {"kind": "text"}


def expand_jobs(cfg: GenerateConfig, base: Path) -> list[ResolvedJob]:
    """Merge defaults and overrides, resolve paths, expand index jobs (one job per clip)."""
    from .video_io import read_curated_index

    defaults = cfg.defaults.model_dump()
    if cfg.weights == SMOKE_WEIGHTS:
        defaults.update({k: SMOKE_SIZE for k in ("width", "height") if k not in cfg.defaults.model_fields_set})
    out: list[ResolvedJob] = []
    for i, job in enumerate(cfg.jobs):
        merged = {**defaults, **job.overrides()}
        if merged.get("motion_levels"):
            merged["motion_levels"] = _resolve_path(base, merged["motion_levels"])
        try:
            params = JobParams.model_validate(merged)
        except ValidationError as e:
            raise ValueError(f"job {job.name or i}: invalid parameters:\n{e}") from e
        name = safe_name(job.name or f"job{i:03d}")
        if job.index is None:
            image = _resolve_path(base, job.image)
            if image is not None and not Path(image).is_file():
                raise FileNotFoundError(f"job {name}: image not found: {image}")
            out.append(ResolvedJob(name, job.prompt, params, image=image))
            continue
        src = job.index
        rows = read_curated_index(_resolve_path(base, src.path), clip_ids=src.clip_ids, limit=src.limit)
        for row in rows:
            prompt = row.get("caption") or job.prompt
            rj = ResolvedJob(safe_name(f"{name}-{row['clip_id']}"), prompt or "", params, clip=row if src.first_frame else None)
            if not prompt:
                rj.skipped = "clip has no caption and the job gives no fallback prompt"
            out.append(rj)
    names = [j.name for j in out]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ValueError(f"duplicate job names {dups}: give each job a unique `name`")
    return out


def _effective_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available (use --device cpu)")
    return device


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def run_config(
    cfg: GenerateConfig,
    base: Path,
    *,
    progress: bool = True,
    skip_existing: bool = False,
    only: list[str] | None = None,
    pipeline_factory: Callable[..., Any] | None = None,
) -> RunSummary:
    """Run every job; a failing job is recorded (and its error printed), the others go on."""

    from . import __version__
    from .config import num_video_frames, parse_dtype
    from .motion_levels import load_motion_levels
    from .pipeline import load_pipeline
    from .video_io import first_frame_of_clip

    if not cfg.output_dir:
        raise ValueError("no output folder: set `output_dir:` in the YAML or pass --out")
    if not cfg.weights:
        raise ValueError(
            "no weights: set `weights:` in the YAML or pass --weights (official folder with t2v.pt ..., a folder "
            "written by save_pretrained, or random:tiny for a smoke test)"
        )
    out_dir = Path(_resolve_path(base, cfg.output_dir))
    jobs = expand_jobs(cfg, base)
    if only:
        unknown = sorted(set(only) - {j.name for j in jobs})
        if unknown:
            raise ValueError(f"--only names not among the jobs: {unknown}")
        jobs = [j for j in jobs if j.name in only]
    summary = RunSummary()
    todo = []
    for j in jobs:
        if j.skipped:
            summary.skipped.append((j.name, j.skipped))
        elif skip_existing and (out_dir / f"{j.name}.json").is_file():
            summary.skipped.append((j.name, "output exists (--skip-existing)"))
        else:
            todo.append(j)
    if not todo:
        return summary

    device = _effective_device(cfg.device)
    dtype_label = cfg.dtype if cfg.dtype != "auto" else ("bf16" if device.startswith("cuda") else "fp32")
    dtype = parse_dtype(dtype_label)
    offload = cfg.offload if cfg.offload != "auto" else ("text_encoder" if device.startswith("cuda") else "none")
    # motion levels: fail at start on a bad file, not in the middle of the run
    levels_cache = {None: load_motion_levels(_resolve_path(base, cfg.motion_levels))}
    for j in todo:
        if j.params.motion_levels and j.params.motion_levels not in levels_cache:
            levels_cache[j.params.motion_levels] = load_motion_levels(j.params.motion_levels)
    factory = pipeline_factory or load_pipeline
    pipe = factory(
        _resolve(base, cfg.weights), text_encoder=_resolve(base, cfg.text_encoder), device=device, dtype=dtype,
        offload=offload, motion_levels=levels_cache[None],
    )
    if cfg.decode_chunk_size:
        pipe.decode_chunk_size = cfg.decode_chunk_size
    if cfg.compile:
        pipe.compile()

    # stage 1 for all jobs: encode every distinct prompt once (one visit of the text encoder),
    # each on its own so its context length is exactly what a single call would give
    texts = sorted({j.prompt for j in todo} | {j.params.negative_prompt for j in todo if j.params.negative_prompt})
    embeds = {}
    with pipe._on_device("text_encoder") as te:
        for text in _bar(texts, "text encode", progress):
            embeds[text] = te.encode([text]).to(pipe.device)
    pipe.release_text_encoder()

    out_dir.mkdir(parents=True, exist_ok=True)
    for j in _bar(todo, "jobs", progress):
        p = j.params
        try:
            image = j.image
            if j.clip is not None:
                if not j.clip.get("shard"):
                    raise ValueError(f"clip {j.clip['clip_id']} has no shard in the index")
                image = first_frame_of_clip(j.clip["folder"], j.clip)
            levels = levels_cache[p.motion_levels] if p.motion_levels else levels_cache[None]
            video = pipe(
                prompt_embeds=embeds[j.prompt],
                negative_prompt_embeds=embeds[p.negative_prompt] if p.negative_prompt else None,
                image=image, motion_levels=levels, progress=progress,
                **{s.key: getattr(p, s.key) for s in GENERATION_SETTINGS if s.key != "negative_prompt"},
            )
            files = [str(video.save(out_dir / f"{j.name}.{fmt}")) for fmt in p.formats]
            effective = p.model_dump()
            effective["seed"] = video.info["seed"]
            record = {
                "name": j.name, "prompt": j.prompt, "source": j.describe_source(), "params": effective,
                "motion_score": video.info["motion_score"], "motion_levels": video.info["motion_levels"],
                "num_frames": video.num_frames, "expected_frames": num_video_frames(p.fps), "fps": video.fps,
                "duration_s": video.seconds, "width": p.width, "height": p.height, "files": files,
                "weights": pipe.source, "device": str(pipe.device), "dtype": dtype_label, "offload": offload,
                "timings": video.info["stages"], "seconds_total": video.info["seconds_total"],
                "kvid_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            tmp = out_dir / f"{j.name}.json.tmp"
            tmp.write_text(json.dumps(record, indent=2, default=str))
            tmp.replace(out_dir / f"{j.name}.json")
            summary.done.append(j.name)
        except Exception as e:  # a bad job never kills the run
            log.debug("job %s failed", j.name, exc_info=True)
            summary.failed.append((j.name, f"{type(e).__name__}: {e}"))
            if log.isEnabledFor(logging.DEBUG):
                traceback.print_exc()
    return summary


def _bar(items, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, disable=None if progress else True, dynamic_ncols=True)
