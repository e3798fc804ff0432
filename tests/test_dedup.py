"""Near-duplicate signatures and matching (curate/dedup.py), without Ray."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from dedup_fixtures import FPS, copy_variants, distinct_sources, lavfi_frames

from curate import dedup as D
from curate.filters import FilterParams
from curate.schema import ClipRecord, records_to_table, table_to_records
from curate.synthetic import synthetic_signatures
from curate.video_stages import CurateParams, analyze_work_unit, plan_source
from pipelines import rows as R


def signature_of(frames: np.ndarray, fps: float = FPS) -> D.Signature:
    feature = D.SignatureFeature(fps)
    for i, frame in enumerate(frames):
        feature.push(i, frame)
    return feature.signature(0, len(frames))


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> dict[str, ClipRecord]:
    """One analysed scene record per file: the signatures the curate analysis decode takes."""
    files = copy_variants(str(tmp_path_factory.mktemp("copies")))
    params = CurateParams(filters=FilterParams(min_area=0, min_side=0))
    out = {}
    for name, path in files.items():
        units, rejects = plan_source(path, params)
        assert not rejects and len(units) == 1
        (rec,) = analyze_work_unit(units[0], params)
        assert rec.signature
        out[name] = rec
    return out


@pytest.fixture(scope="module")
def distinct() -> list[D.Signature]:
    return [signature_of(lavfi_frames(graph, 1.5, start)) for graph, start in distinct_sources()]


def test_signature_blob_round_trips_through_rows_index_and_json():
    sig = D.Signature(D.KIND_PHASH, 8.0, np.array([1, 2**63 + 5, 0], np.uint64), np.array([3, 200, 9], np.uint8))
    blob = sig.to_bytes()
    back = D.Signature.from_bytes(blob)
    assert back.kind == sig.kind and back.rate == 8.0
    assert back.hashes.tolist() == sig.hashes.tolist() and back.profile.tolist() == [3, 200, 9]
    rec = ClipRecord(clip_id="a", signature=blob)
    assert R.row_record(R.record_row(rec)).signature == blob  # JSON rows carry base64
    assert table_to_records(records_to_table([rec]))[0].signature == blob  # Parquet: binary
    # Stage batches (motion, caption actors) carry it too.
    batch = pa.Table.from_pydict(R.dicts_to_batch([{**rec.to_row(), "mp4": b"x"}]))
    assert ClipRecord.from_row(R.batch_to_dicts(batch)[0]).signature == blob


def test_every_copy_matches_the_scene_and_the_rule_keeps_one(copies):
    sigs = {n: D.Signature.from_bytes(r.signature) for n, r in copies.items()}
    for name, sig in sigs.items():
        bits, overlap, _ = D.signature_distance(sigs["scene"], sig)
        assert bits <= 4 and overlap >= 0.9, (name, bits, overlap)
        assert D.is_match(sigs["scene"], sig) and D.is_match(sig, sigs["scene"])
    rows = [r.to_row() for r in copies.values()]
    dups = D.find_duplicates(rows)
    # Longest first (all but the trimmed copy are 3 s), then the largest: the 240x180 copy.
    kept = copies["rescaled_crf34"].clip_id
    assert dups == {r.clip_id: kept for n, r in copies.items() if n != "rescaled_crf34"}
    assert copies["trimmed5"].duration_s < copies["scene"].duration_s


@pytest.fixture(scope="module")
def real_scenes(shared_videos) -> list[tuple[str, D.Signature]]:
    """Every scene of the real test clips that has a picture, analysed at defaults (small
    sizes and 1 s scenes allowed, so more of them count), with its signature: the kept ones
    and the still photographs (rejected static); not the flat ones (no picture: they never
    reach the dedup stage) nor the transitions."""
    params = CurateParams(filters=FilterParams(min_area=0, min_side=0, min_duration_s=1.0, min_fps=0))
    out = []
    for path in sorted(shared_videos.glob("*.mp4")):
        units, _ = plan_source(str(path), params)
        for rec in (r for u in units for r in analyze_work_unit(u, params)):
            if rec.signature and (rec.ok or rec.reject_reason == "static"):
                out.append((f"{path.name}:{rec.start_frame}-{rec.end_frame}", D.Signature.from_bytes(rec.signature)))
    return out


def test_real_clips_and_fifty_distinct_clips_give_no_false_duplicate(real_scenes, distinct):
    # Before near-duplicates went on by default: no two different scenes of real footage, and
    # none of them and a distinct synthetic clip, are taken for copies.
    assert len({n.split(":")[0] for n, _ in real_scenes}) >= 2 and len(real_scenes) >= 6, [n for n, _ in real_scenes]
    sigs = real_scenes + [(f"distinct{i}", s) for i, s in enumerate(distinct)]
    false = [(a, b) for i, (a, sa) in enumerate(sigs) for b, sb in sigs[i + 1 :] if D.is_match(sa, sb)]
    assert not false
    index = D.DedupIndex()
    assert index.add_all(sigs) == {}
    # The real scenes are measured, not all flat (flat clips are never matched).
    assert sum(not D.mostly_flat(s) for _, s in real_scenes) >= 4


def test_fifty_distinct_clips_have_no_duplicate(distinct, copies):
    assert len(distinct) == 50
    for i, a in enumerate(distinct):
        for b in distinct[i + 1 :]:
            assert not D.is_match(a, b)
    rows = [{"clip_id": f"d{i:02d}", "signature": s.to_bytes(), "duration_s": 1.5, "width": 160, "height": 120}
            for i, s in enumerate(distinct)]
    assert D.find_duplicates(rows) == {}
    # With the copies among them, only the copies form a group.
    rows += [r.to_row() for r in copies.values()]
    assert D.groups_of(D.find_duplicates(rows)) == {
        copies["rescaled_crf34"].clip_id: sorted(r.clip_id for n, r in copies.items() if n != "rescaled_crf34")
    }


def test_two_moments_of_one_source_are_different_scenes():
    sources = distinct_sources()
    same = [g for g, s in sources if s > 0]
    assert same, "the corpus must hold a source at two moments"
    for graph in same:
        starts = [s for g, s in sources if g == graph]
        a, b = (signature_of(lavfi_frames(graph, 2.0, s)) for s in starts)
        assert not D.is_match(a, b)


def test_trim_offset_is_found_and_bounded():
    frames = lavfi_frames("life=size=160x120:rate=24:seed=5:ratio=0.3", 4.0)  # every frame differs
    full, cut = signature_of(frames), signature_of(frames[12:])  # 0.5 s trimmed off the start
    assert D.is_match(full, cut)
    # Without the offset search the same pair is far apart: the alignment does the work.
    assert not D.is_match(full, cut, D.DedupParams(max_offset_s=0.0))
    # A clip that is only the first half of another is not its copy (too little overlap).
    assert not D.is_match(full, signature_of(frames[: len(frames) // 2]))


def planted(n: int, copies: int) -> tuple[list[D.Signature], dict[int, int]]:
    hashes, profiles, lengths, truth = synthetic_signatures(n, copies)
    sigs = [D.Signature(D.KIND_PHASH, 8.0, hashes[i, : lengths[i]], profiles[i, : lengths[i]])
            for i in range(len(hashes))]
    return sigs, truth


def test_streaming_index_and_batch_matching_agree_and_find_planted_copies():
    sigs, truth = planted(3000, 200)
    keys = np.array([D.clip_key(s) for s in sigs], dtype=np.uint64)
    dup_of, _ = D.assign_duplicates(keys, sigs.__getitem__)
    found = {j: int(i) for j, i in enumerate(dup_of) if i >= 0}
    index = D.DedupIndex()
    streamed = index.add_all((str(j), s) for j, s in enumerate(sigs))
    assert found == {int(j): int(i) for j, i in streamed.items()}
    assert set(found.items()) <= set(truth.items())  # no false match
    assert len(found) >= 0.95 * len(truth)  # LSH recall
    # A retried clip (same id) is itself, not a duplicate.
    assert index.add("0", sigs[0]) is None


def test_keys_of_degenerate_clips_do_not_blow_up_the_candidates():
    # 500 identical clips: one bucket per table holds them all; pairs stay bounded.
    sig = D.Signature(D.KIND_PHASH, 8.0, np.full(16, 0x0123456789ABCDEF, np.uint64), np.full(16, 99, np.uint8))
    keys = np.full(500, D.clip_key(sig), dtype=np.uint64)
    pairs = D.duplicate_pairs(keys)
    assert len(pairs) <= D.MAX_BUCKET * 500
    dup_of, _ = D.assign_duplicates(keys, lambda i: sig)
    assert (dup_of[1:] == 0).all() and dup_of[0] == -1


def test_flat_scenes_are_never_matched():
    black = lavfi_frames("color=c=black:size=160x120:rate=24", 2.0)
    grey = lavfi_frames("color=c=0x808080:size=160x120:rate=24", 2.0)
    a, b = signature_of(black), signature_of(grey)
    assert (a.hashes == D.FLAT_HASH).all() and D.mostly_flat(a)
    assert not D.is_match(a, a) and not D.is_match(a, b)
