"""A PyTorch loader over a kvid folder: clips by offset, frames at a chosen fps and size,
filtered on index columns, bucketed by shape, split by rank and worker, resumable.

    from torchdata.stateful_dataloader import StatefulDataLoader  # or torch's DataLoader
    from curate.loader import ClipDataset

    ds = ClipDataset("data/", num_frames=16, fps=8, short_side=256,
                     where="motion_score > 2 and duration_s >= 4", batch_size=8)
    loader = StatefulDataLoader(ds, batch_size=None, num_workers=4)
    for epoch in range(10):
        ds.set_epoch(epoch)
        for batch in loader:
            batch["video"]          # uint8 [B, T, 3, H, W], one (H, W) per batch
            batch["caption"]        # list of B strings; every index column is a list too

What it does, in order:

1. The index is read (``curate.shards.read_index``) and filtered with ``where``
   (``curate.where``: parsed with ``ast``, never ``eval``) before any clip is touched.
   Clips shorter than ``num_frames / fps`` seconds are left out and counted
   (``skipped_short``).
2. Each epoch the clips are put in an order (seeded: ``seed`` and the epoch; sorted by clip
   id when ``shuffle=False``) and dealt to ranks (every ``world_size``-th clip from
   ``rank``); within a rank, items are dealt to DataLoader workers in turn (item j to
   worker j % num_workers), so each clip is read exactly once per epoch over all ranks and
   workers, and a DataLoader (which takes from its workers in turn) yields the rank's order.
3. With ``batch_size``, the rank's clips fill the buckets of ``curate.buckets.Buckets`` in
   that order, from the index alone (nothing decoded), and a batch is made when a bucket
   holds ``batch_size`` clips; at the end of the epoch the partly filled buckets come out as
   smaller batches (``drop_last=True`` drops them instead, counted in ``dropped``). Ranks
   may get different numbers of batches.
4. A clip's bytes are read from its shard by the index's offset and size
   (``curate.shards.read_clip_bytes``, no tar scan) and only the frames needed are decoded.
   ``num_frames`` frames at ``fps`` from a start frame chosen by ``window`` ("random":
   seeded by seed, epoch and clip id; "start"; "center"): output frame k is the clip frame
   shown at ``start + k / fps`` seconds, ``start_frame + floor(k * clip_fps / fps)``.
   A clip that fails to decode is skipped, logged and counted (``decode_failed``,
   ``failed_clips``); the epoch goes on (a batch comes out one clip smaller).
5. Frames are resized (bilinear, antialiased) so the short side is ``short_side``; in a
   batch, each clip is resized to cover its bucket's frame and centre-cropped to it.

Resuming: ``state_dict()`` says how far this process's iteration got (epoch, position in
its worker's list) and ``load_state_dict()`` makes the next iteration continue from there:
the clips not yet yielded this epoch, and no others. With DataLoader workers each worker
holds its own copy of the dataset, so take the state from torchdata's
``StatefulDataLoader`` (``loader.state_dict()`` / ``loader.load_state_dict()``), which
gathers each worker's ``state_dict()`` and restores it into the same worker; torch's plain
DataLoader cannot see its workers' progress. A state only loads into a dataset of the same
selection, seed, batch size, ranks and workers (else ``ClipDatasetError`` says which differs).
Call ``set_epoch(e)`` before each epoch for a new order (not seen by persistent workers).

Decoder: torchcodec (``VideoDecoder(..., seek_mode="approximate").get_frames_at``), PyTorch's
own, chosen after measuring it beside PyAV in ``bench/loader.py`` (CPU, one thread each, the
frames this loader takes from 12 clips of 4-10 s at 360p-1080p, the same resize; on a shared
2-core VM, bench/results/loader-vm*.json). On clips as kvid writes them (x264's keyframe
interval of 250 frames) they decode at the same rate: torchcodec 1.02x PyAV (decoding in
order up to the last frame needed, converting only the kept ones); PyAV that also skips the
frames no other frame refers to before the window was 1.12x torchcodec. With a keyframe
every 2 s torchcodec was 1.19x PyAV: it seeks to the keyframe before a window by itself.
So torchcodec: the same speed with no decode loop of ours (frames by index, seeking,
frame-accurate), and NVDEC decoding (``device="cuda"``) where there is a GPU; the 1.12x of a
hand-written skip loop did not pay for owning one. Its in-decoder ``Resize`` was slower
(torch's resize 1.10x it), so frames are decoded at full size and resized with
``torch.nn.functional.interpolate``. Costs: torchcodec uses the system's FFmpeg libraries
(install.sh installs ffmpeg) and its version must suit torch's (torchcodec >= 0.12 for
torch >= 2.11); it is the ``loader`` extra.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset, get_worker_info

from curate import schema, shards
from curate.buckets import Buckets
from curate.frames import scaled_size
from curate.where import ClipFolderError, read_selection

log = logging.getLogger(__name__)

# Index columns left out of the items: bytes, maps and lists that only the writer needs.
OMITTED_COLUMNS = ("source_bytes", "scene_stats", "signature", "motion_pair_scores")
WINDOWS = ("random", "start", "center")
MAX_FAILED_IDS = 1000  # failed clip ids remembered per process (the count goes on)


class ClipDatasetError(ClipFolderError):
    """A ClipDataset that cannot be made or resumed as asked; the message says why."""


def frame_indices(clip_fps: float, num_frames: int, fps: float, start: int = 0) -> list[int]:
    """Clip frames shown at ``start/clip_fps + k/fps`` seconds, k < num_frames."""
    return [start + int(math.floor(k * clip_fps / fps + 1e-6)) for k in range(num_frames)]


def window_span(clip_fps: float, num_frames: int, fps: float) -> int:
    """Clip frames from the first sampled frame to the last one, inclusive."""
    return frame_indices(clip_fps, num_frames, fps)[-1] + 1


def resize_frames(frames: torch.Tensor, short_side: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 [T, 3, h, w] -> short side ``short_side`` (aspect kept); with ``size`` (H, W):
    resized to cover it, then centre-cropped to exactly (H, W)."""
    h, w = frames.shape[-2:]
    if size is None:
        out_w, out_h = scaled_size(w, h, short_side)
        crop = None
    else:
        crop = size
        scale = max(size[0] / h, size[1] / w)
        out_h, out_w = max(size[0], round(h * scale)), max(size[1], round(w * scale))
    if (out_h, out_w) != (h, w):
        frames = F.interpolate(frames, size=(out_h, out_w), mode="bilinear", antialias=True, align_corners=False)
    if crop is not None:
        top, left = (out_h - crop[0]) // 2, (out_w - crop[1]) // 2
        frames = frames[..., top : top + crop[0], left : left + crop[1]]
    return frames.contiguous()


def decode_frames(mp4: bytes, indices: list[int]) -> torch.Tensor:
    """The clip frames at ``indices`` (sorted), uint8 [T, 3, h, w], decoding up to the last."""
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(mp4, seek_mode="approximate", num_ffmpeg_threads=1, dimension_order="NCHW")
    last = len(decoder) - 1
    if last < 0:
        raise RuntimeError("no frames")
    return decoder.get_frames_at([min(i, last) for i in indices]).data


def require_decoder() -> None:
    """torchcodec is the ``loader`` extra: without it (or without the FFmpeg libraries it
    loads) say so once, at the start, rather than skip every clip as undecodable."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except ImportError:
        raise ClipDatasetError("ClipDataset decodes with torchcodec, which is not installed: "
                               "pip install 'kvid[loader]' (or pip install torchcodec, a version made for your torch)") from None
    except (OSError, RuntimeError) as e:
        raise ClipDatasetError(f"torchcodec does not load ({str(e).splitlines()[0][:200]}): it needs FFmpeg's libraries "
                               "(apt-get install ffmpeg) and a version made for your torch") from None


def _default_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None and world_size is None and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    rank, world_size = rank or 0, world_size or 1
    if not 0 <= rank < world_size:
        raise ClipDatasetError(f"rank {rank} is not in 0..{world_size - 1} (world_size {world_size})")
    return rank, world_size


class ClipDataset(IterableDataset):
    """Clips of a kvid folder as uint8 ``[T, 3, H, W]`` tensors (see the module docstring).

    folder: the output folder of `kvid curate`.
    num_frames: T, frames per clip. fps: the rate they are sampled at (the clips are 24 fps).
    short_side: output short side in px (upscaled when the clip is smaller).
    where: a filter on index columns, e.g. ``"motion_score > 2 and duration_s >= 4"``.
    batch_size: None yields one clip per item (aspect kept, so sizes differ between clips);
        a number yields batches of clips from one bucket, ``video`` ``[B, T, 3, H, W]``.
    buckets: bucket edges (``curate.buckets.Buckets()`` by default); used with batch_size.
    drop_last: drop the partly filled buckets at the end of an epoch (counted in ``dropped``).
    shuffle, seed: a seeded order per epoch; ``shuffle=False`` reads in clip id order.
    window: where the frames start in a longer clip: "random" (seeded), "start" or "center".
    rank, world_size: this process's share; by default from torch.distributed when it is
        initialised, else 0 and 1.

    Each item: ``video``, ``frame_indices`` (the clip frames taken, int64 [T]), ``caption``
    (text, "" when none), ``clip_id``, ``motion_score`` and the index's other columns but
    ``OMITTED_COLUMNS``; with batch_size, ``bucket`` (its label) and every field a list.
    """

    def __init__(
        self,
        folder: str,
        num_frames: int,
        fps: float,
        short_side: int,
        where: str | None = None,
        *,
        batch_size: int | None = None,
        buckets: Buckets | None = None,
        drop_last: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        window: str = "random",
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__()
        if int(num_frames) < 1 or not (fps and fps > 0) or int(short_side) < 2:
            raise ClipDatasetError(f"need num_frames >= 1, fps > 0, short_side >= 2; got {num_frames}, {fps}, {short_side}")
        if batch_size is not None and int(batch_size) < 1:
            raise ClipDatasetError(f"batch_size must be None or >= 1, got {batch_size}")
        if window not in WINDOWS:
            raise ClipDatasetError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
        self.folder = folder
        self.num_frames, self.fps, self.short_side = int(num_frames), float(fps), int(short_side)
        self.where = where
        self.batch_size = None if batch_size is None else int(batch_size)
        self.buckets = buckets or Buckets()
        self.drop_last, self.shuffle, self.seed, self.window = drop_last, shuffle, int(seed), window
        self.rank, self.world_size = _default_rank(rank, world_size)
        require_decoder()

        columns = [c for c in schema.COLUMNS if c not in OMITTED_COLUMNS]
        table = read_selection(folder, where, columns)
        need_s = self.num_frames / self.fps
        long_enough = pc.fill_null(pc.greater_equal(table["duration_s"], need_s - 1e-6), False)
        kept = table.filter(long_enough)
        self.skipped_short = table.num_rows - kept.num_rows
        self.clips: pa.Table = kept.sort_by("clip_id")
        ids = "\n".join(self.clips["clip_id"].to_pylist()).encode()
        self.selection = hashlib.sha256(ids).hexdigest()[:16]
        self._keys = self.buckets.keys(self.clips["width"].to_numpy(zero_copy_only=False),
                                       self.clips["height"].to_numpy(zero_copy_only=False),
                                       self.clips["duration_s"].to_numpy(zero_copy_only=False))
        self.epoch = 0
        self.decode_failed = 0
        self.failed_clips: list[str] = []
        self.dropped = 0
        self._next = 0  # next unit of this process's list in the epoch being read
        self._resume: int | None = None

    # --- the plan of an epoch (index only, nothing decoded) ----------------------------------

    @property
    def num_clips(self) -> int:
        """Clips selected (after ``where`` and the length check), over all ranks."""
        return self.clips.num_rows

    def _worker(self) -> tuple[int, int]:
        info = get_worker_info()
        return (info.id, info.num_workers) if info is not None else (0, 1)

    def order(self, epoch: int) -> np.ndarray:
        """Row numbers of ``clips`` in the order of ``epoch`` (all ranks)."""
        n = self.clips.num_rows
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def units(self, epoch: int, worker: int = 0, num_workers: int = 1) -> list[list[int]]:
        """What one worker of this rank reads in ``epoch``: lists of row numbers, one per item.
        Batches are made from the whole rank's share and dealt to its workers in turn, so
        workers do not split buckets (fewer part-filled batches)."""
        mine = self.order(epoch)[self.rank :: self.world_size]
        if self.batch_size is None:
            return [[int(i)] for i in mine[worker::num_workers]]
        open_: dict[tuple[int, ...], list[int]] = {}
        units = []
        for i in mine:
            group = open_.setdefault(tuple(self._keys[i]), [])
            group.append(int(i))
            if len(group) == self.batch_size:
                units.append(group)
                open_[tuple(self._keys[i])] = []
        rest = [g for g in open_.values() if g]
        if self.drop_last:
            self.dropped = sum(len(g) for g in rest)
        else:
            units += rest
        return units[worker::num_workers]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    # --- state ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        worker, num_workers = self._worker()
        return {
            "epoch": self.epoch,
            "next": self._next if self._resume is None else self._resume,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "selection": self.selection,
            "batch_size": self.batch_size,
            "buckets": [list(self.buckets.aspect_ratios), list(self.buckets.resolution_edges),
                        list(self.buckets.duration_edges)],
            "rank": self.rank,
            "world_size": self.world_size,
            "worker": worker,
            "num_workers": num_workers,
            "decode_failed": self.decode_failed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()
        for key in ("selection", "seed", "shuffle", "batch_size", "buckets", "rank", "world_size", "num_workers", "worker"):
            if state.get(key) != mine[key]:
                what = "clips (folder or where)" if key == "selection" else key
                raise ClipDatasetError(f"cannot resume: the state was saved with other {what} "
                                       f"({state.get(key)!r}, this dataset has {mine[key]!r})")
        self.epoch = int(state["epoch"])
        self._resume = int(state["next"])
        self.decode_failed = int(state.get("decode_failed", 0))

    # --- reading ----------------------------------------------------------------------------

    def _row(self, i: int) -> dict[str, Any]:
        return self.clips.slice(i, 1).to_pylist()[0]

    def _start_frame(self, row: dict[str, Any], span: int, clip_frames: int) -> int:
        room = max(0, clip_frames - span)
        if self.window == "start" or room == 0:
            return 0
        if self.window == "center":
            return room // 2
        digest = hashlib.sha256(f"{self.seed}:{self.epoch}:{row['clip_id']}".encode()).digest()
        return int.from_bytes(digest[:8], "little") % (room + 1)

    def clip_frame_indices(self, row: dict[str, Any]) -> list[int]:
        """The clip frames this epoch's item of ``row`` is made of."""
        clip_fps = float(row["fps"] or 24.0)
        clip_frames = int(row["num_frames"] or math.floor((row["duration_s"] or 0.0) * clip_fps))
        span = window_span(clip_fps, self.num_frames, self.fps)
        return frame_indices(clip_fps, self.num_frames, self.fps, self._start_frame(row, span, clip_frames))

    def load_clip(self, row: dict[str, Any], size: tuple[int, int] | None = None) -> dict[str, Any]:
        """One clip's item (raises when its bytes do not decode)."""
        indices = self.clip_frame_indices(row)
        frames = decode_frames(shards.read_clip_bytes(self.folder, row), indices)
        item: dict[str, Any] = {"video": resize_frames(frames, self.short_side, size),
                                "frame_indices": torch.tensor(indices, dtype=torch.int64)}
        item.update(row)
        item["caption"] = row.get("caption") or ""
        return item

    def _load_unit(self, unit: list[int]) -> dict[str, Any] | None:
        size, key = None, None
        if self.batch_size is not None:
            a, r, d = (int(v) for v in self._keys[unit[0]])
            key = (a, r, d)
            size = self.buckets.frame_size(key, self.short_side)
        items = []
        for i in unit:
            row = self._row(i)
            try:
                items.append(self.load_clip(row, size))
            except Exception as e:  # a clip that does not decode: skipped, the epoch goes on
                self.decode_failed += 1
                if len(self.failed_clips) < MAX_FAILED_IDS:
                    self.failed_clips.append(row["clip_id"])
                log.warning("clip %s (%s) skipped: %s", row["clip_id"], row["shard"], str(e).splitlines()[0][:200])
        if not items:
            return None
        if key is None:
            return items[0]
        batch: dict[str, Any] = {k: [it[k] for it in items] for k in items[0]}
        batch["video"] = torch.stack(batch["video"])
        batch["frame_indices"] = torch.stack(batch["frame_indices"])
        batch["bucket"] = self.buckets.label(key)
        return batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, num_workers = self._worker()
        units = self.units(self.epoch, worker, num_workers)
        start = self._resume if self._resume is not None else 0
        self._resume = None
        self._next = start
        for u in range(start, len(units)):
            item = self._load_unit(units[u])
            self._next = u + 1
            if item is not None:
                yield item

    def __repr__(self) -> str:
        return (f"ClipDataset({self.folder!r}, {self.num_clips} clips, {self.skipped_short} too short for "
                f"{self.num_frames} frames at {self.fps:g} fps, rank {self.rank}/{self.world_size})")
