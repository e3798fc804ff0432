"""Decode frames to numpy through an ffmpeg pipe: the one frame reader every stage uses.

Frames come out upright (ffmpeg applies rotation metadata), optionally resampled to a
constant frame rate and resized so the short side has a given length.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

import numpy as np

from curate.ffmpeg import FFMPEG, FFmpegError, ToolPipe, safe_input
from curate.probe import probe

_CHANNELS = {"rgb24": 3, "bgr24": 3, "gray": 1}


def scaled_size(width: int, height: int, short_side: int | None, upscale: bool = True) -> tuple[int, int]:
    """Size with the short side set to ``short_side`` (aspect kept, rounded to ints)."""
    if not short_side:
        return width, height
    short = min(width, height)
    if not upscale and short <= short_side:
        return width, height
    scale = short_side / short
    if width <= height:
        return short_side, max(1, int(round(height * scale)))
    return max(1, int(round(width * scale))), short_side


@contextlib.contextmanager
def as_file(video: str | bytes, suffix: str = ".mp4") -> Iterator[str]:
    """Yield a path for ``video``: the path itself, or a temp file holding the bytes."""
    if isinstance(video, (bytes, bytearray, memoryview)):
        fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="kvid-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(video)
            yield tmp
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    else:
        yield video


def iter_frames(
    path: str,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    short_side: int | None = None,
    start_s: float | None = None,
    duration_s: float | None = None,
    max_frames: int | None = None,
    pix_fmt: str = "rgb24",
    threads: int = 0,
    timeout: float | None = None,
) -> Iterator[np.ndarray]:
    """Yield frames (H, W, C) uint8 one at a time, without holding the video in memory.

    ``width``/``height`` are the decoded (upright) size; pass them when known to skip a probe.
    ``timeout`` bounds the whole decode: a hung decoder is killed and FFmpegError raised.
    """
    if pix_fmt not in _CHANNELS:
        raise ValueError(f"pix_fmt must be one of {sorted(_CHANNELS)}")
    if width is None or height is None:
        info = probe(path)
        width, height = info.width, info.height
    out_w, out_h = scaled_size(width, height, short_side)
    filters = []
    if fps:
        filters.append(f"fps={fps}")
    if (out_w, out_h) != (width, height):
        flags = "area" if out_w * out_h < width * height else "bicubic"
        filters.append(f"scale={out_w}:{out_h}:flags={flags}")
    args = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-threads", str(threads)]
    if start_s:
        args += ["-ss", f"{start_s:.6f}"]
    args += ["-i", safe_input(path)]
    if duration_s is not None:
        args += ["-t", f"{duration_s:.6f}"]
    if filters:
        args += ["-vf", ",".join(filters)]
    if max_frames is not None:
        args += ["-frames:v", str(int(max_frames))]
    args += ["-an", "-sn", "-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1"]

    frame_bytes = out_w * out_h * _CHANNELS[pix_fmt]
    shape = (out_h, out_w) if pix_fmt == "gray" else (out_h, out_w, _CHANNELS[pix_fmt])
    with ToolPipe(args, timeout) as pipe:
        while True:
            buf = pipe.stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                break
            yield np.frombuffer(buf, dtype=np.uint8).reshape(shape)
        code, err = pipe.finish()
    if pipe.timed_out.is_set():
        raise FFmpegError(f"decode timed out after {timeout:.0f} s", timed_out=True)
    if code != 0:
        raise FFmpegError(f"ffmpeg decode failed ({code}): {err[-400:]}", stderr=err)


def read_frames(video: str | bytes, **kwargs) -> np.ndarray:
    """All frames as one array (T, H, W, C) uint8; same arguments as ``iter_frames``.

    ``video`` may be a path or the bytes of a video file (e.g. an mp4 read from a shard).
    """
    with as_file(video) as path:
        frames = list(iter_frames(path, **kwargs))
    if not frames:
        raise FFmpegError("no frames decoded")
    return np.stack(frames)
