"""Cut one scene out of its source in a single ffmpeg call: frame-exact start, 24 fps,
black borders cropped, short side at most 1080 px (never upscaled), H.264 yuv420p mp4."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass

from curate.borders import Crop
from curate.ffmpeg import FFmpegError, ffprobe_json, run_ffmpeg, safe_input
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


def transcode_scene(
    info: VideoInfo,
    start_s: float,
    end_s: float,
    crop: Crop,
    params: TranscodeParams,
    tmp_dir: str | None = None,
    threads: int = 0,
) -> ClipFile:
    """Encode [start_s, end_s) of the source (seconds from its first frame) with ``threads``
    ffmpeg threads (0: ffmpeg's choice). Raises FFmpegError."""
    out_w, out_h = output_size(crop.w, crop.h, info.sample_aspect, params.max_short_side)
    n_frames = output_frames(end_s - start_s, params.fps)
    # Seek a quarter frame early so float rounding can never drop the first frame, then
    # restart timestamps at that frame so the fps filter samples the scene from its start.
    seek = max(0.0, start_s - 0.25 / info.fps)
    filters = []
    if not crop.is_full(info.width, info.height):
        filters.append(f"crop={crop.w}:{crop.h}:{crop.x}:{crop.y}")
    filters += [
        "setpts=PTS-STARTPTS",
        f"fps={params.fps}",
        f"scale={out_w}:{out_h}:flags=lanczos",
        "setsar=1",
    ]
    fd, tmp = tempfile.mkstemp(suffix=".mp4", prefix="kvid-clip-", dir=tmp_dir)
    os.close(fd)
    try:
        args = ["-threads", str(threads)]
        if seek > 0:
            args += ["-ss", f"{seek:.6f}"]
        args += [
            "-t", f"{end_s - seek + 1.0 / info.fps:.6f}",
            "-i", safe_input(info.path),
            "-map", "0:v:0",
            "-vf", ",".join(filters),
            "-frames:v", str(n_frames),
            "-an", "-sn", "-dn",
            "-c:v", params.codec,
            "-preset", params.preset,
            "-crf", str(params.crf),
            "-pix_fmt", "yuv420p",
            "-movflags", "+faststart",
            "-map_metadata", "-1",
            "-f", "mp4", "-y", tmp,
        ]
        timeout = params.timeout_s + params.timeout_per_s * (end_s - start_s)
        run_ffmpeg(args, timeout=timeout)
        stream = (
            ffprobe_json(tmp, ["-select_streams", "v:0", "-show_entries", "stream=width,height,nb_frames"]).get("streams") or [{}]
        )[0]
        frames = int(stream.get("nb_frames") or 0)
        if frames <= 0:
            raise FFmpegError("transcode produced no frames")
        with open(tmp, "rb") as f:
            data = f.read()
        return ClipFile(data, int(stream["width"]), int(stream["height"]), frames, params.fps)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
