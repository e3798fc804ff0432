"""Mixed corpus for the end-to-end bench: the real clips in ../shared plus synthetic videos
whose every second has a known label, and the scoring of output clips against those labels.

Labels (seconds of the source, from its first frame):
    scene       ordinary moving content: an output clip may cover it
    transition  dissolve / fade / black frames between two scenes: no clip should contain any
    static      a still image, or a video frozen for half its length: the known answer is to
                drop the whole span
    flat        a single grey field
    text        burnt-in text: large subtitles (over 20% of the frame), or one line of title
                (about 3% of the frame) over a moving scene

A "scene" segment may be a re-upload of another file's segment (``copy_of``: its name and
start second): the same content rescaled, re-encoded, one of them letterboxed. Keeping both
counts as a duplicate kept; either one covers the scene.

Real clips have no labels (counted in the totals only). Rendering is deterministic (fixed
seeds, fixed encoder settings); the ground truth is written to <folder>/ground_truth.json and
the corpus is re-rendered only when CORPUS_VERSION changes. Standalone (no kvid imports), so
it can score any kvid tree.

    python bench/e2e_corpus.py /tmp/corpus      # render and print the ground truth
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = ROOT.parent / "shared" / "data" / "videos"
CORPUS_VERSION = 3
FPS = 30
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
BAD_LABELS = ("transition", "static", "flat", "text")


def _src(kind: str, w: int, h: int, seconds: float, offset_frames: int = 0) -> str:
    """One lavfi source of exactly `seconds`, yuv420p, square pixels, FPS."""
    sources = {
        "testsrc2": f"testsrc2=size={w}x{h}:rate={FPS}",
        "testsrc": f"testsrc=size={w}x{h}:rate={FPS}",
        "mandelbrot": f"mandelbrot=size={w}x{h}:rate={FPS}",
        "bars": f"smptehdbars=size={w}x{h}:rate={FPS},hue=H=2*PI*t/3",
        "rgbrotate": f"rgbtestsrc=size={w}x{h}:rate={FPS},rotate=a=0.4*t:c=blue",
        # Cellular sources at a quarter size, scaled up: blocks move like objects rather than
        # per-pixel noise (which would make the x264 encode an unrealistic worst case).
        "life": f"life=size={w // 4}x{h // 4}:rate={FPS}:seed=7:ratio=0.25:mold=10,scale={w}:{h}:flags=neighbor",
        "cellauto": f"cellauto=size={w // 4}x{h // 4}:rate={FPS}:rule=110:seed=3:random_fill_ratio=0.5,"
                    f"scale={w}:{h}:flags=neighbor,negate",
        "grey": f"color=c=0x808080:size={w}x{h}:rate={FPS}",
        "black": f"color=c=black:size={w}x{h}:rate={FPS}",
    }
    trim = f"trim=start_frame={offset_frames}:end_frame={offset_frames + round(seconds * FPS)}" if offset_frames \
        else f"trim=end_frame={round(seconds * FPS)}"
    return f"{sources[kind]},{trim},setpts=PTS-STARTPTS,format=yuv420p,setsar=1"


def _subtitles(seconds: float) -> str:
    """Two lines of large boxed text, a new subtitle every 2 s: about a third of a 640x360 frame."""
    lines = [("BURNT IN SUBTITLE", "LINE TWO OF TEXT"), ("ANOTHER SUBTITLE", "SAYS SOMETHING"),
             ("THE LAST ONE", "ON THIS SCENE")]
    parts = []
    for i in range(int(seconds // 2)):
        for row, text in enumerate(lines[i % len(lines)]):
            parts.append(
                f"drawtext=fontfile={FONT}:text='{text}':fontsize=44:fontcolor=white:box=1:boxcolor=black@0.8:"
                f"boxborderw=14:x=(w-text_w)/2:y=h-{150 - 72 * row}:enable='between(t,{2 * i},{2 * i + 2})'"
            )
    return ",".join(parts)


def _concat(*chains: str) -> str:
    """A graph that plays filter chains one after another, ending in [v]."""
    labels = [f"[p{i}]" for i in range(len(chains))]
    return "".join(f"{c}{label};" for c, label in zip(chains, labels, strict=True)) + (
        f"{''.join(labels)}concat=n={len(chains)}:v=1:a=0[v]"
    )


# name -> (size, graph, labelled segments (start, end, label[, (copy of file, its start second)])).
# Each graph ends in [v]; inputs are built in the graph.
def _specs() -> dict[str, tuple[tuple[int, int], str, list[tuple]]]:
    specs = {}

    w, h = 1280, 720  # hard cut, then a 1 s cross-dissolve between two different scenes, then a hard cut
    specs["synth_cuts_dissolve_720p"] = ((w, h), (
        f"{_src('testsrc2', w, h, 5)}[a];{_src('mandelbrot', w, h, 5)}[b];{_src('life', w, h, 5)}[c];"
        f"{_src('cellauto', w, h, 4)}[d];[b][c]xfade=transition=fade:duration=1:offset=4[bc];"
        f"[a][bc][d]concat=n=3:v=1:a=0[v]"
    ), [(0, 5, "scene"), (5, 9, "scene"), (9, 10, "transition"), (10, 14, "scene"), (14, 18, "scene")])

    w, h = 640, 360  # fade to black and back, then a hard cut to a flat grey field
    specs["synth_fade_black_flat"] = ((w, h), _concat(
        f"{_src('bars', w, h, 4)},fade=t=out:st=3:d=1", _src('black', w, h, 0.5),
        f"{_src('life', w, h, 4)},fade=t=in:st=0:d=1", _src('grey', w, h, 5),
    ), [(0, 3, "scene"), (3, 5.5, "transition"), (5.5, 8.5, "scene"), (8.5, 13.5, "flat")])

    # A still image encoded as video, then a video that moves for 3 s and is frozen for 3 s
    # (the known answer rejects both whole: the second is half frozen).
    specs["synth_still_frozen"] = ((w, h), _concat(
        f"{_src('testsrc2', w, h, 1 / FPS, offset_frames=45)},loop=loop={6 * FPS - 1}:size=1:start=0,setpts=N/{FPS}/TB",
        f"{_src('rgbrotate', w, h, 3)},tpad=stop_mode=clone:stop_duration=3",
    ), [(0, 6, "static"), (6, 12, "static")])

    # Large burnt-in subtitles over a moving scene, then a hard cut to a scene without text.
    specs["synth_subtitles"] = ((w, h), _concat(
        f"{_src('testsrc2', w, h, 6, offset_frames=300)},{_subtitles(6)}", _src('mandelbrot', w, h, 6),
    ), [(0, 6, "text"), (6, 12, "scene")])

    w, h = 960, 540  # ordinary moving scenes with hard cuts
    specs["synth_moving_540p"] = ((w, h), _concat(
        _src('life', w, h, 5), _src('cellauto', w, h, 5), _src('testsrc', w, h, 5),
    ), [(0, 5, "scene"), (5, 10, "scene"), (10, 15, "scene")])
    # One line of title, about 3% of the frame, over a moving scene, then a cut to a clean one.
    w, h = 640, 360
    specs["synth_title"] = ((w, h), _concat(
        f"{_src('rgbrotate', w, h, 5)},drawtext=fontfile={FONT}:text='COMING THIS WINTER':fontsize=24:"
        f"fontcolor=white:borderw=2:bordercolor=black:x=(w-text_w)/2:y=(h-text_h)/2",
        _src('bars', w, h, 5),
    ), [(0, 5, "text"), (5, 10, "scene")])

    # Re-uploads: synth_moving_540p's second scene letterboxed (bars added, rescaled,
    # re-encoded), synth_title's second scene rescaled and re-encoded.
    specs["synth_reupload_letterbox"] = ((w, h), (
        f"{_src('cellauto', 960, 540, 5)},scale={w}:270,pad={w}:{h}:0:45:black,setsar=1[v]"
    ), [(0, 5, "scene", ("synth_moving_540p", 5.0))])
    specs["synth_reupload_rescaled"] = ((960, 540), (
        f"{_src('bars', w, h, 5)},scale=960:540,setsar=1[v]"
    ), [(0, 5, "scene", ("synth_title", 5.0))])
    return specs


def _probe_duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout.strip()
    return float(out or 0)


def build_corpus(folder: Path, include_real: bool = True) -> dict:
    """Render the synthetic videos (once per CORPUS_VERSION) and list the real ones.
    Returns the ground truth: {"version", "files": [{name, path, kind, duration_s, segments}]}."""
    folder.mkdir(parents=True, exist_ok=True)
    truth_path = folder / "ground_truth.json"
    if truth_path.exists():
        truth = json.loads(truth_path.read_text())
        if truth.get("version") == CORPUS_VERSION and all(Path(f["path"]).exists() for f in truth["files"]) \
                and any(f["kind"] == "real" for f in truth["files"]) == (include_real and SHARED_VIDEOS.exists()):
            return truth
    files = []
    if include_real and SHARED_VIDEOS.exists():
        for p in sorted(SHARED_VIDEOS.glob("*.mp4")):
            files.append({"name": p.stem, "path": str(p), "kind": "real", "duration_s": _probe_duration(p),
                          "segments": []})
    for name, ((w, h), graph, segments) in _specs().items():
        path = folder / f"{name}.mp4"
        subprocess.run([
            "ffmpeg", "-nostdin", "-v", "error", "-filter_complex", graph, "-map", "[v]", "-r", str(FPS),
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", "-g", "60", "-an",
            "-y", str(path),
        ], check=True, timeout=600)
        duration = _probe_duration(path)
        expected = segments[-1][1]
        if abs(duration - expected) > 1.5 / FPS:
            raise RuntimeError(f"{path}: rendered {duration:.3f} s, ground truth says {expected} s")
        segs = [{"start_s": seg[0], "end_s": seg[1], "label": seg[2]} for seg in segments]
        for seg, spec in zip(segs, segments, strict=True):
            if len(spec) > 3:
                seg["copy_of"] = {"name": spec[3][0], "start_s": spec[3][1]}
        files.append({"name": name, "path": str(path), "kind": "synthetic", "duration_s": duration, "size": [w, h],
                      "segments": segs})
    truth = {"version": CORPUS_VERSION, "fps": FPS, "files": files}
    truth_path.write_text(json.dumps(truth, indent=2))
    return truth


def _spans_on(truth: dict, clips: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """Each file's clip spans, plus the spans of clips on its re-uploads mapped onto it."""
    spans: dict[str, list[tuple[float, float]]] = {f["name"]: [] for f in truth["files"]}
    for c in clips:
        name = Path(c["source"]).stem
        if name in spans:
            spans[name].append((c["start_s"], c["end_s"]))
    for f in truth["files"]:
        for seg in f["segments"]:
            orig = seg.get("copy_of")
            if not orig or orig["name"] not in spans:
                continue
            shift = orig["start_s"] - seg["start_s"]
            for s, e in list(spans[f["name"]]):
                s, e = max(s, seg["start_s"]), min(e, seg["end_s"])
                if e > s:
                    spans[orig["name"]].append((s + shift, e + shift))
    return spans


def _scene_seconds_covered(truth: dict, clips: list[dict]) -> float:
    """Seconds of "scene" segments inside at least one clip (overlapping clips count once; a
    scene that is a re-upload counts once, on its original, covered by either copy)."""
    covered = 0.0
    all_spans = _spans_on(truth, clips)
    for f in truth["files"]:
        spans = sorted(all_spans[f["name"]])
        for seg in f["segments"]:
            if seg["label"] != "scene" or seg.get("copy_of"):
                continue
            reach = seg["start_s"]  # covered up to here, walking the clips in start order
            for s, e in spans:
                s, e = max(s, reach), min(e, seg["end_s"])
                if e > s:
                    covered += e - s
                    reach = e
    return covered


def _duplicates_kept(truth: dict, clips: list[dict]) -> int:
    """Re-uploaded segments kept twice: a clip on the copy and one on the original that hold
    the same content for at least half a second."""
    by_name: dict[str, list[tuple[float, float]]] = {}
    for c in clips:
        by_name.setdefault(Path(c["source"]).stem, []).append((c["start_s"], c["end_s"]))
    kept = 0
    for f in truth["files"]:
        for seg in f["segments"]:
            orig = seg.get("copy_of")
            if not orig:
                continue
            shift = orig["start_s"] - seg["start_s"]
            on_copy = [(max(s, seg["start_s"]) + shift, min(e, seg["end_s"]) + shift)
                       for s, e in by_name.get(f["name"], [])]
            on_orig = by_name.get(orig["name"], [])
            kept += sum(1 for a, b in on_copy for s, e in on_orig if min(b, e) - max(a, s) >= 0.5)
    return kept


def score_clips(truth: dict, clips: list[dict]) -> dict:
    """Score output clips ({"source": name or path, "start_s", "end_s"}) against the labels.

    A clip contains a transition when it overlaps one by at least one source frame; its label
    on a labelled source is the label it overlaps most. Seconds are source seconds."""
    by_name = {f["name"]: f for f in truth["files"]}
    frame = 1.0 / truth["fps"]
    out = {
        "clips": len(clips),
        "seconds": round(sum(c["end_s"] - c["start_s"] for c in clips), 3),
        "clips_real": 0,
        "clips_synthetic": 0,
        "clips_with_transition": 0,
        "clips_clean": 0,  # synthetic clips overlapping nothing but "scene" (one frame of slack)
        "clips_by_label": {lab: 0 for lab in ("scene", *BAD_LABELS)},
        "seconds_by_label": {lab: 0.0 for lab in ("scene", *BAD_LABELS)},
    }
    for c in clips:
        f = by_name.get(Path(c["source"]).stem)
        if f is None or f["kind"] == "real":
            out["clips_real"] += 1
            continue
        out["clips_synthetic"] += 1
        overlap = {}
        for seg in f["segments"]:
            o = min(c["end_s"], seg["end_s"]) - max(c["start_s"], seg["start_s"])
            if o > 0:
                overlap[seg["label"]] = overlap.get(seg["label"], 0.0) + o
        for lab, o in overlap.items():
            out["seconds_by_label"][lab] += o
        if overlap.get("transition", 0.0) >= frame * 0.99:
            out["clips_with_transition"] += 1
        if overlap:
            out["clips_by_label"][max(overlap, key=overlap.get)] += 1
        if all(o < frame * 0.99 for lab, o in overlap.items() if lab != "scene"):
            out["clips_clean"] += 1
    out["seconds_by_label"] = {k: round(v, 3) for k, v in out["seconds_by_label"].items()}
    labelled = {lab: sum(s["end_s"] - s["start_s"] for f in truth["files"] for s in f["segments"]
                         if s["label"] == lab and not s.get("copy_of"))
                for lab in ("scene", *BAD_LABELS)}
    # How much of the good synthetic material survives: a filter that drops everything is not clean.
    kept = _scene_seconds_covered(truth, clips)
    out["scene_seconds_kept_fraction"] = round(kept / labelled["scene"], 3) if labelled["scene"] else None
    out["duplicates_kept"] = _duplicates_kept(truth, clips)
    out["bad_clips_kept"] = out["clips_synthetic"] - out["clips_clean"] + out["duplicates_kept"]
    return out


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/kvid-e2e-corpus")
    t = build_corpus(folder)
    for f in t["files"]:
        segs = ", ".join(f"{s['start_s']:g}-{s['end_s']:g} {s['label']}" for s in f["segments"]) or "(real, unlabelled)"
        print(f"{f['name']:<28}{f['duration_s']:>7.2f} s  {segs}")
    print(f"total {sum(f['duration_s'] for f in t['files']):.1f} s in {len(t['files'])} files")
