"""End to end on a mixed corpus: kvid against a naive script and video2dataset, in one run.

    kvid   : `kvid curate` as a user runs it (cold: Python start, local Ray, the run), motion
             and captions off. Any kvid tree: --kvid-root (default: this checkout).
    kvid_before : the same command from another kvid tree (--before-root: e.g. a worktree of
             an earlier commit), at that tree's defaults: what this tree's defaults cost.
    naive  : PySceneDetect's CLI `detect-content list-scenes split-video` per input, then one
             ffmpeg call per scene of at least --min-duration-s for 24 fps (and the short-side
             cap): what a script around the tools does. Sequential, like such a script.
    v2d    : video2dataset 1.3.0 in its own venv (--setup-v2d makes it): cut detection, exact
             clipping (re-encodes each whole source once with forced keyframes), one sample
             per shard and one process per CPU; at equal settings also FrameSubsampler 24 fps
             and min_length = --min-duration-s. bench/e2e_v2d.py holds the patches it needs.

Two modes: "equal" runs all three with the same encoder (--codec/--crf/--preset, default
kvid's libx264 CRF 18 fast) and the same 24 fps / minimum-length rule; "defaults" runs each
as it comes (naive: split-video's CRF 22 veryfast, then ffmpeg's libx264 defaults; v2d:
ffmpeg's libx264 defaults CRF 23 medium, no fps change, no minimum length). kvid's defaults
run is the equal one when the settings match. Rounds interleave the contenders (the VM's 2
cores are shared, so timings are noisy): the table shows medians and the median of the
per-round ratios. Cleanliness is scored on the synthetic files' known labels
(bench/e2e_corpus.py): clips containing transition frames, clips that are mostly static,
flat or text, and how much of the good scenes survives.

    python bench/e2e.py --setup-v2d                  # once: video2dataset's venv (PyPI)
    python bench/e2e.py --save                       # 2 rounds, writes bench/results/e2e-vm.json
    python bench/e2e.py --kvid-root ../other-kvid-checkout --rounds 3 --save
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from e2e_corpus import build_corpus, score_clips  # noqa: E402
from machine import machine_info  # noqa: E402

DEFAULT_SCRATCH = Path(tempfile.gettempdir()) / "kvid-bench-e2e"
CONTENDERS = ("kvid", "naive", "v2d")  # and kvid_before, when --before-root is given
# What --setup-v2d installs. video2dataset pins torch==2.1.2 (and torchaudio/torchdata to
# match): the torch kvid's install.sh pins goes in instead (where pip finds it locally, as on
# this project's machines, nothing large is downloaded), then the pinned packages without their
# dependencies; numpy < 2 and the matching opencv/pyarrow/pandas for its scenedetect 0.6.2.
V2D_TORCH = f"torch=={os.environ.get('KVID_TORCH_VERSION', '2.14.1')}"
V2D_NO_DEPS = ["video2dataset==1.3.0", "torchdata==0.7.1"]
V2D_DEPS = ["numpy<2", "fire>=0.4.0,<0.6.0", "requests", "ffmpeg-python", "yt-dlp", "pyarrow<19", "pandas<2.3",
            "fsspec", "webdataset", "webvtt-py", "tqdm", "timeout-decorator", "scenedetect[opencv]==0.6.2",
            "opencv-python<4.11", "decord", "langdetect", "omegaconf", "einops", "Pillow", "scipy", "soundfile",
            "transformers==4.37.1", "wandb"]


def setup_v2d(venv: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, V2D_TORCH, "numpy<2"], check=True)
    subprocess.run([*pip, "--no-deps", *V2D_NO_DEPS], check=True)
    subprocess.run([*pip, *V2D_DEPS], check=True)
    print(f"video2dataset venv ready: {venv}")


def _probe(path: str) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
                          "-of", "json", path], capture_output=True, text=True).stdout
    streams = json.loads(out or "{}").get("streams") or [{}]
    return streams[0]


CPU_SPENT = {"s": 0.0, "how": "getrusage"}  # CPU-seconds of every command _timed ran (all processes)
CGROUP_V1 = Path("/sys/fs/cgroup/cpuacct")


def _cgroup() -> Path | None:
    """A fresh cpuacct cgroup (v1) for one command, where this machine lets us make one: it
    counts every process the command starts (Ray's daemons and workers too), which
    getrusage(RUSAGE_CHILDREN) does not."""
    try:
        path = CGROUP_V1 / f"kvid-bench-{os.getpid()}-{time.monotonic_ns()}"
        path.mkdir()
        return path
    except OSError:
        return None


def _timed(cmd: list[str], log: Path, **kw) -> tuple[float, int]:
    """Wall seconds and exit status of ``cmd``; adds its CPU-seconds to CPU_SPENT."""
    import resource

    group = _cgroup()
    if group is not None:  # the shell joins the group, then becomes the command
        cmd = ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh", *cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    with open(log, "ab") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw).returncode
    wall = time.perf_counter() - t
    if group is not None:
        time.sleep(0.5)  # processes the command left behind (Ray's) finish exiting
        CPU_SPENT["s"] += int((group / "cpuacct.usage").read_text()) / 1e9
        CPU_SPENT["how"] = "cgroup cpuacct"
        try:
            group.rmdir()
        except OSError:
            pass  # a straggler still in it; the kernel frees it when it exits
    else:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        CPU_SPENT["s"] += (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, rc


# ---------------------------------------------------------------- contenders

def run_kvid(inputs: list[str], out: Path, enc: dict | None, args, root: Path | None = None) -> dict:
    root = root or args.kvid_root
    cmd = [args.python, "-m", "pipelines.cli", "curate", *inputs, "--out", str(out), "-q",
           "--motion-backend", "none", "--caption-model", "none"]
    if enc:
        cmd += ["--codec", enc["codec"], "--crf", str(enc["crf"]), "--preset", enc["preset"]]
    env = {**os.environ, "PYTHONPATH": str(root)}
    wall, rc = _timed(cmd, out.parent / f"{out.name}.log", cwd=root, env=env)
    import pyarrow.parquet as pq

    def rows(sub: str) -> list[dict]:
        files = sorted(glob.glob(str(out / sub / "*.parquet")))
        return [r for f in files for r in pq.read_table(f).to_pylist()]

    clips = [{"source": r["source"], "start_s": r["source_start_s"], "end_s": r["source_end_s"]} for r in rows("index")]
    rejects: dict[str, int] = {}
    for r in rows("rejects"):
        key = f"{r.get('reject_stage')}:{r.get('reject_reason')}"
        rejects[key] = rejects.get(key, 0) + 1
    return {"wall_s": wall, "rc": rc, "clips": clips, "rejects": rejects}


def run_kvid_before(inputs: list[str], out: Path, enc: dict | None, args) -> dict:
    return run_kvid(inputs, out, enc, args, root=args.before_root)


def run_naive(inputs: list[str], out: Path, enc: dict | None, args) -> dict:
    scenedetect = args.scenedetect
    log = out.parent / f"{out.name}.log"
    clips, split_s, post_s = [], 0.0, 0.0
    t0 = time.perf_counter()
    rc = 0
    for src in inputs:
        d = out / Path(src).stem
        d.mkdir(parents=True, exist_ok=True)
        split = ["split-video", "-q"] + (["--rate-factor", str(enc["crf"]), "--preset", enc["preset"]] if enc else [])
        detect = [scenedetect, "-q", "-i", src, "-o", str(d), "detect-content", "list-scenes", "-q", "-s"]
        t, r = _timed([*detect, *split], log)
        split_s += t
        if r != 0:
            rc = r  # the tool gives up on some inputs; the script goes on with the next
            continue
        scene_csv = next(iter(d.glob("*-Scenes.csv")), None)
        files = sorted(d.glob("*-Scene-*.mp4"))
        if scene_csv is None or not files:
            continue
        with open(scene_csv, newline="") as f:
            scenes = list(csv.DictReader(f))
        info = _probe(src)
        short = min(info.get("width", 0), info.get("height", 0))
        vf = f"fps={args.fps:g}"
        if short > args.max_short_side:  # the same short-side cap as kvid (never up)
            k = f"{args.max_short_side}/min(iw,ih)"
            vf += f",scale='trunc(iw*{k}/2)*2':'trunc(ih*{k}/2)*2'"
        codec = ["-c:v", enc["codec"], "-preset", enc["preset"], "-crf", str(enc["crf"])] if enc else []
        for scene, clip in zip(scenes, files, strict=False):
            start, end = float(scene["Start Time (seconds)"]), float(scene["End Time (seconds)"])
            if end - start < args.min_duration_s:
                continue
            t, r = _timed(["ffmpeg", "-nostdin", "-v", "error", "-i", str(clip), "-vf", vf, "-an", *codec,
                           "-pix_fmt", "yuv420p", "-y", str(d / f"post-{clip.name}")], log)
            post_s += t
            if r == 0:
                clips.append({"source": src, "start_s": start, "end_s": end})
    return {"wall_s": time.perf_counter() - t0, "rc": rc, "clips": clips, "split_s": split_s, "post_s": post_s}


def run_v2d(inputs: list[str], out: Path, enc: dict | None, args) -> dict:
    urls = out.parent / f"{out.name}-urls.csv"
    urls.write_text("url\n" + "".join(f"{p}\n" for p in inputs))
    tmp = out.parent / f"{out.name}-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    cmd = [args.v2d_python, str(ROOT / "bench" / "e2e_v2d.py"), str(urls), str(out),
           "--processes", str(args.v2d_processes), "--tmp-dir", str(tmp)]
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if enc:
        cmd += ["--fps", f"{args.fps:g}", "--min-length", f"{args.min_duration_s:g}"]
        env["KVID_BENCH_V2D_ENCODER"] = json.dumps({"vcodec": enc["codec"], "crf": enc["crf"], "preset": enc["preset"]})
    wall, rc = _timed(cmd, out.parent / f"{out.name}.log", env=env, cwd=out.parent)
    clips = []
    for tar in sorted(out.glob("*.tar")):
        with tarfile.open(tar) as t:
            names = set(t.getnames())
            for m in t.getmembers():
                if not m.name.endswith(".json") or m.name[:-5] + ".mp4" not in names:
                    continue
                meta = json.load(t.extractfile(m))
                (s, e), = meta["clips"]
                clips.append({"source": meta["url"], "start_s": float(s), "end_s": float(e)})
    shutil.rmtree(tmp, ignore_errors=True)
    import pyarrow.parquet as pq

    samples = [r for f in sorted(out.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    failed = [{"url": r.get("url"), "status": r.get("status"), "error": r.get("error_message")}
              for r in samples if r.get("status") != "success"]
    return {"wall_s": wall, "rc": rc, "clips": clips, "failed_samples": failed}


RUNNERS = {"kvid": run_kvid, "kvid_before": run_kvid_before, "naive": run_naive, "v2d": run_v2d}


# ---------------------------------------------------------------- the run

def kvid_defaults(args) -> dict:
    code = "from pipelines.config import CurateConfig as C; c = C(); print(c.codec, c.crf, c.preset)"
    out = subprocess.run([args.python, "-c", code], capture_output=True, text=True, cwd=args.kvid_root,
                         env={**os.environ, "PYTHONPATH": str(args.kvid_root)}, check=True).stdout.split()
    return {"codec": out[0], "crf": int(out[1]), "preset": out[2]}


V2D_VERSIONS = ("import importlib.metadata as m; "
                "print(*(f'{p} {m.version(p)}' for p in ('video2dataset', 'scenedetect', 'torch')))")


def machine(args) -> dict:
    def first_line(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=args.kvid_root, check=False).stdout
            return out.strip().splitlines()[0]
        except (OSError, IndexError):
            return None
    return {
        **machine_info(),
        "kvid_root": str(args.kvid_root),
        "kvid_commit": first_line(["git", "log", "-1", "--format=%h %s"]),
        "ffmpeg": first_line(["ffmpeg", "-version"]),
        "scenedetect_naive": first_line([args.scenedetect, "version"]) or first_line([args.scenedetect, "--version"]),
        "video2dataset": first_line([args.v2d_python, "-c", V2D_VERSIONS]),
    }


def summarize(runs: dict[str, list[dict]], modes: list[str]) -> tuple[dict, dict]:
    """Medians per mode/contender, and slowdown ratios against kvid (of medians, and per round)."""
    summary = {}
    for key, rs in runs.items():
        s = rs[-1]["score"]
        summary[key] = {
            "wall_s_median": statistics.median(r["wall_s"] for r in rs),
            "wall_s": [round(r["wall_s"], 2) for r in rs],
            "cpu_s_median": statistics.median(r.get("cpu_s", 0.0) for r in rs),
            "cpu_s": [r.get("cpu_s") for r in rs],
            "rc": [r["rc"] for r in rs],
            **{k: s[k] for k in ("clips", "seconds", "clips_with_transition", "clips_clean", "bad_clips_kept",
                                 "scene_seconds_kept_fraction", "duplicates_kept")},
            "clips_static": s["clips_by_label"]["static"], "clips_flat": s["clips_by_label"]["flat"],
            "clips_text": s["clips_by_label"]["text"],
        }
    ratios = {}
    for mode in modes:
        kv = runs.get(f"{mode}/kvid") or runs.get("equal/kvid")
        for c in ("naive", "v2d", "kvid_before"):
            other = runs.get(f"{mode}/{c}")
            if not kv or not other:
                continue
            per_round = [o["wall_s"] / k["wall_s"] for o, k in zip(other, kv, strict=False)]
            cpu_round = [o["cpu_s"] / k["cpu_s"] for o, k in zip(other, kv, strict=False) if k.get("cpu_s")]
            ratios[f"{mode}/{c}_over_kvid"] = {
                "of_medians": statistics.median(o["wall_s"] for o in other)
                / statistics.median(k["wall_s"] for k in kv),
                "median_per_round": statistics.median(per_round), "per_round": [round(x, 3) for x in per_round],
                "cpu_per_round": [round(x, 3) for x in cpu_round]}
    return summary, ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kvid-root", type=Path, default=ROOT, help="kvid tree to run (PYTHONPATH and cwd)")
    ap.add_argument("--before-root", type=Path, default=None,
                    help="another kvid tree, run as contender kvid_before at its own defaults (e.g. a worktree "
                         "of the commit before a change)")
    ap.add_argument("--python", default=sys.executable, help="python of kvid's venv (default: this one)")
    ap.add_argument("--scenedetect", default=None, help="scenedetect CLI (default: next to --python)")
    ap.add_argument("--v2d-python", default=str(DEFAULT_SCRATCH / "v2d" / "bin" / "python"))
    ap.add_argument("--setup-v2d", action="store_true",
                    help="create video2dataset's venv (where --v2d-python points) and exit")
    ap.add_argument("--scratch", type=Path, default=DEFAULT_SCRATCH, help="corpus/ (cached) and runs/")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default="equal,defaults")
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--codec", default=None, help="equal-settings encoder (default: kvid's)")
    ap.add_argument("--crf", type=int, default=None)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--fps", type=float, default=24.0)
    ap.add_argument("--min-duration-s", type=float, default=2.0, help="naive and v2d (equal) drop shorter scenes")
    ap.add_argument("--max-short-side", type=int, default=1080)
    ap.add_argument("--v2d-processes", type=int, default=os.cpu_count())
    ap.add_argument("--no-real", action="store_true", help="synthetic files only")
    ap.add_argument("--only", default=None, help="only corpus files whose name contains this (smoke tests)")
    ap.add_argument("--save", action="store_true", help="write bench/results/e2e-vm.json")
    ap.add_argument("--save-as", type=Path, default=ROOT / "bench" / "results" / "e2e-vm.json")
    args = ap.parse_args()
    args.kvid_root = args.kvid_root.resolve()
    args.scenedetect = args.scenedetect or str(Path(args.python).parent / "scenedetect")
    if args.setup_v2d:
        setup_v2d(Path(args.v2d_python).parent.parent)
        return

    contenders = [c for c in args.contenders.split(",") if c]
    if args.before_root is not None:
        args.before_root = args.before_root.resolve()
        if "kvid_before" not in contenders:
            contenders.append("kvid_before")
    if "v2d" in contenders and not Path(args.v2d_python).exists():
        sys.exit(f"kvid: error: no video2dataset venv at {args.v2d_python} (run: python bench/e2e.py --setup-v2d)")
    defaults = kvid_defaults(args)
    equal = {"codec": args.codec or defaults["codec"], "crf": args.crf if args.crf is not None else defaults["crf"],
             "preset": args.preset or defaults["preset"]}
    modes = [m for m in args.modes.split(",") if m]
    jobs = []
    for mode in modes:
        for c in contenders:
            if mode == "defaults" and c in ("kvid", "kvid_before") and "equal" in modes and equal == defaults:
                continue  # the same command as kvid's equal run
            jobs.append((mode, c))

    truth = build_corpus(args.scratch / "corpus", include_real=not args.no_real)
    if args.only:
        truth = {**truth, "files": [f for f in truth["files"] if args.only in f["name"]]}
    inputs = [f["path"] for f in truth["files"]]
    seconds_in = sum(f["duration_s"] for f in truth["files"])
    meta = machine(args)
    print(f"corpus: {len(inputs)} files, {seconds_in:.1f} s; equal settings {equal}; kvid defaults {defaults}")

    runs: dict[str, list[dict]] = {}

    def save(complete: bool) -> None:
        """Rewrite the JSON after every run too, so that a run cut short keeps what it measured."""
        if not args.save:
            return
        summary, ratios = summarize(runs, modes)
        result = {"meta": {**meta, "load_avg_now": os.getloadavg()}, "complete": complete,
                  "settings": {"equal": equal, "kvid_defaults": defaults, "fps": args.fps,
                               "min_duration_s": args.min_duration_s, "rounds": args.rounds,
                               "v2d_processes": args.v2d_processes},
                  "corpus": {"files": len(inputs), "seconds": round(seconds_in, 2), "ground_truth": truth["files"]},
                  "summary": summary, "ratios": ratios, "runs": runs}
        args.save_as.parent.mkdir(parents=True, exist_ok=True)
        args.save_as.write_text(json.dumps(result, indent=2))
        if complete:
            print(f"saved {args.save_as}")

    for rnd in range(args.rounds):
        order = jobs[rnd % len(jobs):] + jobs[:rnd % len(jobs)]  # rotate so no contender always goes first
        for mode, c in order:
            out = args.scratch / "runs" / f"{mode}-{c}-r{rnd}"
            shutil.rmtree(out, ignore_errors=True)
            for stale in out.parent.glob(f"{out.name}*"):
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink()
            out.parent.mkdir(parents=True, exist_ok=True)
            enc = equal if mode == "equal" else None
            load = os.getloadavg()[0]
            cpu0 = CPU_SPENT["s"]
            r = RUNNERS[c](inputs, out, enc, args)
            r["cpu_s"] = round(CPU_SPENT["s"] - cpu0, 2)
            r["cpu_measured_by"] = CPU_SPENT["how"]
            score = score_clips(truth, r["clips"])
            # The 1-minute load before and after: on a shared VM it says how far to trust the time.
            r.update(score=score, round=rnd, load_avg_1m_before=load, load_avg_1m_after=os.getloadavg()[0])
            r["clips"] = [{**c, "source": Path(c["source"]).stem} for c in r["clips"]]
            runs.setdefault(f"{mode}/{c}", []).append(r)
            print(f"  round {rnd} {mode:<8} {c:<11} {r['wall_s']:7.1f} s  {r['cpu_s']:7.1f} CPU-s  rc {r['rc']}  "
                  f"{score['clips']} clips  "
                  f"{score['seconds']:.1f} s out  load {load:.1f} -> {r['load_avg_1m_after']:.1f}", flush=True)
            shutil.rmtree(out, ignore_errors=True)  # outputs are not kept (disk); logs are
            save(complete=False)

    summary, ratios = summarize(runs, modes)
    meta["load_avg_end"] = os.getloadavg()

    print(f"\n{'mode/contender':<20}{'wall s':>8}{'clips':>6}{'s out':>7}{'trans':>6}{'static':>7}{'flat':>5}"
          f"{'text':>5}{'dups':>5}"
          f"{'clean':>6}{'scene kept':>11}   (synthetic clips; 'trans' = clips with transition frames)")
    for key, s in summary.items():
        print(f"{key:<20}{s['wall_s_median']:>8.1f}{s['clips']:>6}{s['seconds']:>7.1f}{s['clips_with_transition']:>6}"
              f"{s['clips_static']:>7}{s['clips_flat']:>5}{s['clips_text']:>5}{s['duplicates_kept']:>5}"
              f"{s['clips_clean']:>6}{s['scene_seconds_kept_fraction'] or 0:>11.2f}")
    for key, r in ratios.items():
        print(f"{key:<28} {r['of_medians']:.2f}x (median of per-round ratios {r['median_per_round']:.2f}x;"
              f" {r['per_round']}); CPU-s per round {r['cpu_per_round']}")
    print(f"machine: {meta['host']} ({meta['cpus']} CPUs), load average {meta['load_avg'][0]:.1f} -> "
          f"{meta['load_avg_end'][0]:.1f}; kvid {meta['kvid_commit']}")
    print("goal (issue 13): naive/kvid >= 2 and v2d/kvid > 1 at equal settings, with fewer bad clips")
    save(complete=True)



if __name__ == "__main__":
    main()
