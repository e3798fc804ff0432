"""`kvid inspect`'s HTML report, read as a person reads it: every clip playable, every
rejected scene with a frame and its place in the source, the thresholds shown, nothing cut."""

from __future__ import annotations

import os
from html.parser import HTMLParser

import pytest

from curate import shards, synthetic
from curate.ffmpeg import ffprobe_json
from pipelines.report import inspect_output

VOID = {"img", "br", "meta", "input", "link", "hr"}


class Node:
    def __init__(self, tag: str, attrs: dict):
        self.tag, self.attrs, self.children, self.parts = tag, attrs, [], []

    def text(self) -> str:
        return "".join(p if isinstance(p, str) else p.text() for p in self.parts)

    def find_all(self, tag: str) -> list[Node]:
        out = []
        for c in self.children:
            if c.tag == tag:
                out.append(c)
            out += c.find_all(tag)
        return out

    def by_id(self, ident: str) -> Node | None:
        for c in self.children:
            if c.attrs.get("id") == ident:
                return c
            found = c.by_id(ident)
            if found:
                return found
        return None


class Tree(HTMLParser):
    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.root = Node("root", {})
        self.stack = [self.root]
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        self.stack[-1].parts.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag):
        # Pop to the matching element (HTML lets some end tags be implied).
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        self.stack[-1].parts.append(data)


@pytest.fixture(scope="module")
def report(tmp_path_factory, ray_local):
    from pipelines.config import build_config
    from pipelines.curate import run_curate

    d = tmp_path_factory.mktemp("report")
    raw = d / "raw"
    # 2.2 s, 0.8 s (too short: a rejected scene), 2.2 s at 30 fps
    synthetic.scene_video(str(raw / "cuts.mp4"), [66, 24, 66], fps=30, size=(320, 240))
    synthetic.plain_video(str(raw / "low_fps.mp4"), duration_s=2.5, fps=15, size=(320, 240))  # rejected whole
    synthetic.random_bytes_file(str(raw / "corrupt.mp4"), size=20_000)
    out = d / "out"
    # (testsrc2's timecode, top left, is an overlay of about 3% at 320x240: text is not under test here)
    cfg = build_config({}, {"inputs": [str(raw)], "out": str(out), "motion_backend": "none", "caption_model": "none",
                            "text_filter": False})
    run_curate(cfg, show_progress=False)
    assert inspect_output(str(out), html=True, thumbs=3) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    index = shards.read_index(str(out)).to_pylist()
    rejects = shards.read_rejects(str(out)).to_pylist()
    return out, Tree(page).root, index, rejects


def test_every_clip_plays_from_the_report(report):
    out, root, index, _ = report
    assert len(index) == 2
    for row in index:
        card = root.by_id(f"clip-{row['clip_id']}")
        assert card is not None
        links = {a.attrs["href"] for a in card.find_all("a")}
        assert links == {f"report_files/{row['clip_id']}.mp4"}
        path = out / next(iter(links))
        assert path.read_bytes() == shards.read_clip_bytes(str(out), row)  # exactly the clip in the shard
        fields = ["-select_streams", "v:0", "-show_entries", "stream=width,height"]
        stream = ffprobe_json(str(path), fields)["streams"][0]
        assert (stream["width"], stream["height"]) == (row["width"], row["height"])


def test_clip_frames_are_explained(report):
    _, root, index, _ = report
    for row in index:
        text = " ".join(root.by_id(f"clip-{row['clip_id']}").text().split())
        n_src = row["end_frame"] - row["start_frame"]
        assert f"source frames {row['start_frame']} to {row['end_frame'] - 1} ({n_src} frames at 30 fps)" in text
        assert f"{row['num_frames']} output frames at 24 fps, re-timed from the source's 30 fps" in text
        assert "captioning was off" in text  # the empty caption says why


def test_rejects_have_a_frame_and_a_position(report):
    out, root, _, rejects = report
    by_name = {(os.path.basename(r["source"]), r["reject_reason"]): r for r in rejects}
    assert set(by_name) == {("cuts.mp4", "too_short"), ("low_fps.mp4", "fps"), ("corrupt.mp4", "not_video")}

    scene = by_name[("cuts.mp4", "too_short")]
    node = root.by_id(f"reject-{scene['clip_id']}")
    (img,) = node.find_all("img")
    thumb = out / img.attrs["src"]
    assert thumb.read_bytes()[:2] == b"\xff\xd8"  # a JPEG was written
    text = " ".join(node.text().split())
    assert f"source frames {scene['start_frame']} to {scene['end_frame'] - 1}" in text
    assert scene["start_frame"] == 66 and scene["end_frame"] == 90

    for key in (("low_fps.mp4", "fps"), ("corrupt.mp4", "not_video")):
        node = root.by_id(f"reject-{by_name[key]['clip_id']}")
        assert node.find_all("img") == []
        assert "the whole source was rejected" in node.text()


def test_reject_message_is_whole(report):
    _, root, _, rejects = report
    for row in rejects:
        if row["error_message"]:
            text = root.by_id(f"reject-{row['clip_id']}").text()
            assert row["error_message"] in text  # never cut mid-word


def test_settings_are_shown(report):
    _, root, _, _ = report
    rows = {}
    for table in root.find_all("table"):
        if table.attrs.get("class") == "settings":
            for tr in table.find_all("tr"):
                cells = [" ".join(td.text().split()) for td in tr.find_all("td")]
                if len(cells) == 3:
                    rows[cells[0]] = cells[1]
    assert rows["min_duration_s"] == "2.0" and rows["min_fps"] == "23.0" and rows["min_side"] == "128"
    assert rows["caption_model"] == '"none"' and rows["fps"] == "24.0"


def test_text_summary_names_the_settings(report, capsys):
    out, _, _, _ = report
    assert inspect_output(str(out), html=False) == 0
    text = capsys.readouterr().out
    assert "min_duration_s 2.0" in text and "min_fps 23.0" in text
    assert "captioning was off" in text


def test_narrow_histograms_keep_their_bin_edges_apart():
    # Text areas are fractions of a percent of the picture: two decimals printed every edge as 0.00.
    from pipelines.report import _text_hist, histogram

    lines = _text_hist("text.overlay_area_max", histogram([0.0, 0.0001, 0.004, 0.0098])).splitlines()[1:]
    edges = [line.split("|")[0].split(" - ")[0].strip() for line in lines]
    assert len(set(edges)) == len(edges) == 10
    assert "2.00 -" in _text_hist("duration", histogram([2.0, 5.5, 10.0]))  # ordinary ranges as before
