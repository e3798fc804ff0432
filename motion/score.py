"""The motion score of a clip: mean optical-flow magnitude between consecutive frames.

Definition (DESIGN.md): frames resampled to 24 fps and resized so the short side is
``motion_size`` px; for each consecutive pair, the mean per-pixel flow magnitude in
px/frame at that size; the score is the mean over pairs.

Stride ``k > 1`` keeps the same units: it scores the consecutive pairs ``(i, i + 1)``
for ``i`` in ``0, k, 2k, ...`` (a subsample of pairs, not of frames), so a clip of
``T`` frames has ``ceil((T - 1) / k)`` pairs and a stride-k score estimates the
stride-1 score.

Camera/object split, per pair: ``camera`` is the magnitude of the median flow vector
(component-wise median over pixels: a pan or a zoom-free camera shake moves most pixels
alike), ``object`` the mean magnitude of the flow minus that median (what moves
differently from the dominant motion). Both are averaged over pairs like the score.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from motion.backends import STAT_CAMERA, STAT_MEAN, STAT_OBJECT, FlowBackend, MotionError

DEFAULT_SIZE = 256
DEFAULT_FPS = 24.0


@dataclass
class MotionResult:
    score: float  # mean over pairs of the mean per-pixel magnitude, px/frame at `size`
    pair_scores: list[float]  # that magnitude per scored pair, in order
    camera: float
    object: float
    stride: int
    num_pairs: int
    backend: str = ""
    size: int | None = None  # short side of the frames the flow was computed on
    num_frames: int | None = None
    extra: dict = field(default_factory=dict)

    def record_fields(self) -> dict:
        """The clip record's motion columns (curate.schema.MOTION_COLUMNS)."""
        return {
            "motion_score": float(self.score),
            "motion_backend": self.backend,
            "motion_size": self.size,
            "motion_stride": int(self.stride),
            "motion_camera": float(self.camera),
            "motion_object": float(self.object),
            "motion_pair_scores": [float(s) for s in self.pair_scores],
        }


def num_pairs(num_frames: int, stride: int = 1) -> int:
    """Pairs scored for a clip of ``num_frames`` frames at ``stride``."""
    return max(0, math.ceil((num_frames - 1) / stride))


def pair_starts(num_frames: int, stride: int = 1) -> range:
    """First-frame indices of the pairs scored: ``range(0, T - 1, stride)``."""
    return range(0, max(0, num_frames - 1), stride)


def _check_stride(stride: int) -> int:
    if isinstance(stride, bool) or int(stride) != stride or int(stride) < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride!r}")
    return int(stride)


def result_from_stats(
    stats: np.ndarray, backend: str, size: int | None, stride: int, num_frames: int | None = None
) -> MotionResult:
    """Average per-pair statistics ``(P, 3)`` into a MotionResult."""
    stats = np.asarray(stats, dtype=np.float64).reshape(-1, 3)
    if len(stats) == 0:
        raise MotionError("no frame pairs to score (a clip needs at least 2 frames)")
    if not np.isfinite(stats).all():
        raise MotionError("optical flow produced non-finite values")
    return MotionResult(
        score=float(stats[:, STAT_MEAN].mean()),
        pair_scores=[float(x) for x in stats[:, STAT_MEAN]],
        camera=float(stats[:, STAT_CAMERA].mean()),
        object=float(stats[:, STAT_OBJECT].mean()),
        stride=stride,
        num_pairs=len(stats),
        backend=backend,
        size=size,
        num_frames=num_frames,
    )


def _batch_size(backend: FlowBackend, batch_size: int | None) -> int:
    bs = int(batch_size or getattr(backend, "default_batch_size", 16))
    if bs < 1:
        raise ValueError("batch_size must be >= 1")
    return bs


def compute_motion(
    frames: np.ndarray,
    backend: FlowBackend,
    stride: int = 1,
    batch_size: int | None = None,
) -> MotionResult:
    """Score frames ``(T, H, W, 3)`` uint8 RGB (or ``(T, H, W)`` gray for the CPU backends),
    already at the clip's frame rate and the motion size.

    Raises MotionError for fewer than 2 frames.
    """
    stride = _check_stride(stride)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or not (frames.ndim == 4 and frames.shape[-1] == 3 or frames.ndim == 3):
        raise ValueError(f"frames must be uint8 RGB (T, H, W, 3) or gray (T, H, W), got {frames.dtype} {frames.shape}")
    t = frames.shape[0]
    if t < 2:
        raise MotionError(f"a clip needs at least 2 frames to score motion, got {t}")
    starts = np.fromiter(pair_starts(t, stride), dtype=np.int64)
    bs = _batch_size(backend, batch_size)
    stats = [backend.pair_stats(frames[starts[i : i + bs]], frames[starts[i : i + bs] + 1]) for i in range(0, len(starts), bs)]
    return result_from_stats(np.concatenate(stats), backend.name, int(min(frames.shape[1:3])), stride, t)


def iter_pairs(frames: Iterable[np.ndarray], stride: int = 1) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(i, frame_i, frame_i+1)`` for the scored pairs of a frame stream; holds at most 2 frames."""
    stride = _check_stride(stride)
    prev = None
    for i, frame in enumerate(frames):
        if prev is not None:
            yield i - 1, prev, frame
        prev = frame if i % stride == 0 else None


def score_video(
    video: str | bytes,
    backend: FlowBackend,
    size: int = DEFAULT_SIZE,
    fps: float = DEFAULT_FPS,
    stride: int = 1,
    batch_size: int | None = None,
    timeout: float | None = None,
    threads: int = 0,
) -> MotionResult:
    """Decode ``video`` (a path or the bytes of a file) at ``fps`` with short side ``size``
    and score it. Streams frames, so memory stays at one batch of pairs for any length.

    Raises ``curate.ffmpeg.FFmpegError`` for undecodable input and MotionError for < 2 frames.
    """
    from curate.frames import as_file, iter_frames

    stride = _check_stride(stride)
    bs = _batch_size(backend, batch_size)
    stats: list[np.ndarray] = []
    buf_a: list[np.ndarray] = []
    buf_b: list[np.ndarray] = []
    frames_seen = 0

    def flush() -> None:
        if buf_a:
            stats.append(backend.pair_stats(np.stack(buf_a), np.stack(buf_b)))
            buf_a.clear()
            buf_b.clear()

    def counted(it: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        nonlocal frames_seen
        for f in it:
            frames_seen += 1
            yield f

    with as_file(video) as path:
        frames = iter_frames(path, fps=fps, short_side=size, pix_fmt="rgb24", timeout=timeout, threads=threads)
        try:
            for _, a, b in iter_pairs(counted(frames), stride):
                buf_a.append(a)
                buf_b.append(b)
                if len(buf_a) >= bs:
                    flush()
        finally:
            frames.close()
    if frames_seen < 2:
        raise MotionError(f"a clip needs at least 2 frames to score motion, decoded {frames_seen}")
    flush()
    return result_from_stats(np.concatenate(stats), backend.name, size, stride, frames_seen)
