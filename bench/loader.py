"""Loader throughput on CPU: ClipDataset against a naive loader, and two decoders, in one run.

    python bench/loader.py                    # a synthetic 12-clip folder, 16 frames at 8 fps
    python bench/loader.py --gop 48           # the same clips with a keyframe every 2 s
    python bench/loader.py --folder data/     # an existing kvid folder (its clips, as curated)
    python bench/loader.py --save             # also write bench/results/loader-vm.json

loader: ``curate.loader.ClipDataset`` as it runs by default (seeded order, a random window
of 16 frames at 8 fps in each clip, short side 256, one process), one clip per item and in
bucketed batches of 4. It reads each clip by its index offset and decodes with torchcodec
only up to the last frame it needs.

naive: what a trainer writes from the README snippet: webdataset over the tars, the whole
mp4 decoded with the same decoder (torchcodec, every frame), then the same 16 frames picked
and resized the same way. Same clips, same frames, same output.

decoders (the choice in curate/loader.py): the frames the loader takes, with the same resize:
torchcodec (``get_frames_at``, then torch's resize), torchcodec with its in-decoder
``Resize`` transform, and PyAV (decode in order up to the last frame needed; only the kept
frames converted and resized, by swscale; needs ``pip install av``), and PyAV skipping the
frames no other frame refers to before the window. One thread each: DataLoader workers are
the parallelism.

Rounds alternate the contenders; clips/s are medians over rounds, a ratio is the median
over rounds of the two contenders' times in the same round. No assertion: numbers and
ratios are printed (the goal: loader >= 2x naive at 16 frames per clip). --gop N makes the
synthetic clips with a keyframe every N frames (kvid writes x264's default, 250).
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import io
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # first: this folder holds a bench/curate.py that would shadow the package

sys.path.insert(1, os.path.dirname(os.path.abspath(__file__)))
from machine import machine_info  # noqa: E402

# (size, seconds, lavfi source) of the synthetic corpus: the shapes and lengths kvid writes.
CORPUS = [((1280, 720), 6.0, "testsrc2"), ((640, 360), 4.0, "mandelbrot"), ((1280, 544), 8.0, "testsrc2"),
          ((720, 720), 5.0, "mandelbrot"), ((640, 360), 10.0, "testsrc2"), ((1920, 1080), 4.0, "mandelbrot")]


def make_corpus(folder: str, clips: int, gop: int | None = None) -> str:
    """``clips`` clips at 24 fps, x264 CRF 18 preset fast (kvid's encode: x264's default
    keyframe interval of 250 frames, or ``gop``), in a kvid folder."""
    from curate import synthetic as S

    raw = os.path.join(folder, "raw")
    rows = []
    for i in range(clips):
        (w, h), seconds, source = CORPUS[i % len(CORPUS)]
        path = S.plain_video(os.path.join(raw, f"{i:03d}.mp4"), duration_s=seconds, fps=24, size=(w, h),
                             source=source, enc=S.Encoding(crf=18, preset="fast"),
                             extra=["-movflags", "+faststart", *(["-g", str(gop)] if gop else [])])
        with open(path, "rb") as f:
            rows.append({"mp4": f.read(), "clip_id": f"clip{i:04d}", "width": w, "height": h,
                         "num_frames": int(round(seconds * 24)), "motion_score": float(i % 5), "caption": f"clip {i}"})
    out = os.path.join(folder, "curated")
    S.clip_folder(out, rows, clips_per_shard=8)
    return out


def naive_loader(folder: str, num_frames: int, fps: float, short_side: int):
    """webdataset + whole-mp4 decode + pick: yields (clip_id, [T, 3, H, W] uint8)."""
    import torch
    import webdataset as wds
    from torchcodec.decoders import VideoDecoder

    from curate.loader import frame_indices, resize_frames

    tars = sorted(glob.glob(os.path.join(folder, "shards", "*.tar")))
    for key, mp4, meta in wds.WebDataset(tars, shardshuffle=False).to_tuple("__key__", "mp4", "json"):
        row = json.loads(meta)
        decoder = VideoDecoder(mp4, num_ffmpeg_threads=1)
        frames = decoder.get_frames_in_range(0, len(decoder)).data  # every frame
        idx = frame_indices(row["fps"], num_frames, fps, 0)
        yield key, resize_frames(frames[torch.tensor(idx)], short_side)


def decode_torchcodec(mp4: bytes, idx: list[int], short_side: int):
    from curate.loader import decode_frames, resize_frames

    return resize_frames(decode_frames(mp4, idx), short_side)


def decode_torchcodec_native_resize(mp4: bytes, idx: list[int], short_side: int):
    from torchcodec import transforms
    from torchcodec.decoders import VideoDecoder

    from curate.frames import scaled_size

    probe = VideoDecoder(mp4, seek_mode="approximate").metadata
    w, h = scaled_size(probe.width, probe.height, short_side)
    decoder = VideoDecoder(mp4, seek_mode="approximate", num_ffmpeg_threads=1, transforms=[transforms.Resize((h, w))])
    return decoder.get_frames_at(idx).data


def decode_pyav(mp4: bytes, idx: list[int], short_side: int):
    import av
    import numpy as np
    import torch

    from curate.frames import scaled_size

    wanted, got = set(idx), {}
    with av.open(io.BytesIO(mp4)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        stream.codec_context.thread_count = 1
        w, h = scaled_size(stream.codec_context.width, stream.codec_context.height, short_side)
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                got[i] = frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
            if i >= idx[-1]:
                break
    return torch.from_numpy(np.stack([got[i] for i in idx])).permute(0, 3, 1, 2)


def decode_pyav_skip_nonref(mp4: bytes, idx: list[int], short_side: int, clip_fps: float = 24.0):
    """PyAV as above, but frames no other frame refers to (most B-frames) are not decoded
    before the window (FFmpeg's skip_frame=NONREF), which no maintained loader does for us."""
    import av
    import numpy as np
    import torch

    from curate.frames import scaled_size

    wanted, got = set(idx), {}
    with av.open(io.BytesIO(mp4)) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        ctx.thread_count = 1
        ctx.skip_frame = "NONREF"
        tb = float(stream.time_base)
        w, h = scaled_size(ctx.width, ctx.height, short_side)
        done = False
        for packet in container.demux(stream):
            if ctx.skip_frame != "DEFAULT" and packet.pts is not None and packet.pts * tb * clip_fps >= idx[0] - 8:
                ctx.skip_frame = "DEFAULT"  # a few frames ahead: the decoder's output lags its input
            for frame in packet.decode():
                i = int(round(frame.pts * tb * clip_fps))
                if i in wanted:
                    got[i] = frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
                done = i >= idx[-1]
            if done:
                break
    return torch.from_numpy(np.stack([got[i] for i in idx])).permute(0, 3, 1, 2)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", help="an existing kvid folder (default: a synthetic one, made here)")
    ap.add_argument("--clips", type=int, default=12, help="clips of the synthetic folder (default 12)")
    ap.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    ap.add_argument("--fps", type=float, default=8.0, help="sampling rate (default 8: 16 frames = 2 s)")
    ap.add_argument("--short-side", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--gop", type=int, help="keyframe interval of the synthetic clips (default: x264's, 250, as kvid writes)")
    ap.add_argument("--save", action="store_true", help="write bench/results/loader-vm.json (-gopN.json with --gop)")
    args = ap.parse_args()

    import torch

    from curate import shards
    from curate.loader import ClipDataset

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="kvid-bench-loader-") as tmp:
        folder = args.folder or make_corpus(tmp, args.clips, args.gop)
        T, fps, side = args.frames, args.fps, args.short_side

        def loader(batch_size=None):
            ds = ClipDataset(folder, T, fps, side, batch_size=batch_size)  # seeded order, random windows
            return sum(1 if batch_size is None else len(b["clip_id"]) for b in ds)

        def naive():
            return sum(1 for _ in naive_loader(folder, T, fps, side))

        ds = ClipDataset(folder, T, fps, side)
        n_clips = ds.num_clips
        rows = ds.clips.to_pylist()
        # The decoders get the frames the loader takes (random windows, as it runs by default).
        blobs = [(shards.read_clip_bytes(folder, r), ds.clip_frame_indices(r)) for r in rows]
        # Same frames out of both loaders: the comparison is of equal work.
        ours = next(iter(ClipDataset(folder, T, fps, side, shuffle=False, window="start")))
        theirs = dict(naive_loader(folder, T, fps, side))[ours["clip_id"]]
        assert torch.equal(ours["video"], theirs), "loader and naive loader disagree"

        decoders = {"decode_torchcodec": decode_torchcodec, "decode_torchcodec_native_resize": decode_torchcodec_native_resize}
        if importlib.util.find_spec("av"):
            decoders["decode_pyav"] = decode_pyav
            decoders["decode_pyav_skip_nonref"] = decode_pyav_skip_nonref
        else:
            print("PyAV not installed (pip install av): its decoder is not measured")
        contenders = {
            "loader": lambda: loader(),
            "loader_batched_4": lambda: loader(4),
            "naive": naive,
            **{name: (lambda d=d: [d(b, i, side) for b, i in blobs]) for name, d in decoders.items()},
        }
        for decode in decoders.values():  # imports, first-call set-up
            decode(*blobs[0], side)
        load_before = os.getloadavg()
        times: dict[str, list[float]] = {k: [] for k in contenders}
        for _ in range(args.rounds):
            for name, fn in contenders.items():
                times[name].append(timed(fn))
        load_after = os.getloadavg()

    med = {k: statistics.median(v) for k, v in times.items()}
    clips_s = {k: n_clips / v for k, v in med.items()}

    def ratio(a: str, b: str) -> float | None:
        """Median over rounds of b's time / a's time in the same round: on a shared machine a
        load spike then hits both sides of a ratio, not one contender's median."""
        if a not in times or b not in times:
            return None
        return round(statistics.median(tb / ta for ta, tb in zip(times[a], times[b])), 2)

    result = {
        "what": f"{n_clips} clips, {T} frames at {fps:g} fps, short side {side}, CPU, one process, torch threads 1",
        "folder": "synthetic" if not args.folder else os.path.basename(os.path.normpath(args.folder)),
        "clips_per_s": {k: round(v, 2) for k, v in clips_s.items()},
        "frames_per_s": {k: round(v * T, 1) for k, v in clips_s.items()},
        "loader_vs_naive": ratio("loader", "naive"),
        "batched_vs_naive": ratio("loader_batched_4", "naive"),
        "torchcodec_vs_pyav": ratio("decode_torchcodec", "decode_pyav"),
        "torchcodec_vs_pyav_skip_nonref": ratio("decode_torchcodec", "decode_pyav_skip_nonref"),
        "torchcodec_vs_native_resize": ratio("decode_torchcodec", "decode_torchcodec_native_resize"),
        "rounds_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "load_avg_before": load_before,
        "load_avg_after": load_after,
        "machine": machine_info(),
        "versions": _versions(),
        "args": vars(args),
    }
    print(result["what"])
    for k in contenders:
        print(f"  {k:<34} {clips_s[k]:7.2f} clips/s {clips_s[k] * T:8.1f} frames/s")
    print(f"loader / naive {result['loader_vs_naive']}x (batched {result['batched_vs_naive']}x); "
          f"torchcodec / PyAV {result['torchcodec_vs_pyav']}x (skipping non-ref frames "
          f"{result['torchcodec_vs_pyav_skip_nonref']}x); torch resize / in-decoder Resize "
          f"{result['torchcodec_vs_native_resize']}x; load {load_before[0]:.2f} -> {load_after[0]:.2f}")
    print(f"goal (loader >= 2x naive at {T} frames per clip): {'met' if result['loader_vs_naive'] >= 2 else 'missed'}")
    if args.save:
        name = "loader-vm.json" if not args.gop else f"loader-vm-gop{args.gop}.json"
        path = os.path.join(ROOT, "bench", "results", name)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        print(f"saved {path}")
    return 0


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("torch", "torchcodec", "av", "webdataset"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "absent"
    return out


if __name__ == "__main__":
    sys.exit(main())
