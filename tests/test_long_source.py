"""A five-and-a-half-minute source through `kvid curate` (opt in: `pytest -m slow`).

Long inputs are where seeking goes wrong: a cut deep into the file must still start on the
exact frame, chunk boundaries must split scenes cleanly, and no clip may bleed into the next
scene. The source has hard cuts at known frames between visually distinct scenes.
"""

from __future__ import annotations

import numpy as np
import pytest

from curate import shards
from curate import synthetic as S
from curate.frames import read_frames
from pipelines.config import build_config
from pipelines.curate import run_curate

pytestmark = pytest.mark.slow

FPS = 25
SCENES = [1500, 600, 2250, 1125, 1800, 975]  # frames; 8250 frames = 330 s
CHUNK_S = 120  # 3000-frame analysis chunks: boundaries at 3000 and 6000 split two scenes
THUMB = 36  # short side of the frames compared


@pytest.fixture(scope="module")
def long_run(tmp_path_factory, ray_local):
    d = tmp_path_factory.mktemp("long")
    src = str(d / "long.mp4")
    cuts = S.scene_video(src, SCENES, fps=FPS)
    cfg = build_config({}, {"inputs": [src], "out": str(d / "out"), "motion_backend": "none",
                            "caption_model": "none", "chunk_s": CHUNK_S})
    run_curate(cfg, show_progress=False)
    index = sorted(shards.read_index(str(d / "out")).to_pylist(), key=lambda r: r["start_frame"])
    return src, cuts, index, str(d / "out")


def expected_segments(cuts):
    total = sum(SCENES)
    bounds = sorted({0, total, *cuts, *range(0, total, CHUNK_S * FPS)})
    return list(zip(bounds, bounds[1:]))


def test_scenes_and_chunks_give_the_expected_clips(long_run):
    _, cuts, index, out = long_run
    assert not shards.read_rejects(out).num_rows
    got = [(r["start_frame"], r["end_frame"]) for r in index]
    want = expected_segments(cuts)
    assert len(got) == len(want)
    for (gs, ge), (ws, we) in zip(got, want):
        assert abs(gs - ws) <= 1 and abs(ge - we) <= 1
    for r in index:
        assert abs(r["num_frames"] - r["duration_s"] * 24) <= 1
    assert sum(r["duration_s"] for r in index) == pytest.approx(sum(SCENES) / FPS, abs=0.2)


def test_clips_deep_in_the_file_start_and_end_on_their_frames(long_run):
    src, _, index, out = long_run
    source = read_frames(src, short_side=THUMB).astype(np.float32)
    assert len(source) == sum(SCENES)
    for r in index:
        clip = read_frames(shards.read_clip_bytes(out, r), short_side=THUMB).astype(np.float32)

        def nearest(frame, around):
            window = range(max(0, around - 5), min(len(source), around + 6))
            errors = {i: np.abs(frame - source[i]).mean() for i in window}
            best = min(errors, key=errors.get)
            return best, errors[best]

        first, err_first = nearest(clip[0], r["start_frame"])
        last, err_last = nearest(clip[-1], r["end_frame"] - 1)
        assert abs(first - r["start_frame"]) <= 1 and err_first < 10, (r["start_frame"], first, err_first)
        # The last frame belongs to this scene, not the next one.
        assert r["start_frame"] <= last < r["end_frame"] and err_last < 10, (r["end_frame"], last, err_last)
