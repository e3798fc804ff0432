"""Deterministic identities: the same source, frames and settings give the same id."""

from __future__ import annotations

import hashlib
import json
import os

_FINGERPRINT_BYTES = 1 << 20


def short_hash(*parts: object, length: int = 16) -> str:
    h = hashlib.sha256()
    for part in parts:
        # surrogateescape: a non-UTF-8 file name hashes as its raw bytes (valid names are unchanged).
        h.update(str(part).encode("utf-8", "surrogateescape"))
        h.update(b"\x00")
    return h.hexdigest()[:length]


def source_fingerprint(path: str) -> str:
    """Content fingerprint: size plus the first and last MiB; two small reads even for a
    multi-gigabyte file."""
    size = os.path.getsize(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(_FINGERPRINT_BYTES))
        if size > 2 * _FINGERPRINT_BYTES:
            f.seek(-_FINGERPRINT_BYTES, os.SEEK_END)
            h.update(f.read(_FINGERPRINT_BYTES))
    return h.hexdigest()[:16]


def source_id(name: str, content_path: str) -> str:
    """A source's identity: its name (absolute path or URI) and its content, read from
    ``content_path`` (the file itself, or a staged copy of a URI). Two copies of one video
    are two sources (each accounted for); a file whose content changed is a new source."""
    return short_hash(name, source_fingerprint(content_path))


def config_hash(settings: dict) -> str:
    """Hash of the settings that change what a clip's bytes are."""
    return short_hash(json.dumps(settings, sort_keys=True, default=str), length=12)


def clip_id(source_id: str, start_frame: int, end_frame: int, cfg_hash: str) -> str:
    return short_hash(source_id, start_frame, end_frame, cfg_hash)


def unit_id(source_id: str, chunk: int) -> str:
    return f"{source_id}:{chunk}"
