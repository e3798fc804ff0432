"""Images and video files: the pipeline's output (``VideoOutput``), mp4 / gif writing, the
conditioning image, and the first frame of a curated clip.

A curated folder is read through the one dataset-format module, ``curate.shards``: its
index, and each clip's bytes straight from its tar by the index's ``shard_offset`` /
``shard_size`` (no tar scan). ffmpeg is always called with an argument list, never through
a shell.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch


class VideoIOError(RuntimeError):
    pass


def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise VideoIOError("ffmpeg not found on PATH: install ffmpeg (e.g. `apt-get install ffmpeg`) to write mp4 files")
    return exe


def frames_to_uint8(frames: Any) -> np.ndarray:
    """PIL list / (T,H,W,3) uint8 array / (T,3,H,W) float tensor in [0,1] -> (T,H,W,3) uint8."""
    if isinstance(frames, np.ndarray):
        arr = frames
    elif hasattr(frames, "detach"):  # torch tensor (T, 3, H, W) in [0, 1]
        arr = (frames.detach().float().clamp(0, 1) * 255).round().to("cpu").numpy().astype(np.uint8)
        arr = arr.transpose(0, 2, 3, 1)
    else:
        arr = np.stack([np.asarray(f.convert("RGB")) for f in frames])
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)


def fps_fraction(fps: float | Fraction) -> Fraction:
    """Exact-enough rational frame rate (e.g. 12 frames / 5.5 s = 24/11)."""
    return Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps


def write_mp4(frames: Any, path: str | os.PathLike, fps: float | Fraction, crf: int = 17) -> Path:
    """H.264 (yuv420p, even sizes) through ffmpeg; written atomically (temp name, then rename)."""
    arr = frames_to_uint8(frames)
    t, h, w, _ = arr.shape
    if h % 2 or w % 2:
        raise ValueError(f"mp4 (yuv420p) needs even width and height, got {w}x{h}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    rate = fps_fraction(fps)
    cmd = [
        _ffmpeg(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-framerate", f"{rate.numerator}/{rate.denominator}",
        "-i", "pipe:0",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf), "-movflags", "+faststart",
        str(tmp),
    ]
    proc = subprocess.run(cmd, input=arr.tobytes(), capture_output=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise VideoIOError(f"ffmpeg failed writing {path}: {proc.stderr.decode(errors='replace').strip()[-800:]}")
    os.replace(tmp, path)
    return path


def write_gif(frames: Any, path: str | os.PathLike, fps: float | Fraction) -> Path:
    """Animated GIF with PIL (frame durations rounded to GIF's 10 ms resolution), looping forever."""
    arr = frames_to_uint8(frames)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    duration_ms = max(20, int(round(1000.0 / float(fps) / 10.0)) * 10)
    images = [Image.fromarray(f) for f in arr]
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    os.replace(tmp, path)
    return path


def write_video(frames: Any, path: str | os.PathLike, fps: float | Fraction) -> Path:
    suffix = Path(path).suffix.lower()
    if suffix == ".mp4":
        return write_mp4(frames, path, fps)
    if suffix == ".gif":
        return write_gif(frames, path, fps)
    raise ValueError(f"unsupported video format {suffix!r}: use .mp4 or .gif")


@dataclass
class VideoOutput:
    """A generated video: ``frames`` (list of PIL images), ``fps`` so that it lasts ``seconds``."""

    array: np.ndarray  # (T, H, W, 3) uint8
    fps: float
    fps_preset: str
    info: dict[str, Any] = field(default_factory=dict)
    first_frame: Image.Image | None = None

    @property
    def frames(self) -> list[Image.Image]:
        return [Image.fromarray(f) for f in self.array]

    @property
    def num_frames(self) -> int:
        return int(self.array.shape[0])

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``.mp4`` (H.264 through ffmpeg) or ``.gif``."""
        return write_video(self.array, path, self.fps)


def decoded_to_pil(img: torch.Tensor) -> Image.Image:
    """(3, H, W) in about [-1, 1] -> PIL, as the official decode_image (clip, x255, truncate)."""
    arr = ((img + 1.0) / 2.0).clamp(0.0, 1.0).mul(255.0).permute(1, 2, 0).cpu().numpy().astype(np.uint8)
    return Image.fromarray(arr)


def prepare_image(image: Image.Image | np.ndarray | str | os.PathLike, width: int, height: int) -> Image.Image:
    """Scale so the image covers (width, height) and centre-crop.

    Same as the official ``encode_image`` for images at least as large as the target; smaller
    images are upscaled here (the official code would crop outside the image, i.e. pad black).
    """
    if isinstance(image, (str, os.PathLike)):
        image = Image.open(image)
    elif isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    w0, h0 = image.size
    scale = max(width / w0, height / h0)
    new = (max(width, round(w0 * scale)), max(height, round(h0 * scale)))
    if new != (w0, h0):
        image = image.resize(new, Image.BICUBIC)
    nw, nh = image.size
    left, top = (nw - width) / 2, (nh - height) / 2
    return image.crop((round(left), round(top), round(left) + width, round(top) + height))


def probe_video(path: str | os.PathLike) -> dict[str, Any]:
    """Frame count, size and rate of a video with ffprobe (used by tests and the CLI summary)."""
    exe = shutil.which("ffprobe")
    if exe is None:
        raise VideoIOError("ffprobe not found on PATH")
    cmd = [
        exe, "-v", "error", "-select_streams", "v:0", "-count_frames",
        "-show_entries", "stream=width,height,nb_read_frames,avg_frame_rate", "-of", "json", str(path),
    ]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        raise VideoIOError(f"ffprobe failed on {path}: {proc.stderr.strip()}")
    import json

    s = json.loads(proc.stdout)["streams"][0]
    return {
        "width": int(s["width"]), "height": int(s["height"]), "num_frames": int(s["nb_read_frames"]),
        "fps": float(Fraction(s["avg_frame_rate"])) if s.get("avg_frame_rate", "0/0") != "0/0" else None,
    }


def first_frame_from_mp4_bytes(data: bytes, name: str = "clip") -> Image.Image:
    """Decode the first frame of an in-memory mp4 with ffmpeg (via a temp file: mp4 needs seeking)."""
    with tempfile.TemporaryDirectory(prefix="kvid-frame-") as d:
        src = Path(d) / "clip.mp4"
        src.write_bytes(data)
        cmd = [
            _ffmpeg(), "-hide_banner", "-loglevel", "error", "-i", str(src), "-frames:v", "1",
            "-f", "image2pipe", "-vcodec", "png", "pipe:1",
        ]
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
    if proc.returncode != 0 or not proc.stdout:
        raise VideoIOError(f"could not decode the first frame of {name}: {proc.stderr.decode(errors='replace').strip()}")
    return Image.open(io.BytesIO(proc.stdout)).convert("RGB")


def first_frame_of_clip(folder: str | os.PathLike, row: dict[str, Any]) -> Image.Image:
    """First frame of a curated clip, read by its offset in its shard."""
    from curate import shards

    try:
        data = shards.read_clip_bytes(os.fspath(folder), row)
    except (OSError, KeyError, TypeError) as e:
        raise VideoIOError(f"cannot read clip {row.get('clip_id')} from {folder}: {e}") from e
    return first_frame_from_mp4_bytes(data, name=f"{folder}:{row.get('clip_id')}")


INDEX_COLUMNS = ("clip_id", "caption", "shard", "shard_offset", "shard_size", "fps", "width", "height", "num_frames",
                 "motion_score")


def read_curated_index(folder: str | os.PathLike, clip_ids: Sequence[str] | None = None,
                       limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of a curated folder's index (``folder/index/*.parquet``), sorted by clip_id for a
    stable order; ``clip_ids`` selects (all must exist). Each row also gets ``folder``."""
    from curate import layout, shards

    folder = Path(folder)
    if not (folder / layout.INDEX).is_dir():
        raise FileNotFoundError(
            f"no curated index in {folder}: expected {folder}/{layout.INDEX}/*.parquet (written by `kvid curate`)"
        )
    rows = sorted(shards.read_index(str(folder), list(INDEX_COLUMNS)).to_pylist(), key=lambda r: r["clip_id"])
    if clip_ids is not None:
        by_id = {r["clip_id"]: r for r in rows}
        unknown = [c for c in clip_ids if c not in by_id]
        if unknown:
            raise KeyError(f"clip ids not in the curated index {folder}: {unknown}")
        rows = [by_id[c] for c in clip_ids]
    if limit is not None:
        rows = rows[:limit]
    for r in rows:
        r["folder"] = str(folder)
    return rows
