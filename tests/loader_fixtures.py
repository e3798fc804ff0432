"""A small kvid folder for the loader and export tests, written once per session.

Every clip's frames show their own number (``curate.synthetic.counter_frames``): frame i of
clip k reads ``OFFSET * k + i``, so a test can tell which frame of which clip came out, even
after a resize and a centre crop. Written with ``clip_folder`` (ShardWriter) instead of
`kvid curate`: the loader reads what a curate writes, and this way the shapes, lengths,
motion scores and one undecodable clip are chosen, not found.
"""

from __future__ import annotations

import pytest

OFFSET = 200  # counter offset between clips (every clip has fewer frames)

# (width, height, frames at 24 fps, motion score): four aspect ratios, 1 s to 5 s.
CLIPS = [
    (256, 144, 120, 3.0), (256, 144, 72, 1.0), (192, 144, 96, 2.5), (144, 144, 96, 4.0),
    (144, 256, 84, 0.5), (256, 144, 100, 5.0), (192, 144, 60, 2.0), (256, 144, 24, 6.0),  # 1 s: too short
    (144, 144, 110, 1.5), (256, 144, 90, 3.5), (144, 256, 66, 2.2), (192, 144, 80, 4.5),
]
CORRUPT = "c99"  # an index row whose bytes are not a video


def clip_id(k: int) -> str:
    return f"c{k:02d}"


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> str:
    import os

    from curate import synthetic as S

    d = tmp_path_factory.mktemp("loader")
    rows = []
    for k, (w, h, n, motion) in enumerate(CLIPS):
        path = str(d / f"{k}.mp4")
        S.write_frames(path, S.counter_frames(n, (w, h), offset=OFFSET * k), fps=24, lossless=False)
        with open(path, "rb") as f:
            rows.append({"mp4": f.read(), "clip_id": clip_id(k), "width": w, "height": h, "num_frames": n,
                         "motion_score": motion, "caption": f"clip number {k}"})
    rows.append({"mp4": os.urandom(20_000), "clip_id": CORRUPT, "width": 256, "height": 144, "num_frames": 96,
                 "motion_score": 9.0, "caption": "not a video"})
    out = str(d / "curated")
    S.clip_folder(out, rows, clips_per_shard=4)  # 13 clips: 4 shards
    return out
