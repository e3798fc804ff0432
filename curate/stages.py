"""The curate stages as plain functions: plan a source, analyse a unit, transcode a scene.

No Ray here: ``pipelines/`` runs these in parallel; tests and notebooks call them directly.
Every bad input ends as a reject record with a reason; nothing here raises for one file.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import asdict, dataclass, field

from curate import ids, schema, shards
from curate.analyze import AnalysisError, AnalysisParams, FrameClock, analyze_unit, frame_times
from curate.borders import Crop
from curate.dedup import SignatureFeature, SignatureParams, signature_bytes
from curate.ffmpeg import FFmpegError
from curate.filters import FilterParams, Rejection, check_scene, check_source
from curate.probe import ProbeError, VideoInfo, probe
from curate.remote import InputCache, source_name, staged
from curate.scene_filters import check_stats
from curate.schema import ClipRecord
from curate.stage import Resources, Row, Stage
from curate.transcode import TranscodeParams, output_frames, output_size, transcode_scene
from curate.version import KVID_VERSION


@dataclass(frozen=True)
class CurateParams:
    analysis: AnalysisParams = field(default_factory=AnalysisParams)
    filters: FilterParams = field(default_factory=FilterParams)
    transcode: TranscodeParams = field(default_factory=TranscodeParams)
    chunk_s: float = 600.0  # long sources are analysed in chunks of this many seconds
    # A unit whose decode logged errors (corrupt or truncated data) has its scenes rejected:
    # concealed frames look like video but are garbage to train on. False keeps them.
    reject_decode_errors: bool = True
    probe_timeout_s: float = 60.0
    tmp_dir: str | None = None
    input_cache: InputCache = field(default_factory=InputCache)  # staged copies of URI sources
    # The perceptual signature of every scene (near-duplicates); None skips it.
    signature: SignatureParams | None = field(default_factory=SignatureParams)

    def config_hash(self) -> str:
        a = self.analysis
        return ids.config_hash(
            {
                "transcode": self.transcode.settings(),
                "borders": asdict(a.border) if a.borders else None,
                "border_samples_per_s": a.border_samples_per_s if a.borders else None,
                "kvid_major": KVID_VERSION.split(".")[0],
            }
        )


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


def analyze_work_unit(unit: WorkUnit, params: CurateParams) -> list[ClipRecord]:
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
                                  params.filters.min_duration_s)
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


def transcode_record(rec: ClipRecord, info: VideoInfo, params: CurateParams) -> bytes | None:
    """Encode a pending clip; fills its output fields. On failure the record becomes a
    reject and None is returned."""
    if not rec.ok:
        return None
    # A kept scene from the analysis always has its crop and times.
    assert rec.crop_x is not None and rec.crop_y is not None and rec.crop_w is not None and rec.crop_h is not None
    assert rec.source_start_s is not None and rec.source_end_s is not None
    crop = Crop(rec.crop_x, rec.crop_y, rec.crop_w, rec.crop_h)
    try:
        with staged(rec.source, params.input_cache) as local:
            clip = transcode_scene(dataclasses.replace(info, path=local), rec.source_start_s, rec.source_end_s,
                                   crop, params.transcode, params.tmp_dir)
    except (FFmpegError, OSError) as e:
        if shards.is_disk_full(e) or "No space left on device" in getattr(e, "stderr", ""):
            # Not the scene's fault: stop the run (a reject would lose the clip for good).
            raise shards.OutputFull(
                28, f"no space left in the scratch folder ({params.tmp_dir or tempfile.gettempdir()}) while encoding: "
                "free space there or pass --tmp-dir, then re-run the same command to resume") from e
        reason = schema.REASON_TIMEOUT if getattr(e, "timed_out", False) else schema.REASON_TRANSCODE_FAILED
        rec.reject(schema.STAGE_TRANSCODE, reason, str(e))
        return None
    rec.width, rec.height = clip.width, clip.height
    rec.aspect_ratio = clip.width / clip.height
    rec.num_frames = clip.num_frames
    rec.fps = clip.fps
    return clip.data


# --- the curate stages (see curate/stage.py): what the pipeline runs ----------------------

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
    resources = Resources(cpus=0.5, memory_bytes=PLAN_MEMORY)

    def one(self, row: Row) -> list[Row]:
        todo = row["todo"]
        units, rejects = plan_source(todo["source"], self.params, frozenset(todo["done_units"]))
        return [rec.to_row() for rec in rejects] + [{"unit": unit} for unit in units]


class AnalyzeStage(_CurateStage):
    """A unit -> its scene rows: kept scenes carry their unit on to the transcode."""

    name = schema.STAGE_SCENES
    resources = Resources(cpus=1, memory_bytes=ANALYZE_MEMORY)

    def __init__(self, params: CurateParams):
        super().__init__(params)
        if params.analysis.uses_transnet:  # TransNetV2: the network and 48x27 copies of every frame
            self.resources = Resources(cpus=1, memory_bytes=ANALYZE_MEMORY + TRANSNET_MEMORY)

    def one(self, row: Row) -> list[Row]:
        unit = row.get("unit")
        if unit is None:
            return [row]  # a reject from planning: pass it on
        return [{**rec.to_row(), "unit": unit} if rec.ok else rec.to_row() for rec in analyze_work_unit(unit, self.params)]


class TranscodeStage(_CurateStage):
    """A kept scene -> its clip (``"mp4"``): the only encode, for scenes every filter kept."""

    name = schema.STAGE_TRANSCODE
    resources = Resources(cpus=1, memory_bytes=TRANSCODE_MEMORY)

    def one(self, row: Row) -> list[Row]:
        unit = row.pop("unit", None)
        if unit is None:
            return [row]  # a reject: pass it on
        rec = ClipRecord.from_row(row)
        mp4 = transcode_record(rec, unit.info, self.params)
        return [{**rec.to_row(), "mp4": mp4}]
