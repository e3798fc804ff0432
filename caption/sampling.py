"""Frame sampling for captioning: which frames of a clip a VLM sees, decoded once.

Clips are mp4s at the run's output frame rate (curate's transcode, ``--fps``).
``sample_frame_indices`` picks frame indices (N uniformly over the clip, or a target fps),
never more than exist and never more than ``max_frames``; ``sample_frames`` decodes the clip
once through ``curate.frames`` at its own rate, resized so the short side is the
processor's size, and keeps only those frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from curate.transcode import TranscodeParams

CLIP_FPS = TranscodeParams.fps  # a clip's rate when nothing says otherwise: curate's default output rate
DEFAULT_NUM_FRAMES = 8
DEFAULT_MAX_FRAMES = 32


@dataclass
class ClipFrames:
    """The frames of one clip a captioner sees, with where they came from.

    ``frames`` is (T, H, W, 3) uint8 RGB; ``frame_indices`` are indices into the clip's
    frames at ``src_fps``; ``total_frames`` is how many frames the clip has at that rate.
    """

    frames: np.ndarray
    frame_indices: tuple[int, ...] | None = None
    src_fps: float = CLIP_FPS
    total_frames: int | None = None
    clip_id: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        f = self.frames
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3 or len(f) == 0:
            shape = getattr(f, "shape", None)
            dtype = getattr(f, "dtype", type(f).__name__)
            raise ValueError(f"ClipFrames.frames must be a non-empty (T, H, W, 3) uint8 array, got {shape} {dtype}")
        if self.frame_indices is None:
            self.frame_indices = tuple(range(len(f)))
        else:
            self.frame_indices = tuple(int(i) for i in self.frame_indices)
            if len(self.frame_indices) != len(f):
                raise ValueError(f"{len(self.frame_indices)} frame indices for {len(f)} frames")
        if self.total_frames is None:
            self.total_frames = self.frame_indices[-1] + 1

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def duration_s(self) -> float:
        return self.total_frames / self.src_fps

    @property
    def sampled_fps(self) -> float:
        """Average rate of the sampled frames (what Qwen2.5-VL's time encoding needs)."""
        return self.num_frames / self.total_frames * self.src_fps

    def metadata(self) -> dict:
        """transformers' VideoMetadata fields for these (already sampled) frames."""
        return {
            "total_num_frames": int(self.total_frames),
            "fps": float(self.src_fps),
            "duration": float(self.duration_s),
            "frames_indices": list(self.frame_indices),
            "height": int(self.frames.shape[1]),
            "width": int(self.frames.shape[2]),
            "video_backend": "kvid",
        }


def _uniform(num_frames: int, count: int) -> list[int]:
    if count <= 1:
        return [0]
    # Evenly spaced from the first to the last frame. Spacing >= 1 (count <= num_frames)
    # and round-half-up keep the indices strictly increasing (numpy's round-half-even
    # would map 1.5 and 2.5 both to 2).
    step = (num_frames - 1) / (count - 1)
    return [min(num_frames - 1, int(math.floor(i * step + 0.5))) for i in range(count)]


def sample_frame_indices(
    num_frames: int,
    n: int | None = None,
    fps: float | None = None,
    src_fps: float = CLIP_FPS,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> list[int]:
    """Indices of the frames to caption from a clip of ``num_frames`` frames at ``src_fps``.

    ``n``: that many frames spread uniformly from the first frame to the last (fewer when
    the clip is shorter). ``fps``: one frame every ``1/fps`` seconds starting at frame 0;
    when that would exceed ``max_frames``, ``max_frames`` uniform frames instead (the whole
    clip stays covered). Neither given: ``n = 8``. Deterministic, sorted, unique.
    """
    num_frames = int(num_frames)
    if num_frames <= 0:
        raise ValueError(f"a clip needs at least one frame, got num_frames={num_frames}")
    if n is not None and fps is not None:
        raise ValueError("give n (frames per clip) or fps (frames per second), not both")
    if max_frames is None or max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if fps is None:
        n = DEFAULT_NUM_FRAMES if n is None else int(n)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        return _uniform(num_frames, min(n, num_frames, max_frames))
    if not fps > 0 or not src_fps > 0:
        raise ValueError(f"fps and src_fps must be > 0, got fps={fps}, src_fps={src_fps}")
    step = src_fps / fps
    if step <= 1.0:
        count = num_frames
        indices = list(range(num_frames))
    else:
        count = int(math.floor((num_frames - 1) / step)) + 1
        indices = [int(math.floor(k * step + 0.5)) for k in range(count)]
    if count > max_frames:
        return _uniform(num_frames, max_frames)
    return indices


def _probe_clip(path: str, src_fps: float | None) -> tuple[int, int, int, float]:
    """(frames at ``src_fps``, width, height, ``src_fps`` or the clip's own rate)."""
    from curate.probe import probe

    info = probe(path)
    fps = src_fps or info.fps
    n = int(round(info.duration_s * fps)) if info.duration_s else int(info.num_frames)
    return max(1, n), info.width, info.height, fps


def sample_frames(
    video: str | bytes,
    *,
    n: int | None = None,
    fps: float | None = None,
    size: int | None = None,
    num_frames: int | None = None,
    width: int | None = None,
    height: int | None = None,
    src_fps: float | None = None,
    max_frames: int = DEFAULT_MAX_FRAMES,
    threads: int = 1,
    timeout: float | None = 120.0,
    clip_id: str | None = None,
) -> ClipFrames:
    """Decode ``video`` (path or mp4 bytes) once at ``src_fps`` and keep the sampled frames.

    ``size``: short side of the returned frames (the processor's size), aspect kept;
    None keeps the clip's size. ``src_fps``/``num_frames``/``width``/``height``: the clip's
    frame rate, frame count at that rate and size when known (its record has them);
    otherwise one probe (``src_fps`` None: the clip's own rate).
    Only the selected frames are kept in memory. Raises ``curate.ffmpeg.FFmpegError`` (or
    ``curate.probe.ProbeError``) when the clip cannot be decoded.
    """
    from curate.ffmpeg import FFmpegError
    from curate.frames import as_file, iter_frames

    with as_file(video) as path:
        if not num_frames or not width or not height or not src_fps:
            probed_n, probed_w, probed_h, src_fps = _probe_clip(path, src_fps)
            num_frames = num_frames or probed_n
            width = width or probed_w
            height = height or probed_h
        wanted = sample_frame_indices(num_frames, n=n, fps=fps, src_fps=src_fps, max_frames=max_frames)
        wanted_set = set(wanted)
        kept: dict[int, np.ndarray] = {}
        last = None
        decoded = 0
        for i, frame in enumerate(
            iter_frames(path, width=width, height=height, fps=src_fps, short_side=size, threads=threads,
                        timeout=timeout)
        ):
            decoded = i + 1
            last = frame
            if i in wanted_set:
                kept[i] = frame.copy()
            if i >= wanted[-1] and len(kept) == len(wanted):
                break
    if last is None:
        raise FFmpegError("no frames decoded")
    if len(kept) < len(wanted):
        # The container said more frames than the stream holds (a frame or two at the
        # end is common): sample again over the frames that exist.
        if decoded < num_frames:
            return sample_frames(
                video, n=n, fps=fps, size=size, num_frames=decoded, width=width, height=height,
                src_fps=src_fps, max_frames=max_frames, threads=threads, timeout=timeout, clip_id=clip_id,
            )
        raise FFmpegError(f"decoded {decoded} frames but frames {sorted(wanted_set - set(kept))} are missing")
    frames = np.stack([kept[i] for i in wanted])
    return ClipFrames(frames=frames, frame_indices=tuple(wanted), src_fps=src_fps, total_frames=num_frames,
                      clip_id=clip_id)
