"""`kvid curate`: the Ray Data graph from raw videos to shards.

    sources --plan (probe, split long videos)--> units
            --analyse (one decode for scenes+borders, filters)--> scenes
            --transcode (one ffmpeg per scene)--> clips
            --motion (actor pool: GPU when there is one)--> scored clips
            --caption prep (CPU actors) --> caption (actor pool)--> captioned clips
            --driver: UnitLedger (each row once) -> ShardWriter (atomic parts, resumable)

Plan, analyse and transcode are separate operators that Ray does not fuse, so the units of
a long source are analysed in parallel and every scene is encoded as its own task. Motion
and caption run in their own actor pools so a model is loaded once per actor and GPU work
is batched across clips.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import platform
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Iterator

from curate import remote, shards
from curate.ffmpeg import require_binaries
from curate.stages import KVID_VERSION, CurateParams, analyze_work_unit, plan_source, transcode_record
from pipelines import rows as R
from pipelines.config import ConfigError, CurateConfig
from pipelines.dedup_cmd import add_dedup_gate

log = logging.getLogger("kvid")

WORK_DIR = ".kvid"  # run bookkeeping inside OUT (hidden from readers)
ANALYZE_MEMORY = 256 * 2**20
TRANSCODE_MEMORY = 768 * 2**20

VIDEO_EXTENSIONS = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
    ".flv", ".wmv", ".3gp", ".ogv", ".gif", ".mxf", ".vob", ".h264", ".264", ".h265", ".hevc", ".y4m",
}


class InputError(ValueError):
    pass


def _input_exists(item: str) -> bool:
    if remote.is_uri(item):
        try:
            return remote.uri_exists(item)
        except remote.RemoteError as e:
            raise InputError(str(e)) from e
    return os.path.exists(item) or bool(glob.has_magic(item) and glob.glob(item, recursive=True))


def _check_inputs(inputs: list[str]) -> None:
    missing = [i for i in inputs if not _input_exists(i)]
    if missing:
        raise InputError("no such file, folder or glob match: " + ", ".join(repr(m) for m in missing))


def iter_inputs(inputs: list[str]) -> Iterator[str]:
    """Files as given, folders searched recursively for video extensions (sorted per folder),
    globs expanded, for paths and URIs alike; absolute paths, streamed so a million files never sit in a list.
    Raises InputError up front naming what matched nothing."""
    _check_inputs(inputs)
    for item in inputs:
        if remote.is_uri(item):
            try:
                yield from remote.iter_uri(item, VIDEO_EXTENSIONS)  # URIs stay URIs: every node reads them
            except OSError as e:
                raise InputError(f"cannot list {item}: {e}") from e
        elif os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    if not f.startswith(".") and os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS:
                        yield os.path.abspath(os.path.join(root, f))
        elif os.path.exists(item):
            yield os.path.abspath(item)
        else:
            for match in sorted(glob.iglob(item, recursive=True)):
                if os.path.isfile(match):
                    yield os.path.abspath(match)


def expand_inputs(inputs: list[str]) -> list[str]:
    """``iter_inputs`` as a sorted list without duplicates (for small input sets)."""
    return sorted(set(iter_inputs(inputs)))


def write_todo(path: str, inputs: list[str], state: shards.ResumeState) -> tuple[int, int]:
    """Stream the sources still to do into a JSON-lines file Ray reads back lazily.
    Returns (to do, already done). A source listed twice is done once."""
    todo = done = 0
    recent: dict[str, None] = {}  # bounded memory: catches a file named twice in a row of args
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for src in iter_inputs(inputs):
            if src in recent:
                continue
            recent[src] = None
            if len(recent) > 10_000:
                recent.pop(next(iter(recent)))
            if src in state.done_sources:
                done += 1
                continue
            units = sorted(state.done_units_by_source.get(src, ()))
            f.write(json.dumps({"source": src, "done_units": units}) + "\n")
            todo += 1
    os.replace(tmp, path)
    return todo, done


# --- operators (plain functions; Ray calls them) ------------------------------------------


def plan_op(row: dict[str, Any], params: CurateParams) -> Iterator[dict[str, Any]]:
    units, rejects = plan_source(row["source"], params, frozenset(row["done_units"]))
    for rec in rejects:
        yield R.record_row(rec)
    for unit in units:
        yield R.unit_row(unit)


def analyze_op(row: dict[str, Any], params: CurateParams) -> Iterator[dict[str, Any]]:
    unit = R.row_unit(row)
    if unit is None:
        yield row  # a reject from planning: pass it on
        return
    for rec in analyze_work_unit(unit, params):
        # Kept scenes go on with their unit (the transcode needs the source's properties).
        yield R.unit_row(unit, rec) if rec.ok else R.record_row(rec)


def transcode_op(row: dict[str, Any], params: CurateParams) -> dict[str, Any]:
    unit = R.row_unit(row)
    if unit is None:
        return row  # a reject: pass it on
    rec = R.row_record(row)
    mp4 = transcode_record(rec, unit.info, params)
    return R.record_row(rec, mp4)




class MotionActor:
    """Holds one motion model for the actor's lifetime."""

    def __init__(self, cfg: CurateConfig):
        self.stage = motion_stage(cfg)
        self.stage.setup()

    def __call__(self, batch):
        return R.dicts_to_batch(self.stage(R.batch_to_dicts(batch)))


class CaptionPrepFn:
    def __init__(self, cfg: CurateConfig):
        self.stage = caption_prep_stage(cfg)

    def __call__(self, batch):
        return R.dicts_to_batch(self.stage(R.batch_to_dicts(batch)))


class CaptionActor:
    def __init__(self, cfg: CurateConfig):
        self.stage = caption_stage(cfg)
        self.stage.setup()

    def __call__(self, batch):
        return R.dicts_to_batch(self.stage(R.batch_to_dicts(batch)))


# --- stage construction (shared by the pipeline and the recompute commands) ----------------


def motion_stage(cfg: CurateConfig):
    from motion.stage import MotionStage

    backend = "raft_large" if cfg.motion_backend == "raft" else cfg.motion_backend
    return MotionStage(
        backend=backend,
        size=cfg.motion_size,
        stride=cfg.motion_stride,
        batch_size=cfg.motion_batch_size,
        device=cfg.motion_device if backend.startswith("raft") else "cpu",
        weights=cfg.motion_weights or "default",
    )


def caption_prep_stage(cfg: CurateConfig):
    from caption.backends import inspect_model
    from caption.stage import CaptionPrepStage

    # Frames are sampled at the size the model's processor works at.
    side = inspect_model(cfg.caption_model, check_weights=False).frame_short_side
    return CaptionPrepStage(num_frames=cfg.caption_frames, short_side=side)


def caption_stage(cfg: CurateConfig):
    from caption.stage import CaptionStage

    return CaptionStage(
        model=cfg.caption_model,
        prompt=cfg.caption_prompt,
        max_new_tokens=cfg.caption_max_new_tokens,
        batch_size=cfg.caption_batch_size,
        device=cfg.caption_device,
    )


def check_models(cfg: CurateConfig) -> None:
    """Before any work starts: a missing weights file or model stops the run here, with the
    fix in the message. RAFT is small and loaded once, on the driver's CPU; the VLM's files
    are only checked (its actors load it)."""
    if cfg.motion_enabled:
        from motion.backends import MotionError

        try:
            motion_stage(cfg.model_copy(update={"motion_device": "cpu"})).setup()
        except (MotionError, ValueError) as e:
            raise ConfigError(str(e)) from e
    if cfg.caption_enabled:
        from caption.backends import CaptionModelError, inspect_model

        try:
            caption_stage(cfg)  # validates the prompt template
            inspect_model(cfg.caption_model, check_weights=True)
        except (CaptionModelError, ValueError) as e:
            raise ConfigError(str(e)) from e


# --- Ray -----------------------------------------------------------------------------------


# Ray's start-up notices that say nothing a kvid user can act on.
_NOISY_LOGGERS = (
    "ray._private.authentication.authentication_token_setup",
    "ray.data._internal.progress",
    "ray.data",
)


def init_ray(cfg: CurateConfig):
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    import ray

    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": True}
    if cfg.ray_address:
        kwargs["address"] = cfg.ray_address
    elif cfg.num_cpus:
        kwargs["num_cpus"] = cfg.num_cpus
    try:
        ray.init(**kwargs)
    except ConnectionError as e:
        raise ConfigError(
            f"cannot connect to the Ray cluster at {cfg.ray_address}: {str(e).splitlines()[0]}. Check the address "
            "(`ray status` on the head prints it); if the cluster uses token authentication (Ray turns it "
            "on when ~/.ray/auth_token exists), run with RAY_AUTH_MODE=token and the cluster's token in "
            "~/.ray/auth_token or RAY_AUTH_TOKEN."
        ) from e
    return ray


def _quiet_ray_data() -> None:
    from ray.data import DataContext

    # Ray Data sets its loggers up on import; quiet them after that (we show our own bar).
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    # One row per block: a planned unit or a clip is a unit of parallel work, and rows are
    # small or carry a whole clip, so per-block overhead is noise next to an ffmpeg call.
    ctx.target_max_block_size = 1
    ctx.op_resource_reservation_enabled = False


def cluster_device(requested: str) -> str:
    """'auto' means a GPU when the Ray cluster has one (the driver may have none)."""
    if requested != "auto":
        return requested
    return "cuda" if gpu_count() > 0 else "cpu"


def on_cluster(cfg: CurateConfig) -> CurateConfig:
    """The config with devices decided for the cluster's actors, not for the driver."""
    from motion.backends import is_raft

    motion = cluster_device(cfg.motion_device) if cfg.motion_enabled and is_raft(cfg.motion_backend) else "cpu"
    return cfg.model_copy(update={"motion_device": motion, "caption_device": cluster_device(cfg.caption_device)})


def motion_actor_options(cfg: CurateConfig) -> dict[str, Any]:
    """map_batches options of the motion actor pool (``cfg`` from ``on_cluster``): one
    actor per GPU for RAFT on CUDA, each with a few decode threads, else CPU actors;
    each call gets several clips so frame pairs batch across clips."""
    import ray

    on_gpu = cfg.motion_device.startswith("cuda")
    cpus = int(ray.cluster_resources().get("CPU", 1))
    n = cfg.motion_workers or (max(1, gpu_count()) if on_gpu else max(1, cpus // 4))
    return {
        "batch_size": 8 if on_gpu else 2,
        "batch_format": "pyarrow",
        "compute": ray.data.ActorPoolStrategy(size=n),
        "num_gpus": 1 if on_gpu else 0,
        "num_cpus": actor_cpus(4 if on_gpu else 1),
    }


def add_caption_stages(ds, cfg: CurateConfig, cpu_workers: int | None = None):
    """Frame sampling on CPU tasks, then generation in an actor pool (one per GPU)."""
    import ray

    on_gpu = cfg.caption_device.startswith("cuda")
    cpu_workers = cpu_workers or max(1, int(ray.cluster_resources().get("CPU", 1)) - 1)
    ds = ds.map_batches(
        CaptionPrepFn,
        fn_constructor_kwargs={"cfg": cfg},
        batch_size=1,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cpu_workers),
        num_cpus=actor_cpus(1),
    )
    return ds.map_batches(
        CaptionActor,
        fn_constructor_kwargs={"cfg": cfg},
        batch_size=cfg.caption_batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=cfg.caption_workers or (max(1, gpu_count()) if on_gpu else 1)),
        num_gpus=1 if on_gpu else 0,
        num_cpus=actor_cpus(1),
    )


def actor_cpus(requested: float) -> float:
    """CPUs an actor asks Ray for. Actors hold their CPUs for the whole run, so on a small
    machine full requests from three pools would leave no CPU for the decode/encode tasks
    (or never schedule at all): cap each at a quarter of the cluster."""
    import ray

    total = float(ray.cluster_resources().get("CPU", 1))
    return max(0.25, min(float(requested), total / 4))


def gpu_count() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def build_dataset(cfg: CurateConfig, todo_file: str):
    import warnings

    import ray

    _quiet_ray_data()
    # Ray warns when an operator gets fewer inputs than its task limit (a short input list).
    warnings.filterwarnings("ignore", message="The maximum number of concurrent tasks", category=UserWarning)
    params = cfg.curate_params()
    cfg = on_cluster(cfg)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    workers = cfg.workers or cpus
    tasks = ray.data.TaskPoolStrategy(size=workers)
    ds = ray.data.read_json(todo_file, lines=True)
    ds = ds.flat_map(plan_op, fn_kwargs={"params": params}, num_cpus=0.5, compute=tasks)
    # Declared memory: what one decode (analysis) or one decode + x264 encode (up to 1080p)
    # holds, so a node is not handed more than it can run. The different requests also keep
    # Ray from fusing the two operators into one task, which would encode a long source's
    # scenes one after another instead of as parallel tasks.
    ds = ds.flat_map(analyze_op, fn_kwargs={"params": params}, num_cpus=1, memory=ANALYZE_MEMORY, compute=tasks)
    ds = add_dedup_gate(ds, cfg)  # near copies become rejects here, before the encode
    ds = ds.map(transcode_op, fn_kwargs={"params": params}, num_cpus=1, memory=TRANSCODE_MEMORY, compute=tasks)
    if cfg.motion_enabled:
        ds = ds.map_batches(MotionActor, fn_constructor_kwargs={"cfg": cfg}, **motion_actor_options(cfg))
    if cfg.caption_enabled:
        ds = add_caption_stages(ds, cfg, workers)
    return ds


# --- manifest and summary -----------------------------------------------------------------


def _versions() -> dict[str, str]:
    import importlib.metadata as md
    import subprocess

    out = {"kvid": KVID_VERSION, "python": platform.python_version()}
    for pkg in ("ray", "pyarrow", "scenedetect", "torch", "torchvision", "transformers", "webdataset"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    try:
        first = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, timeout=10).stdout.splitlines()
        out["ffmpeg"] = first[0].split()[2] if first else "unknown"
    except (OSError, subprocess.SubprocessError, IndexError):
        out["ffmpeg"] = "unknown"
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_manifest(out_dir: str) -> dict | None:
    import json

    path = os.path.join(out_dir, shards.MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def check_resume_compatible(cfg: CurateConfig, manifest: dict | None) -> None:
    if not manifest:
        return
    before = manifest.get("config", {})
    changed = [k for k, v in cfg.output_settings().items() if k in before and before[k] != v]
    if changed:
        diffs = ", ".join(f"{k}: {before[k]!r} -> {getattr(cfg, k)!r}" for k in changed)
        raise ConfigError(
            f"{cfg.out} was written with different settings ({diffs}). Resuming would mix two "
            "datasets: use a new --out folder, or the same settings as before."
        )


def dataset_counts(out_dir: str) -> dict[str, Any]:
    """Totals over everything committed in the output folder (all runs)."""
    cols = ["source", "source_id", "src_duration_s", "duration_s", "reject_reason", "reject_stage"]
    index = shards.read_index(out_dir, cols).to_pylist()
    rejects = shards.read_rejects(out_dir, cols).to_pylist()
    src_seconds = {}
    for r in index + rejects:
        src_seconds[r["source_id"]] = r["src_duration_s"] or 0.0
    return {
        "inputs": len(src_seconds),
        "clips": len(index),
        "rejects": len(rejects),
        "rejects_by_reason": dict(Counter(r["reject_reason"] for r in rejects).most_common()),
        "hours_in": round(sum(src_seconds.values()) / 3600, 4),
        "hours_out": round(sum(r["duration_s"] or 0.0 for r in index) / 3600, 4),
    }


def format_summary(summary: dict[str, Any]) -> str:
    c = summary["counts"]
    lines = [
        f"kvid curate: {summary['status']} in {summary['wall_s']:.1f} s -> {summary['out']}",
        f"  this run: {summary['sources_run']} sources processed, {summary['sources_skipped']} already done; "
        f"{summary['clips_written']} clips, {summary['rejects_written']} rejects written",
        f"  dataset:  {c['inputs']} inputs -> {c['clips']} clips + {c['rejects']} rejects",
        f"  hours in: {c['hours_in']:.3f}   hours out: {c['hours_out']:.3f}",
    ]
    if c["rejects_by_reason"]:
        lines.append("  rejects by reason: " + ", ".join(f"{k} {v}" for k, v in c["rejects_by_reason"].items()))
    return "\n".join(lines)


# --- the run -------------------------------------------------------------------------------


def run_curate(cfg: CurateConfig, show_progress: bool | None = None) -> dict[str, Any]:
    """Run the pipeline; returns the summary (also written into the manifest)."""
    if not cfg.out:
        raise ConfigError("no output folder: pass --out DIR")
    if not cfg.inputs:
        raise ConfigError("no inputs: pass video files, folders or globs")
    require_binaries()
    _check_inputs(cfg.inputs)
    out = cfg.out
    os.makedirs(out, exist_ok=True)
    manifest = read_manifest(out)
    check_resume_compatible(cfg, manifest)
    check_models(cfg)

    t0 = time.monotonic()
    started = _now()
    state = shards.resume_state(out)
    work = os.path.join(out, WORK_DIR)
    os.makedirs(work, exist_ok=True)
    todo_file = os.path.join(work, "todo.jsonl")
    n_todo, n_done = write_todo(todo_file, cfg.inputs, state)
    manifest = manifest or {"created": _now(), "runs": []}
    manifest.update({"status": "running", "kvid_version": KVID_VERSION, "config": cfg.model_dump(), "versions": _versions()})
    shards.ensure_layout(out)
    shards.atomic_write_json(os.path.join(out, shards.MANIFEST), manifest)

    writer = shards.ShardWriter(
        out,
        first_seq=state.next_seq,
        max_clips=cfg.shard_max_clips,
        max_bytes=int(cfg.shard_max_mb * 1024 * 1024),
        max_open_s=cfg.shard_max_open_s,
    )
    ledger = shards.UnitLedger(state.done_units, state.partial_units)
    status = "interrupted"
    ray_start_s = 0.0
    try:
        if n_todo:
            t_ray = time.monotonic()
            init_ray(cfg)
            ray_start_s = time.monotonic() - t_ray
            _write_all(build_dataset(cfg, todo_file), writer, ledger, n_todo, state, show_progress)
        writer.close()
        status = "complete"
    finally:
        if status != "complete":
            writer.abort()
        summary = _finish(out, manifest, started, t0, status, writer, n_todo, n_done, ray_start_s)
    return summary


def _write_all(ds, writer: shards.ShardWriter, ledger: shards.UnitLedger, n_todo: int,
               state: shards.ResumeState, show_progress: bool | None) -> None:
    """Drain the dataset into the writer, each row once; the bar counts finished sources."""
    from tqdm import tqdm

    units_done = Counter(u.rsplit(":", 1)[0] for units in state.done_units_by_source.values() for u in units)
    with tqdm(total=n_todo, unit="video", desc="curate", disable=show_progress is False, dynamic_ncols=True) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():
                rec = R.row_record(row)
                admitted, unit_done = ledger.admit(rec)
                if admitted:
                    writer.add(rec, row["mp4"])
                if unit_done:
                    units_done[rec.source_id] += 1
                    if units_done[rec.source_id] == rec.source_units:
                        del units_done[rec.source_id]
                        bar.update(1)
                        bar.set_postfix(clips=writer.written["clips"] + writer.pending_clips, refresh=False)


def _finish(out, manifest, started, t0, status, writer, n_run, n_skipped, ray_start_s=0.0) -> dict[str, Any]:
    wall = time.monotonic() - t0
    counts = dataset_counts(out)
    run = {
        "started": started,
        "finished": _now(),
        "status": status,
        "wall_s": round(wall, 2),
        "ray_start_s": round(ray_start_s, 2),
        "sources_run": n_run,
        "sources_skipped": n_skipped,
        "clips_written": writer.written["clips"],
        "rejects_written": writer.written["rejects"],
    }
    runs = [r for r in manifest.get("runs", []) if r.get("started") != started] + [run]
    manifest.update({"status": status, "counts": counts, "runs": runs, "updated": _now()})
    shards.atomic_write_json(os.path.join(out, shards.MANIFEST), manifest)
    return {**run, "out": out, "counts": counts}
