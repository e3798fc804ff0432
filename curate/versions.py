"""Dataset versions.

A rewrite (new motion scores, new captions, dedup) builds a complete new version under
OUT/.next/ with the same part names, part by part (resumable), while OUT/ stays as it was.
Publishing moves the current shards/index/rejects to OUT/versions/vNNN/ and .next's into
place, with a journal so a publish interrupted between its renames is completed by the next
kvid call.
"""

from __future__ import annotations

import json
import os
import shutil

from curate.atomic import atomic_write_json
from curate.layout import INDEX, NEXT, REJECTS, SHARDS, VERSIONS, part_files, part_name

_SWAP = ".swap.json"  # journal of a publish in progress


def part_names(out_dir: str) -> list[str]:
    """Names of the committed parts (shard-NNNNNN), from index and rejects files."""
    seqs = set(part_files(os.path.join(out_dir, INDEX), "parquet")) | set(part_files(os.path.join(out_dir, REJECTS), "parquet"))
    return [part_name(s) for s in sorted(seqs)]


def next_version_dir(out_dir: str) -> str:
    return os.path.join(out_dir, NEXT)


def finished_parts(version_dir: str) -> set[str]:
    return {part_name(s) for s in part_files(os.path.join(version_dir, INDEX), "parquet")}


def _next_archive(out_dir: str) -> str:
    folder = os.path.join(out_dir, VERSIONS)
    taken = [int(n[1:]) for n in os.listdir(folder) if n.startswith("v") and n[1:].isdigit()] if os.path.isdir(folder) else []
    return os.path.join(VERSIONS, f"v{(max(taken) + 1) if taken else 1:03d}")


def recover_publish(out_dir: str) -> bool:
    """Finish a publish that was interrupted; True when there was one."""
    journal = os.path.join(out_dir, _SWAP)
    if not os.path.exists(journal):
        return False
    with open(journal, encoding="utf-8") as f:
        archive = os.path.join(out_dir, json.load(f)["archive"])
    nxt = next_version_dir(out_dir)
    os.makedirs(archive, exist_ok=True)
    for sub in (SHARDS, INDEX, REJECTS):
        cur, new, old = os.path.join(out_dir, sub), os.path.join(nxt, sub), os.path.join(archive, sub)
        if os.path.exists(new):
            if os.path.exists(cur) and not os.path.exists(old):
                os.rename(cur, old)
            if not os.path.exists(cur):
                os.rename(new, cur)
    shutil.rmtree(nxt, ignore_errors=True)
    os.unlink(journal)
    return True


def publish_next(out_dir: str) -> str:
    """Make OUT/.next the current version; returns where the old one went (OUT-relative)."""
    recover_publish(out_dir)
    archive = _next_archive(out_dir)
    atomic_write_json(os.path.join(out_dir, _SWAP), {"archive": archive})
    recover_publish(out_dir)
    return archive
