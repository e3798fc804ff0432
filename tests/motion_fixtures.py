"""Synthetic videos with a known motion, for the motion tests and bench."""

from __future__ import annotations

import os
import tempfile

import numpy as np

from curate.synthetic import write_frames


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture (multi-scale blurred noise), uint8 (H, W, 3).

    Rich in detail at every scale, so optical flow is well-posed everywhere.
    """
    import cv2

    rng = np.random.default_rng(seed)
    acc = np.zeros((height, width, 3), np.float32)
    for sigma, weight in ((1.0, 1.0), (3.0, 1.5), (8.0, 2.0)):
        noise = rng.standard_normal((height, width, 3)).astype(np.float32)
        blurred = cv2.GaussianBlur(noise, (0, 0), sigma)
        acc += weight * blurred / (blurred.std() + 1e-6)
    acc = (acc - acc.mean()) / (acc.std() + 1e-6)
    return np.clip(128 + 45 * acc, 0, 255).astype(np.uint8)


def translating_frames(num_frames: int, dx: int, dy: int = 0, height: int = 256, width: int = 320, seed: int = 0) -> np.ndarray:
    """Frames (T, H, W, 3) of a texture whose content moves (dx, dy) px per frame (integers)."""
    big = texture(height + abs(dy) * (num_frames - 1), width + abs(dx) * (num_frames - 1), seed)
    x0 = abs(dx) * (num_frames - 1) if dx > 0 else 0
    y0 = abs(dy) * (num_frames - 1) if dy > 0 else 0
    frames = []
    for t in range(num_frames):
        # content at x in frame t is at x + dx in frame t+1: the window moves by -dx
        x, y = x0 - dx * t, y0 - dy * t
        frames.append(big[y : y + height, x : x + width])
    return np.ascontiguousarray(np.stack(frames))


def encode(frames: np.ndarray, path: str, fps: float = 24, lossless: bool = True) -> str:
    """Encode RGB frames with ffmpeg. lossless: H.264 RGB qp 0 (use .mkv); else yuv420p crf 12."""
    return write_frames(path, frames, fps=fps, lossless=lossless)


def encode_bytes(frames: np.ndarray, fps: float = 24, lossless: bool = False, suffix: str = ".mp4") -> bytes:
    """Encoded video as bytes (default: an ordinary yuv420p mp4 like curate writes)."""
    fd, path = tempfile.mkstemp(suffix=suffix)
    os.close(fd)
    try:
        encode(frames, path, fps=fps, lossless=lossless)
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)
