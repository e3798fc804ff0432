"""RAFT on a GPU (opt in: pytest -m gpu): the same numbers as on the CPU, and bf16 close."""

from __future__ import annotations

import numpy as np
import pytest
from motion_fixtures import translating_frames

pytestmark = pytest.mark.gpu  # skipped where no CUDA device is present (conftest.py)


def _stats(device: str, dtype: str, frames: np.ndarray) -> np.ndarray:
    from motion.raft import RaftBackend

    backend = RaftBackend("raft_small", device=device, dtype=dtype, weights=None, num_flow_updates=6, seed=0)
    backend.setup()
    return backend.pair_stats(frames[:-1], frames[1:])


def test_raft_gpu_equals_cpu():
    frames = translating_frames(5, dx=3, height=128, width=160)
    cpu = _stats("cpu", "float32", frames)
    gpu = _stats("cuda", "float32", frames)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-3)


def test_raft_bf16_close_to_fp32():
    frames = translating_frames(5, dx=3, height=128, width=160)
    fp32 = _stats("cuda", "float32", frames)
    bf16 = _stats("cuda", "bfloat16", frames)
    np.testing.assert_allclose(bf16, fp32, rtol=0.05, atol=0.05)
