"""The size and frame count of an mp4 we just wrote, read from its boxes: no ffprobe process.

Our encodes have one video track (``-an -sn -dn``) with its index in front (``+faststart``):
``moov/trak/tkhd`` holds the display size (16.16 fixed point) and ``moov/trak/mdia/minf/
stbl/stsz`` the number of samples, one per frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


class Mp4Error(ValueError):
    """Not an mp4 with one video track as kvid writes it."""


@dataclass(frozen=True)
class VideoTrack:
    width: int
    height: int
    frames: int


def _boxes(data: bytes, start: int, end: int):
    """(type, payload start, payload end) of the boxes in data[start:end]."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:  # a 64-bit size follows
            if pos + 16 > end:
                raise Mp4Error("truncated box header")
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:  # to the end of the enclosing box
            size = end - pos
        if size < header or pos + size > end:
            raise Mp4Error(f"box {kind!r} runs past its parent")
        yield kind, pos + header, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int]:
    for k, s, e in _boxes(data, start, end):
        if k == kind:
            return s, e
    raise Mp4Error(f"no {kind.decode()} box")


def video_track(data: bytes) -> VideoTrack:
    """The video track of ``data`` (a whole mp4 file). Raises Mp4Error."""
    moov = _child(data, 0, len(data), b"moov")
    for kind, s, e in _boxes(data, *moov):
        if kind != b"trak":
            continue
        hs, he = _child(data, s, e, b"mdia")
        handler = _child(data, hs, he, b"hdlr")
        if data[handler[0] + 8:handler[0] + 12] != b"vide":
            continue
        ts, _ = _child(data, s, e, b"tkhd")
        version = data[ts]
        # width and height are the last 8 bytes of tkhd: 16.16 fixed point
        offset = ts + (88 if version == 1 else 76)
        width, height = (v >> 16 for v in struct.unpack_from(">II", data, offset))
        stbl = _child(data, *_child(data, *_child(data, hs, he, b"minf"), b"stbl"), b"stsz")
        sample_size, count = struct.unpack_from(">II", data, stbl[0] + 4)
        return VideoTrack(int(width), int(height), int(count))
    raise Mp4Error("no video track")
