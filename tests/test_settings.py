"""Every setting has one home: its stage's parameter dataclass. The config model, the flags,
the YAML keys, the settings a resume may not change, the report's settings table and the
clip ids' config hash are derived from it.

The two tests that add something do it as a developer would, in a copy of the project's
packages, and check that no other file had to change.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from curate.settings import BYTES, CLIPS, build, group, setting, settings_of, values_of

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("curate", "motion", "caption", "generate", "pipelines")


@pytest.fixture
def project_copy(tmp_path) -> Path:
    """A copy of kvid's packages: the tree a developer's change is made in."""
    copy = tmp_path / "kvid"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def edit(copy: Path, rel: str, old: str, new: str) -> None:
    path = copy / rel
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{rel}: the anchor must appear once"
    path.write_text(text.replace(old, new), encoding="utf-8")


def changed_files(copy: Path) -> set[str]:
    """The files of the copy that differ from the project's (or are new)."""
    changed = set()
    for path in copy.rglob("*.py"):
        rel = path.relative_to(copy)
        if not (ROOT / rel).exists() or not filecmp.cmp(path, ROOT / rel, shallow=False):
            changed.add(str(rel))
    return changed


def run_in(copy: Path, code: str, cwd: Path) -> dict:
    """Run ``code`` with the copy's packages first on the path; it prints one JSON line."""
    env = {**os.environ, "PYTHONPATH": str(copy)}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# What the copy is asked, for a setting named `tune` of the transcode stage.
PROBE_TUNE = """
    import json
    import pipelines.config as C
    from pipelines.cli import parse_command
    from pipelines.report import settings_html
    from curate.transcode import TranscodeParams
    from curate.video_stages import CurateParams

    assert C.__file__.startswith(%(copy)r), C.__file__  # the copy is what runs
    open('curate.yaml', 'w').write('tune: zerolatency\\n')
    from_yaml = C.build_config(C.load_yaml('curate.yaml'), {}).settings().curate.transcode.tune
    args, _ = parse_command(['curate', 'in.mp4', '--out', 'o', '--tune', 'animation'])
    from_flag = C.build_config({}, C.overrides_from_args(args)).settings().curate.transcode.tune
    page = settings_html({'config': C.CurateConfig(tune='grain').model_dump()})
    hashes = {t: CurateParams(transcode=TranscodeParams(tune=t)).config_hash() for t in ('film', 'grain')}
    try:
        C.build_config({}, {'tune': ''})
        bound = 'accepted'
    except C.ConfigError as e:
        bound = str(e)
    print(json.dumps({
        'default': C.CurateConfig().tune, 'yaml': from_yaml, 'flag': from_flag, 'help': C.field_help('tune'),
        'report_row': '<code>tune</code></td><td><b>&quot;grain&quot;</b>' in page,
        'output_field': 'tune' in C.OUTPUT_FIELDS, 'hash_changes': len(set(hashes.values())) == 2, 'bound': bound,
    }))
"""


@pytest.mark.parametrize("decides", ["BYTES", None])  # the constant as the file spells it
def test_a_setting_added_to_one_stage_dataclass_is_a_flag_a_key_a_report_row_and_in_the_hash(
        project_copy, tmp_path, decides):
    line = "    tune: str = setting(\"film\", \"x264 tune\", min_length=1"
    line += f", decides={decides})\n" if decides else ")\n"
    edit(project_copy, "curate/transcode.py", '    preset: str = setting("fast", "encoder speed preset", decides=BYTES)\n',
         '    preset: str = setting("fast", "encoder speed preset", decides=BYTES)\n' + line)
    assert changed_files(project_copy) == {"curate/transcode.py"}
    got = run_in(project_copy, PROBE_TUNE % {"copy": str(project_copy)}, tmp_path)
    assert (got["default"], got["yaml"], got["flag"]) == ("film", "zerolatency", "animation")
    assert got["help"] == "x264 tune (default: film)"
    assert got["report_row"]
    assert "tune (--tune)" in got["bound"]  # its declared bound (min_length) is enforced, the flag named
    # Only a setting marked as deciding the output guards a resume and changes the clip ids.
    assert got["output_field"] is got["hash_changes"] is (decides == "BYTES")


PROBE_DARK = """
    import json
    import pipelines.config as C
    from curate import synthetic
    from curate.video_stages import analyze_work_unit, plan_source
    from pipelines.report import scene_filter_summary

    assert C.__file__.startswith(%(copy)r), C.__file__
    synthetic.scene_video('v.mp4', [60], fps=25, size=(320, 240))
    base = {'min_area': 0, 'min_side': 0, 'min_duration_s': 1.0, 'text_filter': False}  # testsrc draws text
    def curated(**values):
        params = C.build_config({}, {**base, **values}).curate_params()
        (unit,), _ = plan_source('v.mp4', params)
        return analyze_work_unit(unit, params)
    (off,) = curated()
    (on,) = curated(dark_filter=True, max_mean_luma=250.0)
    print(json.dumps({
        'keys': [k for k in C.CurateConfig.model_fields if k in ('dark_filter', 'max_mean_luma')],
        'default': C.CurateConfig().max_mean_luma, 'output_fields': 'max_mean_luma' in C.OUTPUT_FIELDS,
        'off_ok': off.ok, 'off_measured': any(k.startswith('dark.') for k in off.scene_stats),
        'on_reason': on.reject_reason, 'on_luma': on.scene_stats['dark.mean_luma'],
        'counted': scene_filter_summary([], [on.to_row()])['counts']['dark'],
    }))
"""


def test_a_new_filter_is_one_file_and_its_line_in_the_registry(project_copy, tmp_path):
    shutil.copy(ROOT / "tests" / "example_filter.py", project_copy / "curate" / "filter_dark.py")
    edit(project_copy, "curate/scene_filters.py", "from curate import filter_flat, filter_static, filter_text, schema\n",
         "from curate import filter_dark, filter_flat, filter_static, filter_text, schema\n")
    edit(project_copy, "curate/scene_filters.py", "                frames=\"full\", deferred=True),\n",
         "                frames=\"full\", deferred=True),\n"
         "    SceneFilter(\"dark\", \"dark\", filter_dark.DarkParams, filter_dark.DarkFeature, filter_dark.check),\n")
    assert changed_files(project_copy) == {"curate/filter_dark.py", "curate/scene_filters.py"}
    got = run_in(project_copy, PROBE_DARK % {"copy": str(project_copy)}, tmp_path)
    assert got["keys"] == ["dark_filter", "max_mean_luma"] and got["default"] == 20.0 and got["output_fields"]
    assert got["off_ok"] and not got["off_measured"]  # off by default: not measured, not decided
    assert got["on_reason"] == "dark" and got["on_luma"] < 250
    assert got["counted"] == {"measured": 1, "rejected": 1}


# --- the mechanism, on small dataclasses ---------------------------------------------------

def test_groups_prefix_keys_and_build_nested_dataclasses():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Inner:
        size: int = setting(3, "inner size", decides=BYTES, ge=1)
        switch: bool = setting(False, "on or off", key="inner")
        constant: float = 0.5  # not a setting

    @dataclass(frozen=True)
    class Outer:
        level: float = setting(1.0, "outer level", decides=CLIPS)
        inner: Inner = group(Inner, "inner_", "the inner group")

    found = settings_of(Outer)
    assert [(s.key, s.path, s.title) for s in found] == [
        ("level", ("level",), "settings"), ("inner_size", ("inner", "size"), "the inner group"),
        ("inner", ("inner", "switch"), "the inner group")]
    built = build(Outer, {"inner_size": 7, "inner": True, "level": 2.0})
    assert built == Outer(level=2.0, inner=Inner(size=7, switch=True))
    assert values_of(built, BYTES) == {"inner_size": 7}
    assert build(Outer, {}) == Outer()

    @dataclass(frozen=True)
    class Twice:
        a: Inner = group(Inner, "x_")
        b: Inner = group(Inner, "y_")  # both would have the key "inner"

    with pytest.raises(TypeError, match="declared twice"):
        settings_of(Twice)


def test_every_stage_setting_is_a_config_key_and_the_keys_are_unchanged():
    """The keys users have in their YAML files and manifests: each stage group's, derived."""
    from pipelines.config import MOTION_FIELDS, OUTPUT_FIELDS, SETTINGS, CurateConfig

    keys = {s.key for s in SETTINGS}
    assert keys | {"inputs", "out"} == set(CurateConfig.model_fields)
    for key in ("min_fps", "fps", "crf", "border_min_px", "border_samples_per_s", "crop_borders", "scene_detector",
                "transition_threshold", "transition_device", "dedup", "dedup_max_distance", "motion_backend",
                "motion_size", "motion_batch_size", "caption_model", "caption_frames", "caption_max_new_tokens",
                "shard_max_clips", "shard_max_mb", "input_cache_dir", "input_cache_gb", "workers", "ray_address"):
        assert key in keys, key
    assert MOTION_FIELDS == ("motion_backend", "motion_size")
    assert {"min_fps", "fps", "crf", "crop_borders", "max_text_area"} <= set(OUTPUT_FIELDS)
    assert not {"workers", "encode_group_s", "motion_batch_size", "shard_max_mb", "decode_timeout_s"} & set(OUTPUT_FIELDS)


def test_one_value_per_setting_between_the_config_and_the_stages():
    """What contradicted itself before: the caption length, the motion batch, the shard size."""
    from caption.stage import CaptionStage
    from motion.stage import MotionStage
    from pipelines.config import CurateConfig

    cfg = CurateConfig()
    settings = cfg.settings()
    assert cfg.caption_max_new_tokens == CaptionStage.max_new_tokens == settings.caption.max_new_tokens
    assert cfg.motion_batch_size is None and MotionStage.batch_size is None  # by device, decided in setup()
    assert settings.shards.max_mb == cfg.shard_max_mb
    bigger = CurateConfig(shard_max_mb=2.5).settings().shards
    assert bigger.max_mb == 2.5
