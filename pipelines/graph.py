"""The curate graph on Ray Data: operators and how they are wired.

    todo.jsonl --plan (probe, split long videos)--> units
               --analyse (one decode: scenes, borders, per-scene statistics, filters)--> scenes
               --dedup (on by default: near copies of kept clips become rejects)--> scenes
               --transcode (one ffmpeg per kept scene)--> clips
               --motion (actor pool: GPU when there is one)--> scored clips
               --caption prep (CPU actors) --> caption (actor pool)--> captioned clips

Plan, analyse and transcode are separate operators that Ray does not fuse, so the units of
a long source are analysed in parallel and every scene is encoded as its own task. Motion
and caption run in their own actor pools so a model is loaded once per actor and GPU work
is batched across clips.
"""

from __future__ import annotations

from curate.stage import Stage
from curate.stages import AnalyzeStage, PlanStage, TranscodeStage
from pipelines import rows as R
from pipelines.adapter import add_stage
from pipelines.config import CurateConfig
from pipelines.dedup_cmd import dedup_stage
from pipelines.ray_runtime import actor_cpus, cluster_cpus, cluster_device, gpu_count

# --- the stages, built for the cluster (shared by the pipeline and the rewrite commands) ----


def on_cluster(cfg: CurateConfig) -> CurateConfig:
    """The config with devices decided for the cluster's actors, not for the driver."""
    from motion.backends import is_raft

    motion = cluster_device(cfg.motion_device) if cfg.motion_enabled and is_raft(cfg.motion_backend) else "cpu"
    return cfg.model_copy(update={"motion_device": motion, "caption_device": cluster_device(cfg.caption_device)})


def _pool_size(configured: int | None, on_gpu: bool, cpu_default: int) -> int:
    return configured or (max(1, gpu_count()) if on_gpu else max(1, cpu_default))


def motion_stage(cfg: CurateConfig):
    """The motion stage for ``cfg`` (devices from ``on_cluster`` when it runs on Ray): on
    CUDA one actor per GPU with a few decode threads, else CPU actors."""
    from motion.stage import MotionStage

    on_gpu = cfg.motion_device.startswith("cuda")
    stage = MotionStage(**{
        # backend, size, stride, batch_size, device, weights; motion_workers is the actor count,
        # not the stage's OpenCV threads
        **cfg.args_for(MotionStage, "motion_", workers=None),
        "weights": cfg.motion_weights or "default",  # no file given: torchvision's download
        "num_cpus": actor_cpus(4 if on_gpu else 1) if _ray_running() else None,
    })
    # Each call gets several clips, so frame pairs batch across clips.
    stage.rows_per_call = 8 if on_gpu else 2
    stage.workers = _pool_size(cfg.motion_workers, on_gpu, cluster_cpus() // 4 if _ray_running() else 1)
    return stage


def caption_prep_stage(cfg: CurateConfig):
    from caption.backends import inspect_model
    from caption.stage import CaptionPrepStage

    # Frames are sampled at the size the model's processor works at.
    side = inspect_model(cfg.caption_model, check_weights=False).frame_short_side
    return CaptionPrepStage(num_frames=cfg.caption_frames, short_side=side)


def caption_stage(cfg: CurateConfig):
    from caption.stage import CaptionStage

    stage = CaptionStage(**cfg.args_for(CaptionStage, "caption_"))  # model, prompt, batch_size, max_new_tokens, device
    stage.rows_per_call = stage.batch_size  # one generation batch per call
    stage.workers = _pool_size(cfg.caption_workers, cfg.caption_device.startswith("cuda"), 1)
    return stage


def model_stages(cfg: CurateConfig) -> list[Stage]:
    """Motion, then captioning: they run on kept clips only."""
    stages: list[Stage] = []
    if cfg.motion_enabled:
        stages.append(motion_stage(cfg))
    if cfg.caption_enabled:
        stages += [caption_prep_stage(cfg), caption_stage(cfg)]
    return stages


def _ray_running() -> bool:
    import ray

    return ray.is_initialized()


# --- the graph -----------------------------------------------------------------------------


def add_stages(ds, stages: list[Stage], concurrency: int | None = None):
    for stage in stages:
        ds = add_stage(ds, stage, concurrency)
    return ds


def build_dataset(cfg: CurateConfig, todo_file: str):
    """todo.jsonl -> plan -> analyse -> transcode -> motion -> caption, on Ray Data.

    Plan, analyse and transcode declare different memory (one decode; one decode and one
    encode), which also keeps Ray from fusing them: a long source's units are analysed in
    parallel and each scene is encoded as its own task."""
    import ray

    params = cfg.curate_params()
    cfg = on_cluster(cfg)
    workers = cfg.workers or cluster_cpus()
    # Read as text: the lines are parsed by us (see pipelines/inputs.write_todo).
    ds = ray.data.read_text(todo_file).map_batches(R.todo_to_batch, batch_format="pyarrow", batch_size=1)
    # Near copies (on by default, --no-dedup) become rejects between analysis and the encode: never encoded.
    dedup = [dedup_stage(cfg)] if cfg.dedup else []
    ds = add_stages(ds, [PlanStage(params), AnalyzeStage(params), *dedup, TranscodeStage(params)], workers)
    return add_stages(ds, model_stages(cfg), workers)
