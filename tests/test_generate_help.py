"""`kvid generate`: the help's defaults are the real ones, and the random:tiny smoke test
runs at its small size unless the file asks for another."""

from __future__ import annotations

import argparse
import inspect
import re
from pathlib import Path

import pytest
import yaml

from generate import KandinskyVideoPipeline
from generate.cli import EPILOG, add_arguments
from generate.jobs import SMOKE_SIZE, GenerateConfig, Job, JobParams, expand_jobs
from generate.params import DEFAULTS, GENERATION_SETTINGS


def test_help_shows_the_real_defaults():
    block = re.search(r"^  defaults:.*?\n(.*?)^  jobs:", EPILOG, re.S | re.M).group(1)
    shown = {}
    for line in block.splitlines():
        key, _, rest = line.strip().partition(":")
        value, _, comment = rest.partition("#")
        if "default:" not in comment:  # lines saying "default: ..." show an example value instead
            shown[key] = yaml.safe_load(value)
    assert {"width", "fps", "num_inference_steps", "motion"} <= set(shown)
    defaults = JobParams().model_dump()
    assert {k: defaults[k] for k in shown} == shown


def _sizes(cfg: dict) -> dict[str, tuple[int, int]]:
    jobs = expand_jobs(GenerateConfig.model_validate(cfg), Path("."))
    return {j.name: (j.params.width, j.params.height) for j in jobs}


def test_random_tiny_defaults_to_the_smoke_size():
    jobs = [{"name": "a", "prompt": "a cat"}, {"name": "b", "prompt": "a dog", "width": 128}]
    assert _sizes({"weights": "random:tiny", "jobs": jobs}) == {"a": (SMOKE_SIZE, SMOKE_SIZE), "b": (128, SMOKE_SIZE)}
    # A size the file gives wins; real weights keep the model's 512.
    assert _sizes({"weights": "random:tiny", "defaults": {"width": 256, "height": 192}, "jobs": jobs}) == {
        "a": (256, 192), "b": (128, 192)}
    assert _sizes({"weights": "/models/kv", "jobs": jobs}) == {"a": (512, 512), "b": (128, 512)}


def test_one_name_and_one_default_per_parameter_from_yaml_to_the_pipeline():
    call = inspect.signature(KandinskyVideoPipeline.__call__).parameters
    for s in GENERATION_SETTINGS:
        assert call[s.key].default == getattr(DEFAULTS, s.key) == JobParams().model_dump()[s.key], s.key
        assert Job.model_fields[s.key].default is None  # a job overrides, the defaults are the model's
    assert set(JobParams.model_fields) <= set(Job.model_fields)


def test_the_old_steps_key_and_flag_still_work(caplog):
    with caplog.at_level("WARNING", logger="kvid.generate"):
        cfg = GenerateConfig.model_validate({"defaults": {"steps": 3}, "jobs": [{"prompt": "p", "steps": 2}]})
    assert cfg.defaults.num_inference_steps == 3 and cfg.jobs[0].overrides() == {"num_inference_steps": 2}
    assert caplog.text.count("`steps:` is deprecated, write `num_inference_steps:`") == 2
    with pytest.raises(ValueError, match="give `num_inference_steps` only"):
        JobParams.model_validate({"steps": 3, "num_inference_steps": 4})
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["jobs.yaml", "--steps", "3"]).num_inference_steps == 3
    assert parser.parse_args(["jobs.yaml", "--num-inference-steps", "4"]).num_inference_steps == 4
