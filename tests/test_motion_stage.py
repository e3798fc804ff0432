"""MotionStage with the CPU backend: records filled, rejects made, rejects passed through."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from motion_fixtures import encode_bytes, translating_frames

from curate import schema
from curate.stage import Cluster, Resources
from motion import MotionStage, get_backend, score_video


def _row(clip_id: str, mp4, **kw) -> dict:
    row = schema.ClipRecord(clip_id=clip_id, width=320, height=256, fps=24.0).to_row()
    row.update(kw)
    row["mp4"] = mp4
    return row


@pytest.fixture(scope="module")
def clips():
    return {
        "pan3": encode_bytes(translating_frames(8, 3, 0)),  # ordinary yuv420p mp4, 3 px/frame
        "tilt2": encode_bytes(translating_frames(12, 0, 2, height=320, width=256, seed=1)),  # portrait
        "still": encode_bytes(translating_frames(5, 0, 0, seed=2)),
        "one_frame": encode_bytes(translating_frames(1, 0, 0)),
    }


def test_stage_fills_motion_columns(clips):
    stage = MotionStage(backend="dis", size=256, batch_size=4)
    placed = stage.placement(Cluster(cpus=2))
    assert placed.resources.gpus == 0 and placed.resources.cpus > 0 and placed.workers == 1
    rows = [_row("a", clips["pan3"]), _row("b", clips["tilt2"]), _row("c", clips["still"])]
    out = stage(rows)
    assert [r["clip_id"] for r in out] == ["a", "b", "c"]
    a, b, c = out
    for r, pairs in ((a, 7), (b, 11), (c, 4)):
        assert r["status"] == "ok" and r["reject_stage"] is None
        assert r["motion_backend"] == "dis" and r["motion_size"] == 256 and r["motion_stride"] == 1
        assert len(r["motion_pair_scores"]) == pairs
        assert r["mp4"] is not None  # clip bytes stay on the row for the shard writer
    assert abs(a["motion_score"] - 3) < 0.3 and abs(a["motion_camera"] - 3) < 0.3 and a["motion_object"] < 0.3
    assert abs(b["motion_score"] - 2) < 0.2
    assert c["motion_score"] < 0.1
    # the input rows are not modified in place
    assert rows[0]["motion_score"] is None
    # same numbers as scoring one video on its own
    ref = score_video(clips["tilt2"], get_backend("dis"), size=256)
    assert b["motion_score"] == pytest.approx(ref.score, rel=1e-6)
    np.testing.assert_allclose(b["motion_pair_scores"], ref.pair_scores, rtol=1e-6)
    # the record fits the schema and the shard json
    table = schema.records_to_table(out)
    assert table.column("motion_score").to_pylist()[0] == pytest.approx(a["motion_score"])
    assert len(table.column("motion_pair_scores").to_pylist()[1]) == 11
    rec = schema.ClipRecord.from_row(a)
    assert schema.shard_json(rec)["motion_score"] == a["motion_score"]


def test_stage_stride_and_size(clips):
    stage = MotionStage(backend="dis", size=128, stride=3, batch_size=2)
    out = stage([_row("b", clips["tilt2"], width=256, height=320)])[0]
    assert out["motion_size"] == 128 and out["motion_stride"] == 3
    assert len(out["motion_pair_scores"]) == 4  # pairs starting at 0, 3, 6, 9 of 12 frames
    assert abs(out["motion_score"] - 1) < 0.15  # 2 px/frame at 256 -> 1 px/frame at 128


def test_row_dims_save_a_probe_and_are_not_needed(clips):
    # The record's width/height (the clip as written) replace a probe when frames get
    # resized; without them, or with use_row_dims=False, the clip is probed.
    good = MotionStage(backend="dis", size=128)([_row("b", clips["tilt2"], width=256, height=320)])[0]
    unknown = MotionStage(backend="dis", size=128)([_row("b", clips["tilt2"], width=None, height=None)])[0]
    assert good["motion_score"] == pytest.approx(unknown["motion_score"], rel=1e-6)
    # A record with wrong dims distorts the aspect (documented trade-off), never garbles
    # frames; use_row_dims=False ignores the record.
    wrong = _row("b", clips["tilt2"], width=320, height=256)
    distorted = MotionStage(backend="dis", size=128)([wrong])[0]
    assert distorted["status"] == "ok" and abs(distorted["motion_score"] - 0.8) < 0.1  # 2 px * 128/320
    probed = MotionStage(backend="dis", size=128, use_row_dims=False)([wrong])[0]
    assert probed["motion_score"] == pytest.approx(unknown["motion_score"], rel=1e-6)


def test_bad_clips_become_motion_rejects_and_rejects_pass_through(clips):
    stage = MotionStage(backend="dis", batch_size=3)
    earlier_reject = _row(
        "r", None, status="rejected", reject_stage="filter", reject_reason="too_short", error_message="2 frames"
    )
    stale = _row("s", b"\x00\x01garbage" * 500, motion_score=7.5, motion_backend="farneback")
    rows = [
        _row("ok1", clips["pan3"]),
        _row("corrupt", clips["pan3"][: len(clips["pan3"]) // 3]),  # truncated mp4
        earlier_reject,
        stale,
        _row("nobytes", None),
        _row("short", clips["one_frame"]),
        _row("ok2", clips["still"]),
    ]
    before = copy.deepcopy(earlier_reject)
    out = {r["clip_id"]: r for r in stage(rows)}
    assert out["r"] == before  # untouched
    assert out["ok1"]["status"] == "ok" and abs(out["ok1"]["motion_score"] - 3) < 0.3
    assert out["ok2"]["status"] == "ok" and out["ok2"]["motion_score"] < 0.1
    for cid, needle in (("corrupt", ""), ("s", ""), ("nobytes", "mp4"), ("short", "at least 2 frames")):
        r = out[cid]
        assert r["status"] == schema.STATUS_REJECTED, cid
        assert r["reject_stage"] == schema.STAGE_MOTION == "motion"
        assert r["reject_reason"] == schema.REASON_MOTION_FAILED
        assert r["error_message"] and needle in r["error_message"], (cid, r["error_message"])
        # no stale or partial motion values on a reject
        assert all(r[c] is None for c in schema.MOTION_COLUMNS), cid
    # rows in, rows out: rejects are data
    assert len(out) == len(rows)


def test_scoring_failure_of_one_clip_spares_the_batch(clips):
    stage = MotionStage(backend="dis", batch_size=16)
    stage.setup()
    orig = stage.flow.pair_stats

    def flaky(a, b):
        # fails whenever the batch holds a portrait frame pair (clip "tilt2")
        if a.shape[1] > a.shape[2]:
            raise RuntimeError("simulated backend failure")
        return orig(a, b)

    stage.flow.pair_stats = flaky
    out = stage([_row("a", clips["pan3"]), _row("b", clips["tilt2"]), _row("c", clips["still"])])
    assert [r["status"] for r in out] == ["ok", "rejected", "ok"]
    assert "simulated backend failure" in out[1]["error_message"]


def test_empty_and_all_rejected_batches():
    stage = MotionStage(backend="dis")
    assert stage([]) == []
    rows = [_row("x", None, status="rejected", reject_stage="probe", reject_reason="not_video")]
    assert stage(rows) == rows


def test_stage_options_are_validated():
    with pytest.raises(ValueError, match="unknown motion backend"):
        MotionStage(backend="nope")
    with pytest.raises(ValueError, match="stride"):
        MotionStage(backend="dis", stride=0)
    with pytest.raises(ValueError, match="CPU only"):
        MotionStage(backend="dis", device="cuda")
    with pytest.raises(ValueError, match="preset"):
        MotionStage(backend="dis", dis_preset="turbo").setup()
    s = MotionStage(backend="farneback", batch_size=8)
    assert s.batch_size == 8 and s.placement(Cluster(cpus=4, gpus=1)).resources == Resources(cpus=1.0, gpus=0)


def test_stage_pickles_without_its_model_and_motion_imports_no_torch():
    import pickle
    import subprocess
    import sys

    stage = MotionStage(backend="dis", size=128)
    stage.setup()
    clone = pickle.loads(pickle.dumps(stage))
    assert clone._backend is None and clone.size == 128 and clone.placement(Cluster(cpus=4)) == stage.placement(Cluster(cpus=4))
    # CPU curation nodes that score with DIS never pay for importing torch
    code = "import sys, motion; motion.get_backend('dis').setup(); sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=_repo_root()).returncode == 0


def _repo_root():
    import os

    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
