"""Motion levels: percentiles, refusals, the file generate reads."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from curate import schema
from motion import LEVELS_FILE, MotionLevelsError, collect_scores, compute_levels, read_levels, write_levels


def test_percentiles_computed_right():
    scores = list(range(101))  # 0..100: the p-th percentile is p
    assert compute_levels(scores) == {"low": 10.0, "medium": 50.0, "high": 90.0}
    # linear interpolation between order statistics, any order of input
    assert compute_levels([4.0, 1.0, 3.0, 2.0], {"q1": 25, "mid": 50, "max": 100}) == {
        "q1": 1.75,
        "mid": 2.5,
        "max": 4.0,
    }
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 2.0, 999)
    got = compute_levels(x.tolist())
    np.testing.assert_allclose([got["low"], got["medium"], got["high"]], np.percentile(x, [10, 50, 90]))
    assert got["low"] < got["medium"] < got["high"]
    assert compute_levels([2.5]) == {"low": 2.5, "medium": 2.5, "high": 2.5}


def test_bad_inputs_refused():
    with pytest.raises(MotionLevelsError, match="empty"):
        compute_levels([])
    with pytest.raises(MotionLevelsError, match="not finite"):
        compute_levels([1.0, float("nan")])
    with pytest.raises(MotionLevelsError, match="missing"):
        compute_levels([1.0, None])
    with pytest.raises(MotionLevelsError, match="negative"):
        compute_levels([1.0, -2.0])
    with pytest.raises(MotionLevelsError, match=r"\[0, 100\]"):
        compute_levels([1.0], {"high": 120})
    with pytest.raises(MotionLevelsError, match="at least one"):
        compute_levels([1.0], {})


def test_write_read_round_trip(tmp_path):
    scores = [0.5, 1.0, 2.0, 3.0, 9.0]
    out = tmp_path / "run"
    path = write_levels(out, scores, backend="raft_large", size=256)
    assert path == str(out / LEVELS_FILE)
    with open(path) as f:
        doc = json.load(f)
    assert set(doc) == {"backend", "size", "percentiles", "levels", "num_clips", "kvid_version"}
    assert doc["backend"] == "raft_large" and doc["size"] == 256 and doc["num_clips"] == 5
    assert doc["percentiles"] == {"low": 10, "medium": 50, "high": 90}
    assert doc["levels"] == pytest.approx({"low": 0.7, "medium": 2.0, "high": 6.6})
    assert doc["kvid_version"] and doc["kvid_version"] != ""
    assert read_levels(out) == doc == read_levels(path)
    # atomic: no temp files left behind; rewriting replaces
    assert os.listdir(out) == [LEVELS_FILE]
    write_levels(out, [1.0, 1.0], backend="dis", size=128, percentiles={"slow": 50})
    doc2 = read_levels(out)
    assert doc2["backend"] == "dis" and doc2["levels"] == {"slow": 1.0} and doc2["num_clips"] == 2
    assert os.listdir(out) == [LEVELS_FILE]


def test_mixed_backends_or_sizes_refused(tmp_path):
    with pytest.raises(MotionLevelsError, match="more than one"):
        write_levels(tmp_path, [1.0, 2.0], backend=["dis", "raft_large"], size=256)
    with pytest.raises(MotionLevelsError, match="more than one"):
        write_levels(tmp_path, [1.0, 2.0], backend="dis", size=[256, 512])
    with pytest.raises(MotionLevelsError, match="empty"):
        write_levels(tmp_path, [], backend="dis", size=256)
    assert not os.path.exists(tmp_path / LEVELS_FILE)


def _rec(i, score, backend="raft_large", size=256, status="ok"):
    r = schema.ClipRecord(clip_id=f"c{i}", status=status, motion_score=score, motion_backend=backend, motion_size=size)
    return r.to_row()


def test_from_clip_records(tmp_path):
    rows = [_rec(i, float(i)) for i in range(11)]
    rows.append(_rec(99, 1000.0, status="rejected"))  # rejects do not count
    rows.append(_rec(98, None, backend=None, size=None))  # unscored rows do not count
    scores, backend, size = collect_scores(rows)
    assert len(scores) == 11 and backend == "raft_large" and size == 256
    path = write_levels(tmp_path, schema.records_to_table(rows))  # a pyarrow table works too
    doc = read_levels(path)
    assert doc["num_clips"] == 11 and doc["levels"] == {"low": 1.0, "medium": 5.0, "high": 9.0}
    mixed = rows + [_rec(50, 3.0, backend="dis")]
    with pytest.raises(MotionLevelsError, match=r"raft_large at 256 px: 11 clips, dis at 256 px: 1 clips"):
        collect_scores(mixed)
    with pytest.raises(MotionLevelsError, match="no clips with a motion score"):
        collect_scores([_rec(1, None, backend=None, size=None)])


def test_read_levels_errors(tmp_path):
    with pytest.raises(MotionLevelsError, match="kvid motion levels"):
        read_levels(tmp_path)
    (tmp_path / LEVELS_FILE).write_text("{not json")
    with pytest.raises(MotionLevelsError, match="not a motion levels json"):
        read_levels(tmp_path)
    (tmp_path / LEVELS_FILE).write_text(json.dumps({"backend": "dis", "size": 256}))
    with pytest.raises(MotionLevelsError, match="lacks"):
        read_levels(tmp_path)
