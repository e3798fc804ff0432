"""Shard writer: atomic parts, random access, resume state, readers that are not kvid."""

from __future__ import annotations

import json
import os
import tarfile

import pyarrow.parquet as pq
import pytest

from curate import resume, shards
from curate.schema import ClipRecord


def rec(i: int, unit: str = "u:0", rows: int = 3, ok: bool = True, source: str = "/v/a.mp4") -> ClipRecord:
    r = ClipRecord(
        clip_id=f"clip{i:04d}", source=source, source_id=unit.split(":")[0], work_unit=unit,
        work_unit_rows=rows, source_units=1, duration_s=2.0, num_frames=48, fps=24.0, width=64, height=48,
        caption=f"caption {i}",
    )
    return r if ok else r.reject("filter", "too_short", "short")


def test_parts_commit_atomically_and_offsets_point_at_the_video(tmp_path):
    w = shards.ShardWriter(str(tmp_path), shards.ShardParams(max_clips=2))
    w.add(rec(0), b"video-0")
    # Nothing visible until the part is committed.
    assert os.listdir(tmp_path / "index") == [] and not any(
        n.endswith(".tar") and not n.startswith(".") for n in os.listdir(tmp_path / "shards")
    )
    w.add(rec(1), b"video-1" * 100)
    w.add(rec(2, ok=False))
    w.close()
    index = shards.read_index(str(tmp_path))
    assert index.column("clip_id").to_pylist() == ["clip0000", "clip0001"]
    assert shards.read_rejects(str(tmp_path)).column("clip_id").to_pylist() == ["clip0002"]
    for row in index.to_pylist():
        assert shards.read_clip_bytes(str(tmp_path), row) == (b"video-0" if row["clip_id"] == "clip0000" else b"video-1" * 100)
    members = dict(shards.iter_shard(str(tmp_path / "shards" / "shard-000000.tar")))
    assert members["clip0001"]["txt"] == b"caption 1"
    assert json.loads(members["clip0001"]["json"])["clip_id"] == "clip0001"
    assert not [n for n in os.listdir(tmp_path / "shards") if n.startswith(".")]


def test_ledger_admits_each_row_once_and_forgets_finished_units():
    ledger = resume.UnitLedger(done_units={"done:0"}, partial_units={"a:0": {"clip0000"}})
    assert ledger.admit(rec(9, "done:0", 1)) == (False, False)  # unit finished in an earlier run
    assert ledger.admit(rec(0, "a:0", 3)) == (False, False)  # committed in an earlier run
    assert ledger.admit(rec(1, "a:0", 3)) == (True, False)
    assert ledger.admit(rec(1, "a:0", 3)) == (False, False)  # a retried task's duplicate
    assert ledger.admit(rec(2, "a:0", 3)) == (True, True)
    assert ledger.open == {}  # nothing is remembered for finished units but their name
    assert ledger.admit(rec(2, "a:0", 3)) == (False, False)


def test_resume_state_counts_units_and_removes_orphans(tmp_path):
    w = shards.ShardWriter(str(tmp_path), shards.ShardParams(max_clips=2))
    for i in range(3):  # unit a:0 complete (3 rows)
        w.add(rec(i, "a:0", 3, source="/v/a.mp4"), b"v")
    w.add(rec(3, "b:0", 2, source="/v/b.mp4"), b"v")  # unit b:0 has 1 of 2 rows
    w.close()
    # A killed run: a tar renamed into place whose index never came.
    orphan = tmp_path / "shards" / "shard-000099.tar"
    with tarfile.open(orphan, "w"):
        pass
    (tmp_path / "index" / ".shard-000100.parquet.tmp-1").write_bytes(b"half")
    state = resume.resume_state(str(tmp_path))
    assert not orphan.exists() and not (tmp_path / "index" / ".shard-000100.parquet.tmp-1").exists()
    assert state.orphans_removed == 1
    assert state.done_units == {"a:0"}
    assert state.done_sources == {"/v/a.mp4"}
    assert state.partial_units == {"b:0": {"clip0003"}}
    assert state.done_units_by_source == {"/v/b.mp4": set()}
    assert state.next_seq == 2


def test_abort_leaves_nothing_visible(tmp_path):
    w = shards.ShardWriter(str(tmp_path))
    w.add(rec(0), b"v")
    w.abort()
    assert os.listdir(tmp_path / "shards") == [] and os.listdir(tmp_path / "index") == []


def test_readable_by_webdataset_and_pyarrow(tmp_path):
    wds = pytest.importorskip("webdataset")
    w = shards.ShardWriter(str(tmp_path), shards.ShardParams(max_clips=2))
    for i in range(5):
        w.add(rec(i, rows=5), f"video-{i}".encode())
    w.close()
    urls = sorted(str(p) for p in (tmp_path / "shards").glob("*.tar"))
    assert len(urls) == 3
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"clip{i:04d}" for i in range(5)]
    assert samples[3]["mp4"] == b"video-3" and samples[3]["txt"] == b"caption 3"
    table = pq.read_table(str(tmp_path / "index"))
    assert table.num_rows == 5 and set(table.column("shard").to_pylist()) == {os.path.basename(u) for u in urls}
