"""The layout of an output folder, readable without kvid.

    OUT/shards/shard-000000.tar      WebDataset: <clip_id>.mp4, <clip_id>.json, <clip_id>.txt
    OUT/index/shard-000000.parquet   one row per clip in that tar (the clip schema)
    OUT/rejects/shard-000000.parquet one row per reject committed with that part
    OUT/manifest.json                config, versions, counts
    OUT/.kvid/                       the run's bookkeeping (hidden from readers)
    OUT/.next/, OUT/versions/vNNN/   a new dataset version being built; earlier versions

Dot-names are hidden from readers (pyarrow, Ray, webdataset globs): everything is written
under one and renamed into place.
"""

from __future__ import annotations

import os
import re

SHARDS, INDEX, REJECTS = "shards", "index", "rejects"
MANIFEST = "manifest.json"
WORK_DIR = ".kvid"  # run bookkeeping inside OUT (hidden from readers)
NEXT = ".next"  # a new dataset version being built (recompute, recaption); hidden from readers
VERSIONS = "versions"  # earlier versions, kept after a new one is published
_PART_RE = re.compile(r"^shard-(\d{6,})\.(tar|parquet)$")


def part_name(seq: int) -> str:
    return f"shard-{seq:06d}"


def part_files(folder: str, ext: str) -> dict[int, str]:
    """{sequence number: path} of the part files with extension ``ext`` in ``folder``."""
    found = {}
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            m = _PART_RE.match(name)
            if m and m.group(2) == ext:
                found[int(m.group(1))] = os.path.join(folder, name)
    return found


def ensure_layout(out_dir: str) -> None:
    for sub in (SHARDS, INDEX, REJECTS):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
