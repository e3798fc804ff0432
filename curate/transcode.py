"""Cut the kept scenes out of a source in a single ffmpeg call, from one decode: frame-exact,
re-timed to the output frame rate (24 fps by default), black borders cropped, short side at
most 1080 px (never upscaled), square pixels, H.264 yuv420p mp4."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

import cv2
import numpy as np

from curate.borders import Crop
from curate.ffmpeg import PIPE_OUTPUT, FFmpegError, run_ffmpeg_to_pipes, safe_input
from curate.frames import scaled_size
from curate.mp4 import Mp4Error, video_track
from curate.probe import VideoInfo
from curate.settings import BYTES, setting


@dataclass(frozen=True)
class TranscodeParams:
    """The encode of a kept scene: the clips' frame rate, size and codec."""

    fps: float = setting(24.0, "output frame rate", decides=BYTES, gt=0)
    max_short_side: int = setting(1080, "scale down so the short side is at most this (never up)", decides=BYTES, ge=16)
    codec: str = setting("libx264", "ffmpeg video encoder", decides=BYTES)
    crf: int = setting(18, "encoder quality (lower is better)", decides=BYTES, ge=0, le=51)
    preset: str = setting("fast", "encoder speed preset", decides=BYTES)
    # x264 puts one every 250 frames by default: a loader reaching into the middle of a 10 s
    # clip would decode it from its start (bench/loader.py: 3.06x a naive loader with a
    # keyframe every 2 s, 2.11x at 250 frames).
    keyframe_s: float = setting(2.0, "a keyframe at least every this many seconds of clip (random access for loaders)",
                                decides=BYTES, gt=0)
    # Not settings.
    timeout_s: float = 60.0  # plus timeout_per_s per second of clip
    timeout_per_s: float = 10.0


@dataclass(frozen=True)
class ClipFile:
    data: bytes
    width: int
    height: int
    num_frames: int
    fps: float
    # The clip's frames before the encode, gray, short side ``tap_short_side`` (see encode_scenes).
    tapped: np.ndarray | None = None

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps


def _even(x: float) -> int:
    # Round down: an odd side loses one pixel rather than being stretched by one.
    return max(2, int(x + 1e-6) // 2 * 2)


def output_size(crop_w: int, crop_h: int, sample_aspect: float, max_short_side: int) -> tuple[int, int]:
    """Square-pixel output size: short side capped (never upscaled), both sides even.

    ``crop_w`` x ``crop_h`` are pixels of the upright source frame and ``sample_aspect`` is
    that frame's pixel aspect (``VideoInfo.sample_aspect``, already turned with a rotation),
    so the width is stretched to the display aspect before scaling; the ffmpeg scale to this
    exact size followed by ``setsar=1`` then gives square pixels at the display aspect."""
    w, h = crop_w * sample_aspect, float(crop_h)
    short = min(w, h)
    scale = min(1.0, max_short_side / short)
    return _even(w * scale), _even(h * scale)


def output_frames(duration_s: float, fps: float) -> int:
    return max(1, int(round(duration_s * fps)))


@dataclass(frozen=True)
class SceneCut:
    """A span of the source to encode: the frames shown at ``start_s <= t < end_s`` (seconds
    from the first frame), cropped to ``crop`` (pixels of the upright source frame)."""

    start_s: float
    end_s: float
    crop: Crop


def _cut_chain(info: VideoInfo, cut: SceneCut, origin_s: float, params: TranscodeParams, out: str,
               out_size: tuple[int, int], tap: tuple[str, tuple[int, int]] | None) -> str:
    """The filters that turn the decoded stream (time 0 at ``origin_s``) into one clip of
    ``out_size``, ending in the label ``out``; with ``tap`` (label, size), also its frames at that size."""
    out_w, out_h = out_size
    # A quarter frame before each frame that starts or ends the cut: float rounding can never
    # move a frame across a boundary. Timestamps restart at the cut's first frame, so the fps
    # filter samples the cut from its start, as if it were a file of its own.
    margin = 0.25 / info.fps
    chain = [f"trim=start={max(0.0, cut.start_s - origin_s - margin):.6f}:end={cut.end_s - origin_s - margin:.6f}",
             "setpts=PTS-STARTPTS"]
    if not cut.crop.is_full(info.width, info.height):
        chain.append(f"crop={cut.crop.w}:{cut.crop.h}:{cut.crop.x}:{cut.crop.y}")
    chain += [f"fps={params.fps}", f"scale={out_w}:{out_h}:flags=lanczos", "setsar=1"]
    if tap is None:
        return ",".join(chain) + f"[{out}]"
    label, (tap_w, tap_h) = tap
    # The interpolation a decode of the encoded clip at that size would use (curate.frames).
    flags = "area" if tap_w * tap_h < out_w * out_h else "bicubic"
    return ",".join(chain) + f",split=2[{out}][{label}in];[{label}in]scale={tap_w}:{tap_h}:flags={flags}[{label}]"


def encode_scenes(
    info: VideoInfo,
    cuts: list[SceneCut],
    params: TranscodeParams,
    tmp_dir: str | None = None,
    threads: int = 0,
    tap_short_side: int | None = None,
) -> list[ClipFile]:
    """Encode each cut of the source into its own clip from ONE decode: ffmpeg seeks once, to
    the first cut (cuts in time order, not overlapping), decodes through the last, and its
    filter graph splits the picture and trims, crops, re-times and scales each cut into its own
    output. ``threads``: the decoder's and each encoder's threads (0: ffmpeg's choice); only
    one encoder is busy at a time, the cuts being consecutive. ``tap_short_side``: each clip
    also comes with its frames, gray, scaled to that short side from the same decode (what
    scoring motion on the clip would decode it again for). Raises FFmpegError (the caller may
    retry the cuts one by one: one bad stretch of the source must not cost the others)."""
    if not cuts:
        return []
    n = len(cuts)
    # Seek a quarter frame early so float rounding can never drop the first frame.
    seek = max(0.0, cuts[0].start_s - 0.25 / info.fps)
    sizes = [output_size(c.crop.w, c.crop.h, info.sample_aspect, params.max_short_side) for c in cuts]
    # The tapped frames' size, scaled as a decode of the encoded clip would be (curate.frames).
    tap_sizes = [scaled_size(w, h, tap_short_side) for w, h in sizes] if tap_short_side else None
    sources = ["[0:v]"] if n == 1 else [f"[in{i}]" for i in range(n)]
    graph = ([] if n == 1 else ["[0:v]split=" + str(n) + "".join(sources)]) + [
        src + _cut_chain(info, c, seek, params, f"out{i}", sizes[i], (f"tap{i}", tap_sizes[i]) if tap_sizes else None)
        for i, (src, c) in enumerate(zip(sources, cuts))]
    args = ["-threads", str(threads), "-filter_complex_threads", str(max(threads, 1))]
    if seek > 0:
        args += ["-ss", f"{seek:.6f}"]
    args += ["-t", f"{cuts[-1].end_s - seek + 1.0 / info.fps:.6f}", "-i", safe_input(info.path),
             "-filter_complex", ";".join(graph)]
    frames = [output_frames(c.end_s - c.start_s, params.fps) for c in cuts]
    tapped: list[list[np.ndarray]] = [[] for _ in cuts]
    readers: list[Callable[[IO[bytes]], None]] = []
    with tempfile.TemporaryDirectory(prefix="kvid-clips-", dir=tmp_dir) as folder:
        paths = [os.path.join(folder, f"{i}.mp4") for i in range(n)]
        for i, path in enumerate(paths):
            args += [
                "-map", f"[out{i}]",
                "-frames:v", str(frames[i]),
                "-an", "-sn", "-dn",
                "-c:v", params.codec, "-threads", str(threads),
                "-g", str(max(1, round(params.keyframe_s * params.fps))),
                "-preset", params.preset,
                "-crf", str(params.crf),
                "-pix_fmt", "yuv420p",
                "-movflags", "+faststart",
                "-map_metadata", "-1",
                "-f", "mp4", "-y", path,
            ]
            if tap_sizes:
                args += ["-map", f"[tap{i}]", "-frames:v", str(frames[i]), "-f", "rawvideo", "-pix_fmt", "rgb24",
                         PIPE_OUTPUT.format(len(readers))]
                readers.append(_gray_frames_into(tapped[i], tap_sizes[i]))
        seconds = sum(c.end_s - c.start_s for c in cuts)
        run_ffmpeg_to_pipes(args, params.timeout_s + params.timeout_per_s * seconds, readers)
        clips = []
        for i, path in enumerate(paths):
            with open(path, "rb") as f:
                data = f.read()
            try:
                track = video_track(data)
            except Mp4Error as e:
                raise FFmpegError(f"transcode wrote no readable clip: {e}") from e
            if track.frames <= 0:
                raise FFmpegError("transcode produced no frames")
            clips.append(ClipFile(data, track.width, track.height, track.frames, params.fps,
                                  np.stack(tapped[i]) if tapped[i] else None))
    return clips


def _gray_frames_into(frames: list[np.ndarray], size: tuple[int, int]) -> Callable[[IO[bytes]], None]:
    """A pipe reader that turns each RGB frame into gray as it arrives (a third of the memory;
    the same gray an optical-flow backend makes of it)."""
    w, h = size

    def read(pipe: IO[bytes]) -> None:
        while len(buf := pipe.read(w * h * 3)) == w * h * 3:
            frames.append(cv2.cvtColor(np.frombuffer(buf, np.uint8).reshape(h, w, 3), cv2.COLOR_RGB2GRAY))

    return read
