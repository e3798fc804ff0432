"""`kvid demo`: make sample videos, curate them on a local Ray, write the report."""

from __future__ import annotations

import os

from curate import synthetic
from curate.ffmpeg import require_binaries

# Offline choices, named explicitly (see README): OpenCV motion, no captioning model.
DEMO_FLAGS = ["--motion-backend", "dis", "--caption-model", "none"]


def make_samples(folder: str) -> dict[str, str]:
    """Render the demo inputs; returns {name: what kvid should do with it}."""
    os.makedirs(folder, exist_ok=True)
    p = lambda name: os.path.join(folder, name)  # noqa: E731
    expect = {}
    if not os.path.exists(p("cuts.mp4")):
        synthetic.scene_video(p("cuts.mp4"), [90, 36, 75, 120], fps=30)
    expect["cuts.mp4"] = "4 scenes: 3 clips, the 1.2 s scene rejected as too_short"
    if not os.path.exists(p("letterbox.mp4")):
        synthetic.boxed_video(p("letterbox.mp4"), (1280, 520), (1280, 720), duration_s=4)
    expect["letterbox.mp4"] = "one clip, 100 px bars cropped: 1280x520"
    if not os.path.exists(p("low_fps.mp4")):
        synthetic.plain_video(p("low_fps.mp4"), duration_s=4, fps=15)
    expect["low_fps.mp4"] = "rejected: fps (15 < 23)"
    if not os.path.exists(p("too_short.mp4")):
        synthetic.plain_video(p("too_short.mp4"), duration_s=1.5, fps=25, source="mandelbrot")
    expect["too_short.mp4"] = "rejected: too_short (1.5 s)"
    if not os.path.exists(p("grey.mp4")):
        synthetic.colour_video(p("grey.mp4"), "gray", duration_s=3, size=(640, 360))
    expect["grey.mp4"] = "rejected: flat (one grey field), before any encode"
    if not os.path.exists(p("still.mp4")):
        synthetic.frozen_video(p("still.mp4"), 0, 3, size=(640, 360))
    expect["still.mp4"] = "rejected: static (a still image encoded as video), before any encode"
    synthetic.random_bytes_file(p("corrupt.mp4"), size=100_000)
    expect["corrupt.mp4"] = "rejected: not_video (random bytes)"
    return expect


def demo_config(samples: str, result: str, extra: list[str]):
    """The curate config of the demo: its offline choices plus any further flags."""
    import argparse

    from pipelines.config import add_config_flags, build_config, overrides_from_args

    parser = argparse.ArgumentParser(prog="kvid demo --", add_help=False)
    add_config_flags(parser)
    args = parser.parse_args([*DEMO_FLAGS, *extra])
    return build_config({}, {**overrides_from_args(args), "inputs": [samples], "out": result}, origin="kvid demo")


def run_demo(out: str, open_report: bool = False, extra: list[str] | None = None) -> int:
    from pipelines.curate import CurateInterrupted, format_summary, run_curate
    from pipelines.report import inspect_output

    require_binaries()
    samples = os.path.join(out, "samples")
    result = os.path.join(out, "curated")
    cfg = demo_config(samples, result, [a for a in (extra or []) if a != "--"])
    print(f"kvid demo: rendering sample videos into {samples}")
    for name, what in make_samples(samples).items():
        print(f"  {name:<15} {what}")
    try:
        summary = run_curate(cfg)
    except CurateInterrupted as e:
        print(format_summary(e.summary))
        raise
    print(format_summary(summary))
    inspect_output(result, html=True, open_browser=open_report)
    print(f"\nnext: open {os.path.join(result, 'report.html')}, or read the shards with webdataset / pyarrow")
    return 0
