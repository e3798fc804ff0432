"""The kept scenes of a source are encoded by one ffmpeg from one decode, frame-exact.

The source carries each frame's index as ten black/white blocks, so a clip's frames can be
read back to the source frames they came from: its scenes are a textured one, a too-short
one, a letterboxed one (cropped), a grey one (flat) and a last textured one, at 30 fps (the
clips are re-timed to 24).
"""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest

from curate import schema, synthetic, video_stages
from curate.ffmpeg import FFmpegError
from curate.frames import read_frames
from curate.schema import ClipRecord
from curate.transcode import TranscodeParams
from curate.video_stages import CurateParams, analyze_work_unit, encode_groups, plan_source, transcode_group

W, H, FPS, OUT_FPS = 640, 360, 30, 24
BAR = 60  # letterbox bars of the "box" scene, top and bottom
SCENES = [("texture", 75, 1), ("texture", 40, 2), ("box", 90, 3), ("grey", 75, 0), ("texture", 81, 4)]
BITS, BLOCK, BLOCK_X, BLOCK_Y, PITCH = 10, 32, 32, 150, 48


def indexed_frames() -> np.ndarray:
    frames, index = [], 0
    for kind, n, seed in SCENES:
        rng = np.random.default_rng(seed)
        noise = rng.integers(0, 256, (H // 16, (W + 400) // 16, 3), dtype=np.uint8)
        texture = cv2.resize(noise, (W + 400, H), interpolation=cv2.INTER_CUBIC)  # smooth: cuts only between scenes
        for j in range(n):
            if kind == "grey":
                f = np.full((H, W, 3), 128, np.uint8)
            else:
                f = np.ascontiguousarray(texture[:, 2 * j: 2 * j + W])  # moves 2 px a frame
                if kind == "box":
                    f[:BAR] = 0
                    f[-BAR:] = 0
                for b in range(BITS):
                    x = BLOCK_X + PITCH * b
                    f[BLOCK_Y:BLOCK_Y + BLOCK, x:x + BLOCK] = 255 if (index >> b) & 1 else 0
            frames.append(f)
            index += 1
    return np.stack(frames)


def frame_index(frame: np.ndarray, crop_y: int) -> int:
    """The source index a clip frame shows (the clip is cropped by crop_y rows, not scaled)."""
    y = BLOCK_Y - crop_y + BLOCK // 2
    return sum(1 << b for b in range(BITS) if frame[y, BLOCK_X + PITCH * b + BLOCK // 2].mean() > 128)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("groups") / "indexed.mp4")
    synthetic.write_frames(path, indexed_frames(), fps=FPS, lossless=False)
    params = CurateParams(transcode=TranscodeParams(preset="ultrafast"))
    (unit,), rejects = plan_source(path, params)
    assert rejects == []
    return unit, params, analyze_work_unit(unit, params)


def test_a_source_with_kept_and_rejected_scenes_is_one_encode_group(analysed):
    _, params, records = analysed
    starts = np.cumsum([0] + [n for _, n, _ in SCENES])
    assert [(r.start_frame, r.end_frame) for r in records] == list(zip(starts[:-1], starts[1:]))
    assert [r.reject_reason for r in records] == [None, schema.REASON_TOO_SHORT, None, schema.REASON_FLAT, None]
    assert records[2].crop_y == BAR and records[2].crop_h == H - 2 * BAR
    (group,) = encode_groups(records, params)
    assert group == [records[0], records[2], records[4]]


def test_clips_from_one_shared_decode_are_frame_exact(analysed):
    unit, params, records = analysed
    (group,) = encode_groups(records, params)
    shared = transcode_group(copy.deepcopy(group), unit.info, params)
    for rec, clip in zip(group, shared):
        frames = read_frames(clip.data)
        n = round((rec.end_frame - rec.start_frame) / FPS * OUT_FPS)
        assert len(frames) == n, rec.start_frame
        shown = [frame_index(f, rec.crop_y) for f in frames]
        # First frame: the scene's first; then each 24 fps frame shows the 30 fps source frame
        # nearest its time (ffmpeg's fps filter); the last is the scene's own, not the next one's.
        assert shown[0] == rec.start_frame
        assert shown == [rec.start_frame + int(np.floor(k * FPS / OUT_FPS + 0.5)) for k in range(n)]
        assert shown[-1] < rec.end_frame
        assert frames.shape[1:3] == (rec.crop_h, rec.crop_w)  # the letterbox is gone
        # The same pixels as the scene encoded on its own.
        (alone,) = transcode_group([copy.deepcopy(rec)], unit.info, params)
        assert np.abs(read_frames(alone.data).astype(np.int16) - frames.astype(np.int16)).mean() < 0.5


def _timed(start_s: float, end_s: float, ok: bool = True) -> ClipRecord:
    rec = ClipRecord(f"c{start_s}", start_frame=int(start_s * 10), source_start_s=start_s, source_end_s=end_s,
                     duration_s=end_s - start_s, crop_x=0, crop_y=0, crop_w=64, crop_h=64)
    return rec if ok else rec.reject(schema.STAGE_FILTER, schema.REASON_FLAT, "flat")


def test_groups_end_at_long_gaps_and_at_their_length():
    params = CurateParams(encode_group_s=10.0, encode_gap_s=2.0)
    recs = [_timed(0, 4), _timed(4, 5, ok=False), _timed(5, 9), _timed(9, 12), _timed(12, 20, ok=False), _timed(20, 23),
            _timed(23, 26)]
    groups = encode_groups(list(reversed(recs)), params)  # in time order, whatever the order given
    assert [[r.source_start_s for r in g] for g in groups] == [[0, 5, 9], [20, 23]]
    assert encode_groups(recs, CurateParams(encode_group_s=5.0))[0] == [recs[0], recs[2]]  # 8 s held: a new group


def test_a_failing_shared_encode_costs_only_its_bad_scene(analysed, monkeypatch):
    unit, params, records = analysed
    (group,) = encode_groups(records, params)
    real = video_stages.encode_scenes

    def flaky(info, cuts, *args, **kwargs):
        if len(cuts) > 1 or cuts[0].start_s == group[1].source_start_s:
            raise FFmpegError("decode error in the letterboxed stretch")
        return real(info, cuts, *args, **kwargs)

    monkeypatch.setattr(video_stages, "encode_scenes", flaky)
    recs = copy.deepcopy(group)
    clips = transcode_group(recs, unit.info, params)
    assert [c is not None for c in clips] == [True, False, True]
    assert [r.reject_reason for r in recs] == [None, schema.REASON_TRANSCODE_FAILED, None]
    assert "letterboxed stretch" in recs[1].error_message


# --- motion from the encode's decode -------------------------------------------------------

@pytest.mark.parametrize("dx, fps", [(2, 24), (3, 30)])
def test_motion_from_the_encode_decode_matches_scoring_the_encoded_clip(tmp_path, dx, fps):
    """A texture moving dx px per source frame (640x360): scored at the motion size (short side
    128) from the transcode's own decode, it agrees within 2 % with scoring the encoded clip
    (what `kvid motion recompute` does), and with the known answer."""
    from motion_fixtures import translating_frames

    from motion.stage import MotionStage

    path = str(tmp_path / "moving.mp4")
    synthetic.write_frames(path, translating_frames(3 * fps, dx, height=360, width=640, seed=5), fps=fps, lossless=False)
    params = CurateParams(transcode=TranscodeParams(preset="ultrafast"))
    (unit,), _ = plan_source(path, params)
    (rec,) = analyze_work_unit(unit, params)
    motion = MotionStage(backend="dis", size=128)
    (clip,) = transcode_group([rec], unit.info, params, tap_short_side=motion.tap_short_side())
    assert clip.tapped.shape == (rec.num_frames, 128, 228)  # gray, the clip's frames at the motion size
    tapped = motion.apply(rec.to_row(), clip.tapped)
    (decoded,) = motion.process([{**rec.to_row(), "mp4": clip.data}])
    assert tapped["motion_score"] == pytest.approx(decoded["motion_score"], rel=0.02)
    # The known answer: dx px per source frame, at 24 fps and a short side of 128 of 360.
    assert tapped["motion_score"] == pytest.approx(dx * fps / 24 * 128 / 360, rel=0.1)
    assert tapped["motion_size"] == 128 and tapped["motion_backend"] == "dis"
