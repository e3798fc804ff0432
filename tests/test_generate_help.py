"""`kvid generate`: the help's defaults are the real ones, and the random:tiny smoke test
runs at its small size unless the file asks for another."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from generate.cli import EPILOG
from generate.jobs import SMOKE_SIZE, GenerateConfig, JobParams, expand_jobs


def test_help_shows_the_real_defaults():
    block = re.search(r"^  defaults:.*?\n(.*?)^  jobs:", EPILOG, re.S | re.M).group(1)
    shown = {}
    for line in block.splitlines():
        key, _, rest = line.strip().partition(":")
        value, _, comment = rest.partition("#")
        if "default:" not in comment:  # lines saying "default: ..." show an example value instead
            shown[key] = yaml.safe_load(value)
    assert {"width", "fps", "steps", "motion"} <= set(shown)
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
