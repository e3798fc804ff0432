"""Near duplicates in `kvid curate --dedup` (one run, two runs into one folder) and `kvid dedup DIR`."""

from __future__ import annotations

import json
import shutil

import pytest
from dedup_fixtures import copy_variants

from curate import layout, shards, versions
from pipelines.cli import main
from pipelines.config import build_config
from pipelines.curate import run_curate
from pipelines.dedup_cmd import dedup_stages, rewrite_settings
from pipelines.report import inspect_output
from pipelines.rewrite import load_config, rewrite

SMALL = {"min_area": 0, "min_side": 0, "motion_backend": "none", "caption_model": "none", "shard_max_clips": 1}


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> dict[str, str]:
    return copy_variants(str(tmp_path_factory.mktemp("variants")))


def curate(out, inputs, **over) -> dict:
    cfg = build_config({}, {**SMALL, "inputs": [str(p) for p in inputs], "out": str(out), **over})
    return run_curate(cfg, show_progress=False)


def groups(out) -> set[frozenset[str]]:
    """Duplicate groups of a folder, each as the set of its clip ids (kept and copies)."""
    rejects = [r for r in shards.read_rejects(str(out)).to_pylist() if r["reject_reason"] == "duplicate"]
    by_kept: dict[str, set[str]] = {}
    for r in rejects:
        by_kept.setdefault(r["duplicate_of"], {r["duplicate_of"]}).add(r["clip_id"])
    return {frozenset(g) for g in by_kept.values()}


def check_one_kept(out, n_copies: int) -> str:
    index = shards.read_index(str(out)).to_pylist()
    rejects = shards.read_rejects(str(out)).to_pylist()
    assert len(index) == 1, [r["source"] for r in index]
    kept = index[0]["clip_id"]
    assert len(rejects) == n_copies
    for r in rejects:
        assert (r["reject_stage"], r["reject_reason"], r["duplicate_of"]) == ("dedup", "duplicate", kept)
        assert r["signature"] and r["shard"] is None
    assert index[0]["signature"] and index[0]["duplicate_of"] is None
    # Copies were never encoded: the shards hold one clip.
    assert sum(1 for t in (out / "shards").glob("*.tar") for _ in shards.iter_shard(str(t))) == 1
    return kept


@pytest.fixture(scope="module")
def deduped_run(tmp_path_factory, ray_local, variants):
    out = tmp_path_factory.mktemp("one_run")
    curate(out, variants.values(), dedup=True)
    return out


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory, ray_local, variants):
    out = tmp_path_factory.mktemp("plain")
    curate(out, variants.values(), dedup=False)
    return out


def test_one_run_keeps_one_copy(deduped_run, variants):
    check_one_kept(deduped_run, len(variants) - 1)


def test_second_run_into_the_folder_matches_its_clips(tmp_path, ray_local, variants):
    out = tmp_path / "two_runs"
    curate(out, [variants["scene"]], dedup=True)
    (first,) = shards.read_index(str(out)).to_pylist()
    curate(out, variants.values(), dedup=True)  # adds the copies
    assert check_one_kept(out, len(variants) - 1) == first["clip_id"]


def test_dedup_off_keeps_every_copy_with_its_signature(plain_run, variants):
    index = shards.read_index(str(plain_run)).to_pylist()
    assert len(index) == len(variants) and all(r["signature"] for r in index)
    assert not shards.read_rejects(str(plain_run)).num_rows


def test_kvid_dedup_finds_the_groups_of_a_dedup_run(plain_run, deduped_run, tmp_path, variants):
    out = tmp_path / "out"
    shutil.copytree(plain_run, out)
    before = {r["clip_id"] for r in shards.read_index(str(out)).to_pylist()}
    assert main(["dedup", str(out), "--dry-run"]) == 0
    assert len(shards.read_index(str(out))) == len(variants)  # dry run: nothing changed
    assert main(["dedup", str(out), "-q"]) == 0
    assert groups(out) == groups(deduped_run) and len(groups(out)) == 1
    kept = check_one_kept(out, len(variants) - 1)
    # The rule: longest, then largest: the 240x180 copy.
    assert shards.read_index(str(out)).to_pylist()[0]["width"] == 240
    assert {kept} | {r["clip_id"] for r in shards.read_rejects(str(out)).to_pylist()} == before
    # The old version is kept whole; the thresholds used are in the manifest's config.
    assert len(shards.read_index(str(out / "versions" / "v001"))) == len(variants)
    assert load_config(str(out)).dedup_max_distance == 10.0
    # Running it again finds nothing more and writes no new version.
    assert main(["dedup", str(out), "-q"]) == 0
    assert not (out / "versions" / "v002").exists()
    # The report shows the group, a frame of each clip side by side.
    inspect_output(str(out), thumbs=0)
    page = (out / "report.html").read_text()
    assert "duplicate groups (1)" in page and page.count("<b>duplicate</b>") == len(variants) - 1
    assert len(list((out / "report_thumbs").glob("frame-*.jpg"))) == len(variants)


def test_killed_dedup_leaves_the_current_version_intact(plain_run, tmp_path, ray_local, driver_dies_after_one_part):
    from curate.dedup import find_duplicates, signed_rows

    out = tmp_path / "out"
    shutil.copytree(plain_run, out)
    old = {p.name: p.read_bytes() for p in (out / "index").iterdir()}
    cfg = load_config(str(out))
    dups = find_duplicates(signed_rows(str(out)), cfg.settings().dedup)
    with pytest.raises(Exception, match="killed"):
        rewrite(str(out), cfg, "dedup", rewrite_settings(cfg.settings().dedup, dups), dedup_stages(dups),
                show_progress=False)
    driver_dies_after_one_part()  # the resume below runs with a live driver
    assert {p.name: p.read_bytes() for p in (out / "index").iterdir()} == old
    assert not (out / "versions").exists() and not shards.read_rejects(str(out)).num_rows
    done = versions.finished_parts(str(out / layout.NEXT))
    assert len(done) == 1 and len(old) > 1
    # The same command resumes into the same new version.
    assert main(["dedup", str(out), "-q"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rewrites"][-1]["parts_already_done"] == len(done)
    check_one_kept(out, len(old) - 1)


def test_folder_from_before_signatures_is_reported_not_broken(plain_run, tmp_path, capsys, variants):
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    shutil.copytree(plain_run, out)
    for path in (out / "index").glob("*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(["signature", "duplicate_of"]), path)
    assert main(["dedup", str(out)]) == 0
    assert f"{len(variants)} clips without a signature" in capsys.readouterr().out
    assert not (out / "versions").exists()
