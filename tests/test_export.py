"""`kvid export DIR --format lance --out DEST`: every clip's bytes and every index column come
back from lance.dataset(DEST) and from Ray Data's read_lance; mistakes are one line."""

from __future__ import annotations

import sys

import pyarrow as pa
import pytest
from loader_fixtures import CLIPS, CORRUPT, clip_id

from curate import shards
from pipelines.cli import main


def export(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["export", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def exported(clip_dir, tmp_path_factory):
    dest = str(tmp_path_factory.mktemp("export") / "clips.lance")
    assert main(["export", clip_dir, "--format", "lance", "--out", dest]) == 0
    return dest


def test_lance_export_round_trips_every_clip_and_every_column(clip_dir, exported):
    import lance

    table = lance.dataset(exported).to_table()
    index = shards.read_index(clip_dir)
    assert table.num_rows == index.num_rows == len(CLIPS) + 1
    assert table.schema.field("mp4").type == pa.large_binary()
    for name in index.column_names:  # every index column, type and values
        assert table.schema.field(name).type == index.schema.field(name).type, name
    by_id = {r["clip_id"]: r for r in table.to_pylist()}
    for row in index.to_pylist():
        got = by_id[row["clip_id"]]
        assert {k: got[k] for k in row} == row
        assert got["mp4"] == shards.read_clip_bytes(clip_dir, row)  # the clip's exact bytes
    assert by_id[clip_id(0)]["mp4"][4:8] == b"ftyp"  # an mp4 indeed


def test_ray_data_reads_the_lance_export(exported, clip_dir, ray_local):
    import ray

    rows = ray.data.read_lance(exported, columns=["clip_id", "motion_score", "mp4"]).take_all()
    index = {r["clip_id"]: r for r in shards.read_index(clip_dir).to_pylist()}
    assert sorted(r["clip_id"] for r in rows) == sorted(index)
    for r in rows:
        assert r["mp4"] == shards.read_clip_bytes(clip_dir, index[r["clip_id"]])
        assert r["motion_score"] == index[r["clip_id"]]["motion_score"]


def test_export_where_selects_clips(clip_dir, tmp_path, capsys):
    import lance

    dest = tmp_path / "moving.lance"
    code, out, _ = export(capsys, clip_dir, "--format", "lance", "--out", str(dest), "--where", "motion_score >= 4")
    want = sorted([clip_id(k) for k, c in enumerate(CLIPS) if c[3] >= 4] + [CORRUPT])
    assert code == 0 and f"{len(want)} clips" in out and len(want) == 5
    ids = sorted(lance.dataset(str(dest)).to_table(columns=["clip_id"]).column("clip_id").to_pylist())
    assert ids == want


@pytest.mark.parametrize("case, message", [
    ("missing folder", "no such folder"),
    ("not kvid", "is not a kvid folder"),
    ("bad where", "function calls are not allowed"),
    ("dest exists", "exists: remove it or give another --out"),
    ("no pylance", "needs pylance, which is not installed: pip install 'kvid[lance]'"),
    ("bad format", "argument --format: invalid choice: 'parquet'"),
])
def test_export_mistakes_are_one_line(clip_dir, tmp_path, capsys, monkeypatch, case, message):
    dest = str(tmp_path / "out.lance")
    argv = [clip_dir, "--format", "lance", "--out", dest]
    if case == "missing folder":
        argv[0] = str(tmp_path / "nope")
    elif case == "not kvid":
        argv[0] = str(tmp_path)
    elif case == "bad where":
        argv += ["--where", "len(caption) > 2"]
    elif case == "dest exists":
        (tmp_path / "out.lance").mkdir()
    elif case == "no pylance":
        monkeypatch.setitem(sys.modules, "lance", None)  # import lance raises ImportError
    elif case == "bad format":
        argv[2] = "parquet"
    code, out, err = export(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("kvid: error: ") and err.count("\n") == 1 and message in err, err
    assert case == "dest exists" or not (tmp_path / "out.lance").exists()


def test_a_failed_export_leaves_nothing_at_dest(clip_dir, tmp_path, monkeypatch, capsys):
    def torn(folder, row):
        raise OSError("disk went away")

    monkeypatch.setattr(shards, "read_clip_bytes", torn)
    code, _, err = export(capsys, clip_dir, "--format", "lance", "--out", str(tmp_path / "x.lance"))
    assert code == 1 and "disk went away" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither DEST nor its hidden temp folder
