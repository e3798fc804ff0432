"""`kvid curate` end to end on a local Ray: real and synthetic videos, broken files, re-runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter

import pyarrow.parquet as pq
import pytest
from conftest import CUT_SCENES, ROOT

from curate import shards
from pipelines.config import ConfigError, build_config
from pipelines.curate import run_curate
from pipelines.inputs import expand_inputs

OFFLINE = {"motion_backend": "none", "caption_model": "none"}


def curate(inputs, out, **overrides):
    cfg = build_config({}, {"inputs": [str(i) for i in inputs], "out": str(out), **OFFLINE, **overrides})
    return run_curate(cfg, show_progress=False)


# The fixture's settings: a re-run "with the same command" passes them again. (Dedup settings
# may change on a resume, so a re-run with dedup on would rightly drop the folder's near copies.)
FIXTURE_RUN = {"shard_max_clips": 4, "dedup": False}


@pytest.fixture(scope="module")
def curated(tmp_path_factory, ray_local, shared_videos, synth):
    out = tmp_path_factory.mktemp("curated")
    inputs = [shared_videos, *synth.values()]
    # (the synthetic inputs are renders of one test pattern, testsrc2, at several sizes and
    # aspects: near copies of each other by design, which dedup would reduce to one)
    summary = curate(inputs, out, **FIXTURE_RUN)
    return out, summary, expand_inputs([str(i) for i in inputs])


def rows(out):
    return shards.read_index(str(out)).to_pylist(), shards.read_rejects(str(out)).to_pylist()


def by_source(items):
    out = {}
    for r in items:
        out.setdefault(os.path.basename(r["source"]), []).append(r)
    return out


def test_every_input_is_accounted_for(curated):
    out, summary, sources = curated
    index, rejects = rows(out)
    assert {r["source"] for r in index + rejects} == set(sources)
    assert summary["counts"]["inputs"] == len(sources)
    assert summary["counts"]["clips"] == len(index) and summary["counts"]["rejects"] == len(rejects)
    ids = [r["clip_id"] for r in index + rejects]
    assert len(ids) == len(set(ids))
    # Each unit's rows are all there.
    per_unit = Counter(r["work_unit"] for r in index + rejects)
    assert all(per_unit[r["work_unit"]] == r["work_unit_rows"] for r in index + rejects)


def test_reject_reasons(curated):
    out, _, _ = curated
    index, rejects = rows(out)
    rej, kept = by_source(rejects), by_source(index)
    reason = lambda name: {r["reject_reason"] for r in rej.get(name, [])}  # noqa: E731
    assert reason("fps15.mp4") == {"fps"}
    assert reason("counter.mp4") == {"fps"}  # 10 fps real video
    assert reason("small200.mp4") == {"too_small"}
    assert reason("zero.mp4") == {"empty_file"}
    assert reason("text.mp4") == {"not_video"}
    assert reason("random.mp4") == {"not_video"}
    assert reason("truncated.mp4") == {"truncated"}
    assert reason("delayed_start.mp4") == {"too_short"}
    assert rej["corrupt.mp4"] and "corrupt.mp4" not in kept
    assert reason("cuts.mp4") == {"too_short"} and len(kept["cuts.mp4"]) == len(CUT_SCENES) - 1
    short = rej["cuts.mp4"][0]
    assert short["duration_s"] == pytest.approx(1.5, abs=0.04)  # the statistic is kept
    assert {r["status"] for r in rejects} == {"rejected"} and all(r["reject_stage"] for r in rejects)


def test_clips_are_24fps_capped_and_counted(curated):
    out, _, _ = curated
    index, _ = rows(out)
    assert index
    for r in index:
        assert r["fps"] == 24.0
        assert min(r["width"], r["height"]) <= 1080
        assert r["width"] % 2 == 0 and r["height"] % 2 == 0
        assert abs(r["num_frames"] - r["duration_s"] * 24) <= 1
        assert r["duration_s"] >= 2.0 and r["aspect_ratio"] == pytest.approx(r["width"] / r["height"])
        assert r["shard"] and r["shard_size"] > 0 and r["config_hash"] and r["kvid_version"]
    kept = by_source(index)
    # Hard cuts at frames 90 and 210 (checked by eye); the 30-frame tail is too short.
    rotated = sorted(kept["issue-134-rotate.mp4"], key=lambda r: r["start_frame"])
    assert [(r["start_frame"], r["end_frame"]) for r in rotated] == [(0, 90), (90, 210)]
    assert (rotated[0]["width"], rotated[0]["height"]) == (544, 1280)  # upright: portrait
    assert rotated[1]["width"] == 544 and rotated[1]["height"] in range(1220, 1281)  # this shot has thin bars
    (box,) = kept["letterbox.mp4"]
    assert abs(box["height"] - 520) <= 2 and box["crop_y"] in range(98, 103)
    (big,) = kept["big.mp4"]
    assert (big["width"], big["height"]) == (1440, 1080)


def test_outputs_readable_without_kvid(curated, ray_local):
    wds = pytest.importorskip("webdataset")
    out, _, _ = curated
    index, _ = rows(out)
    tars = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    assert len(tars) >= 2  # shard_max_clips=4
    samples = list(wds.WebDataset(tars, shardshuffle=False))
    assert sorted(s["__key__"] for s in samples) == sorted(r["clip_id"] for r in index)
    assert all(s["mp4"][4:8] == b"ftyp" for s in samples)
    assert ray_local.data.read_parquet(str(out / "index")).count() == len(index)
    assert pq.read_table(str(out / "rejects")).num_rows > 0
    manifest = shards_manifest(out)
    assert manifest["status"] == "complete" and manifest["config"]["min_duration_s"] == 2.0
    assert manifest["versions"]["ffmpeg"] and manifest["counts"]["clips"] == len(index)


def shards_manifest(out):
    import json

    return json.loads((out / "manifest.json").read_text())


def test_same_command_twice_is_a_no_op(curated, shared_videos, synth):
    out, _, sources = curated
    before = rows(out)
    summary = curate([shared_videos, *synth.values()], out, **FIXTURE_RUN)
    after = rows(out)
    assert summary["sources_run"] == 0 and summary["sources_skipped"] == len(sources)
    assert [r["clip_id"] for r in after[0]] == [r["clip_id"] for r in before[0]]
    assert len(after[1]) == len(before[1])


def test_killed_run_resumes_with_the_same_ids(curated, tmp_path, shared_videos, synth):
    out, _, _ = curated
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    # Simulate a kill after a tar was renamed but before its index landed.
    parts = sorted((copy / "index").glob("shard-*.parquet"))
    parts[-1].unlink()
    summary = curate([shared_videos, *synth.values()], copy, **FIXTURE_RUN)
    assert summary["sources_run"] >= 1
    a, b = rows(out), rows(copy)
    assert sorted(r["clip_id"] for r in a[0]) == sorted(r["clip_id"] for r in b[0])
    assert sorted(r["clip_id"] for r in a[1]) == sorted(r["clip_id"] for r in b[1])
    # The orphan tar is gone; every tar has its index.
    tars = {p.stem for p in (copy / "shards").glob("*.tar")}
    assert tars == {p.stem for p in (copy / "index").glob("*.parquet")}


def test_changed_settings_refuse_to_mix(curated, shared_videos):
    out, _, _ = curated
    with pytest.raises(ConfigError, match="min_duration_s"):
        curate([shared_videos], out, min_duration_s=3.0)


def test_config_file_and_flags(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("min_duration_s: 3\nmotion_backend: dis\nout: /tmp/x\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = (
        "from pipelines.cli import build_parser; from pipelines.config import *;"
        f"a = build_parser().parse_args(['curate', 'in.mp4', '--config', {str(cfg_file)!r}, '--min-duration-s', '4']);"
        "c = build_config(load_yaml(a.config), overrides_from_args(a)); print(c.min_duration_s, c.motion_backend, c.out)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["4.0", "dis", "/tmp/x"], out.stderr


def test_bad_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("min_duraton_s: 3\nfps: fast\n")
    from pipelines.cli import main

    with pytest.raises(ConfigError) as e:
        from pipelines.config import load_yaml

        build_config(load_yaml(str(bad)), {})
    msg = str(e.value)
    assert "min_duraton_s" in msg and "unknown key" in msg and "fps (--fps)" in msg
    assert (
        main(
            [
                "curate",
                str(tmp_path / "nope.mp4"),
                "--out",
                str(tmp_path / "o"),
                "--motion-backend",
                "none",
                "--caption-model",
                "none",
            ]
        )
        == 2
    )
    assert main(["curate", "x.mp4", "--out", str(tmp_path / "o"), "--motion-backend", "magic"]) == 2


def test_help_teaches():
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "curate", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    for text in ("--min-duration-s", "--motion-backend", "--ray-address", "examples:", "resumes", "rejects/"):
        assert text in out.stdout
