"""curate.loader.ClipDataset on a folder whose frames carry their own numbers
(tests/loader_fixtures.py): which frames come out, filtering, the split over ranks and
workers, resuming, buckets, and what is skipped."""

from __future__ import annotations

import sys
import tarfile

import pytest
import torch
from loader_fixtures import CLIPS, CORRUPT, OFFSET, clip_id
from torch.utils.data import DataLoader

from curate import shards
from curate import synthetic as S
from curate.buckets import Buckets
from curate.loader import ClipDataset, ClipDatasetError
from curate.where import ClipFolderError, WhereError

T, FPS, SIDE = 8, 6.0, 72  # 8 frames at 6 fps need 1.33 s: the 1 s clip (c07) is too short
TOO_SHORT = {clip_id(k) for k, (_, _, n, _) in enumerate(CLIPS) if n / 24 < T / FPS}
DECODABLE = {clip_id(k) for k in range(len(CLIPS))} - TOO_SHORT


def numbers(video: torch.Tensor) -> list[int]:
    """The number each frame shows ([T, 3, H, W])."""
    return [S.read_counter(frame) for frame in video]


def clip_number(cid: str) -> int:
    return int(cid[1:])


def test_frames_are_the_clip_frames_shown_at_the_requested_times(clip_dir):
    # c00: 256x144, 120 frames at 24 fps. Sampled at 10 fps from the start, output frame k
    # is the frame shown at k/10 s: floor(2.4 k).
    (item,) = ClipDataset(clip_dir, num_frames=8, fps=10, short_side=SIDE, where="clip_id == 'c00'", window="start")
    assert item["video"].dtype == torch.uint8 and item["video"].shape == (8, 3, 72, 128)  # short side 144 -> 72
    assert numbers(item["video"]) == [0, 2, 4, 7, 9, 12, 14, 16]
    assert item["frame_indices"].tolist() == [0, 2, 4, 7, 9, 12, 14, 16]
    assert item["caption"] == "clip number 0" and item["motion_score"] == 3.0 and item["width"] == 256

    # Faster than the clip: frames repeat (floor(0.8 k)).
    (item,) = ClipDataset(clip_dir, num_frames=8, fps=30, short_side=SIDE, where="clip_id == 'c00'", window="start")
    assert numbers(item["video"]) == [0, 0, 1, 2, 3, 4, 4, 5]

    # A window that starts inside the clip: the same spacing from a seeded start that fits.
    starts = []
    for item in ClipDataset(clip_dir, num_frames=8, fps=10, short_side=SIDE, window="random", seed=3):
        k = clip_number(item["clip_id"])
        got = [v - OFFSET * k for v in numbers(item["video"])]
        start = got[0]
        assert got == [start + int(2.4 * j + 1e-6) for j in range(8)] == item["frame_indices"].tolist()
        assert 0 <= start and got[-1] < CLIPS[k][2]
        starts.append(start)
    assert len(starts) == len(CLIPS) and len(set(starts)) > 3  # every clip read, windows spread


def test_where_filters_the_index_before_any_clip_is_read(clip_dir, monkeypatch):
    read = []
    real = shards.read_clip_bytes
    monkeypatch.setattr(shards, "read_clip_bytes", lambda folder, row: read.append(row["clip_id"]) or real(folder, row))
    ds = ClipDataset(clip_dir, T, FPS, SIDE, where="motion_score > 2 and duration_s >= 4")
    want = {clip_id(k) for k, (_, _, n, m) in enumerate(CLIPS) if m > 2 and n / 24 >= 4} | {CORRUPT}
    assert want == {"c00", "c02", "c03", "c05", CORRUPT}
    assert set(ds.clips["clip_id"].to_pylist()) == want
    items = list(ds)
    assert {it["clip_id"] for it in items} == want - {CORRUPT}
    assert sorted(read) == sorted(want)  # only the selected clips' bytes were read
    assert all(it["motion_score"] > 2 and it["duration_s"] >= 4 for it in items)

    ds = ClipDataset(clip_dir, T, FPS, SIDE, where="width in (144, 192) and not (height == 256)")
    assert set(ds.clips["clip_id"].to_pylist()) == {clip_id(k) for k, (w, h, _, _) in enumerate(CLIPS)
                                                     if w in (144, 192) and h != 256}


@pytest.mark.parametrize("where, message", [
    ("motion_scor > 2", "motion_scor is not an index column; did you mean motion_score?"),
    ("len(caption) > 3", "function calls are not allowed: len(caption)"),
    ("__import__('os').system('touch pwned')", "function calls are not allowed"),
    ("motion_score >", "bad syntax"),
    ("caption > 2", "caption holds text, compared with 2"),
    ("duration_s * 2 > 4", "arithmetic is not allowed"),
    ("scene_stats == 1", "scene_stats holds no plain values"),
])
def test_bad_where_is_one_clear_error(clip_dir, tmp_path, monkeypatch, where, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WhereError, match="^where ") as e:
        ClipDataset(clip_dir, T, FPS, SIDE, where=where)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "pwned").exists()  # nothing was evaluated


def test_missing_or_foreign_folder_is_one_clear_error(tmp_path):
    with pytest.raises(ClipFolderError, match="no such folder"):
        ClipDataset(str(tmp_path / "nope"), T, FPS, SIDE)
    (tmp_path / "videos").mkdir()
    with pytest.raises(ClipFolderError, match="is not a kvid folder"):
        ClipDataset(str(tmp_path / "videos"), T, FPS, SIDE)


def test_missing_decoder_is_one_clear_error(clip_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # import torchcodec raises ImportError
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    with pytest.raises(ClipDatasetError, match=r"torchcodec, which is not installed: pip install 'kvid\[loader\]'"):
        ClipDataset(clip_dir, T, FPS, SIDE)


def test_short_and_undecodable_clips_are_skipped_and_counted(clip_dir, monkeypatch, caplog):
    def no_tar_scans(*args, **kwargs):
        raise AssertionError("the loader opened a tar as an archive (it reads clips by offset)")

    monkeypatch.setattr(tarfile, "open", no_tar_scans)
    ds = ClipDataset(clip_dir, T, FPS, SIDE, shuffle=False)
    assert ds.skipped_short == 1 and TOO_SHORT == {"c07"}
    ids = [it["clip_id"] for it in ds]
    assert ids == sorted(DECODABLE)  # shuffle=False: clip id order; the corrupt clip left out
    assert ds.decode_failed == 1 and ds.failed_clips == [CORRUPT]
    assert f"clip {CORRUPT}" in caplog.text and "skipped" in caplog.text


def all_ids(items) -> list[str]:
    return [cid for it in items for cid in (it["clip_id"] if isinstance(it["clip_id"], list) else [it["clip_id"]])]


@pytest.mark.parametrize("batch_size", [None, 2])
def test_every_clip_exactly_once_over_two_ranks_of_two_workers(clip_dir, batch_size):
    per_rank = []
    for rank in range(2):
        ds = ClipDataset(clip_dir, T, FPS, SIDE, seed=7, rank=rank, world_size=2, batch_size=batch_size)
        per_rank.append(all_ids(DataLoader(ds, batch_size=None, num_workers=2)))
    everything = per_rank[0] + per_rank[1]
    assert sorted(everything) == sorted(DECODABLE)  # each once, none lost, none twice
    assert all(len(ids) >= 4 for ids in per_rank)  # the work is shared, not all on one rank


def test_shuffle_is_seeded_per_epoch(clip_dir):
    def order(seed, epoch):
        ds = ClipDataset(clip_dir, T, FPS, SIDE, seed=seed)
        ds.set_epoch(epoch)
        return [it["clip_id"] for it in ds]

    first = order(1, 0)
    assert order(1, 0) == first and sorted(first) == sorted(DECODABLE)
    assert order(1, 1) != first and order(2, 0) != first


def test_resume_mid_epoch_yields_the_rest_and_nothing_else(clip_dir):
    def dataset(**kw):
        ds = ClipDataset(clip_dir, T, FPS, SIDE, seed=11, **kw)
        ds.set_epoch(3)
        return ds

    full = [it["clip_id"] for it in dataset()]
    ds = dataset()
    it = iter(ds)
    first = [next(it)["clip_id"] for _ in range(4)]
    state = ds.state_dict()
    resumed = dataset()
    resumed.set_epoch(0)  # the state carries the epoch
    resumed.load_state_dict(state)
    rest = [x["clip_id"] for x in resumed]
    assert first + rest == full

    with pytest.raises(ClipDatasetError, match="seed"):
        ClipDataset(clip_dir, T, FPS, SIDE, seed=12).load_state_dict(state)
    with pytest.raises(ClipDatasetError, match="clips"):
        ClipDataset(clip_dir, T, FPS, SIDE, seed=11, where="motion_score > 1").load_state_dict(state)


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")  # torchdata 0.11 on a newer torch
def test_resume_with_dataloader_workers(clip_dir):
    from torchdata.stateful_dataloader import StatefulDataLoader

    def loader():
        ds = ClipDataset(clip_dir, T, FPS, SIDE, seed=5, batch_size=2, buckets=Buckets(duration_edges=()))
        return StatefulDataLoader(ds, batch_size=None, num_workers=2)

    full = loader()
    everything = all_ids(full)
    assert sorted(everything) == sorted(DECODABLE)
    first_loader = loader()
    it = iter(first_loader)
    first = all_ids([next(it) for _ in range(3)])
    state = first_loader.state_dict()
    del it
    second = loader()
    second.load_state_dict(state)
    rest = all_ids(second)
    assert len(first) >= 3 and rest
    assert sorted(first + rest) == sorted(everything)  # the rest of the epoch, and no clip twice


def test_bucketed_batches_stack_without_padding(clip_dir):
    buckets = Buckets(duration_edges=())  # aspect ratio and resolution only: fuller buckets
    ds = ClipDataset(clip_dir, T, FPS, SIDE, batch_size=3, buckets=buckets, seed=2)
    batches = list(ds)
    sizes = {(w, h) for w, h, _, _ in CLIPS}
    assert len(sizes) == 4
    seen = []
    for batch in batches:
        n = len(batch["clip_id"])
        keys = {buckets.key(w, h, d) for w, h, d in zip(batch["width"], batch["height"], batch["duration_s"])}
        assert len(keys) == 1  # one bucket per batch
        key = keys.pop()
        h, w = buckets.frame_size(key, SIDE)
        assert batch["video"].shape == (n, T, 3, h, w) and batch["bucket"] == buckets.label(key)
        assert min(h, w) == SIDE
        for j, cid in enumerate(batch["clip_id"]):  # real frames edge to edge: padding would read 0
            k = clip_number(cid)
            assert numbers(batch["video"][j]) == [OFFSET * k + i for i in batch["frame_indices"][j].tolist()]
        seen += batch["clip_id"]
    assert sorted(seen) == sorted(DECODABLE)
    assert max(len(b["clip_id"]) for b in batches) == 3
    assert {b["video"].shape[-2:] for b in batches} == {(72, 128), (72, 96), (72, 72), (128, 72)}


def test_bucket_edges_are_settings():
    b = Buckets(aspect_ratios=(1.0, 16 / 9), resolution_edges=(500,), duration_edges=(3, 6))
    assert b.key(1280, 720, 7.0) == (1, 1, 2) and b.key(720, 480, 2.0) == (1, 0, 0) and b.key(600, 640, 4) == (0, 1, 1)
    assert b.frame_size((1, 0, 0), 256) == (256, 456) and b.frame_size((0, 0, 0), 256) == (256, 256)
    assert Buckets().frame_size(Buckets().key(720, 1280, 5), 128) == (228, 128)  # portrait
    assert b.label((1, 1, 2)) == "16:9 >=500px >=6s"
    with pytest.raises(ValueError, match="increasing"):
        Buckets(duration_edges=(8, 4))
