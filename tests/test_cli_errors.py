"""Every user mistake ends as one line `kvid: error: ...` and a non-zero exit, never a
traceback: typo'd flags and keys, bad choices, folders that are not kvid folders, missing
models offline, and resuming with other motion units."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.config import CurateConfig, build_config, motion_units, resume_problem
from pipelines.preflight import ConfigError, check_resume, preflight

ROOT = Path(__file__).resolve().parents[1]


def offline_env(tmp_path: Path) -> dict[str, str]:
    """No model anywhere and no network: empty caches, every offline switch on."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "KVID_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TORCH_HOME": str(tmp_path / "torch-home"),
        "HF_HOME": str(tmp_path / "hf-home"),
    }


def kvid_fails(*args: str, cwd: Path, env: dict | None = None) -> str:
    """Run `kvid ARGS` as a user would (stdin closed); assert one error line, non-zero exit,
    no traceback; return that line."""
    env = env or {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvid: error: "), p.stderr
    return lines[0]


# --- flags and keys -----------------------------------------------------------------------


def test_typo_flag_names_the_flag_meant(tmp_path):
    err = kvid_fails("curate", "x.mp4", "--min-fsp", "3", cwd=tmp_path)
    assert "unknown flag --min-fsp; did you mean --min-fps?" in err
    err = kvid_fails("motion", "recompute", str(tmp_path), "--backen", "dis", cwd=tmp_path)
    assert "unknown flag --backen; did you mean --backend?" in err and "kvid motion recompute --help" in err


def test_abbreviated_flag_is_refused_not_guessed(tmp_path):
    # With argparse's abbreviations --min-dur would silently mean --min-duration-s.
    err = kvid_fails("curate", "x.mp4", "--out", str(tmp_path / "o"), "--min-dur", "3", cwd=tmp_path)
    assert "unknown flag --min-dur; did you mean --min-duration-s?" in err
    assert not (tmp_path / "o").exists()


def test_literal_flag_lists_its_choices(tmp_path):
    err = kvid_fails("curate", "x.mp4", "--out", "o", "--scene-detector", "magic", cwd=tmp_path)
    assert "'content'" in err and "'adaptive'" in err
    err = kvid_fails("curate", "x.mp4", "--out", "o", "--motion-backend", "magic", cwd=tmp_path)
    assert all(f"'{b}'" in err for b in ("raft", "raft_small", "dis", "farneback", "none"))
    help_text = subprocess.run([sys.executable, "-m", "pipelines.cli", "curate", "--help"], cwd=tmp_path,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True).stdout
    assert "--scene-detector {content,adaptive,transnetv2}" in help_text
    assert "--motion-backend {none,raft,raft_large,raft_small,dis,farneback}" in help_text


def test_help_says_each_default_once():
    help_text = subprocess.run([sys.executable, "-m", "pipelines.cli", "curate", "--help"], cwd=ROOT,
                               capture_output=True, text=True).stdout
    flat = " ".join(help_text.split())
    assert "(default: None)" not in flat
    # One chunk per flag: "--num-cpus NUM_CPUS CPUs of the local Ray (default: all)".
    chunks = re.split(r" (?=--[a-z])", flat.split("flags override the file.")[1].split("examples:")[0])
    assert len(chunks) > 40
    for chunk in chunks:
        assert chunk.count("default") <= 1, chunk
    assert "(default: all)" in flat and "(default: 24.0)" in flat


def test_yaml_key_spelled_with_dashes_or_typo_names_the_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("motion-backend: dis\nmin_fsp: 3\nscene_detector: magic\n")
    err = kvid_fails("curate", "x.mp4", "--out", "o", "--config", str(cfg), cwd=tmp_path)
    assert "motion-backend: unknown key; did you mean motion_backend?" in err
    assert "min_fsp: unknown key; did you mean min_fps?" in err
    assert "scene_detector (--scene-detector)" in err and "'content', 'adaptive' or 'transnetv2'" in err


def test_yaml_inputs_are_used(tmp_path):
    # The empty positional list used to override the file's inputs ("no inputs").
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"inputs: [{tmp_path / 'missing.mp4'}]\nout: {tmp_path / 'o'}\n")
    err = kvid_fails("curate", "--config", str(cfg), cwd=tmp_path)
    assert "missing.mp4" in err and "no such file" in err
    # Positionals given on the command line still win over the file.
    from pipelines.cli import build_parser
    from pipelines.config import load_yaml, overrides_from_args

    args = build_parser().parse_args(["curate", "--config", str(cfg)])
    assert build_config(load_yaml(args.config), overrides_from_args(args)).inputs == [str(tmp_path / "missing.mp4")]
    args = build_parser().parse_args(["curate", "a.mp4", "--config", str(cfg)])
    assert build_config(load_yaml(args.config), overrides_from_args(args)).inputs == ["a.mp4"]


# --- folders that are not kvid folders ----------------------------------------------------


@pytest.mark.parametrize(("command", "options"), [
    (["motion", "levels"], []), (["motion", "recompute"], []), (["caption"], ["--model", "x"]),
])
def test_not_a_kvid_folder(tmp_path, command, options):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.mp4").write_bytes(b"")
    for target in (tmp_path / "nonexistent", plain):
        err = kvid_fails(*command, str(target), *options, cwd=tmp_path)
        assert f"{target} is not a kvid folder" in err and "run `kvid motion recompute" not in err


# --- models missing offline ---------------------------------------------------------------


def test_preflight_lists_every_missing_model_without_the_network(tmp_path, monkeypatch):
    for k, v in offline_env(tmp_path).items():
        monkeypatch.setenv(k, v)
    import socket

    def no_network(*a, **k):
        raise AssertionError("preflight touched the network although offline")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    cfg = CurateConfig(inputs=["x.mp4"], out=str(tmp_path / "o"))  # the defaults: RAFT and the LLaVA VLM
    with pytest.raises(ConfigError) as e:
        preflight(cfg)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("2 models are missing")
    assert "--motion-weights" in msg and "--motion-backend dis" in msg
    assert cfg.caption_model in msg and "--caption-model PATH" in msg and "--caption-model none" in msg
    # Each fix on its own clears its problem.
    with pytest.raises(ConfigError) as e:
        preflight(cfg.model_copy(update={"motion_backend": "dis"}))
    assert "RAFT" not in str(e.value) and "--caption-model none" in str(e.value)
    with pytest.raises(ConfigError, match="RAFT weights file not found.*--motion-backend dis"):
        preflight(cfg.model_copy(update={"motion_weights": str(tmp_path / "none.pth"), "caption_model": "none"}))
    preflight(cfg.model_copy(update={"motion_backend": "dis", "caption_model": "none"}))


def test_curate_offline_names_every_missing_model_and_writes_nothing(tmp_path):
    from curate import synthetic as S

    video = S.plain_video(str(tmp_path / "v.mp4"), duration_s=1, size=(64, 64))
    out = tmp_path / "out"
    err = kvid_fails("curate", video, "--out", str(out), cwd=tmp_path, env=offline_env(tmp_path))
    assert "2 models are missing" in err and "--motion-backend dis" in err and "--caption-model none" in err
    assert not out.exists()


# --- a curated folder: recompute's manifest, mixed motion units, model checks of rewrites ---


@pytest.fixture(scope="module")
def dis_folder(tmp_path_factory, ray_local):
    """A one-clip folder curated with dis motion, then recomputed with farneback."""
    from curate import synthetic as S
    from pipelines.cli import main
    from pipelines.curate import run_curate

    d = tmp_path_factory.mktemp("units")
    video = S.plain_video(str(d / "v.mp4"), duration_s=2.5, fps=24, size=(320, 256))
    out = d / "out"
    cfg = build_config({}, {"inputs": [video], "out": str(out), "motion_backend": "dis", "caption_model": "none"})
    run_curate(cfg, show_progress=False)
    assert main(["motion", "recompute", str(out), "--backend", "farneback", "-q"]) == 0
    return cfg, out


def test_recompute_records_the_folders_motion_units(dis_folder):
    from curate.manifest import read_manifest

    cfg, out = dis_folder
    manifest = read_manifest(str(out))
    assert motion_units(manifest["config"]) == {"motion_backend": "farneback", "motion_size": 256}
    # Curating more with dis now would append dis scores to farneback ones: refused.
    problem = resume_problem(cfg, manifest)
    assert problem and "motion_backend: 'farneback' -> 'dis'" in problem and "kvid motion recompute" in problem
    with pytest.raises(ConfigError):
        check_resume(cfg, manifest)
    assert resume_problem(cfg.model_copy(update={"motion_backend": "farneback"}), manifest) is None


def test_curate_refuses_other_motion_units(dis_folder, tmp_path):
    cfg, out = dis_folder
    err = kvid_fails("curate", *cfg.inputs, "--out", str(out), "--motion-backend", "dis", "--caption-model", "none",
                     cwd=tmp_path)
    assert "motion_backend: 'farneback' -> 'dis'" in err


def test_rewrites_name_the_missing_model_in_one_line(dis_folder, tmp_path):
    _, out = dis_folder
    env = offline_env(tmp_path)
    err = kvid_fails("motion", "recompute", str(out), "--backend", "raft", cwd=tmp_path, env=env)
    assert "RAFT weights for raft_large" in err and "--motion-weights" in err and "--motion-backend dis" in err
    err = kvid_fails("caption", str(out), "--model", "nobody/no-such-vlm", cwd=tmp_path, env=env)
    assert "nobody/no-such-vlm" in err and "--caption-model PATH" in err
    err = kvid_fails("motion", "recompute", str(out), "--size", "lots", cwd=tmp_path, env=env)
    assert "motion_size (--motion-size)" in err


@pytest.mark.parametrize(("before", "after", "mixed"), [
    ({"motion_backend": "raft", "motion_size": 256}, {"motion_backend": "raft_large"}, False),  # an alias
    ({"motion_backend": "dis", "motion_size": 256}, {"motion_backend": "dis", "motion_size": 128}, True),
    ({"motion_backend": "none", "motion_size": 256}, {"motion_backend": "dis"}, True),  # unscored + scored
    ({"motion_backend": "none", "motion_size": 256}, {"motion_backend": "none", "motion_size": 128}, False),
    ({}, {"motion_backend": "dis"}, False),  # a manifest from before motion settings were recorded
])
def test_motion_units_compare_what_the_scores_mean(before, after, mixed):
    cfg = CurateConfig(inputs=["x"], out="o", caption_model="none", **after)
    manifest = {"config": {**cfg.model_dump(), **before} if before else {"fps": cfg.fps}}
    assert (resume_problem(cfg, manifest) is not None) == mixed


def test_resume_refuses_clips_made_another_way(tmp_path):
    """A folder whose committed clips carry another config hash (another kvid version hashed
    or made them differently) is refused: the resumed part would give its scenes new ids."""
    from curate import shards
    from curate.manifest import write_manifest
    from curate.schema import ClipRecord

    out = tmp_path / "out"
    cfg = build_config({}, {"inputs": ["x.mp4"], "out": str(out), "motion_backend": "none", "caption_model": "none"})
    manifest = {"config": cfg.model_dump(), "runs": []}
    writer = shards.ShardWriter(str(out))
    writer.add(ClipRecord("c1", config_hash="an-older-scheme").reject("filter", "too_short", "short"))
    writer.close()
    write_manifest(str(out), manifest)
    with pytest.raises(ConfigError, match="made another way .*an-older-scheme.*use a new --out"):
        check_resume(cfg, manifest)
    ours = cfg.curate_params().config_hash()
    writer = shards.ShardWriter(str(out), first_seq=1)
    writer.add(ClipRecord("c2", config_hash=ours).reject("filter", "too_short", "short"))
    writer.close()
    check_resume(cfg, manifest)  # the folder also holds clips made this way: a resume of this run
