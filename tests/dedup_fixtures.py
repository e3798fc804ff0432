"""Synthetic clips with a known duplicate answer, for the dedup tests and benchmark.

``distinct_sources()``: lavfi graphs that all look different (different generators, seeds,
rules, regions of a fractal), including pairs of different moments of one source.
``copy_variants()``: a scene and its near copies (re-encoded smaller at a high CRF, cropped
2%, hue shifted, 5 frames trimmed, letterboxed and pillarboxed: bars added, rescaled,
re-encoded).
"""

from __future__ import annotations

import os
import subprocess

import numpy as np

SIZE = (160, 120)
FPS = 24


def distinct_sources() -> list[tuple[str, float]]:
    """(lavfi graph at SIZE/FPS, start second): 50 clips no two of which are duplicates."""
    w, h = SIZE
    s = f"size={w}x{h}:rate={FPS}"
    out: list[tuple[str, float]] = []
    for x, y, scale in ((-0.743643887, 0.131825904, 3.0), (-0.16, 1.0405, 0.5), (-1.25066, 0.02012, 0.2),
                        (0.275, 0.0, 0.4), (-0.75, 0.1, 1.0), (-1.7687, 0.0017, 0.05)):
        out.append((f"mandelbrot={s}:start_x={x}:start_y={y}:start_scale={scale}", 0.0))
    # Two different scenes of one source: the same zoom 8 s later.
    out.append(("mandelbrot=" + s, 0.0))
    out.append(("mandelbrot=" + s, 8.0))
    for seed in range(1, 7):
        out.append((f"life={s}:seed={seed}:ratio={0.1 + 0.08 * seed}:mold=10", 0.0))
    out.append((f"life={s}:seed=3:ratio=0.5", 0.0))
    out.append((f"life={s}:seed=3:ratio=0.5", 6.0))  # one source, two moments
    for rule, seed in ((30, 1), (90, 2), (110, 3), (150, 4), (45, 5), (105, 6), (18, 7), (73, 8)):
        out.append((f"cellauto={s}:rule={rule}:seed={seed}:random_fill_ratio=0.5", 0.0))
    # (sierpinski's seed only moves the pan: two seeds of one type are near copies)
    out.append((f"sierpinski={s}:seed=1:type=triangle:jump=1", 0.0))
    out.append((f"sierpinski={s}:seed=2:type=carpet:jump=1", 0.0))
    # (not gradients: ffmpeg 5.1 ignores its seed, so its clips differ from run to run)
    for x, y, scale in ((-0.7453, 0.1127, 0.01), (-1.401155, 0.0, 0.02), (0.0016437, -0.8224676, 0.005)):
        out.append((f"mandelbrot={s}:start_x={x}:start_y={y}:start_scale={scale}:end_scale=0.001", 0.0))
    for seed, ratio in ((11, 0.25), (12, 0.6)):
        out.append((f"life={s}:seed={seed}:ratio={ratio}:mold=25", 0.0))
    for rule, seed in ((22, 10), (54, 11)):
        out.append((f"cellauto={s}:rule={rule}:seed={seed}:random_fill_ratio=0.4", 0.0))
    out += [
        (f"testsrc2={s}", 0.0),
        (f"testsrc={s}", 0.0),
        (f"rgbtestsrc={s},rotate=a=0.4*t:c=blue", 0.0),
        (f"smptebars={s},hue=H=2*PI*t/3", 0.0),
        (f"smptehdbars={s},rotate=a=-0.3*t:c=white", 0.0),
        (f"pal75bars={s},scroll=h=0.01", 0.0),
        (f"yuvtestsrc={s},hue=s=2*t", 0.0),
        (f"colorspectrum={s}:type=all,rotate=a=0.5*t", 0.0),
        (f"mptestsrc=rate={FPS}:test=dc_luma,scale={w}:{h}", 0.0),
        (f"colorchart=rate={FPS}:patch_size=32x32:preset=skintones,scale={w}:{h},rotate=a=0.2*t", 0.0),
        (f"testsrc2={s},negate,vflip", 0.0),
        (f"cellauto={s}:rule=110:seed=12:random_fill_ratio=0.5,negate", 0.0),
        (f"mandelbrot={s}:start_x=-0.5:start_y=0.6:start_scale=0.3:inner=period", 0.0),
        (f"life={s}:seed=9:ratio=0.2,edgedetect", 0.0),
        (f"life={s}:seed=10:rule=S23/B36:ratio=0.4", 0.0),
        (f"cellauto={s}:rule=126:seed=9:random_fill_ratio=0.3", 0.0),
        (f"mandelbrot={s}:start_x=-0.1011:start_y=0.9563:start_scale=0.02", 0.0),
    ]
    return out


def lavfi_frames(graph: str, seconds: float, start_s: float = 0.0, size: tuple[int, int] = SIZE) -> np.ndarray:
    """(T, H, W, 3) BGR frames of a lavfi graph, no encode."""
    w, h = size
    vf = f"trim=start={start_s},setpts=PTS-STARTPTS,scale={w}:{h},format=bgr24"
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", graph, "-vf", vf,
            "-t", f"{seconds}", "-f", "rawvideo", "pipe:1"]
    data = subprocess.run(args, capture_output=True, check=True, timeout=120).stdout
    return np.frombuffer(data, np.uint8).reshape(-1, h, w, 3)


def _ff(args: list[str]) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=120)


ENC = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]


def copy_variants(folder: str, seconds: float = 3.0, fps: int = 30) -> dict[str, str]:
    """A scene (mandelbrot zoom) and its near copies as mp4 files: {name: path}."""
    os.makedirs(folder, exist_ok=True)
    p = lambda name: os.path.join(folder, name + ".mp4")  # noqa: E731
    w, h = SIZE
    src = f"mandelbrot=size={w}x{h}:rate={fps}"
    _ff(["-f", "lavfi", "-i", src, "-t", str(seconds), *ENC, "-crf", "18", p("scene")])
    _ff(["-i", p("scene"), "-vf", "scale=240:180", *ENC, "-crf", "34", p("rescaled_crf34")])
    _ff(["-i", p("scene"), "-vf", "crop=iw*0.98:ih*0.98", *ENC, "-crf", "20", p("cropped2pct")])
    _ff(["-i", p("scene"), "-vf", "hue=h=8", *ENC, "-crf", "20", p("hue_shifted")])
    _ff(["-i", p("scene"), "-vf", "trim=start_frame=5,setpts=PTS-STARTPTS", *ENC, "-crf", "20", p("trimmed5")])
    # Re-uploads with black bars added, rescaled and re-encoded: the signature is taken inside
    # the border crop, so they sign like the scene.
    _ff(["-i", p("scene"), "-vf", "pad=iw:ih*4/3:0:(oh-ih)/2:black,scale=210:210,setsar=1", *ENC, "-crf", "23",
         p("letterboxed")])
    _ff(["-i", p("scene"), "-vf", "pad=ih*16/9:ih:(ow-iw)/2:0:black,scale=256:144,setsar=1", *ENC, "-crf", "23",
         p("pillarboxed")])
    return {n: p(n) for n in ("scene", "rescaled_crf34", "cropped2pct", "hue_shifted", "trimmed5", "letterboxed",
                              "pillarboxed")}
