"""TransNetV2 on a GPU (opt in: pytest -m gpu): the same transitions as the NumPy engine on the
CPU. What `kvid curate` keeps must not depend on the machine it ran on; only the speed may.

The frames are scripted with NumPy alone (no decoder on the GPU machine): two panning
textures blended into each other, a hard cut, and a fade through black."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from curate.transitions import INPUT_H, INPUT_W, TransitionParams, TransNetFrames

pytestmark = pytest.mark.gpu  # skipped where no CUDA device is present (conftest.py)

# The known answers of scripted_frames(): [start, end) of each gradual transition, and the
# hard cut (found by the content detector, not by this network).
DISSOLVE = (70, 94)
CUT = 164
FADE = (224, 264)


def _texture(seed: int, width: int) -> np.ndarray:
    """A smooth colour texture, 27 px high and ``width`` wide (a pan crops 48 px of it)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (5, width // 8, 3), dtype=np.uint8)
    return cv2.resize(coarse, (width, INPUT_H), interpolation=cv2.INTER_CUBIC)


def _pan(seed: int, n: int) -> np.ndarray:
    """A slow pan, a pixel every 4 frames. (At a pixel a frame, 2 % of the width, the
    cascade's blend statistics no longer propose the dissolve; the full pass still finds it.)"""
    strip = _texture(seed, INPUT_W + n // 4 + 1)
    return np.stack([strip[:, i // 4 : i // 4 + INPUT_W] for i in range(n)])


def scripted_frames() -> np.ndarray:
    """A: 70 frames, a 24-frame dissolve into B, B to frame 164, a cut to C, C fades out over
    20 frames into D fading in over 20 (the fade spans FADE), D for 50 frames."""
    a, b = _pan(1, 94), _pan(2, 164)
    w = np.linspace(0, 1, DISSOLVE[1] - DISSOLVE[0], dtype=np.float32)[:, None, None, None]
    blend = (1 - w) * a[DISSOLVE[0] :] + w * b[DISSOLVE[0] : DISSOLVE[1]]
    c, d = _pan(3, FADE[0] - CUT + 20), _pan(4, 70)
    down = np.linspace(1, 0, 20, dtype=np.float32)[:, None, None, None]
    out = np.concatenate([
        a[: DISSOLVE[0]], blend.round().astype(np.uint8), b[DISSOLVE[1] : CUT],
        c[: FADE[0] - CUT], (c[FADE[0] - CUT :] * down).round().astype(np.uint8),
        (d[:20] * down[::-1]).round().astype(np.uint8), d[20:],
    ])
    return np.ascontiguousarray(out)


def _run(frames: np.ndarray, device: str, cascade: bool) -> tuple[TransNetFrames, tuple]:
    """The network after its run (its probabilities, what it saw) and the (cuts, transitions) found."""
    net = TransNetFrames(TransitionParams(device=device, cascade=cascade))
    for i, frame in enumerate(frames):
        net.frames.append(i, frame)
    return net, net.run()


@pytest.mark.parametrize("cascade", [True, False], ids=["cascade", "full-pass"])
def test_cuda_finds_the_same_transitions_as_the_cpu(cascade):
    frames = scripted_frames()
    (cpu, cpu_found), (gpu, gpu_found) = _run(frames, "cpu", cascade), _run(frames, "cuda", cascade)
    assert gpu_found == cpu_found
    np.testing.assert_array_equal(gpu.checked, cpu.checked)
    # float32 on both (no TF32 on the GPU), only the summation order differs: sigmoid outputs of
    # a few-layer network move by ~1e-6; 1e-4 is the margin the engines are held to on the CPU.
    seen = cpu.checked
    assert np.abs(gpu.many[seen] - cpu.many[seen]).max() < 1e-4
    # ... and the comparison covers the known answers, so it is not vacuously equal.
    _, gradual = cpu_found
    assert any(a <= DISSOLVE[0] + 2 and b >= DISSOLVE[1] - 2 for a, b in gradual), gradual
    assert any(a <= FADE[0] + 2 and b >= FADE[1] - 2 for a, b in gradual), gradual
