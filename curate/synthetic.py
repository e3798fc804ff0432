"""Synthetic videos with a known answer, rendered by ffmpeg's lavfi sources.

Used by `kvid demo`, the tests and the benchmarks: hard cuts at known frames, letterbox and
pillarbox bars of known size, a chosen frame rate, and broken files of several kinds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from curate.ffmpeg import run_ffmpeg

# Visually distinct lavfi sources: a cut between any two is a large HSV change.
SCENE_SOURCES = (
    "testsrc2=size={w}x{h}:rate={fps}",
    "mandelbrot=size={w}x{h}:rate={fps}",
    "smptehdbars=size={w}x{h}:rate={fps},hue=H=2*PI*t/3",
    "rgbtestsrc=size={w}x{h}:rate={fps},rotate=a=0.4*t:c=blue",
    "cellauto=size={w}x{h}:rate={fps}:rule=110:random_fill_ratio=0.5,negate",
)


@dataclass(frozen=True)
class Encoding:
    codec: str = "libx264"
    crf: int = 20
    preset: str = "veryfast"

    def args(self) -> list[str]:
        return ["-c:v", self.codec, "-preset", self.preset, "-crf", str(self.crf), "-pix_fmt", "yuv420p"]


def _render(path: str, inputs: list[str], graph: str | None, duration_s: float, enc: Encoding, extra: list[str] = ()) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    args = []
    for src in inputs:
        args += ["-f", "lavfi", "-i", src]
    if graph:
        args += ["-filter_complex", graph, "-map", "[v]"]
    args += ["-t", f"{duration_s:.6f}", *enc.args(), "-an", *extra, "-y", path]
    run_ffmpeg(args, timeout=300)
    return path


def scene_video(
    path: str,
    scene_frames: list[int],
    fps: float = 30,
    size: tuple[int, int] = (640, 360),
    enc: Encoding = Encoding(),
) -> list[int]:
    """Concatenate scenes of the given lengths (in frames) from different sources.
    Returns the frames where scenes start (excluding 0): the true cuts."""
    w, h = size
    inputs, parts = [], []
    for i, n in enumerate(scene_frames):
        src = SCENE_SOURCES[i % len(SCENE_SOURCES)].format(w=w, h=h, fps=fps)
        # Offsetting each repeat of a source keeps two scenes from the same source distinct.
        inputs.append(f"{src},trim=start_frame={37 * (i // len(SCENE_SOURCES))}")
        parts.append(f"[{i}:v]trim=end_frame={n},setpts=PTS-STARTPTS,format=yuv420p,setsar=1[s{i}]")
    graph = ";".join(parts) + ";" + "".join(f"[s{i}]" for i in range(len(scene_frames)))
    graph += f"concat=n={len(scene_frames)}:v=1:a=0[v]"
    total = sum(scene_frames)
    _render(path, inputs, graph, total / fps + 1.0, enc, ["-frames:v", str(total), "-r", str(fps)])
    cuts, acc = [], 0
    for n in scene_frames[:-1]:
        acc += n
        cuts.append(acc)
    return cuts


def boxed_video(
    path: str,
    content: tuple[int, int],
    frame: tuple[int, int],
    duration_s: float = 3.0,
    fps: float = 25,
    enc: Encoding = Encoding(),
) -> tuple[int, int, int, int]:
    """Content of size ``content`` centred in a black ``frame`` (letterbox and/or pillarbox).
    Returns the content box (x, y, w, h)."""
    cw, ch = content
    fw, fh = frame
    x, y = (fw - cw) // 2, (fh - ch) // 2
    src = f"testsrc2=size={cw}x{ch}:rate={fps}"
    graph = f"[0:v]pad={fw}:{fh}:{x}:{y}:black,format=yuv420p[v]"
    _render(path, [src], graph, duration_s, enc)
    return x, y, cw, ch


def plain_video(
    path: str,
    duration_s: float = 3.0,
    fps: float = 25,
    size: tuple[int, int] = (640, 360),
    source: str = "testsrc2",
    enc: Encoding = Encoding(),
    extra: list[str] = (),
) -> str:
    w, h = size
    return _render(path, [f"{source}=size={w}x{h}:rate={fps}"], None, duration_s, enc, list(extra))


def write_frames(path: str, frames, fps: float = 24, lossless: bool = True) -> str:
    """Encode (T, H, W, 3) uint8 RGB frames. lossless: H.264 RGB at qp 0 (use .mkv), pixels
    survive exactly; else an ordinary yuv420p H.264 at crf 12."""
    import numpy as np

    t, h, w, _ = frames.shape
    codec = ["-c:v", "libx264rgb", "-qp", "0"] if lossless else ["-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p"]
    args = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "pipe:0",
            *codec, "-preset", "ultrafast", "-an", "-y", path]
    run_ffmpeg(args, timeout=300, input_bytes=np.ascontiguousarray(frames).tobytes())
    return path


def rotated_copy(src: str, dst: str) -> str:
    """A copy of an mp4 whose video track carries a 90 degree display matrix (what phones
    write), made by patching the tkhd box: ffmpeg 5 cannot write one itself."""
    import struct

    with open(src, "rb") as f:
        data = bytearray(f.read())
    at = data.find(b"tkhd")
    if at < 4:
        raise ValueError(f"{src} has no tkhd box")
    version = data[at + 4]
    # after the type: version/flags, creation + modification time, track id, reserved,
    # duration (times and duration are 64-bit in version 1), reserved, layer/group/volume
    matrix = at + 4 + 4 + (32 if version == 1 else 20) + 8 + 8
    struct.pack_into(">9i", data, matrix, 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    with open(dst, "wb") as f:
        f.write(bytes(data))
    return dst


# --- broken inputs --------------------------------------------------------------------------


def zero_byte_file(path: str) -> str:
    open(path, "wb").close()
    return path


def random_bytes_file(path: str, size: int = 200_000, seed: int = 0) -> str:
    import random

    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.write(bytes(rnd.getrandbits(8) for _ in range(size)))
    return path


def text_file(path: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("this is not a video\n" * 100)
    return path


def truncated_copy(src: str, dst: str, fraction: float = 0.5) -> str:
    """The first ``fraction`` of a file: an mp4 cut mid-stream (moov may be lost)."""
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data[: int(len(data) * fraction)])
    return dst


def corrupt_copy(src: str, dst: str, seed: int = 1) -> str:
    """A copy with a run of bytes in the middle overwritten with garbage."""
    import random

    with open(src, "rb") as f:
        data = bytearray(f.read())
    rnd = random.Random(seed)
    start = len(data) // 3
    for i in range(start, min(len(data), start + len(data) // 3)):
        data[i] = rnd.getrandbits(8)
    with open(dst, "wb") as f:
        f.write(bytes(data))
    return dst


def hostile_corpus(folder: str) -> dict[str, set[str]]:
    """Odd and hostile inputs, each with the outcomes kvid may give it: a set of reject
    reasons, or {"ok"} for files that must yield clips. Names are chosen to break shells
    and argument parsers."""
    os.makedirs(folder, exist_ok=True)
    p = lambda name: os.path.join(folder, name)  # noqa: E731
    good = plain_video(p("good.mp4"), duration_s=3, fps=25)
    expect: dict[str, set[str]] = {"good.mp4": {"ok"}}

    def ff(name: str, args: list[str]) -> None:
        run_ffmpeg([*args, "-y", p(name)], timeout=120)

    zero_byte_file(p("zero.mp4"))
    expect["zero.mp4"] = {"empty_file"}
    random_bytes_file(p("random.mp4"), size=50_000)
    expect["random.mp4"] = {"not_video"}
    text_file(p("text.mp4"))
    expect["text.mp4"] = {"not_video"}
    truncated_copy(good, p("truncated_moov.mp4"))  # index at the end: lost
    expect["truncated_moov.mp4"] = {"truncated"}
    faststart = plain_video(p("_faststart.mp4"), duration_s=3, fps=25, extra=["-movflags", "+faststart"])
    truncated_copy(faststart, p("truncated_mid.mp4"))  # index kept, stream cut mid-way
    os.unlink(faststart)
    expect["truncated_mid.mp4"] = {"truncated", "decode_error"}
    corrupt_copy(good, p("corrupt.mp4"))
    expect["corrupt.mp4"] = {"decode_error", "truncated"}
    ff("image.mp4", ["-f", "lavfi", "-i", "testsrc2=size=320x240", "-frames:v", "1", "-f", "image2", "-c:v", "png"])
    expect["image.mp4"] = {"not_video"}
    ff("audio.mp4", ["-f", "lavfi", "-i", "sine=duration=2", "-c:a", "aac"])
    expect["audio.mp4"] = {"not_video"}
    ff("no_frames.mp4", ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-frames:v", "0", "-c:v", "libx264"])
    expect["no_frames.mp4"] = {"no_frames"}
    ff("one_frame.mp4", ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-frames:v", "1", "-c:v", "libx264"])
    expect["one_frame.mp4"] = {"too_short"}
    ff("wide_16000x16.mkv", ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "1", "-vf", "scale=16000:16", "-c:v", "ffv1"])
    expect["wide_16000x16.mkv"] = {"bad_dimensions"}
    ff("fps1000.mp4", ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=1000", "-t", "0.5", "-c:v", "libx264", "-preset", "ultrafast"])
    expect["fps1000.mp4"] = {"bad_fps"}
    ff("raw_stream.h264", ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "3", "-c:v", "libx264", "-f", "h264"])
    expect["raw_stream.h264"] = {"ok"}
    ff("vfr.mkv", ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", "4",
                   "-vf", "select='not(between(mod(n\\,10)\\,3\\,5))'", "-fps_mode", "vfr", "-c:v", "libx264"])
    expect["vfr.mkv"] = {"ok"}
    ff("_upright.mp4", ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "3", "-c:v", "libx264"])
    rotated_copy(p("_upright.mp4"), p("rotated.mp4"))
    os.unlink(p("_upright.mp4"))
    expect["rotated.mp4"] = {"ok"}
    for name in ("with space.mp4", "quote'\"s.mp4", "ünïcødé 視頻.mp4", "-leading-dash.mp4", "$(touch PWNED).mp4", "semi;colon|pipe&.mp4"):
        with open(good, "rb") as src, open(p(name), "wb") as dst:
            dst.write(src.read())
        expect[name] = {"ok"}
    os.symlink(p("gone-away.mp4.target"), p("vanished.mp4"))  # listed, but the file is gone
    expect["vanished.mp4"] = {"missing"}
    return expect


# --- perceptual signatures (near-duplicate matching tests and benchmark) -------------------


def synthetic_signatures(n: int, copies: int, samples: int = 16, seed: int = 0, copy_flips: int = 3):
    """``n`` random clip signatures whose frame hashes drift over time like a scene's (a few
    bits change per sample), plus ``copies`` near copies of the first ones: ``copy_flips``
    random bits flipped per sample, the first sample trimmed, the luma curve jittered.
    Returns (hashes (n + copies, samples) uint64, profiles uint8 alike, lengths, truth
    {copy row: original row}); a copy row holds ``samples - 1`` valid samples."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def flips(shape, k):
        pos = rng.integers(0, 64, size=(*shape, k), dtype=np.uint64)
        on = rng.random((*shape, k)) < 0.75  # about 0.75 k bits, sometimes fewer
        return np.bitwise_or.reduce((np.uint64(1) << pos) * on.astype(np.uint64), axis=-1)

    high, low = (rng.integers(0, 2**32, size=n, dtype=np.uint64) for _ in range(2))
    base = high << np.uint64(32) | low
    walk = np.bitwise_xor.accumulate(flips((n, samples), 2), axis=1)
    hashes = base[:, None] ^ walk
    steps = np.cumsum(rng.integers(-6, 7, size=(n, samples)), axis=1)
    profile = np.clip(rng.integers(40, 200, size=(n, 1)) + steps, 0, 255)
    src = np.arange(copies) % n
    copy_h = np.zeros((copies, samples), np.uint64)
    copy_h[:, : samples - 1] = hashes[src, 1:] ^ flips((copies, samples - 1), copy_flips)
    copy_p = np.zeros((copies, samples), np.int64)
    copy_p[:, : samples - 1] = np.clip(profile[src, 1:] + rng.integers(-3, 4, size=(copies, samples - 1)), 0, 255)
    lengths = np.r_[np.full(n, samples), np.full(copies, samples - 1)]
    truth = {n + c: int(s) for c, s in enumerate(src)}
    return np.vstack([hashes, copy_h]), np.vstack([profile, copy_p]).astype(np.uint8), lengths, truth
