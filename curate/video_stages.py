"""The curate stages as plain functions: plan a source, analyse a unit, transcode a scene.

No Ray here: ``pipelines/`` runs these in parallel; tests and notebooks call them directly.
Every bad input ends as a reject record with a reason; nothing here raises for one file.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from curate import atomic, ids, schema
from curate.analyze import AnalysisError, AnalysisParams, FrameClock, analyze_unit, frame_times
from curate.borders import Crop
from curate.dedup import SignatureFeature, SignatureParams, signature_bytes
from curate.ffmpeg import FFmpegError
from curate.filters import FilterParams, Rejection, check_scene, check_source
from curate.probe import ProbeError, VideoInfo, probe
from curate.remote import InputCache, source_name, staged
from curate.scene_filters import check_stats
from curate.schema import ClipRecord
from curate.settings import BYTES, CLIPS, group, setting, values_of
from curate.stage import SCENES, Cluster, Placement, Resources, Row, Stage
from curate.transcode import ClipFile, SceneCut, TranscodeParams, encode_scenes, output_frames, output_size
from curate.version import KVID_VERSION


@dataclass(frozen=True)
class CurateParams:
    """Everything the plan, analysis and transcode stages need, by job."""

    analysis: AnalysisParams = group(AnalysisParams, title="scene detection")
    filters: FilterParams = group(FilterParams, title="filters")
    transcode: TranscodeParams = group(TranscodeParams, title="output")
    chunk_s: float = setting(600.0, "analyse long sources in chunks of this many seconds (0 = never)",
                             decides=CLIPS, ge=0)
    # A unit whose decode logged errors (corrupt or truncated data) has its scenes rejected:
    # concealed frames look like video but are garbage to train on. False keeps them.
    reject_decode_errors: bool = setting(
        True, "reject scenes of a source part whose decode logged errors (corrupt/truncated data)", decides=CLIPS)
    probe_timeout_s: float = setting(60.0, "ffprobe timeout per file", gt=0)
    tmp_dir: str | None = setting(None, "scratch folder for encoded clips (default: system temp)")
    input_cache: InputCache = group(InputCache, "input_cache_", "inputs")  # staged copies of URI sources
    workers: int | None = setting(None, "parallel analyse and transcode tasks (default: one per CPU)", ge=1)
    encode_group_s: float = setting(
        30.0, "seconds of kept scenes encoded by one ffmpeg from one decode (a long source's groups run in parallel)",
        gt=0)
    encode_gap_s: float = setting(
        5.0, "a rejected stretch longer than this between kept scenes is skipped by a seek, not decoded", ge=0)
    # The perceptual signature of every scene (near-duplicates); None skips it. Not a setting.
    signature: SignatureParams | None = field(default_factory=SignatureParams)

    def config_hash(self) -> str:
        """What makes a clip's bytes (the settings that decide them), in its id."""
        return ids.config_hash({**values_of(self, BYTES), "kvid_major": KVID_VERSION.split(".")[0]})


@dataclass
class WorkUnit:
    source: str
    source_id: str
    info: VideoInfo
    chunk: int
    num_chunks: int
    first_frame: int
    end_frame: int | None  # None: to the end of the stream

    @property
    def unit_id(self) -> str:
        return ids.unit_id(self.source_id, self.chunk)


def _source_record(source: str, source_id: str, cfg_hash: str, info: VideoInfo | None) -> ClipRecord:
    rec = ClipRecord(
        clip_id=ids.short_hash(source_id, "source", cfg_hash),
        source=source,
        source_id=source_id,
        work_unit=ids.unit_id(source_id, 0),
        work_unit_rows=1,
        source_units=1,
        config_hash=cfg_hash,
        kvid_version=KVID_VERSION,
    )
    if info is not None:
        _fill_source_fields(rec, info)
        rec.duration_s = info.duration_s
    return rec


def _fill_source_fields(rec: ClipRecord, info: VideoInfo) -> None:
    rec.src_fps = info.fps
    rec.src_vfr = info.vfr
    rec.src_width = info.width
    rec.src_height = info.height
    rec.src_duration_s = info.duration_s
    rec.src_rotation = info.rotation
    rec.codec = info.codec


def plan_source(
    source: str, params: CurateParams, done_units: frozenset[str] | set[str] = frozenset()
) -> tuple[list[WorkUnit], list[ClipRecord]]:
    """Probe a source and split it into units of work, or reject it whole.

    Returns (units still to do, reject records). Units in ``done_units`` are left out.
    """
    cfg_hash = params.config_hash()
    name = source_name(source)
    source_id = "path-" + ids.short_hash(name)  # the id of a source that cannot be read
    reason: str | None = None
    message = ""
    try:
        with staged(source, params.input_cache) as local:
            if os.path.isfile(local):  # never fingerprint a FIFO or device: it can block forever
                source_id = ids.source_id(name, local)
            info = probe(local, timeout=params.probe_timeout_s)
    except ProbeError as e:
        reason, message = e.reason, e.message
    except FileNotFoundError as e:
        reason, message = schema.REASON_MISSING, str(e)
    except OSError as e:  # e.g. permissions, an unknown URI scheme, a storage error
        reason, message = schema.REASON_UNREADABLE, str(e)
    if reason:
        return [], [_source_record(source, source_id, cfg_hash, None).reject(schema.STAGE_PROBE, reason, message)]
    rejection = check_source(info, params.filters)
    if rejection:
        rec = _source_record(source, source_id, cfg_hash, info)
        return [], [rec.reject(rejection.stage, rejection.reason, rejection.message)]

    chunk_frames = int(round(params.chunk_s * info.fps)) if params.chunk_s > 0 else 0
    if chunk_frames <= 0 or info.num_frames <= chunk_frames * 1.5:
        bounds: list[tuple[int, int | None]] = [(0, None)]
    else:
        starts = list(range(0, info.num_frames, chunk_frames))
        if info.num_frames - starts[-1] < chunk_frames // 2:
            starts.pop()  # fold a short tail into the previous chunk
        ends: list[int | None] = [*starts[1:], None]
        bounds = list(zip(starts, ends))
    units = [
        WorkUnit(source, source_id, info, k, len(bounds), first, end)
        for k, (first, end) in enumerate(bounds)
    ]
    return [u for u in units if u.unit_id not in done_units], []


def _apply_rejection(rec: ClipRecord, rejection: Rejection | None) -> ClipRecord:
    return rec.reject(rejection.stage, rejection.reason, rejection.message) if rejection else rec


def analyze_work_unit(unit: WorkUnit, params: CurateParams, threads: int = 1) -> list[ClipRecord]:
    """Scene records for one unit: pending clips (status ok, not yet transcoded) and rejects.
    Every record carries ``work_unit_rows`` = the number of records returned."""
    cfg_hash = params.config_hash()
    info = unit.info

    def base(start: int, end: int, index: int | None) -> ClipRecord:
        rec = ClipRecord(
            clip_id=ids.clip_id(unit.source_id, start, end, cfg_hash),
            source=unit.source,
            source_id=unit.source_id,
            work_unit=unit.unit_id,
            source_units=unit.num_chunks,
            scene_index=index,
            start_frame=start,
            end_frame=end,
            config_hash=cfg_hash,
            kvid_version=KVID_VERSION,
        )
        _fill_source_fields(rec, info)
        return rec

    try:
        with staged(unit.source, params.input_cache) as local:
            info = dataclasses.replace(info, path=local)
            clock = FrameClock(info, frame_times(info.path) if info.vfr else None)
            features = [SignatureFeature(info.fps, params.signature, (info.width, info.height))] if params.signature else []
            result = analyze_unit(info, unit.first_frame, unit.end_frame, params.analysis, clock, features,
                                  threads=threads, min_duration_s=params.filters.min_duration_s)
    except (AnalysisError, FFmpegError, OSError) as e:
        reason = getattr(e, "reason", schema.REASON_DECODE_ERROR)
        if isinstance(e, FFmpegError) and e.timed_out:
            reason = schema.REASON_TIMEOUT
        end = unit.end_frame if unit.end_frame is not None else info.num_frames
        rec = base(unit.first_frame, end, None)
        rec.duration_s = info.duration_s
        records = [rec.reject(schema.STAGE_SCENES, reason, getattr(e, "message", str(e)))]
    else:
        records = []
        for i, sc in enumerate(result.scenes):
            rec = base(sc.start_frame, sc.end_frame, i)
            rec.source_start_s = sc.start_s
            rec.source_end_s = sc.end_s
            rec.duration_s = sc.duration_s
            rec.crop_x, rec.crop_y, rec.crop_w, rec.crop_h = sc.crop.x, sc.crop.y, sc.crop.w, sc.crop.h
            stats = dict(sc.stats)
            rec.signature = signature_bytes(stats.pop("signature", None))  # its own column, not a statistic
            w, h = output_size(sc.crop.w, sc.crop.h, info.sample_aspect, params.transcode.max_short_side)
            rec.width, rec.height = w, h
            rec.aspect_ratio = w / h
            rec.fps = params.transcode.fps
            rec.num_frames = output_frames(sc.duration_s, params.transcode.fps)
            rec.scene_stats = stats
            if result.decode_errors and params.reject_decode_errors:
                rec.reject(
                    schema.STAGE_SCENES,
                    schema.REASON_DECODE_ERROR,
                    "decoder errors in this part of the source: " + result.decode_errors,
                )
            elif sc.transition:
                rec.reject(schema.STAGE_SCENES, schema.REASON_TRANSITION,
                           f"gradual transition, frames {sc.start_frame}-{sc.end_frame} (TransNetV2)")
            else:
                # Cheapest first: length and size, then the analysis statistics; the costly
                # (deferred) measurements run only for scenes still kept.
                # Sizes are judged on the picture as shown: an anamorphic source's pixels are not square.
                shown_w = max(1, round(sc.crop.w * info.sample_aspect))
                _apply_rejection(rec, check_scene(sc.duration_s, shown_w, sc.crop.h, params.filters)
                                 or check_stats(rec.scene_stats, params.analysis.scene_filters, deferred=False))
                if rec.ok and result.deferred:
                    crop = (sc.crop.x, sc.crop.y, sc.crop.w, sc.crop.h)
                    for feature in result.deferred.values():
                        rec.scene_stats.update(feature.scene_stats(sc.start_frame, sc.end_frame, crop))
                    _apply_rejection(rec, check_stats(rec.scene_stats, params.analysis.scene_filters, deferred=True))
            records.append(rec)
        missing = result.expected_frames - result.frames_decoded
        if missing > max(2, 0.02 * result.expected_frames):
            # The stream ends early (truncated file): the promised rest becomes a reject row.
            first = result.first_frame + result.frames_decoded
            rec = base(first, result.first_frame + result.expected_frames, None)
            rec.duration_s = missing / info.fps
            records.append(rec.reject(schema.STAGE_SCENES, schema.REASON_TRUNCATED,
                                      f"stream ends after {result.frames_decoded} of {result.expected_frames} frames"))
    for rec in records:
        rec.work_unit_rows = len(records)
    return records


def encode_groups(records: list[ClipRecord], params: CurateParams) -> list[list[ClipRecord]]:
    """The kept scenes of a unit, in time order, in groups that are each encoded by one ffmpeg
    from one decode. A group ends where the next kept scene is more than ``encode_gap_s`` away
    (seeking there is cheaper than decoding the gap) or when it holds ``encode_group_s`` of
    video (the groups of a long source are encoded in parallel)."""
    groups: list[list[ClipRecord]] = []
    for rec in sorted((r for r in records if r.ok), key=lambda r: r.start_frame or 0):
        assert rec.source_start_s is not None and rec.source_end_s is not None
        if groups:
            last = groups[-1]
            gap = rec.source_start_s - (last[-1].source_end_s or 0.0)
            held = sum((r.duration_s or 0.0) for r in last)
            if gap <= params.encode_gap_s and held < params.encode_group_s:
                last.append(rec)
                continue
        groups.append([rec])
    return groups


def _cut(rec: ClipRecord) -> SceneCut:
    # A kept scene from the analysis always has its crop and times.
    assert rec.crop_x is not None and rec.crop_y is not None and rec.crop_w is not None and rec.crop_h is not None
    assert rec.source_start_s is not None and rec.source_end_s is not None
    return SceneCut(rec.source_start_s, rec.source_end_s, Crop(rec.crop_x, rec.crop_y, rec.crop_w, rec.crop_h))


def _scratch_full(e: Exception, params: CurateParams) -> atomic.OutputFull | None:
    """The error to stop the run with when ``e`` is a full scratch disk (not the scene's fault:
    a reject would lose the clip for good)."""
    if atomic.is_disk_full(e) or "No space left on device" in getattr(e, "stderr", ""):
        return atomic.OutputFull(
            28, f"no space left in the scratch folder ({params.tmp_dir or tempfile.gettempdir()}) while encoding: "
            "free space there or pass --tmp-dir, then re-run the same command to resume")
    return None


class FrameTap(Protocol):
    """Work done on each clip's own frames from its encode's decode, so nothing decodes the clip
    again (motion scores with a CPU flow backend: ``motion.MotionStage``)."""

    def tap_short_side(self) -> int:
        """The short side, in pixels, of the frames it wants (gray, at the clip's frame rate)."""
        ...

    def apply(self, row: Row, frames: np.ndarray) -> Row:
        """``row`` (a kept clip) with what the frames ``(T, H, W)`` tell, or rejected with why."""
        ...


def transcode_group(group: list[ClipRecord], info: VideoInfo, params: CurateParams, threads: int = 1,
                    tap_short_side: int | None = None) -> list[ClipFile | None]:
    """Encode the kept scenes of one group from one decode; fills their output fields. When
    the shared encode fails, each scene is tried on its own, so one bad stretch of the source
    costs only its own scenes: those become rejects (their entry None)."""
    def encode(recs: list[ClipRecord]) -> list[ClipFile]:
        with staged(recs[0].source, params.input_cache) as local:
            return encode_scenes(dataclasses.replace(info, path=local), [_cut(r) for r in recs], params.transcode,
                                 params.tmp_dir, threads, tap_short_side)

    try:
        clips: list[ClipFile | Exception] = list(encode(group))
    except (FFmpegError, OSError) as e:
        if (full := _scratch_full(e, params)) is not None:
            raise full from e
        if len(group) == 1:
            clips = [e]
        else:
            clips = []
            for rec in group:
                try:
                    clips += encode([rec])
                except (FFmpegError, OSError) as e1:
                    if (full := _scratch_full(e1, params)) is not None:
                        raise full from e1
                    clips.append(e1)
    out: list[ClipFile | None] = []
    for rec, clip in zip(group, clips):
        if isinstance(clip, Exception):
            reason = schema.REASON_TIMEOUT if getattr(clip, "timed_out", False) else schema.REASON_TRANSCODE_FAILED
            rec.reject(schema.STAGE_TRANSCODE, reason, str(clip))
            out.append(None)
            continue
        rec.width, rec.height = clip.width, clip.height
        rec.aspect_ratio = clip.width / clip.height
        rec.num_frames = clip.num_frames
        rec.fps = clip.fps
        out.append(clip)
    return out


# --- the curate stages (see curate/stage.py): what the pipeline runs ----------------------

# What a task holds is what its tools use: the encode's ffmpeg decodes and encodes with one
# thread per CPU it holds, so tasks side by side never oversubscribe the cores Ray gives them
# (x264 spends the same CPU seconds on one thread as on several, without waiting for them).
TRANSCODE_CPUS = 1
# The analysis runs two processes in a pipe: ffmpeg decoding (one thread) and Python measuring
# the frames it sends (scene cuts, statistics, signatures, OCR).
ANALYZE_DECODE_THREADS = 1
ANALYZE_CPUS = 1
PLAN_MEMORY = 64 * 2**20
ANALYZE_MEMORY = 256 * 2**20  # one decode: small BGR frames, luma samples, per-frame statistics
TRANSNET_MEMORY = 384 * 2**20  # added to an analysis that runs TransNetV2: 48x27 copies, ~250 MB NumPy peak
TRANSCODE_MEMORY = 768 * 2**20  # one decode + one x264 encode, up to 1080p


class _CurateStage(Stage):
    """A stateless curate stage: each row maps to zero or more rows (``one``)."""

    def __init__(self, params: CurateParams):
        self.params = params

    def process(self, rows: list[Row]) -> list[Row]:
        return [out for row in rows for out in self.one(row)]

    def one(self, row: Row) -> list[Row]:
        raise NotImplementedError


class PlanStage(_CurateStage):
    """``{"todo": {"source", "done_units"}}`` -> one row per unit of work still to do
    (``{"unit": WorkUnit}``), or the source's reject row."""

    name = schema.STAGE_PROBE

    def placement(self, cluster: Cluster) -> Placement:
        return Placement(Resources(cpus=0.5, memory_bytes=PLAN_MEMORY), workers=self.params.workers)

    def one(self, row: Row) -> list[Row]:
        todo = row["todo"]
        units, rejects = plan_source(todo["source"], self.params, frozenset(todo["done_units"]))
        return [rec.to_row() for rec in rejects] + [{"unit": unit} for unit in units]


class AnalyzeStage(_CurateStage):
    """A unit -> its reject rows, and one row per encode group of its kept scenes
    (``{"unit": WorkUnit, "scenes": [scene rows]}``, see ``encode_groups``)."""

    name = schema.STAGE_SCENES

    def placement(self, cluster: Cluster) -> Placement:
        # TransNetV2: the network and 48x27 copies of every frame.
        memory = ANALYZE_MEMORY + (TRANSNET_MEMORY if self.params.analysis.uses_transnet else 0)
        return Placement(Resources(cpus=ANALYZE_CPUS, memory_bytes=memory), workers=self.params.workers)

    def one(self, row: Row) -> list[Row]:
        unit = row.get("unit")
        if unit is None:
            return [row]  # a reject from planning: pass it on
        records = analyze_work_unit(unit, self.params, ANALYZE_DECODE_THREADS)
        groups = [{"unit": unit, SCENES: [rec.to_row() for rec in g]} for g in encode_groups(records, self.params)]
        return [rec.to_row() for rec in records if not rec.ok] + groups


class TranscodeStage(_CurateStage):
    """An encode group -> one row per scene with its clip (``"mp4"``): the only encode, for
    scenes every filter kept, from one decode of the group's stretch of the source. With a
    ``frame_tap``, each clip's frames from that decode go through it too."""

    name = schema.STAGE_TRANSCODE

    def __init__(self, params: CurateParams, frame_tap: FrameTap | None = None):
        super().__init__(params)
        self.frame_tap = frame_tap

    def placement(self, cluster: Cluster) -> Placement:
        return Placement(Resources(cpus=TRANSCODE_CPUS, memory_bytes=TRANSCODE_MEMORY), workers=self.params.workers)

    def one(self, row: Row) -> list[Row]:
        unit = row.get("unit")
        if unit is None:
            return [row]  # a reject: pass it on
        group = [ClipRecord.from_row(r) for r in row[SCENES]]
        tap = self.frame_tap
        clips = transcode_group(group, unit.info, self.params, TRANSCODE_CPUS,
                                tap.tap_short_side() if tap else None)
        out = []
        for rec, clip in zip(group, clips):
            scene = {**rec.to_row(), "mp4": clip.data if clip else None}
            if tap is not None and clip is not None and clip.tapped is not None:
                scene = tap.apply(scene, clip.tapped)
            out.append(scene)
        return out
