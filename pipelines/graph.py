"""The curate graph on Ray Data: which stages, in which order.

    todo.jsonl --plan (probe, split long videos)--> units
               --analyse (one decode: scenes, borders, per-scene statistics, filters)--> scenes
               --dedup (on by default: near copies of kept clips become rejects)--> scenes
               --transcode (one ffmpeg per group of kept scenes, one decode; motion
                 scores with a CPU flow backend from that decode)--> clips
               --motion (RAFT: actor pool, GPU when there is one)--> scored clips
               --caption prep (CPU) --> caption (actor pool)--> captioned clips

Each stage says how it runs on the cluster (``Stage.placement``); the adapter
(``pipelines/adapter.py``) turns that into Ray work. This module only chains them.
"""

from __future__ import annotations

from curate.dedup import DedupStage
from curate.stage import Cluster, Stage
from curate.video_stages import AnalyzeStage, PlanStage, TranscodeStage
from pipelines import rows as R
from pipelines.adapter import add_stage
from pipelines.config import Settings


def model_stages(settings: Settings, motion_in_encode: bool = False) -> list[Stage]:
    """Motion, then captioning: they run on kept clips only. ``motion_in_encode``: motion is
    scored by the transcode stage (a CPU flow backend), not by a stage of its own."""
    stages: list[Stage] = []
    if settings.motion.enabled and not motion_in_encode:
        stages.append(settings.motion)
    if settings.caption.enabled:
        stages += [settings.caption_frames.for_model(settings.caption.model), settings.caption]
    return stages


def curate_stages(settings: Settings, out_dir: str) -> list[Stage]:
    """Every stage of `kvid curate` into ``out_dir``. Near copies become rejects between the
    analysis and the encode (never encoded), matched against the folder's clips too."""
    p = settings.curate
    dedup = [DedupStage.for_folder(out_dir, settings.dedup)] if settings.dedup.enabled else []
    # A CPU flow backend scores each clip on the frames its encode decodes anyway.
    in_encode = settings.motion.scores_in_encode
    transcode = TranscodeStage(p, frame_tap=settings.motion if in_encode else None)
    return [PlanStage(p), AnalyzeStage(p), *dedup, transcode, *model_stages(settings, in_encode)]


def add_stages(ds, stages: list[Stage], cluster: Cluster, timings: str | None = None):
    for stage in stages:
        ds = add_stage(ds, stage, cluster, timings)
    return ds


def build_dataset(stages: list[Stage], todo_file: str, cluster: Cluster, timings: str | None = None):
    """todo.jsonl through ``stages`` on Ray Data; each stage call appends its time to ``timings``."""
    import ray  # only once a graph is built: `kvid --help` and the stages never load Ray

    # Read as text: the lines are parsed by us (see pipelines/inputs.write_todo).
    ds = ray.data.read_text(todo_file).map_batches(R.todo_to_batch, batch_format="pyarrow", batch_size=1)
    return add_stages(ds, stages, cluster, timings)
