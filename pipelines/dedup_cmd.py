"""Near-duplicate clips: the stage of `kvid curate` (on by default, `--no-dedup` turns it
off; ``curate.dedup.DedupStage``, between analysis and transcode, fed here with the output
folder's clips) and `kvid dedup DIR` on an existing dataset.

Which copy is kept: during a run, a clip already in the output folder, else the first to
arrive; `kvid dedup DIR` sees every clip at once and keeps the best by the rule of
``curate.dedup.keep_order``: longest, then largest area, then smallest clip id.

Caught only later, by `kvid dedup DIR`: copies that passed the stage while its worker was
being restarted (a lost worker starts with the folder's clips only), and clips of folders
curated with dedup off. A duplicate whose kept clip later fails to encode stays a
duplicate reject (rare: the same scene from another file almost always encodes too).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from typing import Any

from curate import shards
from curate.dedup import DedupStage, MatchParams, find_duplicates, groups_of, mark_duplicate
from pipelines import rows as R
from pipelines.config import CurateConfig
from pipelines.rewrite import add_folder_flags

INDEX_COLUMNS = ["clip_id", "signature", "duration_s", "width", "height"]


def signed_rows(out_dir: str) -> list[dict]:
    """INDEX_COLUMNS of every clip in ``out_dir``; parts written before signatures existed
    give rows without one (their files lack the column)."""
    import glob
    import os

    import pyarrow.parquet as pq

    rows = []
    for path in sorted(glob.glob(os.path.join(out_dir, shards.INDEX, "shard-*.parquet"))):
        have = set(pq.ParquetFile(path).schema_arrow.names)
        table = pq.read_table(path, columns=[c for c in INDEX_COLUMNS if c in have])
        rows += [{c: r.get(c) for c in INDEX_COLUMNS} for r in table.to_pylist()]
    return rows


def dedup_stage(cfg: CurateConfig) -> DedupStage:
    """The dedup stage of `kvid curate`, with the output folder's clips read here on
    the driver (a worker's node may not see the folder)."""
    return DedupStage([r for r in signed_rows(cfg.out) if r["signature"]], cfg.match_params())


# --- kvid dedup DIR -----------------------------------------------------------------------

EPILOG = """\
examples:
  kvid dedup data/                          # find near copies, write a new version without them
  kvid dedup data/ --dry-run                # only list the duplicate groups
  kvid dedup data/ --max-distance 6         # stricter (mean differing bits of 64 per frame)

Every clip's perceptual signature is in the index (taken when it was curated). Groups keep
one clip: the longest, then the largest, then the smallest clip id; the others become
reject rows (reason duplicate, duplicate_of the kept clip). No video is re-encoded: the new
version is written under DIR/.next/ and published when every shard is done (the previous
version moves to DIR/versions/); a killed run resumes when started again with the same
options, and leaves the current version untouched meanwhile.
"""

_KEYS = ("dedup_max_distance", "dedup_max_offset_s", "dedup_min_overlap", "ray_address")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Find near-duplicate clips in a curated folder and reject all but one of each group."
    parser.epilog = EPILOG
    add_folder_flags(parser, "dedup_", _KEYS[:-1])
    parser.add_argument("--dry-run", action="store_true", help="print the groups; change nothing")


def mark_duplicates_op(row: dict[str, Any], duplicates: dict[str, str]) -> dict[str, Any]:
    rec = R.row_record(row)
    kept = duplicates.get(rec.clip_id)
    if kept is None:
        return row
    return R.record_row(mark_duplicate(rec, kept))


def dedup_folder(out_dir: str, cfg: CurateConfig, dry_run: bool = False, show_progress: bool | None = None) -> dict:
    """Match every clip of ``out_dir``; unless ``dry_run``, publish a version without the
    duplicates. Returns a summary with the groups ({kept: [duplicates]})."""
    from pipelines.rewrite import rewrite

    shards.recover_publish(out_dir)
    rows = signed_rows(out_dir)
    params = cfg.match_params()
    duplicates = find_duplicates(rows, params)
    summary: dict[str, Any] = {
        "clips": len(rows),
        "unsigned": sum(1 for r in rows if not r["signature"]),
        "duplicates": len(duplicates),
        "groups": groups_of(duplicates),
    }
    if dry_run or not duplicates:
        return summary
    updates = {k: getattr(cfg, k) for k in _KEYS if k != "ray_address"}
    summary["rewrite"] = rewrite(out_dir, cfg, "dedup", rewrite_settings(params, duplicates), dedup_stages(duplicates),
                                 show_progress, config_updates=updates)
    return summary


def rewrite_settings(params: MatchParams, duplicates: dict[str, str]) -> dict:
    """What identifies a dedup rewrite: a killed one resumes only into the same answer."""
    digest = hashlib.sha256(json.dumps(sorted(duplicates.items())).encode()).hexdigest()[:16]
    return {"match": dataclasses.asdict(params), "duplicates": digest}


def dedup_stages(duplicates: dict[str, str]):
    return lambda ds: ds.map(mark_duplicates_op, fn_kwargs={"duplicates": duplicates}, num_cpus=0.5)


def run(args: argparse.Namespace) -> int:
    from pipelines.rewrite import folder_config

    cfg = folder_config(args.dir, args, _KEYS)
    s = dedup_folder(args.dir, cfg, dry_run=args.dry_run, show_progress=False if args.quiet else None)
    for kept, dups in list(s["groups"].items())[:20]:
        print(f"  keep {kept}: duplicates {', '.join(dups)}")
    if len(s["groups"]) > 20:
        print(f"  ... {len(s['groups']) - 20} more groups")
    unsigned = ""
    if s["unsigned"]:
        unsigned = f"; {s['unsigned']} clips without a signature (curated before signatures) not compared"
    head = f"kvid dedup: {s['clips']} clips, {s['duplicates']} duplicates in {len(s['groups'])} groups{unsigned}"
    if "rewrite" not in s:
        print(head + ("; nothing changed (--dry-run)" if args.dry_run and s["duplicates"] else "; nothing to do"))
        return 0
    w = s["rewrite"]
    print(f"{head}; rejected as duplicate in a new version ({w['parts_rewritten']} shards rewritten, "
          f"{w['parts_already_done']} done earlier, {w['wall_s']:.1f} s); previous version kept in "
          f"{args.dir}/{w['previous_version']}")
    return 0

