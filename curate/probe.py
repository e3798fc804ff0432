"""Probe a video file: what is it, and can it be a source at all?

``probe`` never decodes frames; it reads container and stream headers (and, to tell
constant from variable frame rate, the timestamps of the first packets). A file that
cannot be a video source raises ``ProbeError`` with a reject reason from the schema.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from fractions import Fraction

from curate import schema
from curate.ffmpeg import FFmpegError, ffprobe_json

# Container formats that hold a single still image, not a video.
_IMAGE_FORMATS = {
    "image2",
    "png_pipe",
    "jpeg_pipe",
    "webp_pipe",
    "bmp_pipe",
    "tiff_pipe",
    "gif_pipe_still",
    "svg_pipe",
    "pgm_pipe",
    "ppm_pipe",
    "qoi_pipe",
    "j2k_pipe",
    "jpegxl_pipe",
}
_IMAGE_CODECS = {"png", "mjpeg_still", "bmp", "tiff", "webp", "jpegls", "svg", "qoi", "jpegxl"}

# A frame rate is "variable" when packet durations spread more than this fraction around
# their median (ignoring a few outliers at keyframes).
_VFR_TOLERANCE = 0.05
_VFR_SAMPLE_PACKETS = 480  # of all streams: audio packets are interleaved


class ProbeError(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class VideoInfo:
    path: str
    size_bytes: int
    format_name: str
    codec: str
    pix_fmt: str
    width: int  # decoded width after rotation (what ffmpeg's autorotate outputs)
    height: int
    coded_width: int
    coded_height: int
    rotation: int  # degrees, counter-clockwise as ffprobe's display matrix reports
    # Pixel aspect of the upright frame (after rotation): one pixel of ``width`` x ``height``
    # is ``sample_aspect`` times as wide as it is tall; 1.0 for square pixels. A quarter turn
    # swaps it (a 16:11 coded frame shown on its side has 11:16 pixels).
    sample_aspect: float
    fps: float  # average frame rate
    fps_fraction: str
    vfr: bool
    duration_s: float
    start_time_s: float
    num_frames: int  # exact when the container says so, else estimated from duration
    has_audio: bool

    @property
    def display_aspect(self) -> float:
        """Width over height as the picture is shown: upright, pixels made square."""
        return self.width * self.sample_aspect / self.height

    def to_dict(self) -> dict:
        return asdict(self)


def _rate(text: str | None) -> Fraction | None:
    if not text or text in ("0/0", "N/A"):
        return None
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def _sample_aspect(text: str | None) -> Fraction:
    """ffprobe writes the pixel aspect as ``16:11``; ``0:1`` or ``N/A`` means unknown (square)."""
    if not text:
        return Fraction(1)
    try:
        num, _, den = text.replace("/", ":").partition(":")
        value = Fraction(int(num), int(den or 1))
    except (ValueError, ZeroDivisionError):
        return Fraction(1)
    # Guard against nonsense metadata (a 1:1000 pixel would make a needle-thin clip).
    return value if Fraction(1, 10) <= value <= 10 else Fraction(1)


def _float(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _rotation(stream: dict) -> int:
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            return int(round(float(side["rotation"]))) % 360
    rotate = (stream.get("tags") or {}).get("rotate")
    if rotate is not None:
        # The legacy tag is clockwise; the display matrix is counter-clockwise.
        return (-int(rotate)) % 360
    return 0


def _is_vfr(packets: list[dict], stream_index: int) -> bool:
    times = sorted(
        t for t in (_float(p.get("pts_time")) for p in packets if p.get("stream_index") == stream_index) if t is not None
    )
    if len(times) < 8:
        return False
    deltas = sorted(b - a for a, b in zip(times, times[1:]) if b > a)
    if len(deltas) < 6:
        return False
    median = deltas[len(deltas) // 2]
    trimmed = deltas[len(deltas) // 20 : len(deltas) - len(deltas) // 20 or None]
    return (trimmed[-1] - trimmed[0]) > _VFR_TOLERANCE * median * 2


def _count_packets(path: str, timeout: float) -> int:
    try:
        data = ffprobe_json(
            path, ["-select_streams", "v:0", "-count_packets", "-show_entries", "stream=nb_read_packets"], timeout=timeout
        )
        return int((data.get("streams") or [{}])[0].get("nb_read_packets") or 0)
    except (FFmpegError, ValueError):
        return 0


def _looks_like_mp4(path: str) -> bool:
    """An ISO-BMFF file starts with a box such as ftyp: then a missing moov means truncation,
    not a text file that merely has an .mp4 name."""
    with open(path, "rb") as f:
        head = f.read(12)
    return head[4:8] in (b"ftyp", b"mdat", b"free", b"wide", b"skip")


def probe(path: str, timeout: float = 60.0) -> VideoInfo:
    """Read a video's properties. Raises ProbeError with a schema reason."""
    if not os.path.exists(path):
        raise ProbeError(schema.REASON_MISSING, f"file not found: {path}")
    if not os.path.isfile(path):
        # A folder, a FIFO or a device: reading it could block forever.
        raise ProbeError(schema.REASON_NOT_VIDEO, f"not a regular file: {path}")
    size = os.path.getsize(path)
    if size == 0:
        raise ProbeError(schema.REASON_EMPTY_FILE, "file is empty (0 bytes)")
    try:
        # One call: container, streams, and the first packets' timestamps (to tell a
        # variable frame rate); a demux of a few hundred packets, no decoding.
        data = ffprobe_json(
            path,
            ["-show_entries", "packet=stream_index,pts_time:stream:format:stream_side_data",
             "-read_intervals", f"%+#{_VFR_SAMPLE_PACKETS}"],
            timeout=timeout,
        )
    except FFmpegError as e:
        if e.timed_out:
            raise ProbeError(schema.REASON_TIMEOUT, str(e)) from e
        if "moov atom not found" in e.stderr and _looks_like_mp4(path):
            raise ProbeError(
                schema.REASON_TRUNCATED, "mp4 index (moov atom) missing: the file is truncated or still being written"
            ) from e
        raise ProbeError(schema.REASON_NOT_VIDEO, f"not a readable media file: {e}") from e

    fmt = data.get("format") or {}
    format_name = fmt.get("format_name", "")
    streams = data.get("streams") or []
    videos = [
        s
        for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    has_audio = any(s.get("codec_type") == "audio" for s in streams)
    if not streams:
        raise ProbeError(schema.REASON_NO_FRAMES, f"the {format_name or 'unknown'} container holds no streams (no frames)")
    if not videos:
        what = "audio-only file" if has_audio else "no video stream"
        raise ProbeError(schema.REASON_NOT_VIDEO, f"{what} (format {format_name or 'unknown'})")
    stream = videos[0]
    codec = stream.get("codec_name", "unknown")
    if format_name in _IMAGE_FORMATS or codec in _IMAGE_CODECS:
        raise ProbeError(schema.REASON_NOT_VIDEO, f"a still image ({format_name}/{codec}), not a video")

    coded_w, coded_h = int(stream.get("width") or 0), int(stream.get("height") or 0)
    if coded_w <= 0 or coded_h <= 0:
        raise ProbeError(schema.REASON_BAD_DIMENSIONS, f"video stream has no size ({coded_w}x{coded_h})")
    rotation = _rotation(stream)
    width, height = (coded_h, coded_w) if rotation in (90, 270) else (coded_w, coded_h)
    sar = _sample_aspect(stream.get("sample_aspect_ratio"))
    if rotation in (90, 270):
        sar = 1 / sar  # the pixel aspect belongs to the coded frame, before the turn

    rate = _rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate"))
    if rate is None:
        raise ProbeError(schema.REASON_BAD_FPS, "video stream has no frame rate")
    duration = _float(stream.get("duration")) or _float(fmt.get("duration"))
    nb_frames = int(stream.get("nb_frames") or 0)
    if duration is None and not nb_frames:
        # No timing in the container (e.g. a raw .h264 stream): count packets, a demux only.
        nb_frames = _count_packets(path, timeout)
    if duration is None and nb_frames:
        duration = nb_frames / float(rate)
    if duration is None or duration <= 0:
        raise ProbeError(schema.REASON_NO_FRAMES, "video stream has no duration (no frames)")
    if not nb_frames:
        nb_frames = max(1, int(round(duration * float(rate))))
    start = _float(stream.get("start_time")) or _float(fmt.get("start_time")) or 0.0

    vfr = _is_vfr(data.get("packets") or [], stream.get("index", 0))

    return VideoInfo(
        path=path,
        size_bytes=size,
        format_name=format_name,
        codec=codec,
        pix_fmt=stream.get("pix_fmt", ""),
        width=width,
        height=height,
        coded_width=coded_w,
        coded_height=coded_h,
        rotation=rotation,
        sample_aspect=float(sar),
        fps=float(rate),
        fps_fraction=f"{rate.numerator}/{rate.denominator}",
        vfr=vfr,
        duration_s=float(duration),
        start_time_s=float(start),
        num_frames=nb_frames,
        has_audio=has_audio,
    )
