"""Helpers for the caption tests: real sample clips, tiny random models, clip rows.

Clips are cut from the real videos in ../shared/data/videos (tests skip, with a reason,
when that folder is absent) and re-encoded the way curate writes clips: 24 fps H.264,
short side 128 px. Tiny models are built in code (tests/random_vlm.py) and saved with
save_pretrained, so ``load_backend(path)`` runs the real loading code. Both are built once
per test session in a temp folder.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from curate import schema

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = Path(os.environ.get("KVID_TEST_VIDEOS", ROOT.parent / "shared" / "data" / "videos"))

# name -> (source file, start s, duration s, portrait)
CLIP_SPECS = {
    "a3": ("testvideo.mp4", 1.0, 3.0, False),  # 72 frames
    "b25": ("testvideo.mp4", 8.0, 2.5, False),  # 60 frames
    "c125": ("fades.mp4", 2.0, 1.25, False),  # 30 frames
    "rot2": ("issue-134-rotate.mp4", 1.0, 2.0, True),  # rotation flag -> portrait, 48 frames
}
CLIP_FRAMES = {"a3": 72, "b25": 60, "c125": 30, "rot2": 48}

TINY_FAMILIES = ("qwen2_5_vl", "qwen2_vl", "llava_next_video", "llava_onevision", "smolvlm")


@functools.lru_cache(maxsize=1)
def _workdir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="kvid-caption-tests-"))
    atexit.register(shutil.rmtree, d, True)
    return d


@pytest.fixture
def one_torch_thread():
    """Tiny models: ops too small to split; on a busy 2-core box, 2 threads spin and crawl.

    Test modules import it and opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch  # not at the top: the clip helpers here do not need torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def require_videos() -> Path:
    if not (VIDEOS / "testvideo.mp4").is_file():
        pytest.skip(f"sample videos not found at {VIDEOS} (set KVID_TEST_VIDEOS)")
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    return VIDEOS


def make_clip(src: Path, out: Path, start: float, duration: float, short_side: int = 128) -> Path:
    """A curate-style clip: 24 fps, short side ``short_side``, H.264 yuv420p, no audio."""
    scale = f"scale='if(gt(iw,ih),-2,{short_side})':'if(gt(iw,ih),{short_side},-2)'"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-ss", str(start), "-i", str(src),
         "-t", str(duration), "-vf", f"fps=24,{scale}", "-c:v", "libx264", "-preset", "ultrafast",
         "-pix_fmt", "yuv420p", "-an", str(out)],
        check=True, timeout=120,
    )
    return out


@functools.lru_cache(maxsize=1)
def _clips() -> dict[str, Path]:
    out = {}
    d = _workdir() / "clips"
    d.mkdir(exist_ok=True)
    for name, (src, start, dur, _) in CLIP_SPECS.items():
        out[name] = make_clip(VIDEOS / src, d / f"{name}.mp4", start, dur)
    return out


def sample_clips() -> dict[str, Path]:
    """name -> path of the sample clips (built once)."""
    require_videos()
    return _clips()


@functools.cache
def _tiny_model(family: str) -> str:
    from random_vlm import save_random_model

    return save_random_model(family, _workdir() / "models" / family, size="tiny", seed=0)


def tiny_model(family: str) -> str:
    """Path of a saved tiny random ``family`` model (built once)."""
    return _tiny_model(family)


def enable_fake_num2words(monkeypatch) -> None:
    """SmolVLM's processor spells the frame count with num2words (not installed here).

    A stand-in that writes digits is enough to exercise the real SmolVLM code path; it is
    removed again when the test ends.
    """
    import importlib.machinery
    import importlib.util
    import types

    if importlib.util.find_spec("num2words") is not None:
        return
    fake = types.ModuleType("num2words")
    fake.__spec__ = importlib.machinery.ModuleSpec("num2words", None)
    fake.num2words = lambda n, lang="en", to="cardinal": str(n)
    monkeypatch.setitem(sys.modules, "num2words", fake)
    from transformers.models.smolvlm import processing_smolvlm

    if processing_smolvlm.num2words is None:
        monkeypatch.setattr(processing_smolvlm, "num2words", fake.num2words)


def probe_clip(path: Path) -> dict:
    from curate.probe import probe

    info = probe(str(path))
    return {"width": info.width, "height": info.height, "fps": 24.0, "duration_s": info.duration_s,
            "num_frames": int(round(info.duration_s * 24))}


def make_row(path: Path | None, clip_id: str, **overrides) -> dict:
    """A schema row (all columns) for a clip, plus its bytes under "mp4"."""
    row = schema.ClipRecord(clip_id=clip_id, source=str(path or ""), kvid_version="test").to_row()
    if path is not None:
        row.update(probe_clip(path))
        row["aspect_ratio"] = row["width"] / row["height"]
        row["mp4"] = Path(path).read_bytes()
    else:
        row["mp4"] = None
    row.update(overrides)
    return row

