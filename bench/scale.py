"""Scale: throughput on 1 vs 2 local Ray nodes and 1/2/4 workers, and the driver's peak
memory for 10 vs 1000 inputs.

    python bench/scale.py                 # all of it (about 10 minutes on 2 cores)
    python bench/scale.py --only memory
    python bench/scale.py --save          # bench/results/scale-<host>.json

Throughput runs `kvid curate --ray-address` against a real local cluster (`ray start`) so the
driver, the nodes and the workers are the ones a user gets. The CPUs are split between the
nodes, so "2 nodes" measures the cost of going multi-node, not more hardware. Memory is the
driver process's own peak RSS (VmHWM), for inputs that are cheap to reject (probe only), so
that the measure is the driver's bookkeeping per input, not the work.
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
sys.path.insert(0, str(ROOT / "tests"))  # local_cluster: a multi-node Ray on this machine

from local_cluster import LocalCluster  # noqa: E402
from machine import machine_info  # noqa: E402

from curate import synthetic  # noqa: E402

OFFLINE = ["--motion-backend", "none", "--caption-model", "none", "-q"]

# Runs the CLI in this process and reports this process's peak RSS: Ray's own daemons are
# separate processes and not counted.
_DRIVER = (
    "import sys, json\n"
    "from pipelines.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
    "print('KVID_PEAK_KB', hwm, rc)\n"
)


def driver(args: list[str], env: dict | None = None) -> tuple[float, int]:
    """(wall seconds, driver peak RSS in KiB) of one `kvid` command."""
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _DRIVER, *args], cwd=ROOT, env=env or os.environ.copy(),
                         capture_output=True, text=True)
    wall = time.perf_counter() - t
    line = [text for text in out.stdout.splitlines() if text.startswith("KVID_PEAK_KB")]
    if out.returncode != 0 or not line or line[0].split()[2] != "0":
        raise RuntimeError(f"kvid failed: {out.stdout[-1500:]}{out.stderr[-1500:]}")
    return wall, int(line[0].split()[1])


def make_videos(folder: Path, n: int, seconds: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"v{i:03d}.mp4"
        if not path.exists():
            frames = int(seconds * 30)
            synthetic.scene_video(str(path), [frames // 2, frames - frames // 2], fps=30, size=(640, 360))
    return folder


def make_cheap_inputs(folder: Path, n: int) -> Path:
    """``n`` distinct inputs (symlinks to one 0.5 s clip: each rejected at probe as too short)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder.parent / "half_second.mp4"
    if not target.exists():
        synthetic.plain_video(str(target), duration_s=0.5, fps=25, size=(320, 240))
    for i in range(n):
        link = folder / f"in{i:05d}.mp4"
        if not link.exists():
            os.symlink(target, link)
    return folder


def throughput(work: Path, videos: Path, seconds_in: float) -> list[dict]:
    rows = []
    cpus = os.cpu_count() or 2
    for nodes in (1, 2):
        with LocalCluster(nodes=nodes, cpus_per_node=max(1, cpus // nodes)) as cluster:
            for workers in (1, 2, 4):
                out = Path(tempfile.mkdtemp(dir=work))
                wall, _ = driver(["curate", str(videos), "--out", str(out), "--ray-address", cluster.address,
                                  "--workers", str(workers), *OFFLINE], env=cluster.env)
                clips = json.loads((out / "manifest.json").read_text())["counts"]["clips"]
                rows.append({"nodes": nodes, "workers": workers, "wall_s": wall, "clips": clips,
                             "clips_per_s": clips / wall, "x_real_time": seconds_in / wall})
                shutil.rmtree(out)
    base = rows[0]["wall_s"]
    for r in rows:
        r["speedup_vs_1node_1worker"] = base / r["wall_s"]
    return rows


def memory(work: Path) -> list[dict]:
    rows = []
    for n in (10, 1000):
        inputs = make_cheap_inputs(work / f"cheap{n}", n)
        out = Path(tempfile.mkdtemp(dir=work))
        wall, peak = driver(["curate", str(inputs), "--out", str(out), *OFFLINE])
        rows.append({"inputs": n, "wall_s": wall, "driver_peak_mb": peak / 1024})
        shutil.rmtree(out)
    rows[1]["growth_vs_10"] = rows[1]["driver_peak_mb"] / rows[0]["driver_peak_mb"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("throughput", "memory"), help="run one part")
    ap.add_argument("--videos", type=int, default=8, help="inputs of the throughput runs")
    ap.add_argument("--seconds", type=float, default=6.0, help="length of each throughput input")
    ap.add_argument("--work", default=str(ROOT / "bench" / "out" / "scale"), help="scratch folder (inputs cached)")
    ap.add_argument("--save", action="store_true", help="write bench/results/scale-<host>.json")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    if args.only in (None, "throughput"):
        videos = make_videos(work / "videos", args.videos, args.seconds)
        result["throughput"] = throughput(work, videos, args.videos * args.seconds)
        print(f"{'nodes':>5}{'workers':>8}{'wall s':>9}{'clips':>6}{'clips/s':>9}{'x real time':>12}{'speedup':>9}")
        for r in result["throughput"]:
            print(f"{r['nodes']:>5}{r['workers']:>8}{r['wall_s']:>9.1f}{r['clips']:>6}{r['clips_per_s']:>9.2f}"
                  f"{r['x_real_time']:>12.2f}{r['speedup_vs_1node_1worker']:>9.2f}")
    if args.only in (None, "memory"):
        result["memory"] = memory(work)
        for r in result["memory"]:
            print(f"driver peak RSS with {r['inputs']:>5} inputs: {r['driver_peak_mb']:7.1f} MB ({r['wall_s']:.1f} s)")
        print(f"growth 10 -> 1000 inputs: {result['memory'][1]['growth_vs_10']:.2f}x (goal < 2x)")
    print(f"machine: {platform.node()} ({os.cpu_count()} CPUs)")
    if args.save:
        dest = ROOT / "bench" / "results" / f"scale-{platform.node() or 'host'}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps({"meta": machine_info(), **result}, indent=2))
        print(f"saved {dest}")


if __name__ == "__main__":
    main()
