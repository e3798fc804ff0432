"""The optical-flow backend interface: frame pairs in, flow or per-pair statistics out.

``motion.backends`` holds the OpenCV backends and the registry; ``motion.raft`` the RAFT
backend. Both build on this module, which imports neither.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


class MotionError(RuntimeError):
    """A clip could not be scored (too few frames, bad input, backend failure)."""


class MotionWeightsError(MotionError):
    """RAFT weights are missing or are not a valid RAFT state dict. Fails a run at start."""


# Columns of the array returned by ``pair_stats``.
STAT_MEAN, STAT_CAMERA, STAT_OBJECT = 0, 1, 2


# The camera (median) estimate uses at most about this many pixels, on a regular grid:
# a median of 30k samples is as good as one of 500k, at a fraction of the cost.
_MEDIAN_SAMPLES = 32768


def flow_stats(flow: np.ndarray) -> np.ndarray:
    """The three statistics ``(3,)`` float64 of one flow field ``(H, W, 2)``.

    mean per-pixel magnitude; magnitude of the median flow vector (component-wise
    median: the dominant, camera-like motion); mean magnitude of the flow minus that
    median (the residual, object-like motion). The median is taken on a regular pixel
    grid of at most ~32k pixels (every pixel up to 181x181).
    """
    import cv2

    flow = np.asarray(flow, dtype=np.float32)
    u, v = cv2.split(flow)
    mean = cv2.mean(cv2.magnitude(u, v))[0]
    h, w = u.shape
    step = max(1, int(np.ceil(np.sqrt(h * w / _MEDIAN_SAMPLES))))
    mu = float(np.median(u[::step, ::step]))
    mv = float(np.median(v[::step, ::step]))
    obj = cv2.mean(cv2.magnitude(cv2.subtract(u, mu), cv2.subtract(v, mv)))[0]
    return np.array([mean, float(np.hypot(mu, mv)), obj], dtype=np.float64)


def stats_from_flow(flow: np.ndarray) -> np.ndarray:
    """Per-pair statistics ``(N, 3)`` float64 from flow ``(N, H, W, 2)`` (see ``flow_stats``)."""
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim != 4 or flow.shape[-1] != 2:
        raise ValueError(f"flow must be (N, H, W, 2), got {flow.shape}")
    if len(flow) == 0:
        return np.zeros((0, 3), dtype=np.float64)
    return np.stack([flow_stats(f) for f in flow])


def is_gray(frames: np.ndarray) -> bool:
    """uint8 gray frames (N, H, W): what the CPU backends work on (RGB is turned to this)."""
    return isinstance(frames, np.ndarray) and frames.ndim == 3 and frames.dtype == np.uint8


def check_pairs(frames_a: np.ndarray, frames_b: np.ndarray, gray_ok: bool = False) -> None:
    for name, f in (("frames_a", frames_a), ("frames_b", frames_b)):
        rgb = isinstance(f, np.ndarray) and f.ndim == 4 and f.shape[-1] == 3 and f.dtype == np.uint8
        if not (rgb or (gray_ok and is_gray(f))):
            got = f"{getattr(f, 'dtype', type(f).__name__)} {getattr(f, 'shape', '')}"
            what = "uint8 RGB (N, H, W, 3) or gray (N, H, W)" if gray_ok else "uint8 RGB"
            raise ValueError(f"{name} must be {what} frames, got {got}")
    if frames_a.shape != frames_b.shape:
        raise ValueError(f"frame pair shapes differ: {frames_a.shape} vs {frames_b.shape}")
    if frames_a.shape[1] < 8 or frames_a.shape[2] < 8:
        raise ValueError(f"frames too small for optical flow: {frames_a.shape[1]}x{frames_a.shape[2]}")


class FlowBackend:
    """One optical-flow method. Subclasses implement ``_flow``; RAFT overrides ``pair_stats``."""

    name: str = ""
    device: str = "cpu"
    #: batch of frame pairs a caller should aim for (GPU backends want large batches)
    default_batch_size: int = 16

    def setup(self) -> None:
        """Load models or weights; idempotent. Raises MotionWeightsError when weights are missing."""

    def flow(self, frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray:
        """Flow from each frame in ``frames_a`` to the same-index frame in ``frames_b``."""
        check_pairs(frames_a, frames_b)
        self.setup()
        return self._flow(frames_a, frames_b)

    def pair_stats(self, frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray:
        """``(N, 3)`` float64: mean magnitude, camera, object per pair (see ``stats_from_flow``)."""
        return stats_from_flow(self.flow(frames_a, frames_b))

    def _flow(self, frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "backend")
        return f"{type(self).__name__}({opts})"


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
