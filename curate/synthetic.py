"""Synthetic videos with a known answer, rendered by ffmpeg's lavfi sources.

Used by `kvid demo`, the tests and the benchmarks: hard cuts at known frames, letterbox and
pillarbox bars of known size, a chosen frame rate, and broken files of several kinds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
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


def _render(path: str, inputs: list[str], graph: str | None, duration_s: float, enc: Encoding, extra: Sequence[str] = ()) -> str:
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
    extra: Sequence[str] = (),
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


def anamorphic_video(
    path: str,
    size: tuple[int, int],
    sar: tuple[int, int],
    duration_s: float = 1.0,
    fps: float = 25,
    content_w: int | None = None,
    rotate: bool = False,
    enc: Encoding = Encoding(),
) -> str:
    """A stream of ``size`` coded pixels whose pixels are ``sar`` (num, den) wide: shown at
    ``size[0] * num / den`` x ``size[1]``, as DVD and HDV store 16:9 and 4:3 pictures.
    ``content_w``: only the central ``content_w`` coded columns hold a picture, the rest is
    black (pillarbox bars in coded pixels). ``rotate``: the track also carries a 90 degree
    display matrix (the pixel aspect then belongs to the coded frame, before the turn)."""
    w, h = size
    cw = content_w or w
    graph = f"[0:v]pad={w}:{h}:{(w - cw) // 2}:0:black,setsar={sar[0]}/{sar[1]},format=yuv420p[v]"
    target = path + ".upright.mp4" if rotate else path
    _render(target, [f"testsrc2=size={cw}x{h}:rate={fps}"], graph, duration_s, enc)
    if rotate:
        rotated_copy(target, path)
        os.unlink(target)
    return path


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


# --- scenes the per-scene filters must catch (known answers) --------------------------------


def transition_video(
    path: str,
    transition: str = "dissolve",
    before: int = 60,
    after: int = 60,
    length: int = 25,
    fps: float = 25,
    size: tuple[int, int] = (320, 180),
    enc: Encoding = Encoding(),
    b_source: str = "testsrc2=size={w}x{h}:rate={fps}",
) -> tuple[int, int]:
    """Two different scenes joined by an ffmpeg ``xfade`` transition (dissolve, fade =
    through black, wipeleft, ...) of ``length`` frames. Returns the blended frames
    [start, end): every frame outside is pure scene A (before) or pure scene B (after); the
    transition's first frame, at progress 0, is still pure A. ``b_source``: scene B's lavfi
    source (testsrc2 carries a timecode: an overlaid line of text)."""
    w, h = size
    a = f"mandelbrot=size={w}x{h}:rate={fps}"
    b = b_source.format(w=w, h=h, fps=fps)
    n_a, n_b = before + length, length + after
    graph = (f"[0:v]trim=end_frame={n_a},setpts=PTS-STARTPTS,format=yuv420p,setsar=1[a];"
             f"[1:v]trim=end_frame={n_b},setpts=PTS-STARTPTS,format=yuv420p,setsar=1[b];"
             f"[a][b]xfade=transition={transition}:duration={length / fps:.6f}:offset={before / fps:.6f}[v]")
    total = before + length + after
    _render(path, [a, b], graph, total / fps + 1.0, enc, ["-frames:v", str(total), "-r", str(fps)])
    return before + 1, before + length


def frozen_video(
    path: str, moving_s: float, frozen_s: float, fps: float = 25, size: tuple[int, int] = (320, 180),
    enc: Encoding = Encoding(),
) -> str:
    """A moving picture that freezes on its last frame (``moving_s`` 0: a still image)."""
    w, h = size
    moving = max(1, int(round(moving_s * fps)))
    graph = (f"[0:v]trim=end_frame={moving},setpts=PTS-STARTPTS,"
             f"tpad=stop_mode=clone:stop_duration={frozen_s:.6f},format=yuv420p[v]")
    return _render(path, [f"mandelbrot=size={w}x{h}:rate={fps}"], graph, moving / fps + frozen_s, enc)


def subtitled_video(
    path: str, lines: list[str], fontsize: int, duration_s: float = 3.0, fps: float = 25,
    size: tuple[int, int] = (640, 360), enc: Encoding = Encoding(),
) -> str:
    """A moving picture without text of its own, with ``lines`` burnt in at the bottom
    (no lines: the same video clean)."""
    w, h = size
    graph = "[0:v]format=yuv420p"
    for i, text in enumerate(reversed(lines)):
        y = f"h-{(i + 1) * int(fontsize * 1.4)}"
        graph += (f",drawtext=text='{text}':fontsize={fontsize}:fontcolor=white:borderw=3:bordercolor=black"
                  f":x=(w-text_w)/2:y={y}")
    return _render(path, [f"mandelbrot=size={w}x{h}:rate={fps}"], graph + "[v]", duration_s, enc)


def title_video(
    path: str, text: str, fontsize: int, duration_s: float = 3.0, fps: float = 25,
    size: tuple[int, int] = (640, 360), source: str = "mandelbrot", y: str = "(h-text_h)/2",
    enc: Encoding = Encoding(),
) -> str:
    """One line of title text overlaid, centred, on a moving picture (an overlay: it stays
    put while the picture changes under it)."""
    w, h = size
    graph = (f"[0:v]format=yuv420p,drawtext=text='{text}':fontsize={fontsize}:fontcolor=white:borderw=2"
             f":bordercolor=black:x=(w-text_w)/2:y={y}[v]")
    return _render(path, [f"{source}=size={w}x{h}:rate={fps}"], graph, duration_s, enc)


def scene_text_video(
    path: str, labels: Sequence[tuple[str, int, int]], fontsize: int, duration_s: float = 3.0, fps: float = 25,
    size: tuple[int, int] = (640, 360), pan_px_per_frame: int = 4, enc: Encoding = Encoding(),
) -> str:
    """Text that belongs to the scene: labels (text, x, y) printed on a still picture twice the
    frame's width, which the camera pans across: the text moves with the picture, as a sign
    does in a moving shot."""
    w, h = size
    draw = ",".join(f"drawtext=text='{t}':fontsize={fontsize}:fontcolor=yellow:box=1:boxcolor=0x204020"
                    f":boxborderw=6:x={x}:y={y}" for t, x, y in labels)
    frames = int(round(duration_s * fps))
    graph = (f"[0:v]trim=end_frame=1,{draw},loop=loop={frames - 1}:size=1,"
             f"crop={w}:{h}:x='{pan_px_per_frame}*n':y=0,setpts=N/{fps}/TB,format=yuv420p[v]")
    return _render(path, [f"mandelbrot=size={2 * w}x{h}:rate={fps}:start_scale=1.5"], graph, duration_s, enc)


def colour_video(path: str, colour: str = "gray", duration_s: float = 3.0, fps: float = 25,
                 size: tuple[int, int] = (320, 180), enc: Encoding = Encoding()) -> str:
    """One flat colour (an ffmpeg colour name or 0xRRGGBB) for the whole video."""
    w, h = size
    return _render(path, [f"color=c={colour}:size={w}x{h}:rate={fps}"], None, duration_s, enc)


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


# --- clips that carry their frame index, and a kvid folder written directly -----------------

COUNTER_BITS = 16  # a 4 x 4 grid of black/white cells in the middle of the picture


def _counter_cells(height: int, width: int) -> list[tuple[int, int, int, int]]:
    """(top, left, bottom, right) of each code cell: a 4 x 4 grid over the central half of
    the central square, so a centre crop to any common aspect ratio keeps it whole."""
    side = min(height, width) / 2
    top, left = (height - side) / 2, (width - side) / 2
    cell = side / 4
    return [(round(top + r * cell), round(left + c * cell), round(top + (r + 1) * cell), round(left + (c + 1) * cell))
            for r in range(4) for c in range(4)]


def counter_frames(n: int, size: tuple[int, int] = (256, 144), offset: int = 0):
    """``n`` RGB frames (n, H, W, 3) uint8; frame i shows ``offset + i`` in binary as white
    (1) and black (0) cells on grey, big enough to survive H.264 and a resize to 1/4."""
    import numpy as np

    w, h = size
    frames = np.full((n, h, w, 3), 128, np.uint8)
    cells = _counter_cells(h, w)
    for i in range(n):
        value = offset + i
        for bit, (t, le, b, r) in enumerate(cells):
            frames[i, t:b, le:r] = 255 if value >> bit & 1 else 0
    return frames


def read_counter(frame) -> int:
    """The number a ``counter_frames`` frame shows, from a decoded frame ([3, H, W] or
    [H, W, 3], resized and centre-cropped as a loader may)."""
    import numpy as np

    a = np.asarray(frame)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[2] != 3:
        a = a.transpose(1, 2, 0)
    grey = a.astype(np.float32).mean(axis=2)
    value = 0
    for bit, (t, le, b, r) in enumerate(_counter_cells(*grey.shape)):
        dy, dx = max(1, (b - t) // 3), max(1, (r - le) // 3)
        if grey[t + dy : b - dy, le + dx : r - dx].mean() > 128:
            value |= 1 << bit
    return value


def clip_folder(out_dir: str, clips: list[dict], clips_per_shard: int = 4) -> list[dict]:
    """A kvid folder (shards, index) holding ``clips`` as they are, for tests and benches
    that need a dataset without curating one. Each clip: ``mp4`` (bytes) and record fields;
    ``clip_id``, ``width``, ``height``, ``num_frames`` are required, ``fps`` defaults to 24.
    Returns the index rows as written."""
    from curate import shards
    from curate.schema import ClipRecord

    writer = shards.ShardWriter(out_dir, shards.ShardParams(max_clips=clips_per_shard))
    for c in clips:
        fields = {k: v for k, v in c.items() if k != "mp4"}
        fields.setdefault("fps", 24.0)
        fields.setdefault("duration_s", fields["num_frames"] / fields["fps"])
        fields.setdefault("aspect_ratio", fields["width"] / fields["height"])
        fields.setdefault("source", f"synthetic/{fields['clip_id']}.mp4")
        fields.setdefault("work_unit", fields["clip_id"])
        fields.setdefault("work_unit_rows", 1)
        writer.add(ClipRecord(**fields), c["mp4"])
    writer.close()
    return shards.read_index(out_dir).to_pylist()
