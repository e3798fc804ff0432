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

The cascade (kvid's default, curate/transitions.py) against the full pass (TransNetV2 on
every frame), transition by transition, on the known-answer set plus more transitions
(moving, short, long, to white, wipes; and, from the real clips, dissolves and fades between
real shots, letterboxed ones, a fade through a title card) and pictures that only look like
blends (a brightness ramp, a slow zoom on a photograph): for every gradual transition the full
pass finds, whether the cascade finds it and how many of its frames it leaves uncovered; the
fraction of frames sent to the network (predicted, and read with context); CPU-seconds of
the network either way (NumPy engine, one thread).

    python bench/scenes.py --save          # writes bench/results/scenes-vm.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

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
from curate.transitions import (  # noqa: E402
    TransitionParams,
    TransNetFrames,
    _runs,
    boundaries,
    numpy_model,
    predict,
    propose,
    verify,
)

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
    "content": dict(scene_detector="content", transition=TransitionParams(enabled=False)),
    "adaptive": dict(scene_detector="adaptive", transition=TransitionParams(enabled=False)),
    "transnetv2": dict(scene_detector="transnetv2"),
    "content+transnetv2": dict(scene_detector="content", transition=TransitionParams(cascade=False)),
    "content+cascade": dict(scene_detector="content"),  # kvid's default
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


def _xfade(path: Path, a: str, b: str, kind: str, length_s: float, before_s: float = 2.4, fps: int = FPS,
           inputs: tuple[str, ...] = ()) -> None:
    """Two pictures joined by an ffmpeg xfade; ``a``/``b`` are filter chains ending in a
    640x360 yuv420p stream, on lavfi sources or on ``inputs`` ([0:v], [1:v])."""
    args = ["ffmpeg", "-v", "error", "-y"]
    for i in inputs:
        args += ["-i", i]
    graph = f"{a}[a];{b}[b];[a][b]xfade=transition={kind}:duration={length_s}:offset={before_s}[v]"
    args += ["-filter_complex", graph, "-map", "[v]", "-r", str(fps), "-c:v", "libx264", "-preset", "veryfast",
             "-crf", "20", "-pix_fmt", "yuv420p", "-an", str(path)]
    subprocess.run(args, check=True, timeout=300)


def cascade_set(folder: Path) -> list[Path]:
    """More transitions for the cascade against the full pass (their truth is the full pass)."""
    folder.mkdir(parents=True, exist_ok=True)
    w, h = 640, 360
    cut = "trim=end_frame=100,setpts=PTS-STARTPTS,format=yuv420p,setsar=1"
    src = {
        "life": f"life=size={w // 4}x{h // 4}:rate={FPS}:seed=7:ratio=0.25:mold=10,scale={w}:{h}:flags=neighbor",
        "mandel": f"mandelbrot=size={w}x{h}:rate={FPS}",
        "cell": f"cellauto=size={w // 4}x{h // 4}:rate={FPS}:rule=110:seed=3:random_fill_ratio=0.5,"
                f"scale={w}:{h}:flags=neighbor,negate",
        "test": f"testsrc2=size={w}x{h}:rate={FPS}",
        "rgb": f"rgbtestsrc=size={w}x{h}:rate={FPS},rotate=a=0.4*t:c=blue",
    }
    out = []
    for name, a, b, kind, length in (("moving_dissolve", "life", "mandel", "dissolve", 1.2),
                                     ("cell_fade", "cell", "test", "fade", 1.0),
                                     ("slow_dissolve", "mandel", "rgb", "fade", 2.0),
                                     ("short_dissolve", "test", "mandel", "fade", 0.4),
                                     ("fadewhite", "rgb", "life", "fadewhite", 1.0),
                                     ("wipeup", "mandel", "cell", "wipeup", 0.8),
                                     ("radial", "test", "rgb", "radial", 1.0)):
        _xfade(folder / f"{name}.mp4", f"{src[a]},{cut}", f"{src[b]},{cut}", kind, length)
        out.append(folder / f"{name}.mp4")
    # Not transitions: a brightness ramp, and (below) a slow zoom on a photograph.
    ramp = folder / "brightness_ramp.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", src["mandel"], "-vf",
                    "trim=end_frame=150,format=yuv420p,eq=brightness='-0.4*sin(PI*t/6)':eval=frame",
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-an", str(ramp)], check=True, timeout=300)
    out.append(ramp)
    if SHARED.exists():
        film, photos = str(SHARED / "issue-134-rotate.mp4"), str(SHARED / "testvideo.mp4")
        fit = f"scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h},fps={FPS},format=yuv420p,setsar=1"
        box = f"{fit},scale={w}:272,pad={w}:{h}:0:44"  # letterboxed 2.35:1
        part = lambda i, a, b, f=fit: f"[{i}:v]trim={a}:{b},setpts=PTS-STARTPTS,{f}"  # noqa: E731
        for name, a, b, kind, length, before, inputs in (
            ("real_dissolve", part(0, 0, 3.4), part(1, 7, 11), "dissolve", 1.0, 2.4, (film, photos)),
            ("photo_photo_dissolve", part(0, 7, 10), part(1, 13, 17), "dissolve", 1.2, 2.0, (photos, photos)),
            ("same_film_long_dissolve", part(0, 0, 3.5), part(1, 4, 8), "fade", 2.0, 1.5, (film, film)),
            ("film_fadewhite", part(0, 0, 3.5), part(1, 4, 8), "fadewhite", 1.0, 2.5, (film, film)),
            ("lb_same_film_dissolve", part(0, 0, 3.5, box), part(1, 4, 8, box), "dissolve", 1.0, 2.5, (film, film)),
            ("lb_photo_film_fade", part(0, 7, 11, box), part(1, 4, 8, box), "fade", 0.8, 2.5, (photos, film)),
        ):
            _xfade(folder / f"{name}.mp4", a, b, kind, length, before, inputs=inputs)
            out.append(folder / f"{name}.mp4")
        # A trailer's fade to black, a title card fading in, a fade back to the picture.
        font = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
        title = folder / "real_fade_title.mp4"
        graph = (f"{part(0, 0, 3)},fade=t=out:st=2.2:d=0.8[a];color=black:s={w}x{h}:r={FPS}:d=2,format=yuv420p,"
                 f"drawtext=fontfile={font}:text='COMING SOON':fontsize=40:fontcolor=white:x=(w-text_w)/2:"
                 f"y=(h-text_h)/2:alpha='min(1,t/0.5)',setsar=1[t];{part(0, 4, 8)},fade=t=in:st=0:d=0.8[b];"
                 f"[a][t][b]concat=n=3:v=1[v]")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", film, "-filter_complex", graph, "-map", "[v]",
                        "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-an", str(title)], check=True, timeout=300)
        zoom = folder / "photo_zoom.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", "8", "-i", photos, "-vf",
                        f"zoompan=z='1+0.004*on':x='iw/2-(iw/zoom/2)+on':y='ih/2-(ih/zoom/2)':d=150:s={w}x{h}:fps={FPS},"
                        "format=yuv420p", "-frames:v", "150", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
                        "-an", str(zoom)], check=True, timeout=300)
        out += [title, zoom]
    return out


def transnet_frames(path: str) -> np.ndarray:
    """The 48x27 RGB frames TransNetV2 reads, as the analysis decode makes them."""
    info = probe(path)
    recorder = TransNetFrames(TransitionParams())
    off = SceneFilterParams(flat=FlatParams(enabled=False), static=StaticParams(enabled=False),
                            text=TextParams(enabled=False))
    analyze_unit(info, 0, None, AnalysisParams(border=BorderParams(enabled=False), scene_filters=off,
                                                transition=TransitionParams(enabled=False)),
                 FrameClock(info), [recorder])
    return np.stack(recorder.frames.values)


def cascade_vs_full(paths: list[str]) -> dict:
    """Per video and in total: the full pass's gradual transitions, whether the cascade finds
    each (overlaps it) and the frames of it left uncovered; frames sent; network CPU-seconds."""
    p = TransitionParams(device="cpu")
    wider = dataclasses.replace(p, margin_frames=p.margin_frames + p.cascade_extra_margin)
    numpy_model()  # loading is not part of either time
    per_video, tot = {}, {"frames": 0, "predicted": 0, "read": 0, "full_read": 0, "full_cpu_s": 0.0,
                          "cascade_cpu_s": 0.0, "transitions": 0, "found": 0, "uncovered_frames": 0}
    missed = []
    for path in paths:
        frames = transnet_frames(path)
        n = len(frames)
        t = time.process_time()
        _, full = boundaries(predict(frames, "cpu")[1], p)
        full_s = time.process_time() - t
        t = time.process_time()
        many, checked = verify(frames, propose(frames, p), p)
        _, cascade = boundaries(np.nan_to_num(many), wider)
        cascade_s = time.process_time() - t
        rows = []
        for a, b in full:
            hit = [(x, y) for x, y in cascade if x < b and y > a]
            lo, hi = (min(x for x, _ in hit), max(y for _, y in hit)) if hit else (b, b)
            uncovered = (b - a) if not hit else max(0, lo - a) + max(0, b - hi)
            rows.append({"full": [a, b], "cascade": [lo, hi] if hit else None, "uncovered_frames": uncovered})
            tot["found"] += bool(hit)
            tot["uncovered_frames"] += uncovered
            if not hit:
                missed.append(f"{os.path.basename(path)} {a}-{b}")
        read = int(checked.sum()) + 2 * p.verify_context * _runs(checked)
        extra = [c for c in cascade if not any(c[0] < b and c[1] > a for a, b in full)]
        per_video[os.path.basename(path)] = {"frames": n, "transitions": rows, "cascade_only": extra,
                                             "predicted_fraction": round(float(checked.mean()), 3),
                                             "read_fraction": round(read / n, 3)}
        tot["frames"] += n
        tot["predicted"] += int(checked.sum())
        tot["read"] += read
        tot["full_read"] += -(-n // 50) * 100
        tot["full_cpu_s"] += full_s
        tot["cascade_cpu_s"] += cascade_s
        tot["transitions"] += len(full)
    summary = {
        "recall_vs_full": round(tot["found"] / tot["transitions"], 3) if tot["transitions"] else None,
        "found": tot["found"], "transitions_full": tot["transitions"], "missed": missed,
        "uncovered_frames": tot["uncovered_frames"],
        "predicted_fraction": round(tot["predicted"] / tot["frames"], 3),
        "read_fraction": round(tot["read"] / tot["frames"], 3),
        "full_read_fraction": round(tot["full_read"] / tot["frames"], 3),
        "network_cpu_s": {"full": round(tot["full_cpu_s"], 2), "cascade": round(tot["cascade_cpu_s"], 2)},
        "frames": tot["frames"],
    }
    return {"summary": summary, "per_video": per_video}


def predicted(path: str, method: dict) -> tuple[list[int], list[tuple[int, int]], float]:
    """(cuts, gradual transitions, wall seconds) of the analysis decode with this method."""
    info = probe(path)
    off = SceneFilterParams(flat=FlatParams(enabled=False), static=StaticParams(enabled=False),
                            text=TextParams(enabled=False))
    method = dict(method)
    transition = dataclasses.replace(method.pop("transition", TransitionParams()), device="cpu")
    params = AnalysisParams(border=BorderParams(enabled=False), scene_filters=off, transition=transition, **method)
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
    analyze_unit(info, 0, None, AnalysisParams(border=BorderParams(enabled=False), scene_filters=off,
                                             transition=TransitionParams(enabled=False)), FrameClock(info))
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
    numpy_model()
    for name, cascade in (("transnetv2_cpu", False), ("transnetv2_cascade_cpu", True)):
        tn = TransNetFrames(TransitionParams(device="cpu", cascade=cascade))
        t = time.perf_counter()
        for i, f in enumerate(frames):
            tn.push(i, f)
        tn.run()
        out[name] = round(len(frames) / (time.perf_counter() - t), 1)
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
    numpy_model()  # loading is not part of any method's time
    with tempfile.TemporaryDirectory(prefix="kvid-bench-scenes-") as tmp:
        sets = {"synthetic": {str(Path(tmp) / k): v for k, v in synthetic_set(Path(tmp)).items()}}
        if SHARED.exists():
            sets["real"] = {str(SHARED / k): v for k, v in TRUTH.items()}
        result: dict = {"methods": {}, "per_video": {}}
        extra = [str(p) for p in cascade_set(Path(tmp) / "cascade")]
        real_all = sorted(str(p) for p in SHARED.glob("*.mp4")) if SHARED.exists() else []
        result["cascade_vs_full"] = cascade_vs_full(list(sets["synthetic"]) + extra + real_all)
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
    c = result["cascade_vs_full"]["summary"]
    print(f"cascade vs full TransNetV2: {c['found']}/{c['transitions_full']} transitions found "
          f"(recall {c['recall_vs_full']}), {c['uncovered_frames']} of their frames uncovered; frames predicted "
          f"{c['predicted_fraction']:.1%}, read with context {c['read_fraction']:.1%} (full pass reads "
          f"{c['full_read_fraction']:.0%}); network CPU-s {c['network_cpu_s']}; missed: {c['missed']}")
    if args.save:
        out = ROOT / "bench" / "results" / "scenes-vm.json"
        out.write_text(json.dumps(result, indent=1))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
