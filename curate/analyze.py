"""One decode pass per unit of work: scene cuts, transitions, black borders and the
per-scene statistics together.

ffmpeg decodes the source once and splits it in its filter graph into
- a small BGR stream of every frame (scene detection, TransNetV2's 48x27 copies, the
  frame features of curate/scene_filters.py), on stdout, and
- full-resolution luma frames, a few per second (border detection, burnt-in text), on a
  second pipe.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curate import schema
from curate.borders import BorderParams, Crop, FrameProfile, detect_crop, frame_profile
from curate.ffmpeg import FFMPEG, ToolPipe, ffprobe_json, safe_input
from curate.probe import VideoInfo
from curate.scene_features import FrameFeature
from curate.scene_filters import SceneFilterParams
from curate.scenes import SceneDetector, segments
from curate.settings import CLIPS, group, setting
from curate.transitions import TransitionParams, TransNetFrames


class AnalysisError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class AnalysisParams:
    """The analysis decode: scene cuts, transitions, borders and the per-scene filters."""

    scene_detector: str = setting(
        "content", "content or adaptive (PySceneDetect), or transnetv2 (neural; also finds gradual transitions)",
        choices=("content", "adaptive", "transnetv2"), decides=CLIPS)
    scene_threshold: float | None = setting(None, "detector threshold (default: content 27, adaptive 3.0)",
                                            decides=CLIPS, gt=0)
    min_scene_len_s: float = setting(0.5, "minimum scene length between cuts, seconds", decides=CLIPS, ge=0)
    analysis_width: int = setting(256, "frame width for scene detection (downscaled decode)", decides=CLIPS, ge=32)
    transition: TransitionParams = group(TransitionParams, "transition_", "transitions")
    border: BorderParams = group(BorderParams, "border_", "borders")
    scene_filters: SceneFilterParams = group(SceneFilterParams, title="per-scene filters")
    decode_timeout_s: float = setting(120.0, "decode timeout per unit, plus 2 s per second of video", gt=0)
    # Not settings.
    timeout_per_s: float = 2.0
    min_decoded_fraction: float = 0.9  # a decode that fails later than this keeps its scenes

    @property
    def uses_transnet(self) -> bool:
        return self.scene_detector == "transnetv2" or self.transition.enabled


@dataclass
class SceneInfo:
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    crop: Crop
    transition: bool = False  # a gradual transition's frames, not a scene: never a clip
    stats: dict[str, Any] = field(default_factory=dict)  # the frame features' statistics

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class UnitAnalysis:
    scenes: list[SceneInfo]
    first_frame: int
    frames_decoded: int
    expected_frames: int  # what the container promised for this unit
    decode_errors: str = ""  # the decoder's error log, empty for a clean decode
    # Features measured only on request, by scene_filters name (costly, e.g. OCR: only for
    # scenes every cheaper filter kept): ``feature.scene_stats(start, end, crop)``.
    deferred: dict[str, Any] = field(default_factory=dict)


def frame_times(path: str, timeout: float = 120.0) -> np.ndarray:
    """Presentation times of every video frame, relative to the first (from packet
    timestamps: a demux, no decode). Used for variable frame rate sources."""
    data = ffprobe_json(path, ["-select_streams", "v:0", "-show_entries", "packet=pts_time"], timeout=timeout)
    pts = []
    for p in data.get("packets", []):
        try:
            pts.append(float(p["pts_time"]))
        except (KeyError, TypeError, ValueError):
            continue
    times = np.sort(np.asarray(pts, dtype=np.float64))
    return times - times[0] if times.size else times


class FrameClock:
    """Maps source frame indices to seconds from the stream's first frame."""

    def __init__(self, info: VideoInfo, times: np.ndarray | None = None):
        self.fps = info.fps
        self.times = times if times is not None and times.size else None

    def time(self, frame: int) -> float:
        if self.times is None:
            return frame / self.fps
        if frame < len(self.times):
            return float(self.times[frame])
        return float(self.times[-1]) + (frame - len(self.times) + 1) / self.fps


def _last_lines(text: str, n: int = 4, limit: int = 400) -> str:
    return "\n".join(text.strip().splitlines()[-n:])[-limit:]


def _analysis_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    if width <= target_width:
        w, h = width, height
    else:
        w, h = target_width, int(round(height * target_width / width))
    return max(2, w - w % 2), max(2, h - h % 2)


def _worth_verifying(cuts: list[int], first: int, last: int, min_frames: int, filters: Sequence[Any]) -> np.ndarray:
    """Per frame of the unit: whether it lies between two cuts where some stretch could still
    become a kept clip: long enough, and passing every cheap filter that can tell
    (``could_pass``: some stretch of at least ``min_frames`` frames with a picture, not
    frozen). A transition carved out of a stretch that fails them only splits one reject into
    smaller ones, so the network is not asked there."""
    worth = np.zeros(last - first, bool)
    bounds = [first, *[c for c in sorted(set(cuts)) if first < c < last], last]
    for a, b in zip(bounds, bounds[1:]):
        if b - a >= min_frames and all(f.could_pass(a, b, min_frames) for f in filters if hasattr(f, "could_pass")):
            worth[a - first : b - first] = True
    return worth


def analyze_unit(
    info: VideoInfo,
    first_frame: int,
    end_frame: int | None,
    params: AnalysisParams,
    clock: FrameClock,
    features: Sequence[FrameFeature] = (),
    threads: int = 0,
    min_duration_s: float | None = None,
) -> UnitAnalysis:
    """Decode frames [first_frame, end_frame) of ``info.path`` once; find scenes and crops.

    ``end_frame`` None reads to the end of the stream; ``threads``: ffmpeg's decode threads
    (0: ffmpeg's choice). ``min_duration_s``: the shortest scene the filters keep; given, the
    transition cascade leaves alone the stretches between cuts that no cutting can turn into a
    kept clip (module doc of curate/transitions.py). Raises AnalysisError.
    """
    aw, ah = _analysis_size(info.width, info.height, params.analysis_width)
    every = max(1, int(round(info.fps / params.border.samples_per_s)))
    start_s = clock.time(first_frame)
    duration_s = None if end_frame is None else clock.time(end_frame) - start_s
    # Packet timestamps (variable frame rate sources) count frames exactly; else the container's.
    total = len(clock.times) if clock.times is not None else info.num_frames
    expected = (end_frame if end_frame is not None else total) - first_frame

    built = [(f, f.feature(params.scene_filters.of(f))) for f in params.scene_filters.enabled()]
    # ``features``: measurements that are not filters (the near-duplicate signature).
    small_features = [feat for f, feat in built if f.frames == "analysis"] + list(features)
    full_features = [feat for f, feat in built if f.frames == "full"]
    measured_now = [feat for f, feat in built if not f.deferred] + list(features)
    deferred = {f.name: feat for f, feat in built if f.deferred}
    transnet = None
    if params.uses_transnet:
        # As the detector, TransNetV2 also finds the hard cuts: it reads every frame.
        full = params.scene_detector == "transnetv2"
        transnet = TransNetFrames(dataclasses.replace(params.transition, cascade=False) if full else params.transition)
    if transnet is not None:
        small_features.append(transnet)
        measured_now.append(transnet)
    need_full = params.border.enabled or bool(full_features)

    graph = f"[0:v]split=2[a][b];[a]scale={aw}:{ah}:flags=area,format=bgr24[lo]"
    if need_full:
        # The explicit scale converts to gray after the split. Without it, when the input is
        # seeked or time-limited (every chunk of a long source), ffmpeg 5.1 negotiated gray for
        # both branches and converted before the split: scene detection saw colourless frames
        # and missed cuts between scenes of similar brightness.
        graph += f";[b]select='not(mod(n\\,{every}))',scale=flags=neighbor,format=gray[hi]"
    else:
        graph += ";[b]nullsink"
    hi_read, hi_write = os.pipe()
    args = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-threads", str(threads)]
    if first_frame > 0:
        args += ["-ss", f"{max(0.0, start_s - 0.25 / info.fps):.6f}"]
    if duration_s is not None:
        args += ["-t", f"{duration_s:.6f}"]
    args += ["-i", safe_input(info.path), "-filter_complex", graph]
    args += ["-map", "[lo]", "-fps_mode", "passthrough", "-f", "rawvideo", "pipe:1"]
    if need_full:
        args += ["-map", "[hi]", "-fps_mode", "passthrough", "-f", "rawvideo", f"pipe:{hi_write}"]

    timeout = params.decode_timeout_s + params.timeout_per_s * (duration_s or info.duration_s)
    profiles: list[FrameProfile] = []

    def _read_hi() -> None:
        size = info.width * info.height
        with os.fdopen(hi_read, "rb") as f:
            j = 0
            while True:
                buf = f.read(size)
                if len(buf) < size:
                    return
                luma = np.frombuffer(buf, np.uint8).reshape(info.height, info.width)
                if params.border.enabled:
                    profiles.append(frame_profile(first_frame + j * every, luma, params.border))
                for feature in full_features:
                    feature.push(first_frame + j * every, luma)
                j += 1

    detector = None
    if params.scene_detector != "transnetv2":
        detector = SceneDetector(
            info.fps, params.scene_detector, params.scene_threshold, params.min_scene_len_s, first_frame=first_frame
        )
    frame_bytes = aw * ah * 3
    n = 0
    with ToolPipe(args, timeout, pass_fds=(hi_write,)) as pipe:
        os.close(hi_write)
        hi_reader = threading.Thread(target=_read_hi, daemon=True)
        if need_full:
            hi_reader.start()
        else:
            os.close(hi_read)
        while True:
            buf = pipe.stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                break
            frame = np.frombuffer(buf, np.uint8).reshape(ah, aw, 3)
            if detector is not None:
                detector.push(frame)
            for feature in small_features:
                feature.push(first_frame + n, frame)
            n += 1
        code, err = pipe.finish()
        if need_full:
            hi_reader.join()

    if pipe.timed_out.is_set():
        raise AnalysisError(schema.REASON_TIMEOUT, f"decode did not finish within {timeout:.0f} s")
    if n == 0:
        reason = schema.REASON_DECODE_ERROR if (code or err) else schema.REASON_NO_FRAMES
        raise AnalysisError(reason, f"no frames decoded: {_last_lines(err) or 'empty stream'}")
    if code != 0 and n < params.min_decoded_fraction * max(expected, 1):
        raise AnalysisError(
            schema.REASON_DECODE_ERROR, f"decode failed after {n} of ~{expected} frames: {_last_lines(err)}"
        )

    last = first_frame + n
    cuts = detector.cuts() if detector is not None else []
    gradual: list[tuple[int, int]] = []
    if transnet is not None:
        worth = None
        if transnet.params.cascade and detector is not None and min_duration_s is not None:
            worth = _worth_verifying(cuts, first_frame, last, max(1, int(round(min_duration_s * info.fps))),
                                     [feat for f, feat in built if not f.deferred])
        net_cuts, gradual = transnet.run(worth)
        if detector is None:
            cuts = net_cuts
    scenes = []
    for sc in segments(cuts, gradual, first_frame, last):
        own = [p for p in profiles if sc.start_frame <= p.frame_index < sc.end_frame]
        whole = Crop(0, 0, info.width, info.height)
        crop = detect_crop(own, info.width, info.height, params.border) if params.border.enabled else whole
        stats: dict[str, Any] = {}
        box = (crop.x, crop.y, crop.w, crop.h)
        for feature in measured_now:
            if getattr(feature, "cropped", False):  # measures the picture inside the crop (the signature)
                stats.update(feature.scene_stats(sc.start_frame, sc.end_frame, box))
            else:
                stats.update(feature.scene_stats(sc.start_frame, sc.end_frame))
        scenes.append(
            SceneInfo(sc.start_frame, sc.end_frame, clock.time(sc.start_frame), clock.time(sc.end_frame), crop,
                      transition=sc.transition, stats=stats)
        )
    return UnitAnalysis(
        scenes=scenes,
        first_frame=first_frame,
        frames_decoded=n,
        expected_frames=expected,
        decode_errors=_last_lines(err),
        deferred=deferred,
    )
