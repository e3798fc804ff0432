"""curate without Ray: probe, scenes, borders, filters, transcode, against known answers."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CUT_FPS, CUT_SCENES, LETTERBOX, PILLARBOX

from curate import schema, synthetic
from curate.analyze import AnalysisParams, FrameClock, analyze_unit
from curate.borders import BorderParams, Crop, detect_crop, frame_profile
from curate.ffmpeg import ffprobe_json
from curate.frames import as_file, read_frames, scaled_size
from curate.probe import ProbeError, probe
from curate.transcode import SceneCut, TranscodeParams, encode_scenes, output_size
from curate.transitions import TransitionParams
from curate.video_stages import CurateParams, analyze_work_unit, plan_source, transcode_group


def analyze(path, **kw):
    info = probe(str(path))
    return info, analyze_unit(info, 0, None, AnalysisParams(**kw), FrameClock(info))


# --- probe ------------------------------------------------------------------------------------


def test_probe_real_videos(shared_videos):
    tv = probe(str(shared_videos / "testvideo.mp4"))
    assert (tv.width, tv.height, tv.num_frames) == (1280, 720, 720)
    assert tv.fps == pytest.approx(30000 / 1001)
    assert not tv.vfr
    rot = probe(str(shared_videos / "issue-134-rotate.mp4"))
    assert rot.rotation in (90, 270)
    assert (rot.coded_width, rot.coded_height) == (1280, 544)
    assert (rot.width, rot.height) == (544, 1280)  # size after rotation
    late = probe(str(shared_videos / "delayed_start.mp4"))
    assert late.start_time_s == pytest.approx(1.075)


def test_probe_variable_frame_rate(tmp_path):
    path = str(tmp_path / "vfr.mp4")
    # Drop 3 of every 10 frames and keep the timestamps: gaps make the rate variable.
    synthetic._render(
        path, ["testsrc2=size=320x240:rate=30"], "[0:v]select='not(between(mod(n\\,10)\\,3\\,5))'[v]",
        3.0, synthetic.Encoding(), ["-fps_mode", "vfr"],
    )
    assert probe(path).vfr
    assert not probe(str(synthetic.plain_video(str(tmp_path / "cfr.mp4"), duration_s=2))).vfr


@pytest.mark.parametrize(
    "name, reason",
    [("zero.mp4", "empty_file"), ("text.mp4", "not_video"), ("random.mp4", "not_video"), ("truncated.mp4", "truncated")],
)
def test_probe_rejects_broken_files(synth, name, reason):
    with pytest.raises(ProbeError) as e:
        probe(str(synth[name]))
    assert e.value.reason == reason


def test_probe_rejects_image_and_audio(tmp_path):
    png = tmp_path / "still.png"
    synthetic.run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=320x240", "-frames:v", "1", "-y", str(png)], timeout=60)
    wav = tmp_path / "tone.mp4"
    synthetic.run_ffmpeg(["-f", "lavfi", "-i", "sine=duration=2", "-c:a", "aac", "-y", str(wav)], timeout=60)
    for path in (png, wav):
        with pytest.raises(ProbeError) as e:
            probe(str(path))
        assert e.value.reason == "not_video"


# --- scenes -----------------------------------------------------------------------------------


def test_cuts_found_within_one_frame(synth):
    _, result = analyze(synth["cuts.mp4"])
    truth = np.cumsum(CUT_SCENES)[:-1]
    found = [s.start_frame for s in result.scenes[1:]]
    assert len(found) == len(truth), found
    assert np.all(np.abs(np.array(found) - truth) <= 1), (found, truth)
    assert result.scenes[-1].end_frame == sum(CUT_SCENES)


@pytest.mark.parametrize("detector", ["content", "adaptive"])
def test_detectors_on_real_hard_cuts(shared_videos, detector):
    # testvideo.mp4 has hard cuts at frames 30, 180 and 394 (checked by eye); both detectors find them.
    # (394 starts a fade-in from black: with transitions on, that fade is a transition row.)
    _, result = analyze(shared_videos / "testvideo.mp4", scene_detector=detector, transition=TransitionParams(enabled=False))
    starts = [s.start_frame for s in result.scenes]
    for cut in (30, 180, 394):
        assert min(abs(s - cut) for s in starts) <= 1, starts


def test_scene_detector_sees_colour_with_border_detection_on(synth, monkeypatch):
    # Border detection reads a gray copy of the same decode. A gray conversion placed before
    # the split (ffmpeg's format negotiation does that unless told otherwise) took the colour
    # out of the detector's frames and lost cuts between scenes of similar brightness.
    import curate.analyze as analyze_module

    seen: list[np.ndarray] = []

    class Recording(analyze_module.SceneDetector):
        def push(self, frame_bgr):
            if len(seen) < 5:
                seen.append(frame_bgr.copy())
            super().push(frame_bgr)

    def analyze_part(borders):
        # A part of the source, as long sources are analysed: seeking and a duration limit
        # are what changed ffmpeg's choice of format.
        info = probe(str(synth["cuts.mp4"]))
        analyze_unit(info, 30, 200, AnalysisParams(border=BorderParams(enabled=borders)), FrameClock(info))

    monkeypatch.setattr(analyze_module, "SceneDetector", Recording)
    analyze_part(borders=False)
    without_borders, seen[:] = list(seen), []
    analyze_part(borders=True)
    frames = np.stack(seen).astype(np.int16)
    assert np.abs(frames[..., 0] - frames[..., 2]).mean() > 20  # blue differs from red: colour
    assert np.array_equal(frames, np.stack(without_borders))


def test_scene_threshold_is_used(synth):
    _, result = analyze(synth["cuts.mp4"], scene_threshold=255.0)
    assert len(result.scenes) == 1


def test_scene_times_are_relative_to_first_frame(shared_videos):
    info, result = analyze(shared_videos / "delayed_start.mp4")
    assert result.scenes[0].start_s == 0.0
    assert result.scenes[-1].end_s == pytest.approx(info.num_frames / info.fps)


# --- borders ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case, name", [(LETTERBOX, "letterbox.mp4"), (PILLARBOX, "pillarbox.mp4")])
def test_border_crop_within_two_pixels(synth, case, name):
    info, result = analyze(synth[name])
    (cw, ch), (fw, fh) = case["content"], case["frame"]
    truth = ((fw - cw) // 2, (fh - ch) // 2, cw, ch)
    crop = result.scenes[0].crop
    assert np.all(np.abs(np.array([crop.x, crop.y, crop.w, crop.h]) - truth) <= 2), (crop, truth)
    assert crop.w % 2 == 0 and crop.h % 2 == 0


def _profiles_of(frames):
    return [frame_profile(i, f) for i, f in enumerate(frames)]


def _letterboxed(content_luma, h=200, w=320, bar=30):
    f = np.zeros((h, w), np.uint8)
    f[bar : h - bar] = content_luma
    return f


def test_dark_scene_is_not_cropped():
    # A dark picture (luma 10) inside bars: nothing is bright enough to be evidence.
    frames = [_letterboxed(10) for _ in range(5)]
    assert detect_crop(_profiles_of(frames), 320, 200) == Crop(0, 0, 320, 200)


def test_fade_frames_do_not_decide_the_crop():
    # A fade in: black, then dim, then full picture. Only the bright frames count, and
    # their union gives the true bars.
    rng = np.random.default_rng(0)
    frames = [np.zeros((200, 320), np.uint8), _letterboxed(12)]
    frames += [_letterboxed(rng.integers(60, 200, (140, 320)).astype(np.uint8)) for _ in range(3)]
    assert detect_crop(_profiles_of(frames), 320, 200) == Crop(0, 30, 320, 140)


def test_dark_sky_is_not_mistaken_for_a_bar():
    # Content with a black top third and no bar below: asymmetric, so no crop.
    f = np.full((200, 320), 120, np.uint8)
    f[:60] = 0
    assert detect_crop(_profiles_of([f] * 3), 320, 200) == Crop(0, 0, 320, 200)


def test_caption_on_black_is_not_a_picture():
    f = np.zeros((200, 320), np.uint8)
    f[150:160, 100:220] = 230  # a line of white text on black
    assert detect_crop(_profiles_of([f] * 3), 320, 200) == Crop(0, 0, 320, 200)


def test_thin_bars_are_left_alone():
    f = np.full((200, 320), 120, np.uint8)
    f[:2], f[-2:] = 0, 0
    assert detect_crop(_profiles_of([f]), 320, 200, BorderParams(min_px=4)) == Crop(0, 0, 320, 200)


# --- filters and planning ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, stage, reason",
    [
        ("fps15.mp4", "filter", "fps"),
        ("small200.mp4", "filter", "too_small"),
        ("zero.mp4", "probe", "empty_file"),
        ("text.mp4", "probe", "not_video"),
        ("random.mp4", "probe", "not_video"),
        ("truncated.mp4", "probe", "truncated"),
    ],
)
def test_source_level_rejects_keep_their_statistics(synth, name, stage, reason):
    units, rejects = plan_source(str(synth[name]), CurateParams())
    assert units == [] and len(rejects) == 1
    r = rejects[0]
    assert (r.status, r.reject_stage, r.reject_reason) == ("rejected", stage, reason)
    assert r.work_unit_rows == 1 and r.clip_id and r.source_id
    if reason == "fps":
        assert r.src_fps == pytest.approx(15)  # the statistic is stored on the reject
    if reason == "too_small":
        assert (r.src_width, r.src_height) == (200, 200)


def test_short_scene_rejected_and_others_kept(synth):
    params = CurateParams()
    (unit,), _ = plan_source(str(synth["cuts.mp4"]), params)
    records = analyze_work_unit(unit, params)
    assert [r.reject_reason for r in records] == [None, "too_short", None, None]
    assert records[1].duration_s == pytest.approx(45 / CUT_FPS, abs=0.04)
    assert all(r.work_unit_rows == 4 for r in records)


def test_corrupt_file_becomes_rejects_covering_the_stream(synth):
    params = CurateParams()
    units, rejects = plan_source(str(synth["corrupt.mp4"]), params)
    records = rejects + [r for u in units for r in analyze_work_unit(u, params)]
    assert records and all(r.status == "rejected" for r in records)
    assert {r.reject_reason for r in records} <= {"decode_error", "truncated", "not_video"}


def test_long_source_is_chunked(synth):
    params = CurateParams(chunk_s=1.0)
    units, _ = plan_source(str(synth["cuts.mp4"]), params)
    assert len(units) > 3
    assert units[0].first_frame == 0 and units[-1].end_frame is None
    for a, b in zip(units, units[1:]):
        assert a.end_frame == b.first_frame
    assert {u.num_chunks for u in units} == {len(units)}
    # A unit already done is not planned again.
    again, _ = plan_source(str(synth["cuts.mp4"]), params, done_units={units[0].unit_id})
    assert [u.unit_id for u in again] == [u.unit_id for u in units[1:]]


# --- transcode --------------------------------------------------------------------------------


def test_output_size_rules():
    assert output_size(1920, 1440, 1.0, 1080) == (1440, 1080)
    assert output_size(640, 360, 1.0, 1080) == (640, 360)  # never upscaled
    assert output_size(1081, 721, 1.0, 1080) == (1080, 720)  # even sides, never stretched
    assert output_size(720, 576, 64 / 45, 1080) == (1024, 576)  # anamorphic -> square pixels
    assert scaled_size(1920, 1080, 256) == (455, 256)


def _stream_of(data: bytes) -> dict:
    with as_file(data) as path:
        s = ffprobe_json(
            path,
            [
                "-select_streams",
                "v:0",
                "-count_frames",
                "-show_entries",
                "stream=nb_read_frames,r_frame_rate,width,height,pix_fmt,codec_name",
            ],
        )["streams"][0]
    return s


def test_transcode_is_24fps_capped_and_counted(synth):
    info = probe(str(synth["big.mp4"]))
    whole = SceneCut(0.0, info.duration_s, Crop(0, 0, info.width, info.height))
    (clip,) = encode_scenes(info, [whole], TranscodeParams())
    s = _stream_of(clip.data)
    assert s["r_frame_rate"] == "24/1" and s["codec_name"] == "h264" and s["pix_fmt"] == "yuv420p"
    assert (s["width"], s["height"]) == (1440, 1080)
    assert abs(int(s["nb_read_frames"]) - info.duration_s * 24) <= 1
    assert clip.num_frames == int(s["nb_read_frames"])


def test_transcode_crops_the_letterbox(synth):
    params = CurateParams()
    (unit,), _ = plan_source(str(synth["letterbox.mp4"]), params)
    (rec,) = analyze_work_unit(unit, params)
    (clip,) = transcode_group([rec], unit.info, params)
    data = clip.data
    frames = read_frames(data)
    assert frames.shape[1:3] == (rec.height, rec.width)
    assert abs(rec.height - 520) <= 2 and rec.width == 1280
    # No black rows left at the top or bottom.
    rows = frames.mean(axis=(0, 2, 3))
    assert rows[0] > 30 and rows[-1] > 30


def test_cut_starts_on_the_exact_frame(shared_videos):
    # counter.mp4 shows a different picture on every frame: the clip's first frame must be
    # the source's frame 10, not a neighbour.
    path = str(shared_videos / "counter.mp4")
    info = probe(path)
    src = read_frames(path, short_side=135).astype(np.float32)
    (clip,) = encode_scenes(info, [SceneCut(10 / info.fps, 20 / info.fps, Crop(0, 0, info.width, info.height))],
                            TranscodeParams())
    first = read_frames(clip.data, short_side=135, max_frames=1)[0].astype(np.float32)
    errors = [np.abs(first - src[i]).mean() for i in range(len(src))]
    assert int(np.argmin(errors)) == 10
    assert clip.num_frames == 24  # 1 s at 24 fps


def test_rotated_source_comes_out_upright(shared_videos):
    path = str(shared_videos / "issue-134-rotate.mp4")
    info = probe(path)
    clip = encode_scenes(info, [SceneCut(0.0, 2.0, Crop(0, 0, info.width, info.height))], TranscodeParams())[0]
    assert (clip.width, clip.height) == (544, 1280)
    with as_file(clip.data) as p:
        stream = ffprobe_json(p, ["-show_streams"])["streams"][0]
    assert not stream.get("side_data_list")  # no rotation flag left for players to apply twice
    # Pixels match the source as a player shows it (rotation applied).
    shown = read_frames(path, max_frames=1, short_side=128).astype(np.float32)[0]
    ours = read_frames(clip.data, max_frames=1, short_side=128).astype(np.float32)[0]
    assert ours.shape == shown.shape
    assert np.abs(ours - shown).mean() < 8


def test_schema_is_one_place():
    names = schema.CLIP_SCHEMA.names
    assert len(names) == len(set(names))
    for field in ("clip_id", "source", "source_start_s", "source_end_s", "duration_s", "num_frames", "fps",
                  "width", "height", "crop_x", "src_fps", "codec", "caption", "motion_score", "shard",
                  "status", "reject_stage", "reject_reason", "kvid_version", "aspect_ratio"):
        assert field in names
    rec = schema.ClipRecord(clip_id="x", motion_pair_scores=[1.0, 2.0])
    table = schema.records_to_table([rec])
    assert table.schema == schema.CLIP_SCHEMA
    assert schema.table_to_records(table)[0] == rec
