"""`kvid curate` against the floor, in one run, on three corpora, with where the time goes.

    floor : one ffmpeg per whole input: decode, re-time to 24 fps, x264 (CRF 18, preset fast,
            kvid's defaults) of everything, two inputs at a time (the physical minimum of any
            curator: decode each source once, encode what it keeps; the floor keeps all).
    kvid  : `kvid curate` as a user runs it, motion and captions off: cold (Python and a local
            Ray started) and without Ray's start (the manifest's wall_s - ray_start_s); then
            the same with --motion-backend dis (what motion scoring adds).
    stages: CPU seconds of each stage's workers and of the tools they ran (ffmpeg), from the
            manifest (pipelines/adapter.py times every stage call).

Corpora: "short", 24 synthetic 640x360 30 fps files of 4 to 8 s (one or two scenes each, the
web-scale case: per-source costs dominate); "long", the longest real video in ../shared
(a 24 s 720p film clip); "mixed", bench/e2e.py's known-answer corpus. Rounds alternate the
contenders (these 2-core VMs are noisy); the table shows medians.

    python bench/curate.py                 # 1 round, prints the table
    python bench/curate.py --rounds 2 --save   # writes bench/results/curate-<host>.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # after the repo root (below): bench/curate.py must not shadow curate/
sys.path.insert(0, str(ROOT))

from e2e_corpus import SHARED_VIDEOS, _src, build_corpus  # noqa: E402
from machine import machine_info  # noqa: E402

from curate.transcode import TranscodeParams  # noqa: E402

SHORT_KINDS = ("testsrc2", "mandelbrot", "life", "bars", "rgbrotate", "cellauto", "testsrc")


def short_corpus(folder: Path, n: int = 24) -> list[Path]:
    """n files of 4 to 8 s, 640x360 at 30 fps; two of every three hold two scenes."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        seconds = 4 + i % 5
        path = folder / f"short{i:02d}.mp4"
        paths.append(path)
        if path.exists():
            continue
        a, b = SHORT_KINDS[i % len(SHORT_KINDS)], SHORT_KINDS[(i + 3) % len(SHORT_KINDS)]
        if i % 3 == 0:
            graph = f"{_src(a, 640, 360, seconds)}[v]"
        else:
            half = seconds / 2
            second = _src(b, 640, 360, seconds - half, offset_frames=7)
            graph = f"{_src(a, 640, 360, half)}[a];{second}[b];[a][b]concat=n=2:v=1[v]"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-filter_complex", graph, "-map", "[v]", "-c:v", "libx264",
                        "-preset", "medium", "-crf", "20", "-pix_fmt", "yuv420p", "-y", str(path)], check=True)
    return paths


def corpora(work: Path) -> dict[str, list[Path]]:
    found = {"short": short_corpus(work / "short")}
    real = sorted(SHARED_VIDEOS.glob("*.mp4"), key=lambda p: p.stat().st_size) if SHARED_VIDEOS.exists() else []
    if real:
        found["long"] = [real[-1]]
    found["mixed"] = [Path(f["path"]) for f in build_corpus(work / "mixed")["files"]]
    return found


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (/proc/stat: user, nice, system, irq, softirq).
    Machine-wide, so it counts Ray's processes, which no parent here reaps (getrusage misses
    them); the bench wants a quiet machine anyway."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


RAY_DAEMONS = ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env", "agent")  # lower case


class ProcessSampler:
    """CPU seconds by kind of process while a command runs, from /proc every 0.2 s: the kvid
    driver, Ray's worker processes (and how many were started), Ray's daemons, ffmpeg. A
    process that ends between two samples loses at most 0.2 s (the stages' own ffmpeg CPU,
    read from the manifest, is exact)."""

    def __init__(self, driver_pid: int):
        self.driver_pid = str(driver_pid)
        self.cpu: dict[tuple[str, str], list] = {}  # (pid, start time) -> [first, last, kind]
        self.before = self._read()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _kind(self, pid: str, cmdline: str) -> str | None:
        if pid == self.driver_pid:
            return "driver"
        # What runs is argv[0], or the script python runs (workers' arguments name agents' ports).
        head = " ".join(cmdline.split(" ")[:2])
        if any(d in head.lower() for d in RAY_DAEMONS):  # the agents' titles are ray::DashboardAgent, ...
            return "ray daemons"
        if "ray/_private/workers" in head or head.startswith("ray::"):
            return "ray workers"
        if cmdline.startswith(("ffmpeg", "ffprobe")):
            return "ffmpeg"
        return None

    def _read(self) -> dict[tuple[str, str], tuple[float, str]]:
        tick = os.sysconf("SC_CLK_TCK")
        found = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
                with open(f"/proc/{pid}/cmdline") as f:
                    cmdline = f.read().replace("\0", " ")
            except OSError:
                continue
            rest = stat[stat.rfind(")") + 2 :].split()
            kind = self._kind(pid, cmdline)
            if kind:
                found[(pid, rest[19])] = ((int(rest[11]) + int(rest[12])) / tick, kind)
        return found

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            for key, (cpu, kind) in self._read().items():
                first = self.before.get(key, (0.0, kind))[0]  # a process older than the run counts from its start
                self.cpu.setdefault(key, [first, cpu, kind])[1] = cpu

    def result(self) -> dict:
        self.stop.set()
        self.thread.join()
        by_kind: dict[str, float] = {}
        for first, last, kind in self.cpu.values():
            by_kind[kind] = by_kind.get(kind, 0.0) + last - first
        workers = sum(1 for *_, kind in self.cpu.values() if kind == "ray workers")
        return {"cpu_s": {k: round(v, 2) for k, v in sorted(by_kind.items())}, "ray_worker_processes": workers}


def floor_s(inputs: list[Path], out: Path, params: TranscodeParams) -> tuple[float, float]:
    """(wall seconds, CPU seconds) to decode and encode every input whole, two at a time."""
    out.mkdir(parents=True, exist_ok=True)

    def encode(i_path: tuple[int, Path]) -> None:
        i, path = i_path
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0", "-vf", f"fps={params.fps}",
                        "-c:v", params.codec, "-preset", params.preset, "-crf", str(params.crf), "-pix_fmt", "yuv420p",
                        "-an", "-f", "mp4", "-y", str(out / f"{i}.mp4")], check=True)

    t, cpu = time.perf_counter(), busy_cpu_s()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(encode, enumerate(inputs)))
    return time.perf_counter() - t, busy_cpu_s() - cpu


def kvid_run(inputs: list[Path], out: Path, motion: str) -> dict:
    """`kvid curate` cold; the manifest's last run (its wall without Ray's start, its stages)."""
    cmd = [sys.executable, "-m", "pipelines.cli", "curate", *map(str, inputs), "--out", str(out), "-q",
           "--motion-backend", motion, "--caption-model", "none"]
    t, cpu = time.perf_counter(), busy_cpu_s()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    sampler = ProcessSampler(proc.pid)
    if proc.wait() != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    cold = time.perf_counter() - t
    cpu = busy_cpu_s() - cpu
    processes = sampler.result()
    manifest = json.loads((out / "manifest.json").read_text())
    run = manifest["runs"][-1]
    stages = run.get("stages", {})
    return {"cold_s": cold, "run_s": run["wall_s"] - run.get("ray_start_s", 0.0), "ray_start_s": run.get("ray_start_s"),
            "cpu_s": cpu, "stage_cpu_s": sum(v["cpu_s"] + v["tool_cpu_s"] for v in stages.values()),
            "processes": processes,
            "clips": manifest["counts"]["clips"], "stages": run.get("stages", {})}


def seconds_of(inputs: list[Path]) -> float:
    total = 0.0
    for p in inputs:
        out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(p)],
                             capture_output=True, text=True).stdout
        total += float(out.strip() or 0)
    return total


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=1, help="rounds per corpus, contenders alternating (default: 1)")
    ap.add_argument("--corpora", default="short,long,mixed", help="which corpora, comma-separated (default: all three)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "kvid-bench-curate",
                    help="scratch folder; the rendered corpora are kept there between runs")
    ap.add_argument("--save", action="store_true", help="write bench/results/curate-<host>.json")
    args = ap.parse_args()

    params = TranscodeParams()
    found = corpora(args.work)
    results: dict[str, dict] = {}
    for name in args.corpora.split(","):
        inputs = found.get(name)
        if not inputs:
            print(f"{name}: no inputs (../shared/data/videos missing?), skipped")
            continue
        floors, floor_cpus, off, dis = [], [], [], []
        for _ in range(args.rounds):
            for what in ("floor", "off", "dis"):
                scratch = args.work / "runs" / f"{name}-{what}"
                shutil.rmtree(scratch, ignore_errors=True)
                if what == "floor":
                    wall, cpu = floor_s(inputs, scratch, params)
                    floors.append(wall)
                    floor_cpus.append(cpu)
                else:
                    (off if what == "off" else dis).append(kvid_run(inputs, scratch, "none" if what == "off" else "dis"))
                shutil.rmtree(scratch, ignore_errors=True)
        floor = statistics.median(floors)
        results[name] = {
            "inputs": len(inputs), "seconds_in": round(seconds_of(inputs), 1), "floor_s": round(floor, 2),
            "kvid_cold_s": round(median_of(off, "cold_s"), 2), "kvid_run_s": round(median_of(off, "run_s"), 2),
            "kvid_dis_cold_s": round(median_of(dis, "cold_s"), 2), "clips": off[-1]["clips"],
            "cold_over_floor": round(median_of(off, "cold_s") / floor, 3),
            "run_over_floor": round(median_of(off, "run_s") / floor, 3),
            "dis_over_off": round(median_of(dis, "cold_s") / median_of(off, "cold_s"), 3),
            "floor_cpu_s": round(statistics.median(floor_cpus), 2), "kvid_cpu_s": round(median_of(off, "cpu_s"), 2),
            "kvid_stage_cpu_s": round(median_of(off, "stage_cpu_s"), 2),
            "cpu_over_floor": round(median_of(off, "cpu_s") / statistics.median(floor_cpus), 3),
            "stages_motion_off": off[-1]["stages"], "stages_dis": dis[-1]["stages"],
            "processes_motion_off": off[-1]["processes"],
            "rounds": {"floor_s": floors, "floor_cpu_s": floor_cpus, "off": off, "dis": dis},
        }
    print(f"{'corpus':<8}{'in':>4}{'s in':>7}{'clips':>6}{'floor':>8}{'cold':>8}{'run':>8}{'dis':>8}"
          f"{'cold/floor':>11}{'run/floor':>10}{'dis/off':>9}")
    for name, r in results.items():
        print(f"{name:<8}{r['inputs']:>4}{r['seconds_in']:>7.0f}{r['clips']:>6}{r['floor_s']:>8.1f}{r['kvid_cold_s']:>8.1f}"
              f"{r['kvid_run_s']:>8.1f}{r['kvid_dis_cold_s']:>8.1f}{r['cold_over_floor']:>11.2f}{r['run_over_floor']:>10.2f}"
              f"{r['dis_over_off']:>9.2f}")
    print("cold: the whole command; run: without starting the local Ray; dis: cold with --motion-backend dis")
    print(f"{'corpus':<8}{'floor CPU-s':>12}{'kvid CPU-s':>11}{'in stages':>10}{'kvid/floor':>11}")
    for name, r in results.items():
        print(f"{name:<8}{r['floor_cpu_s']:>12.1f}{r['kvid_cpu_s']:>11.1f}{r['kvid_stage_cpu_s']:>10.1f}{r['cpu_over_floor']:>11.2f}")
    print("CPU-s: the machine's busy CPU seconds during the command (/proc/stat: driver, Ray, workers, ffmpeg); "
          "in stages: what the stage workers and their ffmpeg used")
    print("goals: cold/floor <= 1.35 (short), <= 1.20 (long); dis/off <= 1.25")
    for name, r in results.items():
        for label, stages in (("motion off", r["stages_motion_off"]), ("dis", r["stages_dis"])):
            parts = ", ".join(f"{s} {t['cpu_s']:.1f}+{t['tool_cpu_s']:.1f}" for s, t in stages.items())
            print(f"  {name} {label}: CPU s by stage (worker + ffmpeg): {parts}")
        procs = r["processes_motion_off"]
        kinds = ", ".join(f"{k} {v:.1f}" for k, v in procs["cpu_s"].items())
        print(f"  {name} motion off: CPU s by process: {kinds} ({procs['ray_worker_processes']} Ray worker processes)")
    if args.save:
        dest = ROOT / "bench" / "results" / f"curate-{machine_info()['host'] or 'host'}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps({"meta": machine_info(), "results": results}, indent=2))
        print(f"saved {dest}")


if __name__ == "__main__":
    main()
