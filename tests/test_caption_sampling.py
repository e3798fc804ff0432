"""Frame sampling: index selection (table) and decoding real clips once."""

from __future__ import annotations

import numpy as np
import pytest
from caption_fixtures import CLIP_FRAMES, sample_clips

from caption.sampling import ClipFrames, sample_frame_indices, sample_frames

# (num_frames, kwargs, expected indices)
INDICES = [
    (72, dict(n=8), [0, 10, 20, 30, 41, 51, 61, 71]),
    (60, dict(n=8), [0, 8, 17, 25, 34, 42, 51, 59]),
    (8, dict(n=8), [0, 1, 2, 3, 4, 5, 6, 7]),
    (5, dict(n=8), [0, 1, 2, 3, 4]),  # never more frames than exist
    (1, dict(n=8), [0]),
    (100, dict(n=1), [0]),
    (100, dict(n=2), [0, 99]),
    (4, dict(n=3), [0, 2, 3]),  # round half up keeps indices unique
    (72, dict(), [0, 10, 20, 30, 41, 51, 61, 71]),  # default n = 8
    (72, dict(n=64, max_frames=4), [0, 24, 47, 71]),  # max_frames caps n
    # target fps: one frame every src_fps / fps frames from frame 0
    (72, dict(fps=2), [0, 12, 24, 36, 48, 60]),
    (30, dict(fps=2), [0, 12, 24]),
    (60, dict(fps=1), [0, 24, 48]),
    (10, dict(fps=2), [0]),
    (72, dict(fps=5), [0, 5, 10, 14, 19, 24, 29, 34, 38, 43, 48, 53, 58, 62, 67]),
    (6, dict(fps=30), [0, 1, 2, 3, 4, 5]),  # fps above the clip rate: every frame
    (240, dict(fps=8, max_frames=4), [0, 80, 159, 239]),  # too many: max_frames uniform over the clip
    (50, dict(fps=12.5, src_fps=25.0), list(range(0, 50, 2))),  # another clip rate
    (50, dict(fps=12.5, src_fps=25.0, max_frames=5), [0, 12, 25, 37, 49]),
]


@pytest.mark.parametrize("num_frames,kwargs,expected", INDICES)
def test_sample_frame_indices(num_frames, kwargs, expected):
    got = sample_frame_indices(num_frames, **kwargs)
    assert got == expected
    assert got == sorted(set(got))
    assert 0 <= got[0] and got[-1] < num_frames


@pytest.mark.parametrize("num_frames", [1, 2, 3, 7, 24, 25, 71, 72, 73, 240, 1000])
@pytest.mark.parametrize("n", [1, 2, 3, 8, 16, 32])
def test_uniform_properties(num_frames, n):
    got = sample_frame_indices(num_frames, n=n)
    assert len(got) == min(n, num_frames)
    assert got == sorted(set(got))
    assert got[0] == 0
    if len(got) > 1:
        assert got[-1] == num_frames - 1
        gaps = np.diff(got)
        assert gaps.max() - gaps.min() <= 1  # evenly spread


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(num_frames=0), "at least one frame"), (dict(num_frames=10, n=2, fps=1), "not both"),
     (dict(num_frames=10, n=0), "n must be"), (dict(num_frames=10, fps=0), "must be > 0"),
     (dict(num_frames=10, max_frames=0), "max_frames")],
)
def test_sample_frame_indices_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_frame_indices(**kwargs)


def test_sample_frames_picks_exactly_the_sampled_frames():
    from curate.frames import read_frames

    clips = sample_clips()
    for name in ("a3", "c125"):
        path = str(clips[name])
        full = read_frames(path, fps=24, short_side=96)
        assert len(full) == CLIP_FRAMES[name]
        clip = sample_frames(path, n=8, size=96)
        assert isinstance(clip, ClipFrames)
        assert clip.frames.dtype == np.uint8 and clip.frames.shape[0] == 8 and clip.frames.shape[-1] == 3
        assert min(clip.frames.shape[1:3]) == 96
        assert clip.total_frames == CLIP_FRAMES[name]
        assert list(clip.frame_indices) == sample_frame_indices(CLIP_FRAMES[name], n=8)
        # the frames are the decoded frames at those indices, not neighbours
        assert np.array_equal(clip.frames, full[list(clip.frame_indices)])
        # consecutive sampled frames of real footage differ
        assert all(not np.array_equal(a, b) for a, b in zip(clip.frames, clip.frames[1:]))


def test_sample_frames_from_bytes_with_known_size_and_fps_mode():
    clips = sample_clips()
    data = clips["a3"].read_bytes()
    clip = sample_frames(data, fps=2, size=None, num_frames=72, width=228, height=128, clip_id="x")
    assert clip.frames.shape == (6, 128, 228, 3)
    assert clip.frame_indices == (0, 12, 24, 36, 48, 60)
    assert clip.clip_id == "x"
    assert clip.duration_s == pytest.approx(3.0)
    assert clip.sampled_fps == pytest.approx(2.0)


def test_sample_frames_upright_portrait():
    clip = sample_frames(str(sample_clips()["rot2"]), n=4, size=64)
    t, h, w, _ = clip.frames.shape
    assert t == 4 and w == 64 and h > w  # rotation applied: portrait


def test_sample_frames_when_the_record_overstates_frames():
    # The record says 80 frames, the stream has 72: resample over what exists.
    clip = sample_frames(str(sample_clips()["a3"]), n=8, size=64, num_frames=80, width=228, height=128)
    assert clip.total_frames == 72
    assert list(clip.frame_indices) == sample_frame_indices(72, n=8)


def test_sample_frames_corrupt_input_raises():
    from curate.ffmpeg import FFmpegError
    from curate.probe import ProbeError

    with pytest.raises((FFmpegError, ProbeError)):
        sample_frames(b"\x00\x00\x00\x18ftypmp42" + b"\x17" * 5000, n=8, size=64)


def test_clip_frames_validation_and_metadata():
    frames = np.zeros((4, 8, 10, 3), np.uint8)
    c = ClipFrames(frames, frame_indices=[0, 8, 16, 23], total_frames=24)
    meta = c.metadata()
    assert meta["total_num_frames"] == 24 and meta["fps"] == 24.0 and meta["frames_indices"] == [0, 8, 16, 23]
    assert meta["height"] == 8 and meta["width"] == 10
    assert c.sampled_fps == pytest.approx(4.0)
    with pytest.raises(ValueError):
        ClipFrames(frames.astype(np.float32))
    with pytest.raises(ValueError):
        ClipFrames(frames, frame_indices=[0, 1])
    assert ClipFrames(frames).total_frames == 4
