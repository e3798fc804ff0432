"""Parts of ``bench/gpu.sh`` written in Python: environment, profiles, pytest results, goals, summary.

    python bench/gpu_parts.py env OUTDIR [--device cuda]   # device, versions, date, bf16 matmul TFLOP/s
    python bench/gpu_parts.py pytest-json OUTDIR          # pytest-gpu.xml / pytest.log -> pytest-gpu.json
    python bench/gpu_parts.py summary OUTDIR              # goals met or missed -> summary.json, summary.md

The benches (``bench/motion.py``, ``bench/caption.py``, ``bench/generate.py``) import
:func:`add_output_flags`, :func:`run_info` and :func:`profile_top_kernels` from here for their
``--out`` and ``--profile`` files. Only the standard library is imported at module level, and nothing of
Ray, PySceneDetect or ffmpeg anywhere: the GPU machine has none of them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

# Goals of issue 16: (key, what, comparison, target, unit).
GOALS = [
    ("raft_large_256_x_realtime", "RAFT-large at 256 px", ">=", 50.0, "x real time"),
    ("vlm_7b_clips_per_s", "7B VLM captions, 8 frames, 128 new tokens", ">=", 2.0, "clips/s"),
    ("generator_high_s_per_video", "Generator, fps high, official steps", "<=", 30.0, "s/video"),
    ("generator_peak_gb", "Generator peak memory", "<=", 40.0, "GB"),
    ("generator_unet_fraction_of_peak", "Generator U-Net share of bf16 peak", ">=", 0.40, "of peak"),
]
# Which part's profile explains a missed goal.
GOAL_PROFILE = {
    "raft_large_256_x_realtime": "raft",
    "vlm_7b_clips_per_s": "caption",
    "generator_high_s_per_video": "generate",
    "generator_peak_gb": "generate",
    "generator_unet_fraction_of_peak": "generate",
}
PUBLISHED_ANCHOR_S = {"medium": 60.0, "high": 90.0}
PARTS = ["env", "pytest", "raft", "caption", "generate", "generate-high"]


def add_output_flags(parser: argparse.ArgumentParser, save_to: str, profile_of: str) -> None:
    """The flags every GPU bench shares: where its figures and its profile go."""
    parser.add_argument("--save", action="store_true", help=f"write {save_to}")
    parser.add_argument("--out", default=None, help="write the JSON to this file (bench/gpu.sh)")
    parser.add_argument("--profile", default=None, help=f"torch.profiler top kernels of {profile_of} to this .txt (+ .json)")


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def run_info(device: str = "cpu") -> dict:
    """What every results file carries: device name, torch version, date (UTC)."""
    import torch

    cuda = str(device).startswith("cuda")
    info = {
        "date": utc_now(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(torch.device(device)) if cuda
        else (platform.processor() or platform.machine()),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "host_cpus": os.cpu_count(),
    }
    if cuda:
        props = torch.cuda.get_device_properties(torch.device(device))
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["compute_capability"] = f"{props.major}.{props.minor}"
    return info


def write_json(path: str | os.PathLike, doc) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    os.replace(tmp, path)


def profile_top_kernels(fn, device: str, path: str | os.PathLike, label: str, row_limit: int = 25) -> list[dict]:
    """Run ``fn()`` once under ``torch.profiler``; write the top kernels (CUDA) or ops (CPU).

    ``path`` gets a text table; ``path`` with ``.json`` gets the rows. Call ``fn`` once before
    (warm-up) so set-up work is not what the profile shows. Returns the rows.
    """
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = str(device).startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with profile(activities=activities) as prof:
            fn()
            if cuda:
                torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001 - a profile is a diagnosis: its failure must not lose the figures
        msg = f"profile failed: {type(e).__name__}: {e}"
        print(msg, flush=True)
        path.write_text(f"# torch.profiler: {label}\n# {msg}\n")
        write_json(path.with_suffix(".json"), {"label": label, "device": str(device), "error": msg, "rows": []})
        return []
    events = prof.key_averages()
    if cuda:
        kernels = [e for e in events if e.device_type != DeviceType.CPU and e.self_device_time_total > 0]
        kernels = kernels or [e for e in events if e.self_device_time_total > 0]
        key, kind = "self_device_time_total", "kernel"
    else:
        kernels = [e for e in events if e.self_cpu_time_total > 0]
        key, kind = "self_cpu_time_total", "op"
    kernels.sort(key=lambda e: getattr(e, key), reverse=True)
    total_us = sum(getattr(e, key) for e in kernels) or 1.0
    rows = [{"name": e.key, "calls": e.count, "self_ms": getattr(e, key) / 1e3,
             "share": getattr(e, key) / total_us} for e in kernels[:row_limit]]
    lines = [f"# torch.profiler top {kind}s: {label}",
             f"# device {device}; profiled wall time {wall:.3f} s; {kind} time total {total_us / 1e6:.3f} s",
             f"{'share':>7} {'self ms':>10} {'calls':>7}  name"]
    for r in rows:
        lines.append(f"{100 * r['share']:6.1f}% {r['self_ms']:10.2f} {r['calls']:7d}  {r['name'][:160]}")
    path.write_text("\n".join(lines) + "\n")
    write_json(path.with_suffix(".json"), {"label": label, "device": str(device), "kind": kind,
                                           "wall_seconds": wall, "total_seconds": total_us / 1e6, "rows": rows})
    print("\n".join(lines[: 3 + min(10, len(rows))]), flush=True)
    return rows


# ---------------------------------------------------------------------------------------------
# env


def matmul_tflops(device: str, tiny: bool) -> dict:
    """Achieved TFLOP/s of a large matrix product (bf16 on CUDA): the same-run ceiling for '% of peak'."""
    import torch

    cuda = device.startswith("cuda")
    n = 256 if tiny or not cuda else 8192
    dtype = torch.bfloat16 if cuda else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if cuda:
        torch.cuda.synchronize()
    reps = 10
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if cuda:
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / reps
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "seconds": dt, "tflops": 2 * n**3 / dt / 1e12}


def cmd_env(args) -> int:
    import shutil
    import subprocess

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    doc = run_info(device)
    doc["tiny"] = args.tiny
    doc["packages"] = {d: _version(d) for d in ("torch", "torchvision", "transformers", "tokenizers", "safetensors",
                                                 "numpy", "opencv-python-headless", "pyarrow", "pillow", "pytest")}
    # What the bench must do without (issue 16): recorded, not needed.
    doc["absent_or_present"] = {m: _version(d) for m, d in (("ray", "ray"), ("scenedetect", "scenedetect"),
                                                             ("pydantic", "pydantic"))}
    doc["ffmpeg"] = shutil.which("ffmpeg")
    doc["matmul"] = matmul_tflops(device, args.tiny)
    if shutil.which("nvidia-smi"):
        try:
            doc["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                 "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            doc["nvidia_smi"] = f"failed: {e}"
    root = Path(__file__).resolve().parents[1]
    try:
        doc["git_commit"] = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                           text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        doc["git_commit"] = None
    write_json(Path(args.outdir) / "env.json", doc)
    print(json.dumps(doc, indent=2))
    return 0


# ---------------------------------------------------------------------------------------------
# pytest


def cmd_pytest_json(args) -> int:
    """pytest's junit XML (a real run) or its --collect-only log (``--tiny``) -> pytest-gpu.json."""
    import xml.etree.ElementTree as ET

    out = Path(args.outdir)
    xml_path, log_path = out / "pytest-gpu.xml", out / "pytest.log"
    doc: dict = {"date": utc_now(), "mode": "collect-only" if args.tiny else "run", "tests": []}
    if not args.tiny and xml_path.exists():
        root = ET.parse(xml_path).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        doc["total"] = int(suite.get("tests", 0))
        for key in ("failures", "errors", "skipped"):
            doc[key] = int(suite.get(key, 0))
        doc["seconds"] = float(suite.get("time", 0))
        for case in suite.iter("testcase"):
            outcome, message = "passed", None
            for tag in ("failure", "error", "skipped"):
                el = case.find(tag)
                if el is not None:
                    outcome, message = {"failure": "failed"}.get(tag, tag), (el.get("message") or "")[:500]
                    break
            doc["tests"].append({"id": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                                 "seconds": float(case.get("time", 0)), "message": message})
        doc["passed"] = sum(t["outcome"] == "passed" for t in doc["tests"])
    elif log_path.exists():
        text = log_path.read_text()
        if args.tiny:
            ids = [ln.strip() for ln in text.splitlines() if "::" in ln and " " not in ln.strip()]
            doc["tests"] = [{"id": i, "outcome": "collected"} for i in ids]
            doc["collected"] = len(ids)
        else:  # no XML: pytest was stopped at its cap; its -v lines say how far it got
            for m in re.finditer(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)", text, re.M):
                doc["tests"].append({"id": m.group(1), "outcome": m.group(2).lower()})
            doc["passed"] = sum(t["outcome"] == "passed" for t in doc["tests"])
            doc["failures"] = sum(t["outcome"] == "failed" for t in doc["tests"])
            doc["note"] = "no junit XML (stopped at its cap?): outcomes read from the log"
        doc["collection_errors"] = text.count("ERROR collecting")
    else:
        doc["error"] = "pytest wrote neither pytest-gpu.xml nor pytest.log"
    write_json(out / "pytest-gpu.json", doc)
    print(json.dumps({k: v for k, v in doc.items() if k != "tests"}))
    return 0


# ---------------------------------------------------------------------------------------------
# summary


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _goal(key: str, value, where: str | None, note: str | None = None) -> dict:
    _, what, op, target, unit = next(g for g in GOALS if g[0] == key)
    if value is None:
        met = None
    else:
        met = value >= target if op == ">=" else value <= target
    return {"goal": key, "what": what, "target": f"{op} {target:g} {unit}", "value": value, "unit": unit,
            "met": met, "from": where, "note": note}


def evaluate(outdir: Path) -> dict:
    """Goals met / missed / not measured, from the part files in ``outdir``."""
    env = _load(outdir / "env.json") or {}
    status = {p: _load(outdir / f"status-{p}.json") for p in PARTS}
    goals = []

    raft = _load(outdir / "raft.json")
    rows = [r for r in (raft or {}).get("rows", []) if "x_realtime" in r]
    large = [r for r in rows if r["backend"] == "raft_large" and r["size"] == 256]
    best = max(large, key=lambda r: r["x_realtime"], default=None)
    goals.append(_goal("raft_large_256_x_realtime", best and best["x_realtime"],
                       best and f"raft.json: {best['dtype']}, batch {best['batch']}"))

    cap = _load(outdir / "caption.json")
    res = (cap or {}).get("results", [])
    best = max(res, key=lambda r: r["clips_per_s"], default=None)
    size = (cap or {}).get("info", {}).get("size")
    goals.append(_goal("vlm_7b_clips_per_s", best and best["clips_per_s"],
                       best and f"caption.json: {best['backend']}, batch {best['batch']}",
                       None if size in (None, "full") else f"model size {size}, not 7B"))

    gen_rows = []
    for name in ("generate", "generate-high"):
        doc = _load(outdir / f"{name}.json")
        for r in (doc or {}).get("results", []):
            gen_rows.append({**r, "file": f"{name}.json"})
    high = next((r for r in gen_rows if r["fps"] == "high"), None)
    goals.append(_goal("generator_high_s_per_video", high and high["seconds_per_video"],
                       high and high["file"], None if high else "fps high not measured"))
    peak = max(gen_rows, key=lambda r: r["peak_memory_gib"], default=None)
    goals.append(_goal("generator_peak_gb", peak and peak["peak_memory_gib"] * 2**30 / 1e9,
                       peak and f"{peak['file']}: fps {peak['fps']} ({peak['peak_memory_kind']})"))
    top = high or (gen_rows[-1] if gen_rows else None)
    matmul = (env.get("matmul") or {}).get("tflops")
    goals.append(_goal("generator_unet_fraction_of_peak", top and top["unet_fraction_of_peak"],
                       top and f"{top['file']}: fps {top['fps']}",
                       f"{top['unet_tflops_achieved'] / matmul:.0%} of this run's matmul"
                       if top and matmul and top.get("unet_tflops_achieved") else None))

    anchors = []
    for r in gen_rows:
        if r["fps"] in PUBLISHED_ANCHOR_S:
            a = PUBLISHED_ANCHOR_S[r["fps"]]
            anchors.append({"fps": r["fps"], "published_s": a, "measured_s": r["seconds_per_video"],
                            "published_over_measured": a / r["seconds_per_video"]})
    for g in goals:
        part = GOAL_PROFILE[g["goal"]]
        prof = outdir / f"{part}-profile.json"
        g["profile"] = prof.name if (g["met"] is False and prof.exists()) else None
    pytest_doc = _load(outdir / "pytest-gpu.json")
    return {"date": utc_now(), "tiny": bool(env.get("tiny")), "env": env, "status": status,
            "pytest": {k: v for k, v in (pytest_doc or {}).items() if k != "tests"} if pytest_doc else None,
            "goals": goals, "published_anchor": anchors}


def _fmt(v, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def render_markdown(outdir: Path, s: dict) -> str:
    env = s["env"]
    lines = []
    if s["tiny"]:
        lines.append("**CPU smoke run at tiny sizes (`--tiny`): not GPU figures.**\n")
    lines.append(f"GPU bench, {env.get('date', '?')}: {env.get('device_name', '?')}, torch {env.get('torch', '?')}"
                 f" (CUDA {env.get('cuda')}), commit {(env.get('git_commit') or '?')[:10]}; "
                 f"{(env.get('matmul') or {}).get('dtype', '?')} matmul "
                 f"{_fmt((env.get('matmul') or {}).get('tflops'), '.3g')} TFLOP/s measured in this run.\n")
    lines += ["| part | status | seconds (cap) |", "|---|---|---:|"]
    for p in PARTS:
        st = s["status"].get(p)
        if not st:
            lines.append(f"| {p} | not run | - |")
            continue
        state = st.get("state") or ("ok" if st["rc"] == 0 else ("timed out" if st.get("timed_out") else
                                                                   f"failed (rc {st['rc']})"))
        lines.append(f"| {p} | {state} | {st.get('seconds', 0):.0f} ({st.get('cap', '-')}) |")
    pt = s.get("pytest")
    if pt:
        if pt.get("mode") == "collect-only":
            lines.append(f"\n`pytest -m gpu`: collect-only (`--tiny`), {pt.get('collected', 0)} tests collected, "
                         f"{pt.get('collection_errors', 0)} collection errors.")
        else:
            lines.append(f"\n`pytest -m gpu`: {pt.get('passed', 0)} passed, {pt.get('failures', 0)} failed, "
                         f"{pt.get('errors', 0)} errors, {pt.get('skipped', 0)} skipped.")
    lines += ["", "| goal | target | measured | met | from |", "|---|---|---:|---|---|"]
    for g in s["goals"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[g["met"]]
        val = "-" if g["value"] is None else (f"{100 * g['value']:.1f}%" if g["unit"] == "of peak"
                                               else f"{g['value']:.2f} {g['unit']}")
        src = g["from"] or "-"
        if g["note"]:
            src += f" ({g['note']})"
        lines.append(f"| {g['what']} | {g['target']} | {val} | {met} | {src} |")
    lines += figure_tables(outdir)
    for a in [] if s["tiny"] else s["published_anchor"]:
        lines.append(f"\nPublished anchor, fps {a['fps']}: {a['published_s']:.0f} s per video; measured "
                     f"{a['measured_s']:.1f} s ({a['published_over_measured']:.2f}x faster than published).")
    shown = set()
    for g in s["goals"]:
        if g["profile"] and g["profile"] not in shown:
            shown.add(g["profile"])
            txt = (outdir / g["profile"]).with_suffix(".txt")
            if txt.exists():
                head = txt.read_text().splitlines()[:15]
                lines += ["", f"Goal missed ({g['what']}): top of `{txt.name}`", "```", *head, "```"]
    return "\n".join(lines) + "\n"


def figure_tables(outdir: Path) -> list[str]:
    """The measured figures, one compact table per part (for the README's performance section)."""
    lines: list[str] = []
    raft = _load(outdir / "raft.json")
    rows = [r for r in (raft or {}).get("rows", []) if "pairs_per_s" in r]
    if rows:
        lines += ["", "| RAFT | size | dtype | batch 1: pairs/s | best batch | pairs/s | clip-s/s (x real time) |",
                  "|---|---:|---|---:|---:|---:|---:|"]
        for key in dict.fromkeys((r["backend"], r["size"], r["dtype"]) for r in rows):
            group = [r for r in rows if (r["backend"], r["size"], r["dtype"]) == key]
            b1 = next((r for r in group if r["batch"] == 1), None)
            best = max(group, key=lambda r: r["pairs_per_s"])
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {_fmt(b1 and b1['pairs_per_s'], '.1f')} | "
                         f"{best['batch']} | {best['pairs_per_s']:.1f} | {best['x_realtime']:.1f} |")
    cap = _load(outdir / "caption.json")
    if cap and cap.get("results"):
        info = cap.get("info", {})
        lines += ["", f"Captioning: {info.get('family')} ({info.get('size')}, {info.get('params_b')} B params, random "
                      f"{info.get('dtype')}), {info.get('frames')} frames, {info.get('max_new_tokens')} new tokens, "
                      f"{info.get('input_tokens')} input tokens a clip.",
                  "", "| batch | clips/s | output tokens/s | vs batch 1 | peak GiB |", "|---:|---:|---:|---:|---:|"]
        for r in cap["results"]:
            lines.append(f"| {r['batch']} | {r['clips_per_s']:.2f} | {r['out_tokens_per_s']:.0f} | "
                         f"{r['x_vs_b1']:.2f} | {_fmt(r.get('peak_gib'), '.1f')} |")
    gen = []
    for name in ("generate", "generate-high"):
        gen += (_load(outdir / f"{name}.json") or {}).get("results", [])
    if gen:
        lines += ["", "| generate fps | frames | s/video | peak GiB | U-Net TFLOP/s | of peak | eager fp32 s "
                      "| speed-up |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in gen:
            lines.append(f"| {r['fps']} | {r['frames']} | {r['seconds_per_video']:.1f} | {r['peak_memory_gib']:.1f} | "
                         f"{r['unet_tflops_achieved']:.1f} | {100 * r['unet_fraction_of_peak']:.1f}% | "
                         f"{_fmt(r.get('baseline_seconds_without_text'), '.1f')} | "
                         f"{_fmt(r.get('speedup_vs_baseline'), '.2f')} |")
    return lines


def cmd_summary(args) -> int:
    out = Path(args.outdir)
    s = evaluate(out)
    write_json(out / "summary.json", s)
    md = render_markdown(out, s)
    (out / "summary.md").write_text(md)
    print(md)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("env", help="device, versions, date, matmul TFLOP/s -> OUTDIR/env.json")
    e.add_argument("outdir")
    e.add_argument("--device", default=None)
    e.add_argument("--tiny", action="store_true")
    t = sub.add_parser("pytest-json", help="pytest results -> OUTDIR/pytest-gpu.json")
    t.add_argument("outdir")
    t.add_argument("--tiny", action="store_true", help="read the --collect-only log")
    s = sub.add_parser("summary", help="goals -> OUTDIR/summary.json and summary.md")
    s.add_argument("outdir")
    args = p.parse_args(argv)
    return {"env": cmd_env, "pytest-json": cmd_pytest_json, "summary": cmd_summary}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
