"""The README's "Read it without kvid" snippet runs as written on a curated folder."""

from __future__ import annotations

import os
import re
import tarfile

from conftest import ROOT

from curate import shards, synthetic


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    after = text.split("Read it without kvid", 1)[1]
    match = re.search(r"```python\n(.*?)```", after, re.S)
    assert match, "no python block after 'Read it without kvid'"
    return match.group(1)


def test_readme_snippet_reads_a_one_shard_dataset(tmp_path, ray_local, monkeypatch):
    from pipelines.config import build_config
    from pipelines.curate import run_curate

    inputs = tmp_path / "raw"
    synthetic.scene_video(str(inputs / "cuts.mp4"), [60, 66], fps=30, size=(320, 240))
    code = readme_snippet()
    out_name = re.search(r'^OUT = "([^"]+)"', code, re.M).group(1)  # the snippet names its folder
    # (testsrc2's timecode is an overlay of about 3% at 320x240: the text filter would take that scene)
    cfg = build_config({}, {"inputs": [str(inputs)], "out": str(tmp_path / out_name), "motion_backend": "none",
                            "caption_model": "none", "text_filter": False})
    run_curate(cfg, show_progress=False)
    index = shards.read_index(str(tmp_path / out_name)).to_pylist()
    assert len(index) == 2 and len({r["shard"] for r in index}) == 1  # one shard: no brace range fits it

    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # as written, from the folder holding OUT

    assert [os.path.basename(s) for s in namespace["shards"]] == [index[0]["shard"]]
    samples = list(namespace["ds"])
    assert sorted(key for key, *_ in samples) == sorted(r["clip_id"] for r in index)
    row = namespace["row"]
    with tarfile.open(os.path.join(tmp_path, out_name, "shards", row["shard"])) as tar:
        member = tar.extractfile(f"{row['clip_id']}.mp4").read()
    assert namespace["clip"] == member  # offset + size address exactly that clip's mp4
