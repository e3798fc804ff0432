"""Anamorphic sources (non-square pixels, as DVD / HDV store them) become square-pixel clips
shown at the source's display aspect, rotation and border crops included."""

from __future__ import annotations

import os

import pytest

from curate import synthetic
from curate.borders import Crop
from curate.ffmpeg import ffprobe_json
from curate.probe import probe
from curate.transcode import SceneCut, TranscodeParams, encode_scenes
from curate.video_stages import CurateParams, analyze_work_unit, plan_source, transcode_group

# (coded size, sample aspect, rotated): PAL and NTSC DVD at 16:9 and 4:3, HDV 1440x1080.
CASES = [
    ((704, 576), (16, 11), False),
    ((704, 576), (12, 11), False),
    ((720, 480), (10, 11), False),
    ((720, 480), (40, 33), False),
    ((1440, 1080), (4, 3), False),
    ((704, 576), (16, 11), True),
]
FAST = TranscodeParams(preset="ultrafast")


def display_aspect(size, sar, rotated):
    w, h = size[0] * sar[0] / sar[1], size[1]
    return h / w if rotated else w / h


def output_stream(data_or_path) -> dict:
    fields = ["-select_streams", "v:0", "-show_entries", "stream=width,height,sample_aspect_ratio"]
    return ffprobe_json(data_or_path, fields)["streams"][0]


def assert_square_at(stream: dict, aspect: float) -> None:
    assert stream.get("sample_aspect_ratio", "1:1") in ("1:1", "N/A"), stream  # square pixels
    got = stream["width"] / stream["height"]
    assert got == pytest.approx(aspect, rel=0.01), (stream, aspect)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[tuple, str]:
    d = tmp_path_factory.mktemp("anamorphic")
    out = {}
    for size, sar, rotated in CASES:
        name = f"{size[0]}x{size[1]}_sar{sar[0]}-{sar[1]}{'_rot' if rotated else ''}.mp4"
        out[(size, sar, rotated)] = synthetic.anamorphic_video(str(d / name), size, sar, duration_s=0.6, rotate=rotated)
    return out


CASE_IDS = [f"{s[0]}x{s[1]}@{a[0]}:{a[1]}{'-rot' if r else ''}" for s, a, r in CASES]


@pytest.mark.parametrize("size, sar, rotated", CASES, ids=CASE_IDS)
def test_clip_is_square_pixels_at_display_aspect(sources, size, sar, rotated):
    info = probe(sources[(size, sar, rotated)])
    want = display_aspect(size, sar, rotated)
    assert info.display_aspect == pytest.approx(want, rel=1e-6)
    clip = encode_scenes(info, [SceneCut(0.0, 0.5, Crop(0, 0, info.width, info.height))], FAST)[0]
    assert clip.width / clip.height == pytest.approx(want, rel=0.01)
    with open(os.path.join(os.path.dirname(sources[(size, sar, rotated)]), "out.mp4"), "wb") as f:
        f.write(clip.data)
    assert_square_at(output_stream(f.name), want)


def test_probe_reads_ffprobe_ratio_text(sources):
    # ffprobe writes "16:11", not "16/11": a parser that misses it sees square pixels.
    assert probe(sources[((704, 576), (16, 11), False)]).sample_aspect == pytest.approx(16 / 11)
    rotated = probe(sources[((704, 576), (16, 11), True)])
    assert (rotated.width, rotated.height, rotated.rotation % 180) == (576, 704, 90)
    assert rotated.sample_aspect == pytest.approx(11 / 16)  # the pixel turns with the picture


def test_border_crop_in_source_pixels_then_square(tmp_path):
    # NTSC 16:9 (40:33 pixels) holding a 4:3 picture between black bars: the bars are found in
    # coded pixels (96 each side), and the cropped 528x480 picture shows as 640x480.
    path = synthetic.anamorphic_video(str(tmp_path / "pillar.mp4"), (720, 480), (40, 33), duration_s=2.5, content_w=528)
    params = CurateParams(transcode=FAST)
    (unit,), rejects = plan_source(path, params)
    assert rejects == []
    (rec,) = analyze_work_unit(unit, params)
    assert rec.status == "ok", rec.reject_reason
    assert abs(rec.crop_w - 528) <= 4 and rec.crop_h == 480
    assert rec.width / rec.height == pytest.approx(4 / 3, rel=0.01)
    (clip,) = transcode_group([rec], unit.info, params)
    data = clip.data
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(data)
    stream = output_stream(str(clip))
    assert (stream["width"], stream["height"]) == (rec.width, rec.height)  # the index tells the truth
    assert_square_at(stream, 4 / 3)


def test_curate_end_to_end(tmp_path, ray_local):
    from curate import shards
    from pipelines.config import build_config
    from pipelines.curate import run_curate

    src = tmp_path / "in"
    src.mkdir()
    wide = synthetic.anamorphic_video(str(src / "pal_wide.mp4"), (704, 576), (16, 11), duration_s=2.5)
    turned = synthetic.anamorphic_video(str(src / "pal_wide_rot.mp4"), (704, 576), (16, 11), duration_s=2.5,
                                        rotate=True)
    # (testsrc2's timecode is an overlaid line of text: the text filter is not under test here)
    cfg = build_config({}, {"inputs": [str(src)], "out": str(tmp_path / "out"), "motion_backend": "none",
                            "caption_model": "none", "text_filter": False})
    run_curate(cfg, show_progress=False)
    index = {os.path.basename(r["source"]): r for r in shards.read_index(str(tmp_path / "out")).to_pylist()}
    assert set(index) == {os.path.basename(wide), os.path.basename(turned)}
    for name, aspect in (("pal_wide.mp4", 16 / 9), ("pal_wide_rot.mp4", 9 / 16)):
        row = index[name]
        assert row["width"] / row["height"] == pytest.approx(aspect, rel=0.01)
        with open(tmp_path / f"{name}.clip.mp4", "wb") as f:
            f.write(shards.read_clip_bytes(str(tmp_path / "out"), row))
        stream = output_stream(f.name)
        assert (stream["width"], stream["height"]) == (row["width"], row["height"])
        assert_square_at(stream, aspect)
