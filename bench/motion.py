"""Motion-score throughput: frame pairs per second per backend, size, dtype and batch size.

    python bench/motion.py                      # CPU: dis, farneback, raft_small, raft_large
    python bench/motion.py --device cuda        # GPU: RAFT fp32 vs bf16, batch 1..64
    python bench/motion.py --save               # also write bench/results/motion-<device>.json

"x real time" is pairs/s / 24: a 24 fps clip-second has 24 consecutive pairs, so 50x
means 50 clip-seconds scored per second. Ratios compare with a baseline measured in the
same run: "vs farneback" (same size, one worker), "vs b1" (RAFT: same model, size and
dtype at batch size 1) and "vs fp32" (RAFT bf16/fp16 against fp32 at the same batch).
OpenCV backends are timed with ``--workers`` 1 and 2 (pairs in parallel threads: the
2-core figure) and DIS with presets medium (the default) and fast. RAFT uses random weights (speed does not depend on the values).
The "stage" rows run MotionStage end to end on 720p H.264 clips (decode and resize
included), as the pipeline does.
No assertion on timings anywhere: numbers are printed, never checked.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The repository root goes first even when PYTHONPATH already names it: this folder's own
# motion.py would otherwise shadow the motion package.
sys.path.insert(0, ROOT)

from bench.gpu_parts import add_output_flags  # noqa: E402
from motion import MotionStage, get_backend  # noqa: E402
from motion.backends import is_raft  # noqa: E402

FPS = 24


def synthetic_frames(num_frames: int, short: int, speed: int = 3, seed: int = 0) -> np.ndarray:
    """16:9 frames (T, short, ~1.78*short, 3) of a textured scene panning ``speed`` px/frame."""
    import cv2

    h, w = short, int(round(short * 16 / 9 / 8)) * 8
    rng = np.random.default_rng(seed)
    big_w = w + speed * num_frames
    acc = np.zeros((h, big_w, 3), np.float32)
    for sigma, weight in ((1.0, 1.0), (3.0, 1.5), (8.0, 2.0)):
        n = cv2.GaussianBlur(rng.standard_normal((h, big_w, 3)).astype(np.float32), (0, 0), sigma)
        acc += weight * n / (n.std() + 1e-6)
    tex = np.clip(128 + 45 * (acc - acc.mean()) / (acc.std() + 1e-6), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(
        np.stack([tex[:, speed * (num_frames - t) : speed * (num_frames - t) + w] for t in range(num_frames)])
    )


def video_frames(path: str, num_frames: int, short: int) -> np.ndarray:
    from curate.frames import read_frames

    return read_frames(path, fps=FPS, short_side=short, pix_fmt="rgb24", max_frames=num_frames)


def time_backend(backend, frames: np.ndarray, batch: int, warmup: int, iters: int, budget_s: float) -> dict:
    """pairs/s over timed calls of ``pair_stats`` on batches drawn from consecutive pairs.

    ``warmup`` untimed calls first (at least one: the first call of a shape sets up
    kernels). When one call exceeds the budget (RAFT at 512 px on a CPU), a single
    timed call is the measurement.
    """
    n_pairs = len(frames) - 1
    idx = np.arange(batch) % n_pairs
    a, b = frames[idx], frames[idx + 1]
    for _ in range(max(1, warmup)):
        t0 = time.perf_counter()
        backend.pair_stats(a, b)  # returns numpy: includes upload, flow, statistics, download
        last = time.perf_counter() - t0
    times = []
    t_start = time.perf_counter()
    while len(times) < (1 if last > budget_s else iters) and (time.perf_counter() - t_start < budget_s or not times):
        t0 = time.perf_counter()
        backend.pair_stats(a, b)
        times.append(time.perf_counter() - t0)
    t = float(np.median(times))
    return {"pairs_per_s": batch / t, "s_per_batch": t, "timed_iters": len(times)}


def encode_clip(frames: np.ndarray, path: str) -> None:
    t, h, w, _ = frames.shape
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{w}x{h}", "-r", str(FPS), "-i", "pipe:0", "-c:v", "libx264", "-preset", "veryfast",
           "-crf", "18", "-pix_fmt", "yuv420p", path]
    subprocess.run(cmd, input=frames.tobytes(), check=True, capture_output=True)


def time_stage(name: str, size: int, device: str, dtype: str, batch: int, workers: int, clips: list[bytes],
               clip_frames: int, updates: int, dims: tuple[int, int]) -> dict:
    if is_raft(name):
        stage = MotionStage(backend=name, size=size, batch_size=batch, device=device, dtype=dtype, random_weights=True,
                            num_flow_updates=updates)
    else:
        stage = MotionStage(backend=name, size=size, batch_size=batch, flow_threads=workers)
    stage.setup()
    rows = [{"clip_id": str(i), "status": "ok", "mp4": c, "width": dims[0], "height": dims[1]} for i, c in enumerate(clips)]
    stage(rows[:1])  # warm-up
    t0 = time.perf_counter()
    out = stage(rows)
    dt = time.perf_counter() - t0
    assert all(r["status"] == "ok" for r in out), [r.get("error_message") for r in out]
    pairs = sum(len(r["motion_pair_scores"]) for r in out)
    return {"pairs_per_s": pairs / dt, "s_per_batch": dt, "timed_iters": 1, "clip_seconds": len(clips) * clip_frames / FPS}


def profile_raft(rows: list[dict], device: str, frames_by_size: dict, args) -> None:
    from bench.gpu_parts import profile_top_kernels

    timed = [r for r in rows if r["backend"].startswith("raft") and "pairs_per_s" in r]
    if not timed:
        return
    first = timed[0]
    name, size = first["backend"], first["size"]
    dtype = [r["dtype"] for r in timed if r["backend"] == name][-1]
    batch = max(r["batch"] for r in timed if (r["backend"], r["size"], r["dtype"]) == (name, size, dtype))
    frames = frames_by_size[size]
    idx = np.arange(batch) % (len(frames) - 1)
    b = get_backend(name, device=device, dtype=dtype, weights=None, num_flow_updates=args.num_flow_updates)
    b.setup()
    b.pair_stats(frames[idx], frames[idx + 1])  # warm-up
    profile_top_kernels(lambda: b.pair_stats(frames[idx], frames[idx + 1]), device, args.profile,
                        f"{name} {size} px {dtype} batch {batch}, one pair_stats call")


def stage_rows(stage_backends, size, device, dtypes, cuda, workers_list, args, emit) -> None:
    """MotionStage end to end on mp4 clips (needs ffmpeg): decode + resize + flow."""
    with tempfile.TemporaryDirectory() as tmp:
        # curated clips as transcode writes them: 720p H.264, resized to `size` on decode
        clip_frames, clip_short = 48, 720
        clips = []
        for i in range(4):
            path = os.path.join(tmp, f"c{i}.mp4")
            encode_clip(synthetic_frames(clip_frames, clip_short, speed=2 + i, seed=i), path)
            with open(path, "rb") as f:
                clips.append(f.read())
        clip_w = synthetic_frames(2, clip_short).shape[2]
        for name in stage_backends:
            if is_raft(name) and not cuda:
                continue
            for nw in ([1] if is_raft(name) else workers_list):
                bs = 32 if is_raft(name) else 16
                dtype = dtypes[-1] if is_raft(name) else "-"
                r = time_stage(name, size, device, dtype if is_raft(name) else "auto", bs, nw, clips,
                               clip_frames, args.num_flow_updates, (clip_w, clip_short))
                emit({"backend": f"stage:{name}", "size": size, "dtype": dtype, "batch": bs,
                      "workers": nw if not is_raft(name) else "-", **r,
                      "note": f"MotionStage: 4 mp4 clips, 2 s, {clip_w}x{clip_short}: decode + resize + flow"})


def device_info(device: str) -> dict:
    import torch

    info = {
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    try:
        import cv2

        info["opencv"] = cv2.__version__
        info["opencv_threads"] = cv2.getNumThreads()
    except ImportError:
        pass
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument(
        "--backends",
        default=None,
        help="comma list (default: dis,farneback,raft_small,raft_large on CPU; raft_large,raft_small on CUDA)",
    )
    p.add_argument("--sizes", default="256,512", help="short sides in px (default 256,512)")
    p.add_argument("--dtypes", default=None, help="RAFT dtypes (default fp32 on CPU; fp32,bf16 on CUDA)")
    p.add_argument("--batch-sizes", default=None, help="RAFT batch sizes (default 1,4,16 on CPU; 1,2,4,8,16,32,64 on CUDA)")
    p.add_argument("--num-flow-updates", type=int, default=12, help="RAFT refinement iterations (torchvision default 12)")
    p.add_argument("--frames", type=int, default=None, help="frames of the synthetic clip (default 9 on CPU, 65 on CUDA)")
    p.add_argument("--video", default=None, help="use frames of this video instead of synthetic ones")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 1 on CPU, 2 on CUDA)")
    p.add_argument("--workers", default="1,2", help="OpenCV backends: pairs computed in parallel threads (default 1,2)")
    p.add_argument("--dis-presets", default="medium,fast", help="DIS presets to time (default medium,fast)")
    p.add_argument("--iters", type=int, default=5, help="timed calls per configuration (at most)")
    p.add_argument("--budget-s", type=float, default=None, help="time per configuration (default 4 s CPU, 10 s CUDA); "
                   "configurations estimated to need more than 3x this for one call are skipped")
    p.add_argument("--stage", default=None, help="backends to run end to end through MotionStage on mp4 clips "
                   "(default dis on CPU; dis,raft_large on CUDA; 'none' to skip)")
    add_output_flags(p, "bench/results/motion-<device>.json",
                     "one call of the first RAFT backend (first size, last dtype, largest batch timed)")
    args = p.parse_args(argv)

    import torch

    device = args.device
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    backends = (args.backends or ("raft_large,raft_small" if cuda else "dis,farneback,raft_small,raft_large")).split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    dtypes = (args.dtypes or ("fp32,bf16" if cuda else "fp32")).split(",")
    batches = [int(b) for b in (args.batch_sizes or ("1,2,4,8,16,32,64" if cuda else "1,4,16")).split(",")]
    n_frames = args.frames or (65 if cuda else 9)
    warmup = args.warmup if args.warmup is not None else (2 if cuda else 1)
    workers_list = [int(w) for w in args.workers.split(",")]
    presets = args.dis_presets.split(",")
    budget = args.budget_s or (10.0 if cuda else 4.0)
    stage_backends = [s for s in (args.stage or ("dis,raft_large" if cuda else "dis")).split(",") if s and s != "none"]

    info = device_info(device)
    print(f"# motion bench on {device}: {json.dumps(info)}", flush=True)
    frames_by_size = {
        s: (video_frames(args.video, n_frames, s) if args.video else synthetic_frames(n_frames, s)) for s in sizes
    }
    rows: list[dict] = []

    def emit(row: dict) -> None:
        row.setdefault("dtype", "-")
        row.setdefault("batch", "-")
        row.setdefault("workers", "-")
        if "pairs_per_s" in row:
            row["x_realtime"] = row["pairs_per_s"] / FPS
        rows.append(row)
        print(f"  {row['backend']:<16} {row['size']:>4} {row['dtype']:<5} b={str(row['batch']):<3} w={str(row['workers']):<2} "
              f"{row.get('pairs_per_s', float('nan')):>9.2f} pairs/s {row.get('x_realtime', float('nan')):>8.2f}x  "
              f"{row.get('note', '')}", flush=True)

    for size in sizes:
        frames = frames_by_size[size]
        h, w = frames.shape[1:3]
        print(f"## {w}x{h} (short side {size}), {len(frames)} frames", flush=True)
        for name in backends:
            if not is_raft(name):
                for preset in (presets if name == "dis" else [None]):
                    label = f"dis-{preset}" if preset else name
                    for nw in workers_list:
                        b = get_backend(name, preset=preset, workers=nw)
                        b.setup()
                        r = time_backend(b, frames, min(16, len(frames) - 1) if nw > 1 else min(8, len(frames) - 1),
                                         warmup, args.iters, budget)
                        b.close()
                        emit({"backend": label, "size": size, "workers": nw, **r})
                continue
            for dtype in dtypes:
                b = get_backend(name, device=device, dtype=dtype, weights=None, num_flow_updates=args.num_flow_updates)
                b.setup()
                per_pair = None
                for bs in batches:
                    base = {"backend": b.name, "size": size, "dtype": dtype, "batch": bs}
                    if per_pair is not None and per_pair * bs > 3 * budget:
                        emit({**base, "skipped": True, "note": f"skipped: ~{per_pair * bs:.0f} s per call"})
                        continue
                    try:
                        r = time_backend(b, frames, bs, warmup, args.iters, budget)
                    except torch.OutOfMemoryError:
                        torch.cuda.empty_cache()
                        emit({**base, "skipped": True, "note": "out of memory"})
                        break
                    per_pair = r["s_per_batch"] / bs
                    emit({**base, **r})
                del b
                if cuda:
                    torch.cuda.empty_cache()
        if stage_backends:
            try:
                stage_rows(stage_backends, size, device, dtypes, cuda, workers_list, args, emit)
            except (OSError, subprocess.CalledProcessError, RuntimeError, AssertionError) as e:  # e.g. no libx264
                emit({"backend": "stage", "size": size, "skipped": True, "note": f"stage failed: {e}"[:200]})

    # Ratios against baselines measured in this run.
    fb = {r["size"]: r["pairs_per_s"] for r in rows if r["backend"] == "farneback" and r["workers"] == 1 and "pairs_per_s" in r}
    b1 = {(r["backend"], r["size"], r["dtype"]): r["pairs_per_s"] for r in rows if r["batch"] == 1 and "pairs_per_s" in r}
    fp32 = {(r["backend"], r["size"], r["batch"]): r["pairs_per_s"] for r in rows if r["dtype"] == "fp32" and "pairs_per_s" in r}
    for r in rows:
        if "pairs_per_s" not in r:
            continue
        if r["size"] in fb:
            r["vs_farneback"] = r["pairs_per_s"] / fb[r["size"]]
        if (r["backend"], r["size"], r["dtype"]) in b1 and isinstance(r["batch"], int):
            r["vs_b1"] = r["pairs_per_s"] / b1[(r["backend"], r["size"], r["dtype"])]
        if r["dtype"] not in ("-", "fp32") and (r["backend"], r["size"], r["batch"]) in fp32:
            r["vs_fp32"] = r["pairs_per_s"] / fp32[(r["backend"], r["size"], r["batch"])]

    print()
    print("| backend | size | dtype | batch | workers | pairs/s | x real time | vs farneback | vs b1 | vs fp32 |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        def f(k, fmt="{:.2f}", r=r):
            return fmt.format(r[k]) if k in r else "-"

        head = f"| {r['backend']} | {r['size']} | {r['dtype']} | {r['batch']} | {r['workers']} |"
        if r.get("skipped"):
            print(f"{head} {r['note']} | | | | |")
            continue
        print(f"{head} {f('pairs_per_s')} | {f('x_realtime')} | {f('vs_farneback')} | {f('vs_b1')} | {f('vs_fp32')} |")

    if args.out:
        from bench.gpu_parts import run_info, write_json

        write_json(args.out, {"bench": "motion", "info": {**info, **run_info(device)}, "args": vars(args),
                              "frames": n_frames, "rows": rows})
        print(f"\nwrote {args.out}")
    if args.profile:  # after the figures are written: a diagnosis, not a figure
        profile_raft(rows, device, frames_by_size, args)
    if args.save:
        out_dir = os.path.join(ROOT, "bench", "results")
        os.makedirs(out_dir, exist_ok=True)
        tag = "cuda" if cuda else "cpu"
        path = os.path.join(out_dir, f"motion-{tag}.json")
        doc = {"bench": "motion", "info": info, "args": vars(args), "frames": n_frames, "rows": rows,
               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=2)
        os.replace(tmp, path)
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
