"""Wall time of `kvid curate` against a floor and a naive baseline, measured in one run.

    floor  : one ffmpeg decode of every input + the x264 encode of the kept clips alone
             (from raw frames, same encoder settings): work no curation pipeline can skip.
    naive  : PySceneDetect's CLI `detect-content split-video`, then one ffmpeg call per kept
             clip for 24 fps / crop / scale (what a script around the tools would do).
    kvid   : `kvid curate` as a user runs it (cold: Python start, local Ray start, the run),
             and the run without starting Ray (from the manifest: wall_s - ray_start_s).

Goal: kvid within 1.5x of the floor and at least 2x faster than naive. Prints ratios;
writes JSON with --save. Motion and captions are off: this measures curation itself.

    python bench/curate.py                       # sample videos + a 60 s 720p synthetic video
    python bench/curate.py --long-seconds 120 --save
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import machine_info  # noqa: E402

from curate import shards, synthetic  # noqa: E402
from curate.frames import as_file  # noqa: E402
from curate.transcode import TranscodeParams  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "videos"


def timed(cmd: list[str], **kw) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return time.perf_counter() - t


def make_inputs(folder: Path, long_seconds: float) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    inputs = sorted(SHARED.glob("*.mp4")) if SHARED.exists() else []
    long = folder / f"long720p_{int(long_seconds)}s.mp4"
    if not long.exists():
        # Scenes of 4 to 9 s at 30 fps, 1280x720.
        lengths, total = [], 0
        while total < long_seconds * 30:
            n = int(30 * (4 + (len(lengths) * 7) % 6))
            lengths.append(n)
            total += n
        synthetic.scene_video(str(long), lengths, fps=30, size=(1280, 720))
    return inputs + [long]


def run_kvid(inputs: list[Path], out: Path, workers: int | None) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "pipelines.cli", "curate", *map(str, inputs), "--out", str(out), "-q",
           "--motion-backend", "none", "--caption-model", "none"]
    if workers:
        cmd += ["--workers", str(workers)]
    wall = timed(cmd, cwd=ROOT)
    manifest = json.loads((out / "manifest.json").read_text())
    return wall, manifest["runs"][-1]


def floor_time(inputs: list[Path], out: Path, params: TranscodeParams, scratch: Path) -> dict:
    decode = sum(timed(["ffmpeg", "-nostdin", "-v", "error", "-i", str(p), "-map", "0:v:0", "-f", "null", "-"]) for p in inputs)
    encode = 0.0
    for row in shards.read_index(str(out)).to_pylist():
        raw = scratch / f"{row['clip_id']}.yuv"
        with as_file(shards.read_clip_bytes(str(out), row)) as clip:
            subprocess.run(
                ["ffmpeg", "-nostdin", "-v", "error", "-i", clip, "-f", "rawvideo", "-pix_fmt", "yuv420p", "-y", str(raw)],
                check=True,
            )
        encode += timed([
            "ffmpeg", "-nostdin", "-v", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p",
            "-s", f"{row['width']}x{row['height']}", "-r", str(params.fps), "-i", str(raw),
            "-c:v", params.codec, "-preset", params.preset, "-crf", str(params.crf), "-pix_fmt", "yuv420p",
            "-y", str(scratch / "enc.mp4"),
        ])
        raw.unlink()
    return {"decode_s": decode, "encode_s": encode, "total_s": decode + encode}


def naive_time(inputs: list[Path], out: Path, params: TranscodeParams, scratch: Path) -> dict:
    scenedetect = shutil.which("scenedetect") or str(Path(sys.executable).parent / "scenedetect")
    split = 0.0
    for p in inputs:
        d = scratch / p.stem
        d.mkdir(parents=True, exist_ok=True)
        try:
            split += timed([scenedetect, "-q", "-i", str(p), "-o", str(d), "detect-content", "split-video"])
        except subprocess.CalledProcessError:
            continue  # the tool gives up on some inputs; kvid turns those into rejects
    # Post-process the clips kvid kept (same crop and size), one ffmpeg call each, from the
    # scene files PySceneDetect wrote: match them by source and order.
    post = 0.0
    kept = shards.read_index(str(out)).to_pylist()
    for row in kept:
        src = Path(row["source"])
        files = sorted((scratch / src.stem).glob("*.mp4"))
        if not files:
            continue
        f = files[min(row["scene_index"] or 0, len(files) - 1)]
        crop = f"crop={row['crop_w']}:{row['crop_h']}:{row['crop_x']}:{row['crop_y']}"
        vf = f"{crop},fps={params.fps},scale={row['width']}:{row['height']}"
        post += timed([
            "ffmpeg", "-nostdin", "-v", "error", "-i", str(f), "-vf", vf, "-an",
            "-c:v", params.codec, "-preset", params.preset, "-crf", str(params.crf), "-pix_fmt", "yuv420p",
            "-y", str(scratch / "post.mp4"),
        ])
    return {"split_s": split, "post_s": post, "total_s": split + post}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--long-seconds", type=float, default=60.0,
                    help="length of the synthetic 720p input (fixed costs such as Ray's start weigh less on longer input)")
    ap.add_argument("--workers", type=int, default=None, help="kvid --workers (default: one per CPU)")
    ap.add_argument("--work", default=str(ROOT / "bench" / "out"), help="scratch folder (inputs are cached here)")
    ap.add_argument(
        "--save", action="store_true", help="write bench/results/curate-<host>[-<N>s].json (suffix when --long-seconds is not 60)"
    )
    args = ap.parse_args()

    work = Path(args.work)
    inputs = make_inputs(work / "inputs", args.long_seconds)
    params = TranscodeParams()
    results = {}
    for name, subset in (("samples", inputs[:-1]), ("long720p", inputs[-1:]), ("all", inputs)):
        if not subset:
            continue
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            tmp = Path(tmp)
            wall, run = run_kvid(subset, tmp / "kvid", args.workers)
            floor = floor_time(subset, tmp / "kvid", params, tmp)
            naive = naive_time(subset, tmp / "kvid", params, tmp / "naive")
            index = shards.read_index(str(tmp / "kvid"))
            results[name] = {
                "inputs": len(subset),
                "clips": index.num_rows,
                "seconds_in": sum(
                    float(
                        subprocess.run(
                            ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(p)],
                            capture_output=True,
                            text=True,
                        ).stdout
                        or 0
                    )
                    for p in subset
                ),
                "kvid_cold_s": wall,
                "kvid_pipeline_s": run["wall_s"] - run.get("ray_start_s", 0.0),
                "floor": floor,
                "naive": naive,
                "kvid_over_floor": wall / floor["total_s"],
                "kvid_pipeline_over_floor": (run["wall_s"] - run.get("ray_start_s", 0.0)) / floor["total_s"],
                "naive_over_kvid": naive["total_s"] / wall,
            }
    print(f"{'set':<10}{'in':>4}{'clips':>6}{'floor s':>9}{'naive s':>9}{'kvid s':>8}{'run s':>7}"
          f"{'kvid/floor':>12}{'run/floor':>11}{'naive/kvid':>12}")
    for name, r in results.items():
        print(f"{name:<10}{r['inputs']:>4}{r['clips']:>6}{r['floor']['total_s']:>9.1f}{r['naive']['total_s']:>9.1f}"
              f"{r['kvid_cold_s']:>8.1f}{r['kvid_pipeline_s']:>7.1f}{r['kvid_over_floor']:>12.2f}"
              f"{r['kvid_pipeline_over_floor']:>11.2f}{r['naive_over_kvid']:>12.2f}")
    print("kvid s: the whole command; run s: without starting the local Ray (in the manifest)")
    print(f"machine: {platform.node()} ({os.cpu_count()} CPUs); goals: kvid/floor <= 1.5, naive/kvid >= 2")
    if args.save:
        suffix = "" if args.long_seconds == 60.0 else f"-{args.long_seconds:g}s"
        dest = ROOT / "bench" / "results" / f"curate-{platform.node() or 'host'}{suffix}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps({"meta": machine_info(), "results": results}, indent=2))
        print(f"saved {dest}")


if __name__ == "__main__":
    main()
