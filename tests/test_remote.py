"""Sources given as URIs: listing, the per-node staging cache, and `kvid curate` on them.

file:// URIs go through the same fsspec code path as s3:// or gs:// (listing, stat, copy),
without a network."""

from __future__ import annotations

import os
import shutil

import pytest
from fsspec.implementations.local import LocalFileSystem

from curate import remote, schema, shards
from curate.video_stages import CurateParams, plan_source
from pipelines.config import build_config
from pipelines.curate import run_curate
from pipelines.inputs import InputError, expand_inputs


@pytest.fixture
def downloads(monkeypatch):
    """Counts copies out of the (file://) filesystem."""
    calls = []
    real = LocalFileSystem.get_file

    def counting(self, src, dst, *args, **kwargs):
        calls.append(src)
        return real(self, src, dst, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "get_file", counting)
    return calls


def test_uris_list_like_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.mp4", "sub/b.MKV", "sub/notes.txt", ".hidden.mp4"):
        (tmp_path / name).write_bytes(b"x")
    base = "file://" + str(tmp_path)
    assert expand_inputs([base]) == [base + "/a.mp4", base + "/sub/b.MKV"]
    assert expand_inputs([base + "/sub/*"]) == [base + "/sub/b.MKV", base + "/sub/notes.txt"]
    with pytest.raises(InputError, match="no such"):
        expand_inputs([base + "/missing.mp4"])
    with pytest.raises(InputError, match="nosuchscheme"):
        expand_inputs(["nosuchscheme://bucket/video.mp4"])


def test_a_source_is_staged_once_per_node_and_again_when_it_changes(tmp_path, downloads):
    src = tmp_path / "v.mp4"
    src.write_bytes(b"first version")
    cache = remote.InputCache(str(tmp_path / "cache"))
    uri = "file://" + str(src)
    with remote.staged(uri, cache) as a:
        assert open(a, "rb").read() == b"first version"
    with remote.staged(uri, cache) as b:
        assert b == a
    assert len(downloads) == 1
    src.write_bytes(b"second, longer version")
    with remote.staged(uri, cache) as c:
        assert c != a and open(c, "rb").read() == b"second, longer version"
    assert len(downloads) == 2
    with remote.staged(str(src), cache) as local:  # a plain path is used in place
        assert local == str(src)
    assert len(downloads) == 2


def test_eviction_keeps_the_cap_but_never_a_copy_in_use(tmp_path):
    cache = remote.InputCache(str(tmp_path / "cache"), gb=2500 / 1e9)  # room for two 1000-byte copies
    uris = []
    for name in "abcd":
        (tmp_path / f"{name}.mp4").write_bytes(name.encode() * 1000)
        uris.append("file://" + str(tmp_path / f"{name}.mp4"))
    with remote.staged(uris[0], cache) as in_use:
        for uri in uris[1:]:
            with remote.staged(uri, cache) as latest:
                pass
        kept = {p for p in os.listdir(cache.path) if not p.endswith(".lock")}
        assert os.path.exists(in_use) and os.path.exists(latest)
        assert {os.path.basename(in_use), os.path.basename(latest)} == kept
    assert sum(os.path.getsize(os.path.join(cache.path, p)) for p in kept) <= 2500


def test_unreachable_uri_becomes_a_reject(tmp_path):
    params = CurateParams(input_cache=remote.InputCache(str(tmp_path / "cache")))
    units, (rec,) = plan_source("file://" + str(tmp_path / "gone.mp4"), params)
    assert not units and rec.reject_reason == schema.REASON_MISSING and rec.reject_stage == schema.STAGE_PROBE
    units, (rec,) = plan_source("nosuchscheme://bucket/video.mp4", params)
    assert rec.reject_reason == schema.REASON_UNREADABLE and "nosuchscheme" in rec.error_message


def test_curate_uri_sources_like_local_ones(tmp_path, synth, ray_local):
    folder = tmp_path / "bucket"
    folder.mkdir()
    for name in ("cuts.mp4", "good.mp4", "zero.mp4"):
        shutil.copy(synth[name], folder / name)
    common = {"motion_backend": "none", "caption_model": "none", "input_cache_dir": str(tmp_path / "cache")}
    run_curate(
        build_config({}, {"inputs": ["file://" + str(folder)], "out": str(tmp_path / "remote"), **common}), show_progress=False
    )
    run_curate(build_config({}, {"inputs": [str(folder)], "out": str(tmp_path / "local"), **common}), show_progress=False)

    def outcome(out):
        index = shards.read_index(str(out)).to_pylist()
        rejects = shards.read_rejects(str(out)).to_pylist()
        clips = sorted((os.path.basename(r["source"]), r["start_frame"], r["end_frame"], r["num_frames"]) for r in index)
        reasons = sorted((os.path.basename(r["source"]), r["reject_reason"]) for r in rejects)
        return index + rejects, clips, reasons

    remote_rows, remote_clips, remote_reasons = outcome(tmp_path / "remote")
    _, local_clips, local_reasons = outcome(tmp_path / "local")
    assert remote_clips == local_clips and remote_reasons == local_reasons
    assert len(remote_clips) == 4  # 3 scenes of cuts.mp4 and good.mp4
    assert all(r["source"].startswith("file://") for r in remote_rows)
    # Resuming recognises the URIs as done.
    summary = run_curate(build_config({}, {"inputs": ["file://" + str(folder)], "out": str(tmp_path / "remote"), **common}),
                         show_progress=False)
    assert summary["sources_skipped"] == 3 and summary["sources_run"] == 0


def test_output_uri_is_refused_with_the_reason():
    from pipelines.config import ConfigError

    with pytest.raises(ConfigError, match="atomic renames"):
        build_config({}, {"inputs": ["x.mp4"], "out": "s3://bucket/data"})
