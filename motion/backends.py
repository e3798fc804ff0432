"""Optical-flow backends behind one interface, and the registry that builds them.

A backend turns batches of frame pairs into flow fields (``flow``) or, cheaper, into
the three per-pair statistics the motion score needs (``pair_stats``). Frames are
uint8 RGB arrays ``(N, H, W, 3)``; flow is float32 ``(N, H, W, 2)`` in pixels
(x then y) from frame A to frame B.

Backends:

- ``raft_large`` / ``raft_small`` (alias ``raft`` = ``raft_large``): torchvision RAFT,
  batched, CPU or CUDA (fp32, or fp16/bf16 autocast on CUDA). See ``motion.raft``.
- ``dis``: OpenCV DIS optical flow (CPU, no weights), the fast offline choice.
- ``farneback``: OpenCV Farneback (CPU, no weights), slower than DIS, for comparison.

torch is imported only when a RAFT backend is built, so CPU curation nodes that use
``dis`` never pay for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

# The backend interface lives in motion.flow (RAFT's module builds on it too); re-exported here.
from motion.flow import (  # noqa: F401
    STAT_CAMERA,
    STAT_MEAN,
    STAT_OBJECT,
    FlowBackend,
    MotionError,
    MotionWeightsError,
    check_pairs,
    env_flag,
    flow_stats,
    stats_from_flow,
)
from motion.raft import RaftBackend

DEFAULT_DIS_PRESET = "medium"


def _set_cv_threads(threads: int | None) -> None:
    if threads is not None:
        import cv2

        cv2.setNumThreads(int(threads))


class _OpenCVBackend(FlowBackend):
    """Pairs computed one by one on gray frames, optionally by ``workers`` threads at once.

    OpenCV releases the GIL, so ``workers=2`` uses two cores (each thread has its own
    flow object). ``threads`` sets OpenCV's own thread pool (cv2.setNumThreads, process-wide).
    """

    def __init__(self, workers: int = 1, threads: int | None = None, device: str = "cpu"):
        _cpu_only(self.name, device)
        if int(workers) < 1:
            raise ValueError("workers must be >= 1")
        self.workers = int(workers)
        self.threads = threads
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._ready = False

    def _engine(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def setup(self) -> None:
        if not self._ready:
            _set_cv_threads(self.threads)
            self._engine()  # fail here, not in a worker, on bad parameters
            if self.workers > 1:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=f"kvid-{self.name}")
            self._ready = True

    def _calc(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        import cv2

        engine = getattr(self._local, "engine", None)
        if engine is None:
            engine = self._local.engine = self._engine()
        # Gray frames (H, W) are used as they are: RGB frames are turned to exactly that.
        ga = np.ascontiguousarray(a) if a.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY)
        gb = np.ascontiguousarray(b) if b.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(b), cv2.COLOR_RGB2GRAY)
        return engine(ga, gb)

    def _map(self, fn: Callable[[int], np.ndarray], n: int) -> list[np.ndarray]:
        if self._pool is None or n < 2:
            return [fn(i) for i in range(n)]
        return list(self._pool.map(fn, range(n)))

    def _flow(self, frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray:
        flows = self._map(lambda i: self._calc(frames_a[i], frames_b[i]), len(frames_a))
        return np.stack(flows).astype(np.float32, copy=False)

    def pair_stats(self, frames_a: np.ndarray, frames_b: np.ndarray) -> np.ndarray:
        check_pairs(frames_a, frames_b, gray_ok=True)
        self.setup()
        # flow and statistics per pair in the worker: no (N, H, W, 2) array is ever built
        stats = self._map(lambda i: flow_stats(self._calc(frames_a[i], frames_b[i])), len(frames_a))
        return np.stack(stats) if stats else np.zeros((0, 3))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._ready = False


class DISBackend(_OpenCVBackend):
    """OpenCV Dense Inverse Search flow on gray frames (CPU, no weights)."""

    name = "dis"
    PRESETS = ("ultrafast", "fast", "medium")

    def __init__(self, preset: str = DEFAULT_DIS_PRESET, workers: int = 1, threads: int | None = None, device: str = "cpu"):
        preset = str(preset).lower()
        if preset not in self.PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; choose one of {', '.join(self.PRESETS)}")
        self.preset = preset
        super().__init__(workers=workers, threads=threads, device=device)

    def _engine(self):
        import cv2

        code = {
            "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
            "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
        }[self.preset]
        dis = cv2.DISOpticalFlow_create(code)
        return lambda a, b: dis.calc(a, b, None)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": "cpu", "preset": self.preset, "workers": self.workers}


class FarnebackBackend(_OpenCVBackend):
    """OpenCV Farneback polynomial-expansion flow on gray frames (CPU, no weights).

    Five pyramid levels with a 15 px window follow motions up to ~30 px/frame at 256 px.
    """

    name = "farneback"

    def __init__(
        self,
        pyr_scale: float = 0.5,
        levels: int = 5,
        winsize: int = 15,
        iterations: int = 3,
        poly_n: int = 5,
        poly_sigma: float = 1.2,
        workers: int = 1,
        threads: int | None = None,
        device: str = "cpu",
    ):
        self.params = dict(
            pyr_scale=float(pyr_scale),
            levels=int(levels),
            winsize=int(winsize),
            iterations=int(iterations),
            poly_n=int(poly_n),
            poly_sigma=float(poly_sigma),
        )
        super().__init__(workers=workers, threads=threads, device=device)

    def _engine(self):
        import cv2

        p = self.params
        args = (p["pyr_scale"], p["levels"], p["winsize"], p["iterations"], p["poly_n"], p["poly_sigma"], 0)
        return lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, *args)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": "cpu", "workers": self.workers, **self.params}


def _cpu_only(name: str, device: str | None) -> None:
    if device not in (None, "cpu", "auto"):
        raise ValueError(f"the {name} backend runs on CPU only (got device={device!r}); use raft_large/raft_small on GPU")


def _raft(variant: str) -> Callable[..., FlowBackend]:
    def build(**opts: Any) -> FlowBackend:
        return RaftBackend(variant=variant, **opts)

    return build


_BUILDERS: dict[str, Callable[..., FlowBackend]] = {
    "raft_large": _raft("raft_large"),
    "raft_small": _raft("raft_small"),
    "dis": DISBackend,
    "farneback": FarnebackBackend,
}
ALIASES = {"raft": "raft_large"}
BACKENDS = tuple(_BUILDERS)


def canonical_backend_name(name: str) -> str:
    """The name recorded in ``motion_backend`` (resolves aliases); ValueError when unknown."""
    key = str(name).strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in _BUILDERS:
        raise ValueError(
            f"unknown motion backend {name!r}; choose one of {', '.join(BACKENDS)} (alias: raft = raft_large)"
        )
    return key


def is_raft(name: str) -> bool:
    return canonical_backend_name(name).startswith("raft")


def get_backend(name: str, **opts: Any) -> FlowBackend:
    """Build a backend by name. Options set to ``None`` are dropped (use the backend default),
    except ``weights``, where ``None`` means random initialisation (tests and benchmarks).

    RAFT options: device, dtype, weights, num_flow_updates, allow_download.
    DIS options: preset, workers, threads. Farneback options: pyr_scale, levels, winsize,
    iterations, poly_n, poly_sigma, workers, threads. An option a backend does not take is a
    TypeError (catches typos in configs).
    """
    key = canonical_backend_name(name)
    opts = {k: v for k, v in opts.items() if v is not None or k == "weights"}
    return _BUILDERS[key](**opts)

