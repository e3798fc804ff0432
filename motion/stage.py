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
from typing import Any

import numpy as np

from curate import schema
from curate.stage import Resources, Stage
from motion.backends import FlowBackend, MotionError, canonical_backend_name, get_backend, is_raft
from motion.score import DEFAULT_FPS, DEFAULT_SIZE, _check_stride, iter_pairs, result_from_stats

_PAIR, _DONE, _ERROR = 0, 1, 2


class _Stopped(Exception):
    pass


class MotionStage(Stage):
    """Fill the motion columns of ok rows; turn clips that fail into ``motion_failed`` rejects."""

    name = "motion"
    stateful = True  # the flow model is loaded once per actor

    def __init__(
        self,
        backend: str = "raft_large",
        size: int = DEFAULT_SIZE,
        stride: int = 1,
        batch_size: int | None = None,
        device: str = "auto",
        dtype: str = "auto",
        weights: str | None = "default",
        num_flow_updates: int = 12,
        *,
        fps: float = DEFAULT_FPS,
        dis_preset: str | None = None,
        workers: int = 1,
        decode_workers: int | None = None,
        decode_timeout: float | None = 600.0,
        allow_download: bool = True,
        num_cpus: float | None = None,
        use_row_dims: bool = True,
    ):
        self.backend_name = canonical_backend_name(backend)
        self.size = int(size)
        if self.size < 8:
            raise ValueError(f"motion size must be >= 8 px, got {size}")
        self.stride = _check_stride(stride)
        self.fps = float(fps)
        self.decode_timeout = decode_timeout
        self.use_row_dims = bool(use_row_dims)
        if is_raft(self.backend_name):
            from motion.raft import resolve_device, resolve_dtype

            self.device = resolve_device(device)
            self.dtype = resolve_dtype(dtype, self.device)
            self._opts: dict[str, Any] = dict(
                device=self.device,
                dtype=self.dtype,
                weights=weights,
                num_flow_updates=num_flow_updates,
                allow_download=allow_download,
            )
            default_bs = 32 if self.device.startswith("cuda") else 4
        else:
            if device not in (None, "auto", "cpu"):
                raise ValueError(f"the {self.backend_name} backend runs on CPU only (got device={device!r})")
            self.device, self.dtype = "cpu", "float32"
            self._opts = {"workers": int(workers)}
            if self.backend_name == "dis":
                self._opts["preset"] = dis_preset
            default_bs = 16
        # Decode threads (one ffmpeg each): enough to keep a GPU fed; one ahead of the CPU flow.
        if decode_workers is None:
            decode_workers = 4 if self.device.startswith("cuda") else 1
        self.decode_workers = max(1, int(decode_workers))
        self.batch_size = int(batch_size or default_bs)
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        # Declared resources (the pipeline turns these into actor options).
        self.num_gpus = 1 if self.device.startswith("cuda") else 0
        if num_cpus is None:
            num_cpus = self.decode_workers if self.num_gpus else int(workers)
        self.num_cpus = float(num_cpus)
        self._backend: FlowBackend | None = None

    def __getstate__(self) -> dict:
        # Ship the configuration, not a loaded model (Ray pickles stages to actors).
        state = dict(self.__dict__)
        state["_backend"] = None
        return state

    @property
    def resources(self) -> Resources:  # type: ignore[override]
        return Resources(cpus=self.num_cpus, gpus=self.num_gpus)

    @property
    def backend(self) -> FlowBackend:
        self.setup()
        assert self._backend is not None
        return self._backend

    def setup(self) -> None:
        """Build the backend and load its model once. Raises MotionWeightsError at start."""
        if self._backend is None:
            b = get_backend(self.backend_name, **self._opts)
            b.setup()
            self._backend = b

    # -- the call -------------------------------------------------------------------------

    def process(self, rows: list[dict]) -> list[dict]:
        backend = self.backend
        out = [dict(r) for r in rows]
        todo = [i for i, r in enumerate(out) if r.get("status", schema.STATUS_OK) == schema.STATUS_OK]
        errors: dict[int, str] = {}
        for i in todo:
            if not isinstance(out[i].get("mp4"), (bytes, bytearray, memoryview, str)) or not out[i]["mp4"]:
                errors[i] = "no clip bytes (row has no 'mp4')"
        todo = [i for i in todo if i not in errors]
        dims = [self._known_dims(out[i]) for i in todo]
        stats, n_pairs, frames = self._score(backend, [out[i]["mp4"] for i in todo], dims, errors, todo)
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
            row = out[i]
            for c in schema.MOTION_COLUMNS:
                row[c] = None
            row["status"] = schema.STATUS_REJECTED
            row["reject_stage"] = schema.STAGE_MOTION
            row["reject_reason"] = schema.REASON_MOTION_FAILED
            row["error_message"] = msg[:1000]
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

    def _score(self, backend: FlowBackend, clips: list, dims: list, errors: dict[int, str], row_index: list[int]):
        """Per clip: list of (3,) stats per pair, number of pairs, number of frames."""
        n = len(clips)
        stats: list[list] = [[] for _ in range(n)]
        n_pairs = [0] * n
        n_frames = [0] * n
        if n == 0:
            return stats, n_pairs, n_frames
        failed: set[int] = set()
        q: queue.Queue = queue.Queue(maxsize=max(4, 2 * self.batch_size))
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
                    it = iter_frames(path, width=dims[j][0], height=dims[j][1], fps=self.fps, short_side=self.size,
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

        with ThreadPoolExecutor(max_workers=min(self.decode_workers, n), thread_name_prefix="kvid-motion-decode") as pool:
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
                        if len(buf) >= self.batch_size:
                            run(pending.pop(key))
                        elif sum(len(b) for b in pending.values()) > 2 * self.batch_size:
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
