"""Motion score definition and the OpenCV backends against videos with a known motion."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from motion_fixtures import encode, texture, translating_frames

from curate.ffmpeg import FFmpegError
from motion import MotionError, compute_motion, get_backend, num_pairs, score_video, stats_from_flow

SPEEDS = (0, 1, 2, 4, 8)
FRAMES = 9  # 8 pairs per video


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Lossless 24 fps videos, 256x320 (short side = motion size), content moving N px/frame in x."""
    d = tmp_path_factory.mktemp("motion-videos")
    return {n: encode(translating_frames(FRAMES, n, 0), str(d / f"shift{n}.mkv")) for n in SPEEDS}


@pytest.fixture(scope="module", params=["dis", "farneback"])
def cv_backend(request):
    return get_backend(request.param)


@pytest.fixture(scope="module")
def scored(videos, cv_backend):
    """{N: MotionResult} for every video, scored once per backend."""
    return {n: score_video(videos[n], cv_backend, size=256) for n in SPEEDS}


def test_translation_scores_within_10_percent(scored, cv_backend):
    for n in SPEEDS[1:]:
        r = scored[n]
        assert r.num_pairs == FRAMES - 1
        assert r.size == 256 and r.backend == cv_backend.name and r.stride == 1
        assert abs(r.score - n) <= 0.1 * n, (cv_backend.name, n, r.score)
        # every pair moves the same amount
        assert all(abs(s - n) <= 0.1 * n for s in r.pair_scores), r.pair_scores
        # pure translation: all of it is camera-like motion, none is object motion
        assert abs(r.camera - n) <= 0.1 * n
        assert r.object < 0.1 * n


def test_static_video_scores_below_0_1(scored):
    r = scored[0]
    assert r.score < 0.1
    assert r.camera < 0.1 and r.object < 0.1


def test_scores_rise_monotonically_with_speed(scored):
    scores = [scored[n].score for n in SPEEDS]
    assert all(b > a for a, b in zip(scores, scores[1:])), scores


def test_diagonal_motion_magnitude(tmp_path):
    # (3, 4) px/frame -> 5 px/frame magnitude
    path = encode(translating_frames(6, 3, 4), str(tmp_path / "diag.mkv"))
    r = score_video(path, get_backend("dis"), size=256)
    assert abs(r.score - 5) <= 0.5


def test_score_is_at_the_motion_size(tmp_path):
    # Rendered at 512 px short side moving 8 px/frame: at motion size 256 that is 4 px/frame.
    path = encode(translating_frames(6, 8, 0, height=512, width=640), str(tmp_path / "big.mkv"))
    dis = get_backend("dis")
    r = score_video(path, dis, size=256)
    assert r.size == 256
    assert abs(r.score - 4) <= 0.4, r.score
    r128 = score_video(path, dis, size=128)
    assert abs(r128.score - 2) <= 0.2, r128.score


def test_score_is_per_24fps_frame(tmp_path):
    # A 12 fps video moving 4 px per source frame moves 2 px per 24 fps frame on average:
    # resampling to 24 fps repeats frames, so pairs alternate 0 and 4 px.
    path = encode(translating_frames(7, 4, 0), str(tmp_path / "12fps.mkv"), fps=12)
    r = score_video(path, get_backend("dis"), size=256, fps=24)
    assert r.num_pairs == num_pairs(r.num_frames)
    assert r.num_frames >= 12
    assert abs(r.score - 2) <= 0.3, r.score
    pair = np.array(r.pair_scores)
    assert (pair < 0.1).sum() >= len(pair) // 2 - 1 and (np.abs(pair - 4) < 0.4).sum() >= len(pair) // 2 - 1


def test_object_motion_is_not_camera_motion():
    # A static background with a moving textured square: the median flow is ~0 (camera),
    # the residual is what moves (object).
    bg = texture(256, 320, seed=3)
    patch = texture(96, 96, seed=4)
    frames = []
    for t in range(5):
        f = bg.copy()
        x = 40 + 6 * t
        f[80:176, x : x + 96] = patch
        frames.append(f)
    r = compute_motion(np.stack(frames), get_backend("dis"))
    assert r.camera < 0.1
    assert r.object > 0.3
    # the square covers ~11% of the frame and moves 6 px/frame
    assert 0.3 < r.score < 2.0


def test_compute_motion_stride_pairs_and_units():
    frames = translating_frames(11, 2, 0)
    dis = get_backend("dis")
    full = compute_motion(frames, dis, stride=1, batch_size=3)
    assert full.num_pairs == 10 and len(full.pair_scores) == 10
    for stride, expected in ((2, 5), (3, 4), (4, 3), (10, 1), (50, 1)):
        r = compute_motion(frames, dis, stride=stride, batch_size=2)
        assert r.num_pairs == expected == num_pairs(11, stride)
        assert r.stride == stride
        # consecutive pairs, subsampled: still px/frame, not px per k frames
        assert abs(r.score - 2) <= 0.2
        # the scored pairs are pairs 0, k, 2k, ... of the stride-1 run
        np.testing.assert_allclose(r.pair_scores, full.pair_scores[::stride], rtol=1e-6)


def test_stride_picks_the_right_pairs():
    # Only pair (4, 5) moves; stride 2 scores pairs starting at 0, 2, 4, 6 -> it is seen.
    still = texture(256, 256, seed=5)
    frames = np.stack([still] * 5 + [np.roll(still, 3, axis=1)] * 3)
    dis = get_backend("dis")
    r = compute_motion(frames, dis, stride=2)
    assert r.num_pairs == 4
    moving = [i for i, s in enumerate(r.pair_scores) if s > 1]
    assert moving == [2]  # the third scored pair is frames (4, 5)
    r3 = compute_motion(frames, dis, stride=3)  # pairs 0, 3, 6: misses it
    assert max(r3.pair_scores) < 0.1


def test_too_few_frames_is_a_clear_error(tmp_path):
    dis = get_backend("dis")
    one = translating_frames(1, 0, 0)
    with pytest.raises(MotionError, match="at least 2 frames"):
        compute_motion(one, dis)
    path = encode(one, str(tmp_path / "one.mkv"))
    with pytest.raises(MotionError, match="at least 2 frames"):
        score_video(path, dis)
    with pytest.raises(ValueError):
        compute_motion(one.astype(np.float32), dis)
    with pytest.raises(ValueError, match="stride"):
        compute_motion(translating_frames(3, 0, 0), dis, stride=0)


def test_score_video_accepts_bytes_and_streams_in_batches(videos):
    calls = []
    dis = get_backend("dis")
    orig = dis.pair_stats

    def spy(a, b):
        calls.append(len(a))
        return orig(a, b)

    dis.pair_stats = spy
    with open(videos[2], "rb") as f:
        data = f.read()
    r = score_video(data, dis, size=256, batch_size=3)
    assert calls == [3, 3, 2]
    assert abs(r.score - 2) <= 0.2


def test_undecodable_video_raises(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(os.urandom(4000))
    with pytest.raises(Exception) as e:
        score_video(str(bad), get_backend("dis"))
    assert isinstance(e.value, (FFmpegError, MotionError)) or "probe" in type(e.value).__name__.lower()


def test_parallel_workers_give_the_same_numbers():
    frames = translating_frames(7, 2, 1)
    one = compute_motion(frames, get_backend("dis", workers=1), batch_size=6)
    two = get_backend("dis", workers=2)
    try:
        par = compute_motion(frames, two, batch_size=6)
    finally:
        two.close()
    # same flow per pair (one DIS object per thread); sums may differ in the last bits
    np.testing.assert_allclose(par.pair_scores, one.pair_scores, rtol=1e-9)
    np.testing.assert_allclose([par.camera, par.object], [one.camera, one.object], rtol=1e-9)


def test_stats_from_flow_definition():
    flow = np.zeros((2, 4, 4, 2), np.float32)
    flow[0, ..., 0] = 3.0
    flow[0, ..., 1] = 4.0  # uniform (3, 4): magnitude 5, all camera
    flow[1, :1, :1] = (6.0, 8.0)  # one pixel of 16 moves 10 px: mean 0.625, camera 0, object 0.625
    s = stats_from_flow(flow)
    np.testing.assert_allclose(s[0], [5.0, 5.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(s[1], [0.625, 0.0, 0.625], atol=1e-6)


def test_backend_registry_and_options():
    assert get_backend("dis", preset="fast").preset == "fast"
    assert get_backend("DIS").name == "dis"
    with pytest.raises(ValueError, match="unknown motion backend"):
        get_backend("lucas_kanade")
    with pytest.raises(ValueError, match="preset"):
        get_backend("dis", preset="slowest")
    with pytest.raises(ValueError, match="CPU only"):
        get_backend("farneback", device="cuda")
    with pytest.raises(TypeError):
        get_backend("dis", num_flow_updates=3)  # a RAFT option on an OpenCV backend
    f = get_backend("farneback").flow(translating_frames(2, 1, 0)[:1], translating_frames(2, 1, 0)[1:])
    assert f.shape == (1, 256, 320, 2) and f.dtype == np.float32
    assert abs(float(np.median(f[..., 0])) - 1) < 0.1 and abs(float(np.median(f[..., 1]))) < 0.1


def test_real_video_resampled_to_24fps_with_stride(shared_videos):
    from curate.probe import probe

    real_video = str(shared_videos / "counter.mp4")
    # counter.mp4: 1920x1080 at 10 fps, 30 frames (3 s) -> 72 frames at 24 fps.
    info = probe(real_video)
    expected_frames = round(info.duration_s * 24)
    r = score_video(real_video, get_backend("dis", preset="ultrafast"), size=128, stride=8)
    assert abs(r.num_frames - expected_frames) <= 1
    assert r.num_pairs == math.ceil((r.num_frames - 1) / 8) == len(r.pair_scores)
    assert r.size == 128
    assert math.isfinite(r.score) and r.score >= 0
