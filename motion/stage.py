"""MotionStage: score the clips of a batch of rows (NeMo-Curator style; no Ray import).

The pipeline builds one stage per actor, calls ``setup()`` once (which loads the model
and fails the run at start when RAFT weights are missing), then calls the stage on
batches of rows. Each row is a clip record dict plus ``"mp4"`` (the clip's bytes; a
local path also works).

Inside a call, decode threads (``decode_workers``, each driving one ffmpeg process)
stream frames of several clips at once into a bounded queue; the calling thread packs
frame pairs from different clips into batches of ``batch_size`` pairs (per frame shape)
and runs the backend, so a GPU sees full batches while CPUs decode. Memory is bounded
by the queue and at most ~2 batches of pending pairs, whatever the clip lengths and
however many frame shapes (aspect ratios) a call mixes.

A clip that cannot be decoded or scored becomes a reject (stage ``motion``, reason
``motion_failed``, ``error_message`` with the cause); rows that arrive rejected pass
through unchanged.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from curate import schema
from curate.settings import MOTION_UNITS, check_device, setting
from curate.stage import Cluster, Placement, Resources, Stage
from motion.backends import ALIASES, BACKENDS, FlowBackend, MotionError, canonical_backend_name, get_backend, is_raft
from motion.score import DEFAULT_FPS, DEFAULT_SIZE, _check_stride, compute_motion, iter_pairs, result_from_stats

_PAIR, _DONE, _ERROR = 0, 1, 2


class _Stopped(Exception):
    pass


# The backend setting's values: "none" turns motion scoring off.
BACKEND_CHOICES = ("none", *ALIASES, *BACKENDS)


@dataclass(kw_only=True, eq=False)
class MotionStage(Stage):
    """Fill the motion columns of ok rows; turn clips that fail into ``motion_failed`` rejects."""

    name: ClassVar[str] = "motion"
    stateful: ClassVar[bool] = True  # the flow model is loaded once per actor

    backend: str = setting("raft", "motion score backend: raft (= raft_large), raft_small, dis, farneback or none",
                           choices=BACKEND_CHOICES, decides=MOTION_UNITS)
    size: int = setting(DEFAULT_SIZE, "short side (px) the flow is computed at; scores are in px/frame at it",
                        decides=MOTION_UNITS, ge=16)
    stride: int = setting(1, "use every k-th consecutive frame pair (long clips)", ge=1)
    batch_size: int | None = setting(
        None, "frame pairs per flow batch (default: 32 on a GPU, 4 for RAFT on a CPU, 16 for OpenCV)", ge=1)
    weights: str | None = setting(None, "local RAFT .pth weights (default: torchvision's download)")
    workers: int | None = setting(None, "motion actors (default: one per GPU, else a quarter of the CPUs)", ge=1)
    device: str = setting("auto", "auto (a GPU when the cluster has one), cpu, cuda or cuda:N")
    # Not settings.
    random_weights: bool = False  # RAFT with random weights: tests and benchmarks only
    dtype: str = "auto"
    num_flow_updates: int = 12
    # Frames per second the flow is computed at; None: each clip's own rate (its record's
    # ``fps``, the run's output rate), or DEFAULT_FPS for a clip without one.
    fps: float | None = None
    dis_preset: str | None = None
    flow_threads: int = 1  # OpenCV threads of a CPU backend: the CPUs an actor holds
    decode_workers: int | None = None  # decode threads (one ffmpeg each); None: 4 on a GPU, else 1
    decode_timeout: float | None = 600.0
    allow_download: bool = True
    use_row_dims: bool = True
    _backend: FlowBackend | None = field(default=None, init=False, repr=False)
    _device: str = field(default="cpu", init=False, repr=False)  # resolved in setup()
    _batch: int = field(default=16, init=False, repr=False)  # resolved in setup()

    def __post_init__(self) -> None:
        if self.backend == "none":
            return
        self.backend = canonical_backend_name(self.backend)
        if self.size < 8:
            raise ValueError(f"motion size must be >= 8 px, got {self.size}")
        self.stride = _check_stride(self.stride)
        check_device(self.device, "motion_device")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not is_raft(self.backend) and self.device not in ("auto", "cpu"):
            raise ValueError(f"the {self.backend} backend runs on CPU only (got device={self.device!r})")

    @property
    def enabled(self) -> bool:
        return self.backend != "none"

    @property
    def scores_in_encode(self) -> bool:
        """A CPU flow backend scores each clip on the frames of its encode's decode (a frame tap
        of the transcode stage): nothing decodes the clip again. RAFT, which wants a GPU and a
        model loaded once, runs as its own stage on the encoded clips."""
        return self.enabled and not is_raft(self.backend)

    # -- as the transcode stage's frame tap (curate.video_stages.FrameTap) -------------------

    def tap_short_side(self) -> int:
        return self.size

    def apply(self, row: dict, frames: np.ndarray) -> dict:
        """Score one clip from its frames (gray, at its frame rate, short side ``size``)."""
        if row.get("status", schema.STATUS_OK) != schema.STATUS_OK:
            return row
        try:
            result = compute_motion(frames, self.flow, self.stride, self._batch)
        except Exception as e:  # a clip that cannot be scored is a reject, never a crash
            return _motion_reject(row, f"{type(e).__name__}: {e}")
        row.update(result.record_fields())
        return row

    def __getstate__(self) -> dict:
        # Ship the configuration, not a loaded model (Ray pickles stages to actors).
        state = dict(self.__dict__)
        state["_backend"] = None
        return state

    def placement(self, cluster: Cluster) -> Placement:
        """RAFT on a cluster with GPUs: one actor per GPU (or ``workers``), a few decode
        threads each, 8 clips per call so frame pairs batch across clips. Otherwise CPU actors
        of ``flow_threads`` CPUs, one per 4 CPUs of the cluster (or ``workers``)."""
        if is_raft(self.backend) and cluster.on_gpu(self.device):
            return Placement(Resources(cpus=cluster.actor_cpus(self.decode_threads(True)), gpus=1), rows_per_call=8,
                             workers=self.workers or cluster.gpus)
        return Placement(Resources(cpus=cluster.actor_cpus(self.flow_threads)), rows_per_call=2,
                         workers=self.workers or max(1, int(cluster.cpus) // 4))

    def decode_threads(self, on_gpu: bool) -> int:
        # Enough to keep a GPU fed; one ahead of the CPU flow.
        return self.decode_workers or (4 if on_gpu else 1)

    @property
    def flow(self) -> FlowBackend:
        """The loaded flow backend (set up on first use)."""
        self.setup()
        assert self._backend is not None
        return self._backend

    def setup(self) -> None:
        """Build the backend and load its model once, on the device this worker has (``auto``:
        its GPU when Ray gave it one). Raises MotionWeightsError at start."""
        if self._backend is None:
            if is_raft(self.backend):
                from motion.raft import resolve_device, resolve_dtype

                device = resolve_device(self.device)
                opts: dict[str, Any] = dict(
                    device=device, dtype=resolve_dtype(self.dtype, device), num_flow_updates=self.num_flow_updates,
                    weights=None if self.random_weights else (self.weights or "default"),
                    allow_download=self.allow_download)
                default_batch = 32 if device.startswith("cuda") else 4
            else:
                opts = {"workers": self.flow_threads}
                if self.backend == "dis":
                    opts["preset"] = self.dis_preset
                device, default_batch = "cpu", 16
            b = get_backend(self.backend, **opts)
            b.setup()
            self._backend = b
            self._device = device
            self._batch = self.batch_size or default_batch

    # -- the call -------------------------------------------------------------------------

    def process(self, rows: list[dict]) -> list[dict]:
        backend = self.flow
        out = [dict(r) for r in rows]
        todo = [i for i, r in enumerate(out) if r.get("status", schema.STATUS_OK) == schema.STATUS_OK]
        errors: dict[int, str] = {}
        for i in todo:
            if not isinstance(out[i].get("mp4"), (bytes, bytearray, memoryview, str)) or not out[i]["mp4"]:
                errors[i] = "no clip bytes (row has no 'mp4')"
        todo = [i for i in todo if i not in errors]
        dims = [self._known_dims(out[i]) for i in todo]
        rates = [float(self.fps or out[i].get("fps") or DEFAULT_FPS) for i in todo]
        stats, n_pairs, frames = self._score(backend, [out[i]["mp4"] for i in todo], dims, rates, errors, todo)
        for j, i in enumerate(todo):
            if i in errors:
                continue
            try:
                got = stats[j]
                if len(got) != n_pairs[j] or any(s is None for s in got):
                    raise MotionError(f"internal: {len(got)} pair results for {n_pairs[j]} pairs")
                res = result_from_stats(np.stack(got), backend.name, self.size, self.stride, frames[j])
            except Exception as e:
                errors[i] = f"{type(e).__name__}: {e}"
                continue
            out[i].update(res.record_fields())
        for i, msg in errors.items():
            _motion_reject(out[i], msg)
        return out

    def _known_dims(self, row: dict) -> tuple[int | None, int | None]:
        """The clip's (width, height) from the row, when using them is safe; else (None, None).

        Passing them saves an ffprobe per clip. Safe only when the frames get resized:
        ffmpeg's scale filter then outputs exactly the size we read, whatever the file
        holds, so a wrong record can at worst distort the aspect, never garble frames.
        Without a resize (the clip already at the motion size) the file is probed.
        """
        from curate.frames import scaled_size

        w, h = row.get("width"), row.get("height")
        if not self.use_row_dims or not isinstance(w, int) or not isinstance(h, int) or w < 1 or h < 1:
            return None, None
        if scaled_size(w, h, self.size) == (w, h):
            return None, None
        return w, h

    def _score(self, backend: FlowBackend, clips: list, dims: list, rates: list[float], errors: dict[int, str],
               row_index: list[int]):
        """Per clip: list of (3,) stats per pair, number of pairs, number of frames."""
        n = len(clips)
        stats: list[list] = [[] for _ in range(n)]
        n_pairs = [0] * n
        n_frames = [0] * n
        if n == 0:
            return stats, n_pairs, n_frames
        failed: set[int] = set()
        q: queue.Queue = queue.Queue(maxsize=max(4, 2 * self._batch))
        stop = threading.Event()

        def put(item) -> None:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue
            raise _Stopped

        def decode(j: int) -> None:
            from curate.frames import as_file, iter_frames

            count = 0

            def counted(it):
                nonlocal count
                for f in it:
                    count += 1
                    yield f

            try:
                clip = clips[j] if isinstance(clips[j], (bytes, str)) else bytes(clips[j])
                with as_file(clip) as path:
                    it = iter_frames(path, width=dims[j][0], height=dims[j][1], fps=rates[j], short_side=self.size,
                                     pix_fmt="rgb24", timeout=self.decode_timeout)
                    try:
                        k = 0
                        for _, a, b in iter_pairs(counted(it), self.stride):
                            put((_PAIR, j, k, a, b))
                            k += 1
                    finally:
                        it.close()
                if count < 2:
                    raise MotionError(f"a clip needs at least 2 frames to score motion, decoded {count}")
                put((_DONE, j, k, count))
            except _Stopped:
                return
            except Exception as e:
                try:
                    put((_ERROR, j, f"{type(e).__name__}: {e}"))
                except _Stopped:
                    return

        pending: dict[tuple, list] = {}

        def run(items: list) -> None:
            items = [it for it in items if it[1] not in failed]
            if not items:
                return
            try:
                res = backend.pair_stats(np.stack([it[3] for it in items]), np.stack([it[4] for it in items]))
                groups = [(items, res)]
            except Exception:
                # One bad clip must not take the batch down: retry clip by clip.
                groups = []
                for j in sorted({it[1] for it in items}):
                    part = [it for it in items if it[1] == j]
                    try:
                        groups.append(
                            (part, backend.pair_stats(np.stack([it[3] for it in part]), np.stack([it[4] for it in part])))
                        )
                    except Exception as e:
                        failed.add(j)
                        errors[row_index[j]] = f"scoring failed: {type(e).__name__}: {e}"
            for part, res in groups:
                for it, s in zip(part, res):
                    lst = stats[it[1]]
                    k = it[2]
                    if len(lst) <= k:
                        lst.extend([None] * (k + 1 - len(lst)))
                    lst[k] = s

        decoders = min(self.decode_threads(self._device.startswith("cuda")), n)
        with ThreadPoolExecutor(max_workers=decoders, thread_name_prefix="kvid-motion-decode") as pool:
            try:
                for j in range(n):
                    pool.submit(decode, j)
                finished = 0
                while finished < n:
                    item = q.get()
                    kind, j = item[0], item[1]
                    if kind == _PAIR:
                        if j in failed:
                            continue
                        key = item[3].shape
                        buf = pending.setdefault(key, [])
                        buf.append(item)
                        if len(buf) >= self._batch:
                            run(pending.pop(key))
                        elif sum(len(b) for b in pending.values()) > 2 * self._batch:
                            # many frame shapes at once: run the fullest partial batch
                            run(pending.pop(max(pending, key=lambda k: len(pending[k]))))
                    elif kind == _DONE:
                        n_pairs[j], n_frames[j] = item[2], item[3]
                        finished += 1
                    else:
                        failed.add(j)
                        errors[row_index[j]] = item[2]
                        finished += 1
                for buf in pending.values():
                    run(buf)
            finally:
                stop.set()
                pool.shutdown(wait=False, cancel_futures=True)
        for j in failed:
            stats[j] = []
        return stats, n_pairs, n_frames


def _motion_reject(row: dict, message: str) -> dict:
    for c in schema.MOTION_COLUMNS:
        row[c] = None
    row["status"] = schema.STATUS_REJECTED
    row["reject_stage"] = schema.STAGE_MOTION
    row["reject_reason"] = schema.REASON_MOTION_FAILED
    row["error_message"] = message[:1000]
    return row
