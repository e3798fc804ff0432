"""bench/e2e_corpus.py: the known-answer labels are complete, and output clips are scored right."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load_corpus():
    spec = importlib.util.spec_from_file_location("kvid_bench_e2e_corpus", ROOT / "bench" / "e2e_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_labels_cover_every_synthetic_second_once():
    corpus = _load_corpus()
    labels = set()
    for name, (_, graph, segments) in corpus._specs().items():
        assert graph.endswith("[v]"), name
        assert segments[0][0] == 0, name
        for a, b in zip(segments, segments[1:], strict=False):
            assert b[0] == a[1], f"{name}: gap or overlap at {a[1]}"
        labels |= {seg[2] for seg in segments}
        for seg in segments:
            if len(seg) > 3:  # a re-upload: its original is a scene of another file of the corpus
                orig, start = seg[3]
                (o,) = [o for o in corpus._specs()[orig][2] if o[0] == start]
                assert o[2] == "scene" and o[1] - o[0] == seg[1] - seg[0], (name, seg, o)
    assert labels == {"scene", *corpus.BAD_LABELS}  # every known answer is in the corpus


def _truth():
    return {"fps": 30, "files": [
        {"name": "real", "kind": "real", "segments": []},
        {"name": "synth", "kind": "synthetic", "segments": [
            {"start_s": 0, "end_s": 4, "label": "scene"},
            {"start_s": 4, "end_s": 5, "label": "transition"},
            {"start_s": 5, "end_s": 10, "label": "scene"},
            {"start_s": 10, "end_s": 16, "label": "static"},
        ]},
    ]}


def test_score_counts_transition_frames_and_majority_labels():
    corpus = _load_corpus()
    clips = [
        {"source": "/x/synth.mp4", "start_s": 0.0, "end_s": 4.0},  # ends where the dissolve starts: clean
        {"source": "/x/synth.mp4", "start_s": 4.0 - 1 / 30, "end_s": 4.0 + 1 / 30},  # one dissolve frame
        {"source": "/x/synth.mp4", "start_s": 5.0, "end_s": 10.0},  # clean
        {"source": "/x/synth.mp4", "start_s": 9.0, "end_s": 16.0},  # mostly static
        {"source": "/y/real.mp4", "start_s": 0.0, "end_s": 3.0},
    ]
    s = corpus.score_clips(_truth(), clips)
    assert s["clips"] == 5 and s["clips_real"] == 1 and s["clips_synthetic"] == 4
    assert s["clips_with_transition"] == 1
    assert s["clips_clean"] == 2 and s["bad_clips_kept"] == 2
    assert s["clips_by_label"]["static"] == 1
    assert abs(s["seconds_by_label"]["static"] - 6.0) < 1e-3
    assert abs(s["seconds_by_label"]["scene"] - (4 + 1 / 30 + 5 + 1)) < 1e-3  # output seconds, per clip
    assert s["scene_seconds_kept_fraction"] == 1.0  # but each labelled scene second counts once


def test_scene_fraction_counts_what_is_missing():
    corpus = _load_corpus()
    s = corpus.score_clips(_truth(), [{"source": "synth", "start_s": 1.0, "end_s": 4.0},
                                      {"source": "synth", "start_s": 2.0, "end_s": 3.0}])
    assert s["scene_seconds_kept_fraction"] == round(3 / 9, 3)


def test_duplicates_kept_count_pairs_of_a_reupload_and_its_original():
    corpus = _load_corpus()
    truth = _truth()
    truth["files"].append({"name": "copy", "kind": "synthetic", "segments": [
        {"start_s": 0, "end_s": 5, "label": "scene", "copy_of": {"name": "synth", "start_s": 5}}]})
    both = [{"source": "synth", "start_s": 5.0, "end_s": 10.0}, {"source": "copy", "start_s": 0.0, "end_s": 5.0}]
    s = corpus.score_clips(truth, both)
    assert s["duplicates_kept"] == 1 and s["bad_clips_kept"] == 1
    # Either copy alone covers the scene once; the copy's seconds are not a scene of their own.
    for one in both:
        s = corpus.score_clips(truth, [one])
        assert s["duplicates_kept"] == 0 and s["scene_seconds_kept_fraction"] == round(5 / 9, 3)


def test_score_of_no_clips_keeps_no_scene():
    corpus = _load_corpus()
    s = corpus.score_clips(_truth(), [])
    assert s["clips"] == 0 and s["bad_clips_kept"] == 0 and s["scene_seconds_kept_fraction"] == 0
