"""Scene boundaries and per-scene statistics: quality and cost, measured in one run.

Boundaries, for four methods (content, adaptive: PySceneDetect; transnetv2; content plus
TransNetV2's gradual transitions, the "combination"), on known answers:
    synthetic : hard cuts between lavfi scenes, and 1-1.2 s xfade transitions (dissolve,
                fade through black, wipe, crossfade) at known frames;
    real      : ../shared/data/videos/testvideo.mp4 and fades.mp4 (PySceneDetect's test
                clips), labelled from their per-frame mean luma (see TRUTH below).
Hard cuts: precision and recall within 1 frame (a predicted cut inside a true gradual
transition counts for that transition, not as a false cut). Gradual transitions: recall =
true transitions overlapped by a predicted transition or cut, "removed" = fraction of true
transition frames that lie in no scene (what keeps them out of clips), precision =
predicted transitions that overlap a true one.

Cost: the analysis decode's wall time per method against content alone, and the throughput
of each statistic (frames/s of its push over decoded analysis frames; text: frames/s of
OCR detection at 640 px wide), against the analysis decode itself, all in this run.

    python bench/scenes.py --save          # writes bench/results/scenes-vm.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import machine_info  # noqa: E402

from curate import synthetic  # noqa: E402
from curate.analyze import AnalysisParams, FrameClock, analyze_unit  # noqa: E402
from curate.borders import BorderParams  # noqa: E402
from curate.filter_flat import FlatFeature, FlatParams  # noqa: E402
from curate.filter_static import StaticFeature, StaticParams  # noqa: E402
from curate.filter_text import TextParams, load_detector, text_area  # noqa: E402
from curate.frames import read_frames  # noqa: E402
from curate.probe import probe  # noqa: E402
from curate.scene_filters import SceneFilterParams  # noqa: E402
from curate.transitions import TransitionParams, TransNetFrames, load_model  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "videos"
FPS = 25
SIZE = (320, 180)

# Real clips, labelled from per-frame mean luma (ffmpeg scale=8:8, gray): hard cuts where the
# luma jumps between two frames; gradual transitions over the frames of a ramp.
TRUTH = {
    # black | cut 30 | photo | cut 180 | black | fade-in 214-240 | photo | fade-out 332-358 |
    # black | fade-in 394-420 | photo | dissolve 528-557 | photo | fade-out 668-693 | black
    "testvideo.mp4": {"cuts": [30, 180], "gradual": [(214, 241), (332, 359), (394, 421), (528, 558), (668, 694)]},
    # ramps from black to white and back; the README's scene starts 84 and 167 are the dark
    # turning points: the frames under luma 10 around them are the transitions.
    "fades.mp4": {"cuts": [], "gradual": [(77, 89), (160, 172)]},
}

METHODS = {
    "content": dict(scene_detector="content"),
    "adaptive": dict(scene_detector="adaptive"),
    "transnetv2": dict(scene_detector="transnetv2"),
    "content+transnetv2": dict(scene_detector="content", transition=TransitionParams(enabled=True, device="cpu")),
}


def synthetic_set(folder: Path) -> dict[str, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    cuts = synthetic.scene_video(str(folder / "cuts.mp4"), [50, 40, 60, 45, 55], fps=FPS, size=SIZE)
    truth["cuts.mp4"] = {"cuts": cuts, "gradual": []}
    for kind, length in (("dissolve", 25), ("fadeblack", 30), ("wipeleft", 25), ("fade", 30)):
        span = synthetic.transition_video(str(folder / f"{kind}.mp4"), kind, 60, 60, length, FPS, SIZE)
        truth[f"{kind}.mp4"] = {"cuts": [], "gradual": [span]}
    return truth


def predicted(path: str, method: dict) -> tuple[list[int], list[tuple[int, int]], float]:
    """(cuts, gradual transitions, wall seconds) of the analysis decode with this method."""
    info = probe(path)
    off = SceneFilterParams(flat=FlatParams(enabled=False), static=StaticParams(enabled=False),
                            text=TextParams(enabled=False))
    params = AnalysisParams(**{"border": BorderParams(enabled=False), "scene_filters": off,
                                           "transition": TransitionParams(device="cpu"), **method})
    t = time.perf_counter()
    result = analyze_unit(info, 0, None, params, FrameClock(info))
    wall = time.perf_counter() - t
    cuts, gradual = [], []
    for prev, sc in zip(result.scenes, result.scenes[1:]):
        if sc.transition:
            gradual.append((sc.start_frame, sc.end_frame))
        elif not prev.transition:
            cuts.append(sc.start_frame)
    return cuts, gradual, wall


def score(truth: dict, cuts: list[int], gradual: list[tuple[int, int]]) -> dict:
    true_cuts, true_grad = truth["cuts"], truth["gradual"]

    def in_true_gradual(c: int) -> bool:
        return any(a - 1 <= c <= b + 1 for a, b in true_grad)

    hard_pred = [c for c in cuts if not in_true_gradual(c)]
    cut_tp = sum(1 for c in true_cuts if any(abs(c - p) <= 1 for p in cuts))
    cut_fp = sum(1 for p in hard_pred if not any(abs(c - p) <= 1 for c in true_cuts))
    grad_found = sum(1 for a, b in true_grad
                     if any(x < b and y > a for x, y in gradual) or any(a - 1 <= c <= b + 1 for c in cuts))
    grad_tp_pred = sum(1 for x, y in gradual if any(x < b and y > a for a, b in true_grad))
    true_frames = sum(b - a for a, b in true_grad)
    removed = sum(len(set(range(a, b)) & {f for x, y in gradual for f in range(x, y)}) for a, b in true_grad)
    return {"cut_tp": cut_tp, "cut_fn": len(true_cuts) - cut_tp, "cut_fp": cut_fp,
            "grad_true": len(true_grad), "grad_found": grad_found, "grad_pred": len(gradual),
            "grad_pred_tp": grad_tp_pred, "grad_frames": true_frames, "grad_frames_removed": removed}


def totals(rows: list[dict]) -> dict:
    s = {k: sum(r[k] for r in rows) for k in rows[0]}

    def ratio(a, b):
        return round(a / b, 3) if b else None

    return {
        "cut_precision": ratio(s["cut_tp"], s["cut_tp"] + s["cut_fp"]),
        "cut_recall": ratio(s["cut_tp"], s["cut_tp"] + s["cut_fn"]),
        "gradual_recall": ratio(s["grad_found"], s["grad_true"]),
        "gradual_precision": ratio(s["grad_pred_tp"], s["grad_pred"]),
        "gradual_frames_removed": ratio(s["grad_frames_removed"], s["grad_frames"]),
        **s,
    }


def statistic_throughput(path: str) -> dict:
    """Frames/s of each statistic over the same decoded frames, and of the decode itself."""
    info = probe(path)
    off = SceneFilterParams(flat=FlatParams(enabled=False), static=StaticParams(enabled=False),
                            text=TextParams(enabled=False))
    t = time.perf_counter()
    analyze_unit(info, 0, None, AnalysisParams(border=BorderParams(enabled=False), scene_filters=off), FrameClock(info))
    decode_fps = info.num_frames / (time.perf_counter() - t)
    w = 256
    h = int(round(info.height * w / info.width)) // 2 * 2
    frames = read_frames(path, width=info.width, height=info.height, short_side=min(w, h), pix_fmt="bgr24")
    out = {"analysis_decode_with_content_detector": round(decode_fps, 1), "frames": len(frames)}
    for name, feature in (("still", StaticFeature(StaticParams())), ("flat", FlatFeature(FlatParams()))):
        t = time.perf_counter()
        for i, f in enumerate(frames):
            feature.push(i, f)
        feature.scene_stats(0, len(frames))
        out[name] = round(len(frames) / (time.perf_counter() - t), 1)
    load_model("cpu")
    tn = TransNetFrames(TransitionParams(device="cpu"))
    t = time.perf_counter()
    for i, f in enumerate(frames):
        tn.push(i, f)
    tn.run()
    out["transnetv2_cpu"] = round(len(frames) / (time.perf_counter() - t), 1)
    full = read_frames(path, short_side=360, pix_fmt="bgr24", fps=2, max_frames=8)
    load_detector(1)
    t = time.perf_counter()
    for f in full:
        text_area(f, 1)
    out["text_ocr_640px"] = round(len(full) / (time.perf_counter() - t), 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--save", action="store_true", help="write bench/results/scenes-vm.json")
    args = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    load_model("cpu")  # loading is not part of any method's time
    with tempfile.TemporaryDirectory(prefix="kvid-bench-scenes-") as tmp:
        sets = {"synthetic": {str(Path(tmp) / k): v for k, v in synthetic_set(Path(tmp)).items()}}
        if SHARED.exists():
            sets["real"] = {str(SHARED / k): v for k, v in TRUTH.items()}
        result: dict = {"methods": {}, "per_video": {}}
        for set_name, videos in sets.items():
            for mname, method in METHODS.items():
                rows, wall, frames = [], 0.0, 0
                for path, truth in videos.items():
                    cuts, gradual, dt = predicted(path, method)
                    rows.append(score(truth, cuts, gradual))
                    wall += dt
                    frames += probe(path).num_frames
                    result["per_video"].setdefault(os.path.basename(path), {})[mname] = {"cuts": cuts, "gradual": gradual}
                result["methods"].setdefault(mname, {})[set_name] = {**totals(rows), "wall_s": round(wall, 2),
                                                                     "frames": frames}
            base = result["methods"]["content"][set_name]["wall_s"]
            for mname in METHODS:
                m = result["methods"][mname][set_name]
                m["wall_vs_content"] = round(m["wall_s"] / base, 2)
        real = SHARED / "testvideo.mp4"
        result["statistics_fps"] = statistic_throughput(str(real if real.exists() else Path(tmp) / "cuts.mp4"))
        result["truth"] = {os.path.basename(k): v for s in sets.values() for k, v in s.items()}
    result["machine"] = {**machine_info(), "load_avg_at_end": os.getloadavg()}
    for mname, sets_ in result["methods"].items():
        for set_name, m in sets_.items():
            print(f"{mname:<20} {set_name:<9} cuts P {m['cut_precision']} R {m['cut_recall']} | gradual R "
                  f"{m['gradual_recall']} P {m['gradual_precision']} removed {m['gradual_frames_removed']} | "
                  f"{m['wall_s']} s = {m['wall_vs_content']}x content")
    print("statistics, frames/s:", json.dumps(result["statistics_fps"]))
    if args.save:
        out = ROOT / "bench" / "results" / "scenes-vm.json"
        out.write_text(json.dumps(result, indent=1))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
