"""Motion and caption in the pipeline, `kvid motion recompute|levels`, `kvid caption`."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from curate import layout, shards, versions
from curate.schema import COLUMNS, MOTION_COLUMNS
from pipelines.cli import main
from pipelines.config import build_config
from pipelines.curate import run_curate
from pipelines.rewrite import load_config, rewrite

LOCATION = ("shard", "shard_offset", "shard_size")  # where a clip sits in its tar


@pytest.fixture(scope="module")
def scored(tmp_path_factory, ray_local, synth):
    out = tmp_path_factory.mktemp("scored")
    cfg = build_config({}, {
        "inputs": [str(synth["cuts.mp4"]), str(synth["letterbox.mp4"]), str(synth["fps15.mp4"])],
        "out": str(out), "motion_backend": "dis", "caption_model": "none", "shard_max_clips": 1,
    })
    run_curate(cfg, show_progress=False)
    return out


def index_by_id(out):
    return {r["clip_id"]: r for r in shards.read_index(str(out)).to_pylist()}


def test_motion_scores_land_in_index_and_shard_json(scored):
    index = index_by_id(scored)
    assert len(index) == 4
    for r in index.values():
        assert r["motion_backend"] == "dis" and r["motion_size"] == 256 and r["motion_stride"] == 1
        assert r["motion_score"] > 0.05  # every synthetic scene moves
        assert len(r["motion_pair_scores"]) == r["num_frames"] - 1
    for tar in (scored / "shards").glob("*.tar"):
        for key, sample in shards.iter_shard(str(tar)):
            assert json.loads(sample["json"])["motion_score"] == pytest.approx(index[key]["motion_score"])


def test_recompute_changes_only_motion_and_keeps_ids(scored, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(scored, out)
    before = index_by_id(out)
    assert main(["motion", "recompute", str(out), "--backend", "farneback", "-q"]) == 0
    after = index_by_id(out)
    assert after.keys() == before.keys()
    for cid, a in after.items():
        b = before[cid]
        assert a["motion_backend"] == "farneback" and a["motion_score"] != b["motion_score"]
        same = [c for c in COLUMNS if c not in MOTION_COLUMNS and c not in LOCATION]
        assert {c: a[c] for c in same} == {c: b[c] for c in same}
        assert shards.read_clip_bytes(str(out), a) == shards.read_clip_bytes(str(out / "versions" / "v001"), b)
    # The previous version is kept whole; the manifest says what the folder holds now.
    assert index_by_id(out / "versions" / "v001") == before
    assert load_config(str(out)).motion_backend == "farneback"
    # Levels in the folder's units.
    assert main(["motion", "levels", str(out)]) == 0
    levels = json.loads((out / "motion_levels.json").read_text())
    scores = sorted(r["motion_score"] for r in after.values())
    assert levels["backend"] == "farneback" and levels["size"] == 256 and levels["num_clips"] == 4
    assert scores[0] <= levels["levels"]["low"] <= levels["levels"]["medium"] <= levels["levels"]["high"] <= scores[-1]


def set_motion(batch):
    from pipelines import rows as R

    rows = R.batch_to_dicts(batch)
    for r in rows:
        r["motion_score"] = 42.0
    return R.dicts_to_batch(rows)


def test_killed_recompute_leaves_the_old_index_intact(scored, tmp_path, ray_local, driver_dies_after_one_part):
    out = tmp_path / "out"
    shutil.copytree(scored, out)
    old_files = {p.name: p.read_bytes() for p in (out / "index").iterdir()}
    cfg = load_config(str(out))
    settings = {"test": 1}

    def stages(ds, cluster):
        return ds.map_batches(set_motion, batch_size=1, batch_format="pyarrow", num_cpus=0.25)

    with pytest.raises(Exception, match="killed"):
        rewrite(str(out), cfg, "motion", settings, stages, show_progress=False)
    driver_dies_after_one_part()
    assert {p.name: p.read_bytes() for p in (out / "index").iterdir()} == old_files
    assert not (out / "versions").exists()
    done_before = versions.finished_parts(str(out / layout.NEXT))
    assert len(done_before) == 1 and len(old_files) > 1
    summary = rewrite(str(out), cfg, "motion", settings, stages, show_progress=False)
    assert summary["parts_already_done"] == 1 and summary["parts_rewritten"] == summary["parts"] - 1
    assert {r["motion_score"] for r in index_by_id(out).values()} == {42.0}
    assert not (out / layout.NEXT).exists()


def test_recaption_with_a_tiny_model(scored, tmp_path):
    from random_vlm import save_random_model

    out = tmp_path / "out"
    shutil.copytree(scored, out)
    model = save_random_model("qwen2_5_vl", str(tmp_path / "model"))
    before = index_by_id(out)
    rejects_before = len(shards.read_rejects(str(out)))
    assert main(["caption", str(out), "--model", str(model), "--device", "cpu", "--frames", "4",
                 "--max-new-tokens", "8", "--batch-size", "2", "-q"]) == 0
    after = index_by_id(out)
    rejects = shards.read_rejects(str(out)).to_pylist()
    new_rejects = [r for r in rejects if r["reject_stage"] == "caption"]
    # Every clip is either captioned or a caption_failed reject (a random model mostly babbles).
    assert set(after) | {r["clip_id"] for r in new_rejects} == set(before)
    assert len(rejects) == rejects_before + len(new_rejects)
    assert all(r["reject_reason"] == "caption_failed" and r["error_message"] for r in new_rejects)
    for r in after.values():
        assert r["caption"] and r["caption_model"] == str(model) and r["caption_prompt_hash"]
    assert load_config(str(out)).caption_model == str(model)
    assert os.path.isdir(out / "versions" / "v001")


def test_missing_caption_model_fails_at_start(scored, capsys):
    assert main(["caption", str(scored), "--model", "nobody/no-such-model-7B"]) == 2
    err = capsys.readouterr().err
    assert "no-such-model-7B" in err and "huggingface-cli download" in err
