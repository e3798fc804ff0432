"""Hostile inputs, hangs, and a real two-node Ray cluster losing a worker, a node, a driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import ROOT
from local_cluster import LocalCluster, hostile_corpus, kill, processes

from curate import schema, shards, synthetic
from curate.analyze import AnalysisError, AnalysisParams, FrameClock, analyze_unit
from curate.probe import ProbeError, probe
from pipelines.config import build_config
from pipelines.curate import run_curate

OFFLINE = ["--motion-backend", "none", "--caption-model", "none"]
# The cluster runs curate six renders of the same three test patterns (near copies by design;
# testsrc2's timecode an overlaid line at 480x270): what is under test is losing nothing.
PLAIN = ["--no-dedup", "--no-text-filter"]


# --- hostile inputs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    return folder, hostile_corpus(str(folder))


def test_hostile_corpus_every_file_accounted_for(hostile, ray_local, tmp_path):
    folder, expect = hostile
    out = tmp_path / "out"
    # Byte copies of one video under hostile names, and testsrc2 at 320x240 (its timecode is an
    # overlaid line of ~3%): each file's own outcome is under test here, not dedup or text.
    cfg = build_config({}, {"inputs": [str(folder)], "out": str(out), "motion_backend": "none", "caption_model": "none",
                            "dedup": False, "text_filter": False})
    summary = run_curate(cfg, show_progress=False)
    index, rejects = shards.read_index(str(out)).to_pylist(), shards.read_rejects(str(out)).to_pylist()
    outcomes: dict[str, set[str]] = {}
    for r in index + rejects:
        outcomes.setdefault(os.path.basename(schema.source_path(r)), set()).add(
            "ok" if r["status"] == "ok" else r["reject_reason"]
        )
    assert set(outcomes) == set(expect), set(expect) ^ set(outcomes)
    for name, want in expect.items():
        assert outcomes[name] and outcomes[name] <= want, (name, outcomes[name], want)
    assert summary["status"] == "complete" and summary["counts"]["inputs"] == len(expect)
    # Hostile names went to ffmpeg as arguments, never through a shell.
    assert not list(folder.glob("PWNED")) and not (ROOT / "PWNED").exists() and not Path("PWNED").exists()
    rotated = [r for r in index if r["source"].endswith("rotated.mp4")]
    assert rotated and (rotated[0]["width"], rotated[0]["height"]) == (240, 320)


def _fake_binary(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\nsleep 60\n")
    path.chmod(0o755)
    return str(path)


def test_a_hanging_decoder_is_killed(tmp_path, monkeypatch, synth):
    import curate.analyze as analyze_mod

    info = probe(str(synth["good.mp4"]))
    monkeypatch.setattr(analyze_mod, "FFMPEG", _fake_binary(tmp_path, "ffmpeg"))
    t = time.monotonic()
    with pytest.raises(AnalysisError) as e:
        analyze_unit(info, 0, None, AnalysisParams(decode_timeout_s=1.0, timeout_per_s=0.0), FrameClock(info))
    assert e.value.reason == "timeout" and time.monotonic() - t < 15


def test_a_hanging_probe_is_killed(tmp_path, monkeypatch, synth):
    import curate.ffmpeg as ffmpeg_mod

    monkeypatch.setattr(ffmpeg_mod, "FFPROBE", _fake_binary(tmp_path, "ffprobe"))
    t = time.monotonic()
    with pytest.raises(ProbeError) as e:
        probe(str(synth["good.mp4"]), timeout=1.0)
    assert e.value.reason == "timeout" and time.monotonic() - t < 15


def test_a_fifo_is_rejected_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(ProbeError) as e:
        probe(str(fifo))
    assert e.value.reason == "not_video"


@pytest.mark.parametrize("rate, reason", [("0/0", "bad_fps"), ("1000/1", None)])
def test_absurd_frame_rates(monkeypatch, tmp_path, rate, reason):
    import curate.probe as probe_mod
    from curate.filters import FilterParams, check_source

    f = tmp_path / "v.mp4"
    f.write_bytes(b"\0\0\0\x18ftypisom" + b"\0" * 100)
    fake = {"format": {"format_name": "mov,mp4", "duration": "4.0"},
            "streams": [{"codec_type": "video", "codec_name": "h264", "width": 640, "height": 360,
                         "avg_frame_rate": rate, "r_frame_rate": rate, "duration": "4.0"}]}
    monkeypatch.setattr(probe_mod, "ffprobe_json", lambda *a, **k: fake)
    if reason:
        with pytest.raises(ProbeError) as e:
            probe(str(f))
        assert e.value.reason == reason
    else:
        rejection = check_source(probe(str(f)), FilterParams())
        assert (rejection.stage, rejection.reason) == ("probe", "bad_fps")


# --- a real local cluster -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`ray start --head` on 127.0.0.1 plus a second node with its own resources."""
    with LocalCluster(nodes=2, cpus_per_node=1, temp_dir=str(tmp_path_factory.mktemp("r"))) as c:
        yield c


@pytest.fixture(scope="module")
def cluster_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cin")
    for i in range(6):
        synthetic.scene_video(str(folder / f"v{i}.mp4"), [75 + 10 * i, 90, 45], fps=30, size=(480, 270))
    synthetic.zero_byte_file(str(folder / "zero.mp4"))
    return folder


def run_driver(cluster, inputs, out, *extra, wait=True):
    cmd = [sys.executable, "-m", "pipelines.cli", "curate", str(inputs), "--out", str(out), "-q",
           "--ray-address", cluster.address, "--shard-max-clips", "2", *OFFLINE, *PLAIN, *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        out_text, _ = proc.communicate(timeout=400)
        assert proc.returncode == 0, out_text[-3000:]
    return proc


def dataset(out) -> tuple[list, list]:
    keys = ("clip_id", "status", "reject_reason", "start_frame", "end_frame", "num_frames", "width", "height")
    index = sorted(tuple(r[k] for k in keys) for r in shards.read_index(str(out)).to_pylist())
    rejects = sorted(tuple(r[k] for k in keys) for r in shards.read_rejects(str(out)).to_pylist())
    return index, rejects


@pytest.fixture(scope="module")
def reference(cluster, cluster_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    run_driver(cluster, cluster_inputs, out)
    result = dataset(out)
    assert len(result[0]) == 12 and len(result[1]) == 7  # 6 x (2 clips + a 1.5 s scene) + the empty file
    return result


def _assert_nothing_partial(out: Path) -> None:
    """Whatever a kill left behind: no half-written file under a name readers see."""
    for tar in (out / "shards").glob("*.tar"):
        with tarfile.open(tar) as t:
            for m in t.getmembers():
                assert len(t.extractfile(m).read()) == m.size
    for folder in ("index", "rejects"):
        for part in (out / folder).glob("*.parquet"):
            pq.read_table(part)


@pytest.mark.cluster
def test_pipeline_runs_on_a_two_node_cluster(cluster, reference):
    # The cluster really has two nodes (the second with its own resource).
    script = (f"import ray; ray.init(address={cluster.address!r}); "
              "print(len([n for n in ray.nodes() if n['Alive']]), ray.cluster_resources().get('node2'))")
    out = subprocess.run([sys.executable, "-c", script], env=cluster.env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split()[-2:] == ["2", "1.0"], out.stderr[-2000:]


@pytest.mark.cluster
def test_killed_worker_loses_and_duplicates_nothing(cluster, cluster_inputs, reference, tmp_path):
    out = tmp_path / "out"
    proc = run_driver(cluster, cluster_inputs, out, wait=False)
    killed = []
    deadline = time.monotonic() + 120
    while not killed and time.monotonic() < deadline and proc.poll() is None:
        pids = processes("ray::MapBatches(transcode)")
        if pids:
            time.sleep(0.5)  # let it get into its ffmpeg work
            kill(pids[:1])
            killed = pids[:1]
        time.sleep(0.1)
    text, _ = proc.communicate(timeout=400)
    assert killed, "no worker was running a unit to kill"
    assert proc.returncode == 0, text[-3000:]
    assert dataset(out) == reference


@pytest.mark.cluster
def test_sigkilled_driver_then_rerun_equals_a_clean_run(cluster, cluster_inputs, reference, tmp_path):
    out = tmp_path / "out"
    proc = run_driver(cluster, cluster_inputs, out, wait=False)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None and not list((out / "index").glob("*.parquet")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    _assert_nothing_partial(out)
    committed = dataset(out)
    assert len(committed[0]) < len(reference[0])  # it really died mid-run
    run_driver(cluster, cluster_inputs, out)
    assert dataset(out) == reference
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"


@pytest.mark.cluster
def test_killed_node_loses_and_duplicates_nothing(cluster, cluster_inputs, reference, tmp_path):
    out = tmp_path / "out"
    proc = run_driver(cluster, cluster_inputs, out, wait=False)
    deadline = time.monotonic() + 120
    raylets = []
    while not raylets and time.monotonic() < deadline and proc.poll() is None:
        if processes("ray::MapBatches(transcode)"):
            raylets = cluster.node_raylets(2)
            time.sleep(1.0)
        time.sleep(0.1)
    assert raylets, "node2's raylet not found"
    kill(raylets)  # the whole second node goes: its raylet and, with it, its workers
    text, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, text[-3000:]
    assert dataset(out) == reference
