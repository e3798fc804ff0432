"""`kvid generate CONFIG.yaml`: job files, curated-index jobs, outputs, motion levels, CLI."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from generate_fixtures import make_fake_curated, tiny_pipeline
from PIL import Image

from generate import load_motion_levels, resolve_motion
from generate.cli import add_arguments, main, run
from generate.jobs import expand_jobs, load_config
from generate.video_io import first_frame_of_clip, probe_video, read_curated_index

pytestmark = pytest.mark.usefixtures("one_thread")

LEVELS = {"backend": "raft", "size": 256, "percentiles": {"low": 10, "medium": 50, "high": 90},
          "levels": {"low": 0.8, "medium": 3.1, "high": 9.4}, "num_clips": 3, "kvid_version": "0.1.0"}


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    root = tmp_path_factory.mktemp("curated")
    make_fake_curated(root, {"clipB": "a red car on the beach", "clipA": "a dog running", "clipC": None})
    (root / "motion_levels.json").write_text(json.dumps(LEVELS))
    return root


@pytest.fixture(scope="module")
def saved_weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights") / "tiny"
    tiny_pipeline(seed=2).save_pretrained(folder)
    return folder


def _write(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "jobs.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_motion_levels_file_folder_defaults_and_errors(curated, tmp_path):
    by_folder, by_file = load_motion_levels(curated), load_motion_levels(curated / "motion_levels.json")
    assert by_folder.levels == by_file.levels == LEVELS["levels"]
    assert resolve_motion("High", by_folder) == 9.4 and resolve_motion(2, by_folder) == 2.0
    assert resolve_motion("medium") == 10.0 and resolve_motion("extreme") == 100.0  # official defaults
    with pytest.raises(ValueError, match=r"unknown motion level 'fast'.*\['high', 'low', 'medium'\]"):
        resolve_motion("fast", by_folder)
    with pytest.raises(ValueError):
        resolve_motion(-1)
    with pytest.raises(FileNotFoundError, match="kvid motion levels"):
        load_motion_levels(tmp_path)
    (tmp_path / "motion_levels.json").write_text(json.dumps({"backend": "raft", "size": 256, "levels": {}}))
    with pytest.raises(ValueError, match="invalid motion levels"):
        load_motion_levels(tmp_path)


def test_curated_index_reading_and_first_frame(curated):
    rows = read_curated_index(curated)
    assert [r["clip_id"] for r in rows] == ["clipA", "clipB", "clipC"]  # stable order
    assert rows[2]["caption"] is None
    img = first_frame_of_clip(curated, rows[0])  # by the index's offset into the tar
    assert img.size == (96, 64) and img.mode == "RGB"
    assert np.asarray(img).std() > 10  # testsrc pattern, not a blank frame
    assert [r["clip_id"] for r in read_curated_index(curated, clip_ids=["clipC", "clipA"])] == ["clipC", "clipA"]
    with pytest.raises(KeyError, match="nope"):
        read_curated_index(curated, clip_ids=["nope"])
    from generate.video_io import VideoIOError

    with pytest.raises(VideoIOError, match="cannot read clip"):
        first_frame_of_clip(curated, {**rows[0], "shard": "shard-999999.tar"})


def test_config_validation_errors(tmp_path):
    cases = [
        ({"jobs": [{"name": "x"}]}, "needs a prompt"),
        ({"jobs": [{"prompt": "p", "colour": "red"}]}, "colour"),
        ({"jobs": []}, "jobs"),
        ({"jobs": [{"prompt": "p", "image": "a.png", "index": "x"}]}, "either an image or an index"),
        ({"jobs": [{"prompt": "p"}], "dtype": "int8"}, "dtype"),
    ]
    for cfg, match in cases:
        with pytest.raises(ValueError, match=match):
            load_config(_write(tmp_path, cfg))
    cfg, base = load_config(_write(tmp_path, {"jobs": [{"prompt": "p", "name": "a"}, {"prompt": "q", "name": "a"}]}))
    with pytest.raises(ValueError, match="duplicate job names"):
        expand_jobs(cfg, base)
    with pytest.raises(ValueError, match="defaults.fps"):
        load_config(_write(tmp_path, {"defaults": {"fps": "fast"}, "jobs": [{"prompt": "p"}]}))
    cfg, base = load_config(_write(tmp_path, {"jobs": [{"prompt": "p", "name": "j", "fps": "fast"}]}))
    with pytest.raises(ValueError, match="job j: invalid parameters"):
        expand_jobs(cfg, base)


def test_defaults_overrides_and_index_expansion(curated, tmp_path):
    (tmp_path / "pic.png").write_bytes(b"")
    Image.new("RGB", (64, 64)).save(tmp_path / "pic.png")
    cfg, base = load_config(_write(tmp_path, {
        "defaults": {"fps": "medium", "seed": 1, "width": 128},
        "jobs": [
            {"name": "t", "prompt": "a cat", "seed": 5},
            {"name": "i", "prompt": "a dog", "image": "pic.png", "fps": "high"},
            {"name": "idx", "index": str(curated), "limit": 2},
        ],
    }))
    jobs = {j.name: j for j in expand_jobs(cfg, base)}
    assert set(jobs) == {"t", "i", "idx-clipA", "idx-clipB"}
    assert (jobs["t"].params.seed, jobs["t"].params.fps, jobs["t"].params.width) == (5, "medium", 128)
    assert jobs["i"].params.fps == "high" and jobs["i"].image == str(tmp_path / "pic.png")
    assert jobs["idx-clipA"].prompt == "a dog running" and jobs["idx-clipA"].clip["clip_id"] == "clipA"


def test_help_teaches_the_job_format(capsys):
    parser = argparse.ArgumentParser(prog="kvid generate")
    add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = capsys.readouterr().out
    for needle in ("jobs:", "prompt:", "image:", "index:", "motion_levels:", "--offload", "fps: low", "weights:"):
        assert needle in text


def test_cli_end_to_end_t2v_i2v_and_curated_index(curated, saved_weights, tmp_path, capsys):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(tmp_path / "pic.png")
    cfg = {
        "output_dir": "out",
        "weights": str(saved_weights),
        "motion_levels": str(curated),
        "device": "cpu",
        "defaults": {"width": 64, "height": 64, "num_inference_steps": 2, "interpolation_steps": 1, "seed": 0},
        "jobs": [
            {"name": "car", "prompt": "a red car on the beach", "fps": "medium", "formats": ["mp4", "gif"]},
            {"name": "pic", "image": "pic.png", "prompt": "a dog running", "motion": "high"},
            {"name": "cur", "index": {"path": str(curated)}, "motion": 2.5},
        ],
    }
    code = main([str(_write(tmp_path, cfg)), "--no-progress"])
    assert code == 0
    out = tmp_path / "out"
    assert "skipped  cur-clipC" in capsys.readouterr().out  # no caption, no fallback prompt
    car = json.loads((out / "car.json").read_text())
    assert car["num_frames"] == 45 and car["params"]["seed"] == 0 and car["params"]["fps"] == "medium"
    assert car["motion_score"] == 3.1 and car["motion_levels"]["source"].endswith("motion_levels.json")
    assert car["source"] == {"kind": "text"} and car["weights"]["kind"] == "kvid"
    assert {"text", "first_frame", "keyframes", "interpolation_1", "decode"} <= set(car["timings"])
    assert probe_video(out / "car.mp4")["num_frames"] == 45 and (out / "car.gif").is_file()
    pic = json.loads((out / "pic.json").read_text())
    assert pic["source"]["kind"] == "image" and pic["motion_score"] == 9.4 and pic["num_frames"] == 12
    for clip in ("clipA", "clipB"):
        rec = json.loads((out / f"cur-{clip}.json").read_text())
        assert rec["source"]["kind"] == "index" and rec["source"]["clip_id"] == clip and rec["motion_score"] == 2.5
        assert (out / f"cur-{clip}.mp4").is_file()
    assert not (out / "cur-clipC.mp4").exists()
    # re-run: finished jobs are skipped
    code = main([str(_write(tmp_path, cfg)), "--no-progress", "--skip-existing"])
    assert code == 0 and capsys.readouterr().out.count("output exists") == 4


def test_a_failing_job_does_not_stop_the_others(curated, tmp_path, capsys):
    import shutil

    from curate import shards

    broken = tmp_path / "broken"
    shutil.copytree(curated, broken)
    (row,) = [r for r in shards.read_index(str(broken)).to_pylist() if r["clip_id"] == "clipA"]
    with open(broken / "shards" / row["shard"], "r+b") as f:  # clipA's mp4 bytes become zeros
        f.seek(row["shard_offset"])
        f.write(b"\0" * row["shard_size"])
    cfg = {"output_dir": "out", "weights": "random:tiny", "device": "cpu",
           "defaults": {"width": 64, "height": 64, "num_inference_steps": 1, "interpolation_steps": 1, "seed": 0},
           "jobs": [{"name": "cur", "index": str(broken)}]}
    args = argparse.ArgumentParser()
    add_arguments(args)
    code = run(args.parse_args([str(_write(tmp_path, cfg)), "--no-progress"]))
    captured = capsys.readouterr()
    assert code == 1
    assert "FAILED   cur-clipA" in captured.err and "could not decode the first frame" in captured.err
    assert (tmp_path / "out" / "cur-clipB.mp4").is_file()


def test_bad_config_exit_code_and_dry_run(curated, tmp_path, capsys):
    assert main([str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    path = _write(tmp_path, {"weights": "random:tiny", "jobs": [{"name": "cur", "index": str(curated)}]})
    assert main([str(path), "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert "cur-clipA" in listing and "SKIP" in listing  # clipC has no caption
    assert main([str(path)]) == 2  # no output folder
    assert "output_dir" in capsys.readouterr().err


def test_module_entry_point_runs(tmp_path):
    path = _write(tmp_path, {"jobs": [{"prompt": "a cat"}]})
    proc = subprocess.run([sys.executable, "-m", "generate.cli", str(path), "--dry-run"], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    assert "job000" in proc.stdout
