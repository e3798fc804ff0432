"""Shared fixtures: the real test videos, a synthetic corpus with known answers, one Ray."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Fixture modules shared by several test files (their helpers are imported by name).
pytest_plugins = ["caption_fixtures", "generate_fixtures", "loader_fixtures", "motion_fixtures"]

ROOT = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = Path(os.environ.get("KVID_TEST_VIDEOS", ROOT.parent / "shared" / "data" / "videos"))

# Known answers of the synthetic corpus (see `synth` below).
CUT_SCENES = [90, 45, 96, 75]  # frames per scene at 30 fps; the 45-frame scene is 1.5 s
CUT_FPS = 30
LETTERBOX = {"content": (1280, 520), "frame": (1280, 720)}  # 100 px bars top and bottom
PILLARBOX = {"content": (960, 720), "frame": (1280, 720)}  # 160 px bars left and right


@pytest.fixture(autouse=True, scope="session")
def _offline():
    # Tests never touch the network: model code must fail fast, not wait on a download.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip, with a reason, where no CUDA device is present (they are
    opted into with -m gpu; on a CPU machine that is a skip, not a failure)."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        for item in gpu_tests:
            item.add_marker(pytest.mark.skip(reason="no CUDA device"))


class Killed(Exception):
    """The driver died (stands in for SIGKILL: no clean-up of ours runs after it)."""


@pytest.fixture
def driver_dies_after_one_part(monkeypatch):
    """The driver dies as it is about to commit its second part: one part is finished,
    the rest is not. Done in the driver, not by stalling a Ray task, so it does not hang on
    how Ray happens to schedule the other parts on a loaded machine. Call the value to
    bring the driver back to life (for the resume)."""
    from curate import shards

    commit = shards.PartWriter.commit
    commits: list[str] = []

    def commit_then_die(self, *args, **kwargs):
        if commits:
            raise Killed("killed")
        commits.append(self.name)
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(shards.PartWriter, "commit", commit_then_die)
    return monkeypatch.undo


@pytest.fixture(scope="session")
def shared_videos() -> Path:
    if not (SHARED_VIDEOS / "testvideo.mp4").exists():
        message = f"real test videos not found at {SHARED_VIDEOS} (../shared/data/videos beside the repo, or KVID_TEST_VIDEOS)"
        if os.environ.get("CI"):
            pytest.fail(message + ": in CI a missing test-data folder is a failure, not a skip")
        pytest.skip(message)
    return SHARED_VIDEOS


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> dict[str, Path]:
    """Synthetic inputs, rendered once per session."""
    from curate import synthetic as S

    d = tmp_path_factory.mktemp("synth")
    p = lambda name: d / name  # noqa: E731
    S.scene_video(str(p("cuts.mp4")), CUT_SCENES, fps=CUT_FPS)
    S.boxed_video(str(p("letterbox.mp4")), LETTERBOX["content"], LETTERBOX["frame"], duration_s=3)
    S.boxed_video(str(p("pillarbox.mp4")), PILLARBOX["content"], PILLARBOX["frame"], duration_s=2.5)
    S.plain_video(str(p("fps15.mp4")), duration_s=3, fps=15)
    S.plain_video(str(p("small200.mp4")), duration_s=3, fps=25, size=(200, 200))
    S.plain_video(str(p("big.mp4")), duration_s=2.2, fps=24, size=(1920, 1440))
    S.plain_video(str(p("good.mp4")), duration_s=4, fps=25)
    S.zero_byte_file(str(p("zero.mp4")))
    S.text_file(str(p("text.mp4")))
    S.random_bytes_file(str(p("random.mp4")))
    S.truncated_copy(str(p("good.mp4")), str(p("truncated.mp4")))
    S.corrupt_copy(str(p("good.mp4")), str(p("corrupt.mp4")))
    return {f.name: f for f in d.iterdir()}


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session (starting Ray costs seconds)."""
    import logging

    import ray

    if not ray.is_initialized():
        # Workers import test helpers (stages defined in test modules) from tests/.
        path = os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")])
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()
