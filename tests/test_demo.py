"""`kvid demo`, the README's first command: what it promises on screen is what comes out."""

from __future__ import annotations

import os
from collections import Counter

from curate import shards
from pipelines.demo import run_demo


def test_demo_does_what_it_says(tmp_path, ray_local):
    assert run_demo(str(tmp_path / "demo")) == 0
    out = tmp_path / "demo" / "curated"
    index = shards.read_index(str(out)).to_pylist()
    rejects = shards.read_rejects(str(out)).to_pylist()
    kept = Counter(os.path.basename(r["source"]) for r in index)
    assert kept == {"cuts.mp4": 3, "letterbox.mp4": 1}
    reasons = {(os.path.basename(r["source"]), r["reject_reason"]) for r in rejects}
    assert reasons == {("cuts.mp4", "too_short"), ("low_fps.mp4", "fps"), ("too_short.mp4", "too_short"),
                       ("corrupt.mp4", "not_video"), ("grey.mp4", "flat"), ("still.mp4", "static")}
    assert all(r["scene_stats"] for r in rejects if r["reject_reason"] in ("flat", "static"))  # stats kept on rejects
    (box,) = [r for r in index if r["source"].endswith("letterbox.mp4")]
    assert box["width"] == 1280 and abs(box["height"] - 520) <= 2
    assert all(r["motion_score"] is not None and r["motion_score"] > 0 for r in index)  # DIS ran
    report = (out / "report.html").read_text()
    assert all(r["clip_id"] in report for r in index)
